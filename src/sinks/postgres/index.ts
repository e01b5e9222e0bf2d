/**
 * `postgres`: rows in a PostgreSQL table. For `sluice run` the whole run is one transaction, like
 * the sqlite sink: `replace` swaps the table's contents atomically, `append` adds rows, and a failed
 * or interrupted run leaves the table as it was. In the cluster runtime, a pipeline's owner writes
 * these rows in the same transaction as the stream position they come from, so they are written
 * exactly once (docs/architecture.md).
 *
 * Every value travels as text and is cast by PostgreSQL, through `unnest` of one text array per
 * column: one statement text whatever the number of rows, no 65,535-parameter limit, and no
 * client-side guess of how a jsonb or numeric value should be serialized.
 */
import type { Sql, TransactionSql } from 'postgres';
import { stringify } from '../../core/encode.ts';
import type { InStoreTransaction, Rec, SinkSpec, SinkWriter } from '../../core/types.ts';
import { SluiceError } from '../../errors.ts';
import { DEFAULT_PG_URL, redact } from '../../helpers/url.ts';

export type PgColumnType = 'TEXT' | 'INTEGER' | 'NUMERIC' | 'REAL' | 'BOOLEAN' | 'TIMESTAMPTZ' | 'JSON';

export interface PostgresSinkConfig {
  type: 'postgres';
  url?: string;
  table: string;
  /** Column → type. Without columns, each record is stored whole in a `record` jsonb column. */
  columns?: Record<string, PgColumnType>;
  /** `replace` (default) swaps the table's contents atomically; `append` adds rows. */
  mode?: 'replace' | 'append';
  /**
   * Set by `sluice serve`, not in pipeline files: every row also carries the tenant and pipeline
   * that wrote it (columns `sluice_tenant`, `sluice_pipeline`), so tenants running the same
   * pipeline file never mix rows in one table without a way to tell them apart.
   */
  origin?: { tenant: string; pipeline: string };
}

const SQL_TYPES: Record<PgColumnType, string> = {
  TEXT: 'text',
  INTEGER: 'bigint',
  NUMERIC: 'numeric',
  REAL: 'double precision',
  BOOLEAN: 'boolean',
  TIMESTAMPTZ: 'timestamptz',
  JSON: 'jsonb',
};

const quote = (name: string): string => `"${name.replace(/"/g, '""')}"`;

const ORIGIN_COLUMNS: [string, PgColumnType][] = [
  ['sluice_tenant', 'TEXT'],
  ['sluice_pipeline', 'TEXT'],
];

function columnsOf(config: PostgresSinkConfig): [string, PgColumnType][] {
  const own: [string, PgColumnType][] = config.columns
    ? Object.entries(config.columns)
    : [['record', 'JSON']];
  return config.origin ? [...ORIGIN_COLUMNS, ...own] : own;
}

/** A value as the text PostgreSQL casts to the column's type; null for a missing one. */
function cellText(v: unknown, type: PgColumnType): string | null {
  if (v === undefined || v === null) return null;
  if (type === 'JSON') return stringify(v);
  if (typeof v === 'string') return v;
  if (typeof v === 'object') return stringify(v);
  return String(v);
}

/** A record as one row of cell texts, in the order of the table's columns. */
export function rowOf(config: PostgresSinkConfig, record: Rec): (string | null)[] {
  const own = config.columns
    ? Object.entries(config.columns).map(([name, type]) => cellText(record[name], type))
    : [stringify(record)];
  return config.origin ? [config.origin.tenant, config.origin.pipeline, ...own] : own;
}

/** `CREATE TABLE IF NOT EXISTS` for the sink's table. */
export function createTableSql(config: PostgresSinkConfig): string {
  const cols = columnsOf(config).map(([name, type]) => `${quote(name)} ${SQL_TYPES[type]}`);
  return `CREATE TABLE IF NOT EXISTS ${quote(config.table)} (${cols.join(', ')})`;
}

/** Inserts rows (from {@link rowOf}) with one statement. */
export async function insertRows(
  sql: Sql | TransactionSql,
  config: PostgresSinkConfig,
  rows: (string | null)[][],
): Promise<void> {
  if (rows.length === 0) return;
  const cols = columnsOf(config);
  const arrays = cols.map((_, i) => rows.map((r) => r[i] ?? null));
  const text =
    `INSERT INTO ${quote(config.table)} (${cols.map(([n]) => quote(n)).join(', ')}) ` +
    `SELECT ${cols.map(([, type], i) => `u.c${i}::${SQL_TYPES[type]}`).join(', ')} ` +
    `FROM unnest(${cols.map((_, i) => `$${i + 1}::text[]`).join(', ')}) AS u(${cols.map((_, i) => `c${i}`).join(', ')})`;
  await sql.unsafe(text, arrays as never);
}

function writeError(config: PostgresSinkConfig, url: string, err: unknown): SluiceError {
  return new SluiceError(
    'SLUICE_ERR_SINK_WRITE',
    `postgres ${redact(url)} (table ${config.table}): ${(err as Error).message}`,
    { cause: err },
  );
}

/** Thrown inside the held transaction to roll it back. */
class Rollback extends Error {}

/**
 * One run is one `sql.begin` held open from open() to commit() or abort(). A transaction scope, not
 * BEGIN and COMMIT sent as plain statements: if the connection drops mid-run, a pool would run the
 * rest on a new connection outside any transaction and commit half a run; a transaction's queries
 * fail instead, and the table stays as it was.
 */
class PostgresWriter implements SinkWriter {
  #end!: (commit: boolean) => void;
  /** Settles when the transaction has committed or rolled back. */
  #done!: Promise<unknown>;

  private constructor(
    private readonly sql: Sql,
    private readonly tx: TransactionSql,
    private readonly config: PostgresSinkConfig,
    private readonly url: string,
  ) {}

  static async open(config: PostgresSinkConfig, append: boolean): Promise<PostgresWriter> {
    const url = config.url ?? DEFAULT_PG_URL;
    // The client is loaded by the first run that writes to PostgreSQL, not by every process and
    // worker thread that registers this sink.
    const { openPg } = await import('../../helpers/postgres.ts');
    const sql = openPg(url, { max: 1, connectTimeout: 10 });
    let end!: (commit: boolean) => void;
    let began!: (tx: TransactionSql) => void;
    const ready = new Promise<TransactionSql>((resolve) => (began = resolve));
    const done = sql.begin(async (tx) => {
      if (!append && (config.mode ?? 'replace') === 'replace')
        await tx.unsafe(`DROP TABLE IF EXISTS ${quote(config.table)}`);
      await tx.unsafe(createTableSql(config));
      const commit = new Promise<boolean>((resolve) => (end = resolve));
      began(tx);
      if (!(await commit)) throw new Rollback();
    });
    // A connection lost between writes rejects `done` before anyone awaits it: commit() or
    // abort() reports it, not an unhandled rejection.
    done.catch(() => {});
    try {
      const tx = await Promise.race([ready, done.then(() => Promise.reject(new Error('transaction ended')))]);
      const writer = new PostgresWriter(sql, tx, config, url);
      writer.#end = end;
      writer.#done = done;
      return writer;
    } catch (err) {
      await sql.end({ timeout: 1 }).catch(() => {});
      throw writeError(config, url, err);
    }
  }

  async write(encoded: string): Promise<void> {
    // Workers encode each batch as JSON arrays of cell texts; one parse per batch here.
    const rows = JSON.parse(`[${encoded.slice(0, -1)}]`) as (string | null)[][];
    try {
      await insertRows(this.tx, this.config, rows);
    } catch (err) {
      throw writeError(this.config, this.url, err);
    }
  }

  async commit(): Promise<void> {
    this.#end(true);
    try {
      await this.#done;
    } catch (err) {
      throw writeError(this.config, this.url, err);
    } finally {
      await this.sql.end({ timeout: 5 });
    }
  }

  async abort(): Promise<void> {
    this.#end(false);
    await this.#done.catch(() => {});
    await this.sql.end({ timeout: 5 }).catch(() => {});
  }
}

/** How a cluster owner writes the rows in its own transaction, into runtime.postgres. */
const inStoreTransaction: InStoreTransaction<PostgresSinkConfig, (string | null)[], TransactionSql> = {
  database: (config) => config.url,
  createTable: async (tx, config) => {
    await tx.unsafe(createTableSql(config));
  },
  row: rowOf,
  write: insertRows,
};

export const postgresSink: SinkSpec<PostgresSinkConfig> = {
  type: 'postgres',
  description:
    'Writes rows into a PostgreSQL table, in one transaction per run (in the cluster runtime, in the transaction of the stream position they come from).',
  schema: {
    type: 'object',
    required: ['table'],
    properties: {
      url: {
        type: 'string',
        description: `PostgreSQL URL (default ${DEFAULT_PG_URL}; in the cluster runtime, runtime.postgres.url).`,
      },
      table: { type: 'string', pattern: '^[A-Za-z_][A-Za-z0-9_]{0,62}$' },
      columns: {
        type: 'object',
        minProperties: 1,
        propertyNames: { pattern: '^[A-Za-z_][A-Za-z0-9_]{0,62}$' },
        additionalProperties: { enum: Object.keys(SQL_TYPES) },
        description:
          'Column → type (INTEGER is bigint, REAL double precision, JSON jsonb); records are stored whole in a `record` jsonb column without it.',
      },
      mode: { enum: ['replace', 'append'], default: 'replace' },
    },
  },
  encoder: (config) => (records: Rec[]) => {
    let out = '';
    for (const r of records) out += JSON.stringify(rowOf(config, r)) + ',';
    return out;
  },
  open: (config, env) => PostgresWriter.open(config, env.append !== undefined),
  describe: (config) => `${redact(config.url ?? DEFAULT_PG_URL)} (table ${config.table})`,
  capabilities: {
    inStoreTransaction,
    origin: (config, origin) => ({ ...config, origin }),
  },
};
