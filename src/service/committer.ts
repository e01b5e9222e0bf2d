/**
 * Group commit. Requests add their writes to the open group; the group goes to the writer thread
 * as one transaction as soon as the previous one is durable, so one fsync covers every request
 * that arrived meanwhile: the slower the disk, the bigger the groups, and no timer adds latency
 * when the service is idle.
 */
import type { EventLoopUtilization } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { SluiceError, type ErrorCode } from '../errors.ts';
import { emptyOps, type CommitOps } from './store.ts';
import type { FromWriter, ToWriter } from './writer-thread.ts';

interface Group {
  id: number;
  ops: CommitOps;
  waiters: { resolve(): void; reject(e: unknown): void }[];
  bytes: number;
}

export interface CommitStats {
  onCommit?(ms: number, requests: number): void;
}

export class Committer {
  readonly #worker: Worker;
  #open: Group;
  #inFlight: Group | undefined;
  #nextId = 1;
  #scheduled = false;
  #closed = false;
  #failed: ((err: SluiceError) => void) | undefined;
  #closedWaiter: (() => void) | undefined;

  private constructor(
    worker: Worker,
    private readonly stats: CommitStats,
  ) {
    this.#worker = worker;
    this.#open = this.#newGroup();
    worker.on('message', (m: FromWriter) => this.#onMessage(m));
    // A second service on this store: the writer's SLUICE_ERR_STORE_LOCKED, with its code.
    worker.on('error', (err) =>
      this.#onWriterDeath(
        err.message,
        (err as { code?: unknown }).code === 'SLUICE_ERR_STORE_LOCKED'
          ? 'SLUICE_ERR_STORE_LOCKED'
          : undefined,
      ),
    );
    worker.on('exit', (code) => {
      if (!this.#closed) this.#onWriterDeath(`the store writer exited (code ${code})`);
    });
  }

  /** Starts the writer thread; resolves once it has opened (and if needed created) the store. */
  static async start(path: string, stats: CommitStats = {}): Promise<Committer> {
    const worker = new Worker(new URL('./writer-thread.js', import.meta.url), { workerData: { path } });
    const committer = new Committer(worker, stats);
    await committer.commit(() => {});
    return committer;
  }

  /** Called with the error when a commit fails; the service then rebuilds state from the store. */
  onFailure(handler: (err: SluiceError) => void): void {
    this.#failed = handler;
  }

  /** The writer thread's event-loop utilization so far (its time in SQLite, fsyncs included). */
  utilization(): EventLoopUtilization {
    return this.#worker.performance.eventLoopUtilization();
  }

  /** Bytes added but not yet durable. */
  get pendingBytes(): number {
    return this.#open.bytes + (this.#inFlight?.bytes ?? 0);
  }

  /** Requests waiting for their group to be durable. */
  get waiting(): number {
    return this.#open.waiters.length + (this.#inFlight?.waiters.length ?? 0);
  }

  /**
   * Adds writes to the open group (synchronously, so the order of calls is the order in the
   * store) and resolves when they are durable.
   */
  commit(add: (ops: CommitOps) => void, bytes = 0): Promise<void> {
    if (this.#closed) return Promise.reject(new SluiceError('SLUICE_ERR_STORE', 'the store is closed'));
    add(this.#open.ops);
    this.#open.bytes += bytes;
    const done = new Promise<void>((resolve, reject) => this.#open.waiters.push({ resolve, reject }));
    this.#schedule();
    return done;
  }

  #newGroup(): Group {
    return { id: this.#nextId++, ops: emptyOps(), waiters: [], bytes: 0 };
  }

  #schedule(): void {
    if (this.#scheduled || this.#inFlight) return;
    this.#scheduled = true;
    // Let every request already read in this turn of the event loop join the group.
    setImmediate(() => {
      this.#scheduled = false;
      this.#send();
    });
  }

  #send(): void {
    if (this.#inFlight || this.#open.waiters.length === 0) return;
    const group = this.#open;
    this.#open = this.#newGroup();
    this.#inFlight = group;
    // Bodies that came from the HTTP thread are moved on, not copied: a 4 MB body copied once more
    // is 4 MB more for the allocator to hold on to (a flood of them grew the RSS by 130–180 MB).
    const moved: ArrayBuffer[] = [];
    for (const r of group.ops.log)
      if (r.movable && r.body.buffer instanceof ArrayBuffer && !moved.includes(r.body.buffer))
        moved.push(r.body.buffer);
    this.#worker.postMessage({ t: 'commit', id: group.id, ops: group.ops } satisfies ToWriter, moved);
  }

  #onMessage(m: FromWriter): void {
    if (m.t === 'closed') {
      this.#closedWaiter?.();
      return;
    }
    const group = this.#inFlight!;
    this.#inFlight = undefined;
    if (m.t === 'committed') {
      this.stats.onCommit?.(m.ms, group.waiters.length);
      for (const w of group.waiters) w.resolve();
      this.#send();
      return;
    }
    const err = new SluiceError('SLUICE_ERR_STORE', `the store could not commit: ${m.message}`);
    // Later groups were built on state that included this one: fail them too.
    const open = this.#open;
    this.#open = this.#newGroup();
    for (const w of [...group.waiters, ...open.waiters]) w.reject(err);
    this.#failed?.(err);
  }

  #onWriterDeath(message: string, code: ErrorCode = 'SLUICE_ERR_STORE'): void {
    if (this.#closed) return;
    this.#closed = true;
    const err = new SluiceError(code, message);
    for (const w of [...(this.#inFlight?.waiters ?? []), ...this.#open.waiters]) w.reject(err);
    this.#inFlight = undefined;
    this.#failed?.(err);
  }

  /** Waits for everything added so far to be durable, then closes the store. */
  async close(): Promise<void> {
    if (this.#closed) return;
    if (this.waiting > 0) await this.commit(() => {}).catch(() => {});
    this.#closed = true;
    const closed = new Promise<void>((resolve) => (this.#closedWaiter = resolve));
    this.#worker.postMessage({ t: 'close' } satisfies ToWriter);
    await closed;
    await this.#worker.terminate();
  }
}
