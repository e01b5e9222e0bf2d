/**
 * Entry of the pipeline thread: hosts the embedded runtime and answers the HTTP thread's calls, one
 * message at a time and in the order they arrive, so requests are processed (and logged) in the
 * order the HTTP thread read them.
 */
import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { pino } from 'pino';
import '../components.ts';
import { serializeError } from '../core/protocol.ts';
import { SluiceError } from '../errors.ts';
import { createMetrics } from '../service/metrics.ts';
import { EmbeddedRuntime } from './embedded/runtime.ts';
import type {
  Answer,
  Call,
  CallName,
  FromRuntime,
  Processed,
  RuntimeWorkerData,
  ToRuntime,
} from './protocol.ts';

const port = parentPort!;
const { config, logLevel, shard } = workerData as RuntimeWorkerData;
const log = pino({ level: logLevel, base: { service: 'sluice' } });
// Counters of what the pipelines did; the HTTP thread adds them to its own on /metrics.
const metrics = createMetrics({ defaults: false });
metrics.watchThread('pipeline', () => performance.eventLoopUtilization());

/** Answers not sent yet: those of one turn of the event loop go as one message (protocol.ts). */
let answers: Answer[] = [];
let pendingTaps: FromRuntime[] = [];
let processed: Processed[] = [];
let closing = false;
let flushing = false;
const flush = (): void => {
  flushing = false;
  if (answers.length > 0 || processed.length > 0)
    port.postMessage({ t: 'answers', answers, processed } satisfies FromRuntime);
  for (const m of pendingTaps) port.postMessage(m);
  answers = [];
  processed = [];
  pendingTaps = [];
  if (closing) port.close();
};
const flushSoon = (): void => {
  if (!flushing) setImmediate(flush);
  flushing = true;
};
function answer(a: Answer): void {
  flushSoon();
  answers.push(a);
}
/** Other messages go at once, after the answers already due, so the HTTP thread sees them in order. */
const post = (m: FromRuntime): void => {
  flush();
  port.postMessage(m);
};

/** Anything thrown that is not one of ours is a bug: answered as an internal error. */
function asSluice(err: unknown): SluiceError {
  if (err instanceof SluiceError) return err;
  return new SluiceError(
    'SLUICE_ERR_INTERNAL',
    `the pipeline thread failed: ${(err as Error)?.message ?? String(err)}`,
    {
      cause: err,
    },
  );
}

let runtime: EmbeddedRuntime;
try {
  runtime = await EmbeddedRuntime.start(
    config,
    log,
    metrics,
    {
      state: (state) => post({ t: 'state', state }),
      fatal: (err) => post({ t: 'fatal', error: serializeError(asSluice(err)) }),
      // With the answers of the same turn, not ahead of them: a tap is a sample, not a signal.
      tapped: (pipeline, taps) => {
        flushSoon();
        pendingTaps.push({ t: 'tap', pipeline, taps });
      },
    },
    shard,
  );
} catch (err) {
  post({ t: 'start-failed', error: serializeError(asSluice(err)) });
  process.exit(1);
}

const calls: Record<CallName, (...args: never[]) => unknown> = {
  ingest: (...a: Parameters<EmbeddedRuntime['ingest']>) => runtime.ingest(...a),
  windows: (...a: Parameters<EmbeddedRuntime['windows']>) => runtime.windows(...a),
  deadLetters: (...a: Parameters<EmbeddedRuntime['deadLetters']>) => runtime.deadLetters(...a),
  replay: (...a: Parameters<EmbeddedRuntime['replay']>) => runtime.replay(...a),
  reload: (...a: Parameters<EmbeddedRuntime['reload']>) => runtime.reload(...a),
  checkpoint: () => runtime.checkpoint(),
  tap: (...a: Parameters<EmbeddedRuntime['tap']>) => runtime.tap(...a),
  metrics: () => metrics.registry.getMetricsAsJSON(),
  shutdown: async () => {
    await runtime.shutdown();
    // Its answer is the last message: the port closes once it has gone.
    closing = true;
  },
};

function dispatch(c: Call): void {
  let result: unknown;
  const start = performance.now();
  try {
    // Synchronous up to the first await of each call: the order of calls is the order of work.
    result = (calls[c.name] as (...args: unknown[]) => unknown)(...c.args);
  } catch (err) {
    answer({ id: c.id, error: serializeError(asSluice(err)) });
    return;
  } finally {
    if (c.name === 'ingest' || c.name === 'replay') {
      flushSoon();
      processed.push({ id: c.id, ms: performance.now() - start });
    }
  }
  if (result instanceof Promise)
    result.then(
      (value: unknown) => answer({ id: c.id, value }),
      (err: unknown) => answer({ id: c.id, error: serializeError(asSluice(err)) }),
    );
  else answer({ id: c.id, value: result });
}

port.on('message', (m: ToRuntime) => {
  for (const c of m.calls) dispatch(c);
});
post({ t: 'started' });
