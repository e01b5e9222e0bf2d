/**
 * Messages between the HTTP thread and the pipeline thread of the embedded runtime. The HTTP thread
 * only calls; the pipeline thread answers every call once (a value or an error) and reports changes
 * of its state on its own. Everything here is structured-cloneable.
 */
import type { SerializedError } from '../core/protocol.ts';
import type { Rec } from '../core/types.ts';
import type { ServiceConfig } from '../service/config.ts';
import type { DeadLetterQuery, IngestMeta, ReplayFilter, WindowQuery } from '../service/api.ts';

/** The service config as the pipeline thread gets it: no API keys, which it never needs. */
export type RuntimeConfig = Omit<ServiceConfig, 'tenants' | 'demoKey'> & {
  tenants: (Omit<ServiceConfig['tenants'][number], 'keyHashes'> & { keyHashes: [] })[];
};

export function runtimeConfig(config: ServiceConfig): RuntimeConfig {
  const { demoKey: _demoKey, ...rest } = config;
  return { ...rest, tenants: config.tenants.map((t) => ({ ...t, keyHashes: [] })) };
}

/** A decoded request body; `raw` is omitted when it is the body itself (not gzip). */
export interface WireBody {
  raw?: Uint8Array;
  gzip: boolean;
  body: Uint8Array;
  bounds: Int32Array | null;
}

/** The calls, by name: arguments and the value answered. */
export interface Calls {
  ingest: { args: [pipeline: string, body: WireBody, meta: IngestMeta]; value: object };
  windows: { args: [pipeline: string, q: WindowQuery]; value: unknown };
  deadLetters: { args: [pipeline: string, q: DeadLetterQuery]; value: unknown };
  replay: {
    args: [pipeline: string, filter: ReplayFilter, meta: IngestMeta];
    value: { answer: object; skipped: { id: number; reason: string }[] };
  };
  reload: { args: [config: RuntimeConfig]; value: { replaced: string[]; retired: string[] } };
  checkpoint: { args: []; value: void };
  /** The steps of a pipeline whose records `sluice tap` watches; [] for none. */
  tap: { args: [pipeline: string, steps: string[]]; value: void };
  metrics: { args: []; value: object[] };
  shutdown: { args: []; value: void };
}

export type CallName = keyof Calls;

export interface Call {
  id: number;
  name: CallName;
  args: unknown[];
}

export type Answer =
  { id: number; value: unknown; error?: undefined } | { id: number; error: SerializedError };

/**
 * An ingest or replay call the pipeline thread has done its own work for (what is left is the
 * commit), and the ms that work took: the HTTP thread's lanes send more work on this, without
 * waiting for the commit, and estimate costs by it (lanes.ts).
 */
export interface Processed {
  id: number;
  ms: number;
}

/**
 * Calls and answers travel in batches, one message per turn of the sender's event loop: a message
 * costs ~10 µs on each side whatever it carries (measured at 8k single-event requests/s, one
 * message per call: 1.3 s of postMessage per 110k requests on the HTTP thread, 1.1 s on the
 * pipeline thread), so one per request was the biggest cost after HTTP itself.
 */
export type ToRuntime = { t: 'calls'; calls: Call[] };

export type RuntimeState = 'ready' | 'recovering';

export type FromRuntime =
  | { t: 'started' }
  | { t: 'start-failed'; error: SerializedError }
  | { t: 'answers'; answers: Answer[]; processed: Processed[] }
  | { t: 'state'; state: RuntimeState }
  /** Copies of records leaving tapped steps of a pipeline, per step (`sluice tap`). */
  | { t: 'tap'; pipeline: string; taps: Record<string, Rec[]> }
  /** The thread cannot go on (its state could not be rebuilt): the service must stop. */
  | { t: 'fatal'; error: SerializedError };

/**
 * Which of the pipeline threads this is: thread `index` of `count` takes log positions `seq` with
 * `seq % count === index`, so threads writing one store never take the same one; thread 0 holds
 * the store's lock for them all (store-lock.ts).
 */
export interface Shard {
  index: number;
  count: number;
  /** With several threads: whose turn it is to write (store-writer.ts), in shared memory. */
  turns?: Int32Array;
}

export interface RuntimeWorkerData {
  config: RuntimeConfig;
  logLevel: string;
  shard: Shard;
}
