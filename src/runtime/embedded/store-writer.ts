/**
 * The store's writer: holds the store's lock and applies group commits, one transaction each,
 * returning only once SQLite has made it durable. It runs in the thread that owns the committer
 * (committer.ts says why not in a thread of its own).
 */
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { lockStore } from './store-lock.ts';
import { openDatabase, type CommitOps } from './store.ts';

/** Enough to outpace the log at any rate: group commits come hundreds of times a second under load. */
const TRIM_SLICE = 256;

export interface StoreWriter {
  /** One transaction, durable when it returns; throws when SQLite could not commit. */
  apply(ops: CommitOps): void;
  close(): Promise<void>;
}

/** How long a writer waits for its turn before its commit fails (as SQLite's busy_timeout). */
const TURN_WAIT_MS = 5000;

/**
 * Takes the store's write turn among the threads sharing `turns` (one Int32: 1 while a thread
 * writes), waiting in Atomics.wait; the thread that ends its turn wakes a waiter at once. SQLite's
 * own wait for its write lock polls with growing sleeps (1, 2, 5, 10, 15, 20 ms ...), so a tenant's
 * thread committing now and then could keep missing the gaps between another thread's
 * back-to-back commits: 20-50 ms for a commit of one event. Woken when the turn ends, it waits for
 * the transaction in progress; the other thread goes back to its calls before its next commit.
 * A plain lock, not a ticket lock: a waiter that gives up after TURN_WAIT_MS leaves nothing held.
 */
function takeTurn(turns: Int32Array): void {
  const until = performance.now() + TURN_WAIT_MS;
  while (Atomics.compareExchange(turns, 0, 0, 1) !== 0) {
    const left = until - performance.now();
    if (left <= 0) throw new Error(`another pipeline thread held the store for over ${TURN_WAIT_MS} ms`);
    Atomics.wait(turns, 0, 1, left);
  }
}

function endTurn(turns: Int32Array): void {
  Atomics.store(turns, 0, 0);
  Atomics.notify(turns, 0, 1);
}

/**
 * Opens the store's writer. Several pipeline threads each open one (`locked` in the first only,
 * which takes the store's lock and runs the WAL thread for all) and take turns through `turns`, in
 * shared memory (pool.ts makes it); each transaction also begins IMMEDIATE, so
 * that SQLite never has to upgrade a reader to a writer mid-transaction.
 */
export function openStoreWriter(path: string, locked = true, turns?: Int32Array): StoreWriter {
  // Before anything is written: a second service on this store stops here (SLUICE_ERR_STORE_LOCKED).
  const lock = locked ? lockStore(Database, path) : { path, release: () => {} };
  let db: Database.Database;
  try {
    db = openDatabase(Database, path, false);
  } catch (err) {
    lock.release();
    throw err;
  }
  // The copying is wal-thread.ts's; this commit-time threshold only bounds the WAL file (16 MiB).
  db.pragma('wal_autocheckpoint = 4096');
  const walThread = locked
    ? new Worker(new URL('./wal-thread.js', import.meta.url), { workerData: { path } })
    : undefined;
  walThread?.unref();
  // The WAL thread only saves commits some work: if it fails, SQLite's own auto-checkpoint above
  // still keeps the WAL bounded, so its failure must not take the writer down.
  let walThreadGone = walThread === undefined;
  walThread?.on('error', () => {});
  walThread?.on('exit', () => (walThreadGone = true));

  const st = {
    log: db.prepare(
      'INSERT INTO log (seq, pipeline, received_ms, gzip, body, bounds) VALUES (?, ?, ?, ?, ?, ?)',
    ),
    dead: db.prepare(
      'INSERT INTO dead_letters (pipeline, received_ms, reason, request_id, letter) VALUES (?, ?, ?, ?, ?)',
    ),
    window: db.prepare(
      `INSERT INTO windows (pipeline, output, start_ms, key, row, closed_ms) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (pipeline, output, start_ms, key) DO UPDATE SET row = excluded.row, closed_ms = excluded.closed_ms`,
    ),
    outbox: db.prepare('INSERT INTO outbox (pipeline, output, received_ms, records) VALUES (?, ?, ?, ?)'),
    checkpoint: db.prepare(
      `INSERT INTO checkpoints (pipeline, seq, state, at_ms) VALUES (?, ?, ?, ?)
       ON CONFLICT (pipeline) DO UPDATE SET seq = excluded.seq, state = excluded.state, at_ms = excluded.at_ms`,
    ),
    trimLog: db.prepare(
      'DELETE FROM log WHERE seq IN (SELECT seq FROM log WHERE pipeline = ? AND seq <= ? ORDER BY seq LIMIT ?)',
    ),
    deleteDead: db.prepare('DELETE FROM dead_letters WHERE pipeline = ? AND id = ?'),
    cursor: db.prepare(
      `INSERT INTO sink_cursors (pipeline, sink, seq, position) VALUES (?, ?, ?, ?)
       ON CONFLICT (pipeline, sink) DO UPDATE SET seq = excluded.seq, position = excluded.position`,
    ),
    trimOutbox: db.prepare('DELETE FROM outbox WHERE pipeline = ? AND output = ? AND seq <= ?'),
    request: db.prepare(
      'INSERT OR IGNORE INTO requests (pipeline, key, answer, received_ms) VALUES (?, ?, ?, ?)',
    ),
    trimRequests: db.prepare('DELETE FROM requests WHERE received_ms < ?'),
    trimWindows: db.prepare('DELETE FROM windows WHERE closed_ms < ?'),
    trimDead: db.prepare('DELETE FROM dead_letters WHERE received_ms < ?'),
  };

  /**
   * Log rows that a committed checkpoint covers, per pipeline: everything up to `seq` may go. They
   * are deleted a slice per commit rather than all in the checkpoint's own transaction: deleting
   * 10 s of log at 3,500 requests/s (35k rows) at once took 18–29 ms, and every request behind that
   * commit waited for it. Rows left over at a crash are harmless: recovery reads only the log after
   * the checkpoint, and the targets are read again from the checkpoints at start.
   */
  const toTrim = new Map<string, number>();
  for (const r of db.prepare('SELECT pipeline, seq FROM checkpoints').all() as {
    pipeline: string;
    seq: number;
  }[])
    toTrim.set(r.pipeline, r.seq);

  const transaction = db.transaction((ops: CommitOps) => {
    for (const r of ops.log) st.log.run(r.seq, r.pipeline, r.receivedMs, r.gzip ? 1 : 0, r.body, r.bounds);
    for (const r of ops.dead) st.dead.run(r.pipeline, r.receivedMs, r.reason, r.requestId, r.letter);
    for (const r of ops.windows) st.window.run(r.pipeline, r.output, r.startMs, r.key, r.row, r.closedMs);
    for (const r of ops.outbox) st.outbox.run(r.pipeline, r.output, r.receivedMs, r.records);
    for (const r of ops.checkpoints) st.checkpoint.run(r.pipeline, r.seq, r.state, r.atMs);
    for (const [pipeline, seq] of toTrim)
      if (st.trimLog.run(pipeline, seq, TRIM_SLICE).changes < TRIM_SLICE) toTrim.delete(pipeline);
    for (const r of ops.deleteDead) for (const id of r.ids) st.deleteDead.run(r.pipeline, id);
    for (const r of ops.cursors) st.cursor.run(r.pipeline, r.sink, r.seq, r.position);
    for (const r of ops.trimOutbox) st.trimOutbox.run(r.pipeline, r.output, r.seq);
    for (const r of ops.requests) st.request.run(r.pipeline, r.key, r.answer, r.receivedMs);
    if (ops.trimRequestsBefore !== undefined) st.trimRequests.run(ops.trimRequestsBefore);
    if (ops.trimStoreBefore !== undefined) {
      st.trimWindows.run(ops.trimStoreBefore);
      st.trimDead.run(ops.trimStoreBefore);
    }
  });

  return {
    apply(ops) {
      if (!turns) transaction.immediate(ops);
      else {
        takeTurn(turns);
        try {
          transaction.immediate(ops);
        } finally {
          endTurn(turns);
        }
      }
      // Only now is the checkpoint durable, and the log it covers free to go.
      for (const r of ops.trimLog) toTrim.set(r.pipeline, Math.max(r.seq, toTrim.get(r.pipeline) ?? 0));
    },
    async close() {
      if (walThread && !walThreadGone) {
        const closed = new Promise<void>((resolve) => {
          walThread.once('message', () => resolve());
          walThread.once('exit', () => resolve());
        });
        walThread.postMessage({ t: 'close' });
        await closed;
      }
      db.close();
      lock.release();
    },
  };
}
