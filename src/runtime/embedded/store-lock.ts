/**
 * One service per store. Two writers on one SQLite file would both take the same log positions
 * (the second one's commits fail on `log.seq`), so the store's writer holds a lock on
 * `<store>.lock` for as long as it runs, and a second one refuses to start, naming the first.
 *
 * The lock is SQLite's own file lock on that small database (fcntl on POSIX, LockFileEx on
 * Windows), held by a write transaction that is never committed: the operating system drops it
 * when the process ends, however it ends (a SIGKILL leaves nothing to clean up), and SQLite also
 * refuses a second holder within one process. A pid file with a liveness check would mistake a
 * pid reused after a crash (pid 1 in every container) for a live holder. Not the store itself:
 * in WAL mode its locks are shared by the writer and the readers. Like SQLite's, this lock is
 * only as good as the file system's locking: keep the store on a local disk.
 *
 * The holder's pid, host and start time are committed in the lock file before the lock is taken,
 * so a second instance can name it (readers are not blocked by the held write transaction).
 */
import { hostname } from 'node:os';
import type Database from 'better-sqlite3';
import { SluiceError } from '../../errors.ts';
import { makeParentDirectory } from '../../core/paths.ts';

export interface StoreLock {
  readonly path: string;
  /** Gives the lock up (closing the store's writer does, and so does the end of the process). */
  release(): void;
}

interface Holder {
  pid: number;
  host: string;
  since: string;
}

/** Long enough for a holder's one commit at start; a held lock never makes anyone wait. */
const COMMIT_WAIT_MS = 2000;

const lockPathOf = (storePath: string): string => `${storePath}.lock`;

/** Takes the store's lock, or throws SLUICE_ERR_STORE_LOCKED naming the process that holds it. */
export function lockStore(Driver: typeof Database, storePath: string): StoreLock {
  const path = lockPathOf(storePath);
  makeParentDirectory(path, 'the store directory');
  const db = new Driver(path, { timeout: 0 });
  try {
    if (!begin(db)) throw locked(db, storePath, path);
    db.exec(
      'CREATE TABLE IF NOT EXISTS holder (pid INTEGER NOT NULL, host TEXT NOT NULL, since TEXT NOT NULL)',
    );
    db.exec('DELETE FROM holder');
    db.prepare('INSERT INTO holder (pid, host, since) VALUES (?, ?, ?)').run(
      process.pid,
      hostname(),
      new Date().toISOString(),
    );
    // Committing needs a moment without readers (a second instance reading who holds the lock).
    db.pragma(`busy_timeout = ${COMMIT_WAIT_MS}`);
    db.exec('COMMIT');
    // Another instance may take the lock between the commit and this: then it is the holder.
    if (!begin(db)) throw locked(db, storePath, path);
  } catch (err) {
    db.close();
    throw err;
  }
  return { path, release: () => db.close() };
}

/** Opens the write transaction that is the lock; false when another connection holds it. */
function begin(db: Database.Database): boolean {
  db.pragma('busy_timeout = 0');
  try {
    db.exec('BEGIN IMMEDIATE');
    return true;
  } catch (err) {
    if ((err as { code?: string }).code === 'SQLITE_BUSY') return false;
    throw err;
  }
}

function locked(db: Database.Database, storePath: string, path: string): SluiceError {
  let holder: Holder | undefined;
  try {
    db.pragma(`busy_timeout = ${COMMIT_WAIT_MS}`);
    holder = db.prepare('SELECT pid, host, since FROM holder').get() as Holder | undefined;
  } catch {
    // A holder that has not committed its row yet (its first start on this store).
  }
  const who = !holder
    ? 'another process'
    : holder.pid === process.pid && holder.host === hostname()
      ? `this process (pid ${holder.pid}: a second service on the same store)`
      : `process ${holder.pid} on ${holder.host}, running since ${holder.since}`;
  return new SluiceError(
    'SLUICE_ERR_STORE_LOCKED',
    `the store ${storePath} is in use by ${who}, which holds ${path}`,
  );
}
