/**
 * The cluster runtime's PostgreSQL schema, as numbered migrations applied at start.
 *
 * Every instance runs `migrate` when it starts; a transaction-scoped advisory lock makes instances
 * that start together apply each migration once, one after the other. A database migrated by a newer
 * sluice is refused rather than written with assumptions that no longer hold.
 *
 * Tables, all keyed by pipeline (`tenant/pipeline`):
 * - `sluice_pipelines`: who owns each pipeline (`epoch`, bumped by each new owner and checked by
 *   every commit) and how far into its stream the committed results go (`position`).
 * - `sluice_checkpoints`: the pipeline's state (open windows, dedupe keys, watermark) after stream
 *   sequence `seq`.
 * - `sluice_windows`: window rows, closed or still open, for queries; a hypertable on `window_start`
 *   when TimescaleDB is installed.
 * - `sluice_dead_letters`: every rejected record with its reason, for queries and replay.
 * - `sluice_requests`: requests with an Idempotency-Key the owner processed (v4 adds their stream
 *   sequence), so a retry JetStream's duplicate window no longer catches is dropped.
 * - `sluice_outbox` and `sluice_sink_cursors`: records for sinks outside PostgreSQL, and how far each
 *   sink got.
 * - `sluice_instances`: the instances alive (a heartbeat), so each takes its share of pipelines.
 */
import type { Sql, TransactionSql } from 'postgres';
import { SluiceError } from '../errors.ts';

export interface Migration {
  version: number;
  name: string;
  up(tx: TransactionSql): Promise<void>;
}

/** Any constant unique to sluice: the key of the advisory lock that serializes migrations. */
const MIGRATION_LOCK = 0x51_71_ce_01;

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'tables',
    async up(tx) {
      await tx.unsafe(`
        CREATE TABLE sluice_pipelines (
          pipeline text PRIMARY KEY,
          epoch bigint NOT NULL DEFAULT 0,
          owner text,
          position bigint NOT NULL DEFAULT 0,
          updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE sluice_checkpoints (
          pipeline text PRIMARY KEY,
          seq bigint NOT NULL,
          state bytea NOT NULL,
          at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE sluice_windows (
          pipeline text NOT NULL,
          output text NOT NULL,
          window_start timestamptz NOT NULL,
          key text NOT NULL,
          row jsonb NOT NULL,
          closed boolean NOT NULL,
          updated_at timestamptz NOT NULL DEFAULT now(),
          PRIMARY KEY (pipeline, output, window_start, key)
        );
        CREATE TABLE sluice_dead_letters (
          id bigserial PRIMARY KEY,
          pipeline text NOT NULL,
          received_at timestamptz NOT NULL,
          reason text NOT NULL,
          request_id text,
          letter jsonb NOT NULL
        );
        CREATE INDEX sluice_dead_letters_by_pipeline ON sluice_dead_letters (pipeline, id);
        CREATE INDEX sluice_dead_letters_by_time ON sluice_dead_letters (pipeline, received_at);
        CREATE TABLE sluice_requests (
          pipeline text NOT NULL,
          key text NOT NULL,
          answer jsonb NOT NULL,
          received_at timestamptz NOT NULL,
          PRIMARY KEY (pipeline, key)
        );
        CREATE INDEX sluice_requests_by_time ON sluice_requests (received_at);
        CREATE TABLE sluice_outbox (
          seq bigserial PRIMARY KEY,
          pipeline text NOT NULL,
          output text NOT NULL,
          records text NOT NULL
        );
        CREATE INDEX sluice_outbox_by_output ON sluice_outbox (pipeline, output, seq);
        CREATE TABLE sluice_sink_cursors (
          pipeline text NOT NULL,
          sink text NOT NULL,
          seq bigint NOT NULL,
          position bigint,
          PRIMARY KEY (pipeline, sink)
        );
      `);
    },
  },
  {
    version: 2,
    name: 'windows as a TimescaleDB hypertable, when TimescaleDB is installed',
    async up(tx) {
      const [ts] = await tx`SELECT 1 AS present FROM pg_extension WHERE extname = 'timescaledb'`;
      if (!ts) return;
      // The primary key already includes window_start, as a hypertable's unique keys must.
      await tx`SELECT create_hypertable('sluice_windows', 'window_start', if_not_exists => TRUE, migrate_data => TRUE)`;
    },
  },
  {
    version: 3,
    name: 'live instances, to share pipelines among them',
    async up(tx) {
      await tx`
        CREATE TABLE sluice_instances (
          instance text PRIMARY KEY,
          seen_at timestamptz NOT NULL DEFAULT now()
        )`;
    },
  },
  {
    version: 4,
    name: 'the stream sequence of each request with an Idempotency-Key',
    async up(tx) {
      // Nothing wrote this table before: the default never decides anything.
      await tx`ALTER TABLE sluice_requests ADD COLUMN seq bigint NOT NULL DEFAULT 0`;
    },
  },
];

export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

/** The version of the database's sluice schema: 0 before the first migration. */
export async function schemaVersion(sql: Sql | TransactionSql): Promise<number> {
  const [table] = await sql<{ t: string | null }[]>`SELECT to_regclass('sluice_migrations')::text AS t`;
  if (!table?.t) return 0;
  const [row] = await sql<{ v: number | null }[]>`SELECT max(version) AS v FROM sluice_migrations`;
  return row?.v ?? 0;
}

/** A schema this sluice cannot work with, since a newer one migrated it. */
export function newerSchema(current: number, latest = SCHEMA_VERSION): SluiceError {
  return new SluiceError(
    'SLUICE_ERR_STORE',
    `the PostgreSQL schema is at version ${current}, written by a newer sluice (this one knows up to ${latest})`,
    { hint: 'Run the newer sluice, or point runtime.postgres at another database or schema.' },
  );
}

/** Applies the migrations the database lacks; returns the versions applied now. */
export async function migrate(sql: Sql, migrations: readonly Migration[] = MIGRATIONS): Promise<number[]> {
  const latest = migrations[migrations.length - 1]!.version;
  return sql.begin(async (tx) => {
    await tx`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`;
    await tx`
      CREATE TABLE IF NOT EXISTS sluice_migrations (
        version integer PRIMARY KEY,
        name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now()
      )`;
    const current = await schemaVersion(tx);
    if (current > latest) throw newerSchema(current, latest);
    const applied: number[] = [];
    for (const m of migrations) {
      if (m.version <= current) continue;
      await m.up(tx);
      await tx`INSERT INTO sluice_migrations (version, name) VALUES (${m.version}, ${m.name})`;
      applied.push(m.version);
    }
    return applied;
  });
}
