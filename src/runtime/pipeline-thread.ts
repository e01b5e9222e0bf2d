/**
 * Entry of the pipeline thread: hosts the embedded runtime and answers the HTTP thread's calls, one
 * message at a time and in the order they arrive, so requests are processed (and logged) in the
 * order the HTTP thread read them.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { pino } from 'pino';
import '../components.ts';
import { serializeError } from '../core/protocol.ts';
import { SluiceError } from '../errors.ts';
import { createMetrics } from '../service/metrics.ts';
import { EmbeddedRuntime } from './embedded.ts';
import type { CallName, FromRuntime, RuntimeWorkerData, ToRuntime } from './protocol.ts';

const port = parentPort!;
const { config, logLevel } = workerData as RuntimeWorkerData;
const log = pino({ level: logLevel, base: { service: 'sluice' } });
// Counters of what the pipelines did; the HTTP thread adds them to its own on /metrics.
const metrics = createMetrics({ defaults: false });
const post = (m: FromRuntime): void => port.postMessage(m);

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
  runtime = await EmbeddedRuntime.start(config, log, metrics, {
    state: (state) => post({ t: 'state', state }),
    fatal: (err) => post({ t: 'fatal', error: serializeError(asSluice(err)) }),
  });
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
  metrics: () => metrics.registry.getMetricsAsJSON(),
  shutdown: async () => {
    await runtime.shutdown();
    // The answer is the last message: nothing runs here after it.
    setImmediate(() => port.close());
  },
};

port.on('message', (m: ToRuntime) => {
  let result: unknown;
  try {
    // Synchronous up to the first await of each call: the order of messages is the order of work.
    result = (calls[m.name] as (...args: unknown[]) => unknown)(...m.args);
  } catch (err) {
    post({ t: 'error', id: m.id, error: serializeError(asSluice(err)) });
    return;
  }
  if (result instanceof Promise)
    result.then(
      (value: unknown) => post({ t: 'value', id: m.id, value }),
      (err: unknown) => post({ t: 'error', id: m.id, error: serializeError(asSluice(err)) }),
    );
  else post({ t: 'value', id: m.id, value: result });
});
post({ t: 'started' });
