/**
 * The HTTP thread's side of the embedded runtime: starts the pipeline thread and calls it. A call
 * is one message each way; requests are sent in the order they were read, and the pipeline thread
 * works them in that order.
 */
import { Worker } from 'node:worker_threads';
import { deserializeError } from '../core/protocol.ts';
import { SluiceError } from '../errors.ts';
import type { ServiceConfig } from '../service/config.ts';
import {
  runtimeConfig,
  type CallName,
  type Calls,
  type FromRuntime,
  type RuntimeState,
  type RuntimeWorkerData,
  type ToRuntime,
} from './protocol.ts';

export interface ClientEvents {
  state(state: RuntimeState): void;
  /** The pipeline thread cannot go on, or died. */
  fatal(err: SluiceError): void;
}

export class RuntimeClient {
  readonly #worker: Worker;
  readonly #pending = new Map<number, { resolve(v: unknown): void; reject(e: unknown): void }>();
  #nextId = 1;
  #stopped = false;

  private constructor(worker: Worker) {
    this.#worker = worker;
  }

  /** Starts the pipeline thread; resolves once its pipelines are restored and it takes calls. */
  static start(config: ServiceConfig, logLevel: string, events: ClientEvents): Promise<RuntimeClient> {
    const worker = new Worker(new URL('./pipeline-thread.js', import.meta.url), {
      workerData: { config: runtimeConfig(config), logLevel } satisfies RuntimeWorkerData,
    });
    const client = new RuntimeClient(worker);
    return new Promise((resolve, reject) => {
      let started = false;
      worker.on('message', (m: FromRuntime) => {
        switch (m.t) {
          case 'started':
            started = true;
            resolve(client);
            return;
          case 'start-failed':
            reject(deserializeError(m.error));
            return;
          case 'state':
            events.state(m.state);
            return;
          case 'fatal':
            events.fatal(deserializeError(m.error));
            return;
          default:
            client.#settle(m);
        }
      });
      const died = (message: string): void => {
        const err = new SluiceError('SLUICE_ERR_INTERNAL', message);
        client.#failAll(err);
        if (!started) reject(err);
        else if (!client.#stopped) events.fatal(err);
      };
      worker.on('error', (err) => died(`the pipeline thread failed: ${err.message}`));
      worker.on('exit', (code) => died(`the pipeline thread exited (code ${code})`));
    });
  }

  call<N extends CallName>(name: N, ...args: Calls[N]['args']): Promise<Calls[N]['value']> {
    if (this.#stopped)
      return Promise.reject(new SluiceError('SLUICE_ERR_SHUTTING_DOWN', 'the service is shutting down'));
    const id = this.#nextId++;
    const done = new Promise<Calls[N]['value']>((resolve, reject) =>
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject }),
    );
    this.#worker.postMessage({ t: 'call', id, name, args } satisfies ToRuntime, transferables(name, args));
    return done;
  }

  #settle(m: Extract<FromRuntime, { t: 'value' | 'error' }>): void {
    const p = this.#pending.get(m.id);
    if (!p) return;
    this.#pending.delete(m.id);
    if (m.t === 'value') p.resolve(m.value);
    else p.reject(deserializeError(m.error));
  }

  #failAll(err: SluiceError): void {
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }

  /** Checkpoints, delivers and closes the store in the pipeline thread, then ends it. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    try {
      await this.call('shutdown');
    } finally {
      this.#stopped = true;
      await this.#worker.terminate();
    }
  }
}

/**
 * A body as the pipeline thread should get it: in an ArrayBuffer of its own, so that it can be moved
 * rather than copied (structured clone would copy the whole 8 KiB pool slab of a small Buffer).
 */
export function own(buf: Buffer): Uint8Array {
  return buf.byteOffset === 0 && buf.buffer.byteLength === buf.byteLength ? buf : new Uint8Array(buf);
}

/** Ingest bodies are moved to the pipeline thread: the HTTP thread no longer reads them after. */
function transferables(name: CallName, args: unknown[]): ArrayBuffer[] {
  if (name !== 'ingest') return [];
  const wire = args[1] as Calls['ingest']['args'][1];
  const list: ArrayBuffer[] = [];
  for (const part of [wire.raw, wire.body])
    if (part && part.buffer instanceof ArrayBuffer && !list.includes(part.buffer)) list.push(part.buffer);
  return list;
}
