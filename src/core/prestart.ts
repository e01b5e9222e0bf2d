/**
 * Worker threads started before the engine needs them. A worker spends its first ~150 ms loading
 * the components' modules; `sluice run` starts its workers here as soon as it knows it will want
 * them, so that this happens while the main thread loads its own modules, the pipeline and its
 * tables (~300 ms before the engine would have started them: CPU profiles of a one-line run).
 * This module imports nothing heavy, so that it can run first.
 */
import { statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/**
 * Without `workers`, an input file smaller than this runs on the main thread. Paired on this
 * machine (2 cores): a 50,000-event payments file (19 MiB) takes the same time or less on the main
 * thread as on two workers, at 175 instead of 280 MiB peak RSS: each worker is an isolate of its
 * own (~35 MiB once the components load) that also compiles the schemas and copies the tables,
 * which a small input does not earn back. Compressed and unsized inputs (stdin) use workers.
 */
const INLINE_BELOW_BYTES = 32 * 1024 * 1024;

/** Workers for an input of `totalBytes` (undefined: standard input) when the run does not say. */
export function defaultWorkers(totalBytes: number | undefined, compressed: boolean): number {
  const small = totalBytes !== undefined && !compressed && totalBytes < INLINE_BELOW_BYTES;
  return small ? 0 : availableParallelism();
}

const WORKER_URL = new URL('./worker.js', import.meta.url);

/**
 * A worker's young generation: 16 MiB instead of V8's default for this machine (the same figures
 * as 32). Paired runs, two workers: telemetry 229–243 MiB peak RSS against 259–266 at 2.79–2.90 s
 * against 2.76–2.93 s; payments 1M 348–357 MiB against 362–401 at 9.05–9.76 s either way.
 * (24 MiB measured between the two; 12 and 6 no lower and slower.) Chunks are small enough
 * (DEFAULT_CHUNK_BYTES) that a smaller nursery does not promote more.
 */
const YOUNG_GENERATION_MB = 16;

function startWorker(): Worker {
  return new Worker(WORKER_URL, { resourceLimits: { maxYoungGenerationSizeMb: YOUNG_GENERATION_MB } });
}

interface Started {
  worker: Worker;
  /** It raised an error or exited before the engine took it. */
  broken: boolean;
}

const started: Started[] = [];

/**
 * Starts the workers a run of `input` will use by default (or `workers` of them), by
 * {@link defaultWorkers}. A guess, as gzip is not known yet: a small gzip file also gets workers,
 * which the engine then starts itself. They do not keep the process alive until the
 * engine takes them; those it does not take are stopped by {@link stopUnusedWorkers}.
 */
export function prestartWorkers(input: string | undefined, workers?: number): void {
  let n = workers;
  if (n === undefined) {
    if (input === undefined) return;
    let size: number | undefined;
    try {
      size = input === '-' ? undefined : statSync(input).size;
    } catch {
      // The engine reports a missing or unreadable input; nothing to start.
      return;
    }
    n = defaultWorkers(size, false);
  }
  for (let i = 0; i < n; i++) {
    const entry: Started = { worker: startWorker(), broken: false };
    const broken = (): void => void (entry.broken = true);
    entry.worker.on('error', broken).on('exit', broken).unref();
    started.push(entry);
  }
}

/**
 * A started worker if there is one (kept alive from now on), or a new one. One that failed while
 * waiting is replaced by a new one, which fails the same way where the engine reports it.
 */
export function takeWorker(): Worker {
  const entry = started.shift();
  if (!entry) return startWorker();
  entry.worker.removeAllListeners('error').removeAllListeners('exit');
  if (entry.broken) {
    void entry.worker.terminate();
    return startWorker();
  }
  entry.worker.ref();
  return entry.worker;
}

export async function stopUnusedWorkers(): Promise<void> {
  const unused = started.splice(0);
  await Promise.all(unused.map((e) => e.worker.terminate()));
}
