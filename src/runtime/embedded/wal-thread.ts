/**
 * Copies the store's write-ahead log back into the database file (SQLite's WAL checkpoint), in a
 * thread of its own, started by the store writer (store-writer.ts).
 *
 * Left to SQLite, the checkpoint runs inside whichever commit pushes the WAL past its threshold, and
 * every request waiting on that commit waits for the copy and the database file's fsync too: 8–15 ms
 * every couple of seconds at 3,500 requests/s. A PASSIVE checkpoint from another connection copies
 * beside the writer without blocking it. The writer keeps a (raised) auto-checkpoint of its own: it
 * then finds nearly everything already copied, and completing it is what lets SQLite start the WAL
 * file again from the beginning, so the file stays bounded under continuous writes.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

/** Often enough that the writer's own checkpoint finds little left to copy. */
const EVERY_MS = 100;

const db = new Database((workerData as { path: string }).path);
// PASSIVE never waits for locks; a busy database simply gets copied on the next round.
db.pragma('busy_timeout = 0');
const timer = setInterval(() => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
  } catch {
    // SQLITE_BUSY or a transient I/O error: the writer's own checkpoint is the fallback.
  }
}, EVERY_MS);

parentPort!.on('message', (msg: { t: 'close' }) => {
  if (msg.t !== 'close') return;
  clearInterval(timer);
  db.close();
  parentPort!.postMessage({ t: 'closed' });
});
