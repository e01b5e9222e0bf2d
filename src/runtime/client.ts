/**
 * The HTTP thread's side of the embedded runtime: starts the pipeline thread and calls it. Calls
 * made in one turn of the event loop go as one message (protocol.ts says why), in the order they
 * were made, and the pipeline thread works them in that order. Ingest and replay calls first wait
 * in their tenant's lane until the pipeline thread has room for them (lanes.ts).
 */
import type { Rec } from '../core/types.ts';
import { Worker } from 'node:worker_threads';
import { deserializeError } from '../core/protocol.ts';
import { SluiceError } from '../errors.ts';
import { Lanes } from './lanes.ts';
import {
  type Answer,
  type Call,
  type CallName,
  type Calls,
  type FromRuntime,
  type Processed,
  type RuntimeConfig,
  type RuntimeState,
  type RuntimeWorkerData,
  type Shard,
  type ToRuntime,
  type WireBody,
} from './protocol.ts';

export interface ClientEvents {
  state(state: RuntimeState): void;
  /** The pipeline thread cannot go on, or died. */
  fatal(err: SluiceError): void;
  /** Copies of records leaving tapped steps (`sluice tap`). */
  tapped?(pipeline: string, taps: Record<string, Rec[]>): void;
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: unknown): void;
  /** For a call that came through a lane: the lane and the cost it was dispatched at. */
  lane?: string;
  estimate?: number;
}

/** Calls that wait in their tenant's lane: they are the work requests bring. */
const LANED: ReadonlySet<CallName> = new Set(['ingest', 'replay']);

export class RuntimeClient {
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending>();
  readonly #lanes = new Lanes<Call>();
  /** A shutdown waits until every laned call has gone: it must come after them. */
  #shutdown: Call | undefined;
  #nextId = 1;
  #stopped = false;
  /** `stop` has begun: the thread's exit is expected from now on. */
  #stopping = false;
  /** Calls not sent yet, the buffers they move to the pipeline thread, and the bodies to pack. */
  #outbox: Call[] = [];
  #transfer: ArrayBuffer[] = [];
  #small: { wire: WireBody; part: 'raw' | 'body' }[] = [];
  #smallBytes = 0;

  private constructor(worker: Worker) {
    this.#worker = worker;
  }

  /**
   * Starts a pipeline thread for the tenants in `config` (pool.ts chooses them); resolves once its
   * pipelines are restored and it takes calls.
   */
  static start(
    config: RuntimeConfig,
    logLevel: string,
    events: ClientEvents,
    shard: Shard = { index: 0, count: 1 },
  ): Promise<RuntimeClient> {
    const worker = new Worker(new URL('./pipeline-thread.js', import.meta.url), {
      workerData: { config, logLevel, shard } satisfies RuntimeWorkerData,
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
          case 'tap':
            events.tapped?.(m.pipeline, m.taps);
            return;
          case 'answers':
            for (const p of m.processed) client.#processed(p);
            for (const a of m.answers) client.#settle(a);
        }
      });
      const died = (message: string): void => {
        const err = new SluiceError('SLUICE_ERR_INTERNAL', message);
        client.#failAll(err);
        if (!started) reject(err);
        // Once asked to shut down the thread ends by itself, and its exit may come before `stop`
        // resumes after the answer (seen on Node 22: a graceful stop exited 1); a failure meanwhile
        // still rejects the shutdown call, which `stop` reports.
        else if (!client.#stopping) events.fatal(err);
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
    const call: Call = { id, name, args };
    if (LANED.has(name)) {
      this.#lanes.push(laneOf(args[0] as string), call);
      this.#pump();
    } else if (name === 'shutdown' && this.#lanes.waiting > 0) this.#shutdown = call;
    else this.#send(call);
    return done;
  }

  /**
   * How long a request of `tenant` waits for the pipeline thread, in ms: as long as its oldest
   * waiting one has waited, or as a new one would wait behind what is queued, whichever is more;
   * and whether other tenants are using it meanwhile (then the wait is this tenant's share running
   * out, not the service's capacity).
   */
  queueOf(tenant: string): { waitMs: number; shared: boolean } {
    return {
      waitMs: Math.max(this.#lanes.waitOf(tenant), this.#lanes.expectedWaitOf(tenant)),
      shared: this.#lanes.othersBusy(tenant),
    };
  }

  /** Sends the laned calls the window has room for; the held shutdown once none waits. */
  #pump(): void {
    this.#lanes.dispatch((call, lane, estimate) => {
      const p = this.#pending.get(call.id);
      if (p) {
        p.lane = lane;
        p.estimate = estimate;
      }
      this.#send(call);
    });
    if (this.#shutdown && this.#lanes.waiting === 0) {
      this.#send(this.#shutdown);
      this.#shutdown = undefined;
    }
  }

  #send(call: Call): void {
    if (this.#outbox.length === 0) setImmediate(this.#flush);
    this.#outbox.push(call);
    if (call.name === 'ingest') this.#move((call.args as Calls['ingest']['args'])[1]);
  }

  /**
   * Ingest bodies are moved, not copied, to the pipeline thread: the HTTP thread no longer reads them
   * after. Moving an ArrayBuffer costs ~2.8 µs (measured, 8 bodies a message: 3.6 µs a request moved
   * one by one, 1.5 µs copied into one buffer moved once), so small bodies are packed into one
   * buffer per message; a large one, already in a buffer of its own, is moved as it is.
   */
  #move(wire: WireBody): void {
    for (const part of ['raw', 'body'] as const) {
      const bytes = wire[part];
      if (!bytes) continue;
      if (bytes.byteLength < PACK_BELOW) {
        this.#small.push({ wire, part });
        this.#smallBytes += bytes.byteLength;
      } else {
        const moved = own(bytes);
        wire[part] = moved;
        if (!this.#transfer.includes(moved.buffer as ArrayBuffer))
          this.#transfer.push(moved.buffer as ArrayBuffer);
      }
    }
  }

  /** Copies the small bodies of this message into one buffer, each part a view of it. */
  #pack(): void {
    if (this.#small.length === 0) return;
    const packed = new Uint8Array(this.#smallBytes);
    let at = 0;
    for (const { wire, part } of this.#small) {
      const bytes = wire[part]!;
      packed.set(bytes, at);
      wire[part] = packed.subarray(at, at + bytes.byteLength);
      at += bytes.byteLength;
    }
    this.#transfer.push(packed.buffer);
    this.#small = [];
    this.#smallBytes = 0;
  }

  /** Sends the calls of this turn, after every request read in it (setImmediate runs after I/O). */
  readonly #flush = (): void => {
    this.#pack();
    const calls = this.#outbox;
    const transfer = this.#transfer;
    this.#outbox = [];
    this.#transfer = [];
    this.#worker.postMessage({ t: 'calls', calls } satisfies ToRuntime, transfer);
  };

  /** A laned call's work is done in the pipeline thread: its place in the window is free. */
  #processed(done: Processed): void {
    const p = this.#pending.get(done.id);
    if (!p || p.lane === undefined) return;
    this.#lanes.done(p.lane, p.estimate!, done.ms);
    p.lane = undefined;
    this.#pump();
  }

  #settle(a: Answer): void {
    const p = this.#pending.get(a.id);
    if (!p) return;
    this.#pending.delete(a.id);
    // Failed before it was processed (its thread would have said): its place is free too.
    if (p.lane !== undefined) {
      this.#lanes.done(p.lane, p.estimate!, undefined);
      this.#pump();
    }
    if (a.error === undefined) p.resolve(a.value);
    else p.reject(deserializeError(a.error));
  }

  #failAll(err: SluiceError): void {
    this.#lanes.drain();
    this.#shutdown = undefined;
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
  }

  /** Checkpoints, delivers and closes the store in the pipeline thread, then ends it. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopping = true;
    try {
      await this.call('shutdown');
    } finally {
      this.#stopped = true;
      await this.#worker.terminate();
    }
  }
}

/** A pipeline key is `<tenant>/<pipeline>`; tenants are lanes. */
const laneOf = (pipelineKey: string): string => pipelineKey.slice(0, pipelineKey.indexOf('/'));

/** Bodies smaller than this are copied into the message's packed buffer. */
const PACK_BELOW = 16 * 1024;

/**
 * Bytes in an ArrayBuffer of their own, so that they can be moved rather than copied (structured
 * clone would copy the whole 8 KiB pool slab of a small Buffer).
 */
function own(bytes: Uint8Array): Uint8Array {
  return bytes.byteOffset === 0 &&
    bytes.buffer.byteLength === bytes.byteLength &&
    bytes.buffer instanceof ArrayBuffer
    ? bytes
    : new Uint8Array(bytes);
}
