/**
 * The service's store: one SQLite file in WAL mode. The store writer (store-writer.ts, in the
 * pipeline thread) owns the only write connection, under a lock that keeps a second service off the
 * store (store-lock.ts); queries read through a read-only connection, which WAL lets run beside it.
 *
 * Tables, all keyed by pipeline (`tenant/pipeline`):
 * - `log`: every request body that was processed, in processing order, until a checkpoint covers
 *   it. Restart = restore the checkpoint, then re-run the log after it.
 * - `checkpoints`: the pipeline's state (open windows, dedupe keys, watermark) after log `seq`.
 * - `windows`: rows of closed windows, for queries.
 * - `dead_letters`: every rejected record with its reason and raw text, for queries and replay.
 * - `requests`: the answer given to each request with an Idempotency-Key, so a retry gets the
 *   same answer instead of being processed twice (kept for `idempotency.retention`).
 * - `outbox` and `sink_cursors`: records for the pipeline's sinks and how far each sink got.
 *
 * Ids that cursors point at (`dead_letters.id`, `outbox.seq`) are AUTOINCREMENT: once delivered
 * rows are deleted, a plain rowid would start again below the cursors and rows would be skipped.
 */
import type Database from 'better-sqlite3';
import { makeParentDirectory } from '../../core/paths.ts';

export const STORE_SCHEMA_VERSION = 1;

export const STORE_SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS log (
  seq INTEGER PRIMARY KEY,
  pipeline TEXT NOT NULL,
  received_ms INTEGER NOT NULL,
  gzip INTEGER NOT NULL,
  body BLOB NOT NULL,
  bounds BLOB
);
CREATE INDEX IF NOT EXISTS log_by_pipeline ON log (pipeline, seq);
CREATE TABLE IF NOT EXISTS checkpoints (
  pipeline TEXT PRIMARY KEY,
  seq INTEGER NOT NULL,
  state BLOB NOT NULL,
  at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS windows (
  pipeline TEXT NOT NULL,
  output TEXT NOT NULL,
  start_ms INTEGER NOT NULL,
  key TEXT NOT NULL,
  row TEXT NOT NULL,
  closed_ms INTEGER NOT NULL,
  PRIMARY KEY (pipeline, output, start_ms, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  pipeline TEXT NOT NULL,
  received_ms INTEGER NOT NULL,
  reason TEXT NOT NULL,
  request_id TEXT,
  letter TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_by_pipeline ON dead_letters (pipeline, id);
CREATE TABLE IF NOT EXISTS outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  pipeline TEXT NOT NULL,
  output TEXT NOT NULL,
  received_ms INTEGER NOT NULL,
  records TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_by_output ON outbox (pipeline, output, seq);
CREATE TABLE IF NOT EXISTS requests (
  pipeline TEXT NOT NULL,
  key TEXT NOT NULL,
  answer TEXT NOT NULL,
  received_ms INTEGER NOT NULL,
  PRIMARY KEY (pipeline, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS requests_by_time ON requests (received_ms);
CREATE TABLE IF NOT EXISTS sink_cursors (
  pipeline TEXT NOT NULL,
  sink TEXT NOT NULL,
  seq INTEGER NOT NULL,
  position INTEGER,
  PRIMARY KEY (pipeline, sink)
) WITHOUT ROWID;
`;

export interface LogRow {
  seq: number;
  pipeline: string;
  receivedMs: number;
  gzip: boolean;
  body: Uint8Array;
  /** Record boundaries for JSON bodies (Int32 pairs as bytes); null for NDJSON. */
  bounds: Uint8Array | null;
}

export interface DeadRow {
  pipeline: string;
  receivedMs: number;
  reason: string;
  requestId: string | null;
  letter: string;
}

export interface WindowRow {
  pipeline: string;
  output: string;
  startMs: number;
  key: string;
  row: string;
  closedMs: number;
}

export interface OutboxRow {
  pipeline: string;
  output: string;
  receivedMs: number;
  /** NDJSON. */
  records: string;
}

/** Everything one group commit writes, in one transaction. */
export interface CommitOps {
  log: LogRow[];
  dead: DeadRow[];
  windows: WindowRow[];
  outbox: OutboxRow[];
  checkpoints: { pipeline: string; seq: number; state: Uint8Array; atMs: number }[];
  /** Log rows up to `seq` are covered by a checkpoint written in the same transaction. */
  trimLog: { pipeline: string; seq: number }[];
  deleteDead: { pipeline: string; ids: number[] }[];
  cursors: { pipeline: string; sink: string; seq: number; position: number | null }[];
  trimOutbox: { pipeline: string; output: string; seq: number }[];
  requests: { pipeline: string; key: string; answer: string; receivedMs: number }[];
  /** Forget idempotency keys received before this time. */
  trimRequestsBefore: number | undefined;
  /** `store.retention`: delete windows closed and dead letters received before this time. */
  trimStoreBefore: number | undefined;
}

export function emptyOps(): CommitOps {
  return {
    log: [],
    dead: [],
    windows: [],
    outbox: [],
    checkpoints: [],
    trimLog: [],
    deleteDead: [],
    cursors: [],
    trimOutbox: [],
    requests: [],
    trimRequestsBefore: undefined,
    trimStoreBefore: undefined,
  };
}

export function openDatabase(Driver: typeof Database, path: string, readonly: boolean): Database.Database {
  if (!readonly) makeParentDirectory(path, 'the store directory');
  const db = new Driver(path, { readonly });
  if (!readonly) {
    db.pragma('journal_mode = WAL');
    // FULL: a commit is fsynced before it returns, so a 202 survives power loss, not only a crash.
    db.pragma('synchronous = FULL');
    db.exec(STORE_SCHEMA);
    const row = db.prepare('SELECT value FROM meta WHERE key = ?').get('schema_version') as
      { value: string } | undefined;
    if (!row) db.prepare('INSERT INTO meta (key, value) VALUES (?, ?)').run('schema_version', '1');
    else if (Number(row.value) > STORE_SCHEMA_VERSION)
      throw new Error(`the store was written by a newer sluice (schema version ${row.value})`);
  }
  db.pragma('busy_timeout = 5000');
  return db;
}
