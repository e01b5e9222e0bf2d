/**
 * The `postgres` sink against the machine's real PostgreSQL, each test in a schema of its own: what
 * a run commits is exactly what was written, with exact numerics; an aborted run or one whose
 * connection is cut leaves the table as it was; `sluice run` of the payments example fills the
 * table with the same large payments as its file sink.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it, type TestContext } from 'node:test';
import '../dist/components.js';
import { registry } from '../dist/core/registry.js';
import type { Rec } from '../dist/core/types.js';
import { pgUrlIn } from './cluster-helpers.ts';
import { paymentsCopy, sampleInput, sluice, tempDir } from './helpers.ts';
import { postEvents, readLines, startServer, writeServiceConfig, killRunning } from './serve-helpers.ts';
import { freePort, freshSchema, haveServices, pgIn } from './services.ts';

const records: Rec[] = [
  { id: 'a', n: 1, amount: '12.50', note: 'plain', at: '2026-12-03T10:00:00Z', meta: { k: [1, 2] } },
  {
    id: 'b',
    n: 9007199254740993n,
    amount: '99999999999999999999.99',
    note: 'comma, "quote"\nnewline',
    at: '2026-12-03T10:00:01.5Z',
    meta: null,
  },
  { id: 'c', n: 3, amount: '-0.01', note: 'ünïcödé 李', at: '2026-12-03T10:00:02Z' },
];

const columns = {
  id: 'TEXT',
  n: 'INTEGER',
  amount: 'NUMERIC',
  note: 'TEXT',
  at: 'TIMESTAMPTZ',
  meta: 'JSON',
};

/** The rows as PostgreSQL holds them, every value as its text form (exact). */
const asText = [
  ['a', '1', '12.50', 'plain', '2026-12-03T10:00:00.000Z', '{"k": [1, 2]}'],
  [
    'b',
    '9007199254740993',
    '99999999999999999999.99',
    'comma, "quote"\nnewline',
    '2026-12-03T10:00:01.500Z',
    null,
  ],
  ['c', '3', '-0.01', 'ünïcödé 李', '2026-12-03T10:00:02.000Z', null],
];

interface Place {
  url: string;
  read(table?: string): Promise<(string | null)[][] | undefined>;
  sql: ReturnType<typeof pgIn>;
  done(): Promise<void>;
}

/** A fresh schema, a URL whose tables resolve in it, and a reader of a table's rows as text. */
async function place(t: TestContext, label: string): Promise<Place | undefined> {
  if (!(await haveServices(t, 'postgres'))) return undefined;
  const db = await freshSchema(label);
  const sql = pgIn(db.schema, 1);
  return {
    url: pgUrlIn(db.schema),
    sql,
    async read(table = 'rows') {
      const [exists] = await sql<{ t: string | null }[]>`SELECT to_regclass(${table})::text AS t`;
      if (!exists?.t) return undefined;
      const rows = await sql.unsafe<Record<string, unknown>[]>(
        `SELECT id, n::text AS n, amount::text AS amount, note,
           to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS at, meta::text AS meta
         FROM ${table} ORDER BY ctid`,
      );
      return rows.map((r) => ['id', 'n', 'amount', 'note', 'at', 'meta'].map((k) => r[k] as string | null));
    },
    async done() {
      await sql.end();
      await db.drop();
    },
  };
}

async function writeAll(
  config: Record<string, unknown>,
  batches: Rec[][],
  finish: 'commit' | 'abort',
  options: { append?: boolean } = {},
): Promise<void> {
  const spec = registry.sinks.get('postgres')!;
  const encode = spec.encoder(config);
  const writer = await spec.open(config, {
    outDir: tempDir(),
    sinkId: 'test',
    ...(options.append ? { append: {} } : {}),
  });
  for (const batch of batches) await writer.write(encode(batch), batch.length);
  await (finish === 'commit' ? writer.commit() : writer.abort());
}

describe('sink postgres', () => {
  it('commits exactly the records written, in order, with exact numbers and times', async (t) => {
    const p = await place(t, 'pgsink_commit');
    if (!p) return;
    try {
      const config = { type: 'postgres', url: p.url, table: 'rows', columns };
      await writeAll(config, [records.slice(0, 2), [], records.slice(2)], 'commit');
      assert.deepEqual(await p.read(), asText);
      // A second run replaces the table's contents.
      await writeAll(config, [records.slice(2)], 'commit');
      assert.deepEqual(await p.read(), asText.slice(2));
      // In append mode it adds.
      await writeAll({ ...config, mode: 'append' }, [records.slice(0, 1)], 'commit');
      assert.deepEqual(await p.read(), [asText[2], asText[0]]);
    } finally {
      await p.done();
    }
  });

  it('leaves nothing behind when aborted, and keeps what an earlier run committed', async (t) => {
    const p = await place(t, 'pgsink_abort');
    if (!p) return;
    try {
      const config = { type: 'postgres', url: p.url, table: 'rows', columns };
      await writeAll(config, [records], 'abort');
      assert.equal(await p.read(), undefined, 'an aborted first run created the table');
      await writeAll(config, [records], 'commit');
      await writeAll(config, [[{ id: 'z', n: 0, amount: '0', note: 'aborted' }]], 'abort');
      assert.deepEqual(await p.read(), asText);
    } finally {
      await p.done();
    }
  });

  it('a connection cut mid-run fails the run with SLUICE_ERR_SINK_WRITE and commits nothing of it', async (t) => {
    const p = await place(t, 'pgsink_cut');
    if (!p) return;
    try {
      const config = { type: 'postgres', url: p.url, table: 'rows', columns, mode: 'append' };
      await writeAll(config, [records.slice(0, 1)], 'commit');
      const spec = registry.sinks.get('postgres')!;
      const encode = spec.encoder(config);
      const writer = await spec.open(config, { outDir: tempDir(), sinkId: 'test', append: {} });
      await writer.write(encode(records.slice(1, 2)), 1);
      // The writer's backend is the one in a transaction on this schema's table.
      const cut = await p.sql<{ ok: boolean }[]>`
        SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity
        WHERE pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'
          AND backend_xid IS NOT NULL AND datname = current_database()
          AND query LIKE '%INSERT INTO "rows"%'`;
      assert.equal(cut.length, 1, 'the writer backend was not found');
      // Time for the client to see its connection close: a pool would now open another one.
      await sleep(300);
      await assert.rejects(
        (async () => {
          await writer.write(encode(records.slice(2)), 1);
          await writer.commit();
        })(),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'SLUICE_ERR_SINK_WRITE', err.message);
          return true;
        },
      );
      await writer.abort();
      assert.deepEqual(await p.read(), asText.slice(0, 1));
    } finally {
      await p.done();
    }
  });

  it('no PostgreSQL at the URL is SLUICE_ERR_SINK_WRITE naming it', async () => {
    const url = `postgres://postgres@127.0.0.1:${await freePort()}/test`;
    await assert.rejects(
      writeAll({ type: 'postgres', url, table: 'rows' }, [records], 'commit'),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, 'SLUICE_ERR_SINK_WRITE', err.message);
        assert.match(err.message, /postgres postgres:\/\/postgres@127\.0\.0\.1:\d+\/test \(table rows\)/);
        return true;
      },
    );
  });

  it('sluice run of the payments example fills the table with the large payments of its file sink', async (t) => {
    const p = await place(t, 'pgsink_run');
    if (!p) return;
    try {
      const dir = tempDir('sluice-pg-sink-');
      const pipeline = paymentsCopy(dir, (yaml) =>
        yaml.replace(
          /^sinks:\n/m,
          `sinks:\n  large_pg:\n    type: postgres\n    input: large\n    url: '${p.url}'\n    table: large\n` +
            `  large_typed:\n    type: postgres\n    input: large\n    url: '${p.url}'\n    table: large_typed\n` +
            `    columns: { id: TEXT, ts_ms: INTEGER, amount_usd_micros: NUMERIC, tier: TEXT }\n`,
        ),
      );
      const run = await sluice(['run', pipeline, '--input', sampleInput(100_000), '--out', join(dir, 'out')]);
      assert.equal(run.code, 0, run.stderr);
      const file = readFileSync(join(dir, 'out', 'large.ndjson'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.ok(file.length > 100, `only ${file.length} large payments`);
      const whole = await p.sql<{ record: string }[]>`SELECT record::text AS record FROM large ORDER BY ctid`;
      assert.deepEqual(
        whole.map((r) => JSON.parse(r.record) as Record<string, unknown>),
        file,
      );
      const typed = await p.sql<{ id: string; ts_ms: string; usd: string; tier: string }[]>`
        SELECT id, ts_ms::text AS ts_ms, amount_usd_micros::text AS usd, tier FROM large_typed ORDER BY ctid`;
      assert.deepEqual(
        typed.map((r) => [r.id, r.ts_ms, r.usd, r.tier]),
        file.map((r) => [r.id, String(r.ts_ms), r.amount_usd_micros, r.tier]),
      );
    } finally {
      await p.done();
    }
  });

  it('sluice serve: tenants running one pipeline file write rows tagged with their tenant', async (t) => {
    const p = await place(t, 'pgsink_serve');
    if (!p) return;
    const dir = tempDir('sluice-pg-serve-');
    const pipeline = paymentsCopy(dir, (yaml) =>
      yaml.replace(
        /^sinks:\n/m,
        `sinks:\n  large_pg:\n    type: postgres\n    input: large\n    url: '${p.url}'\n    table: large\n`,
      ),
    );
    const keys = { acme: 'sk_pg_acme', globex: 'sk_pg_globex' };
    const config = writeServiceConfig(
      dir,
      {
        acme: { keys: [keys.acme], pipelines: { payments: pipeline } },
        globex: { keys: [keys.globex], pipelines: { payments: pipeline } },
      },
      { sinks: { interval: '100ms' } },
    );
    const lines = readLines(sampleInput(100_000));
    const server = await startServer(config);
    try {
      for (const [tenant, from] of [
        ['acme', 0],
        ['globex', 20_000],
      ] as const) {
        for (let i = from; i < from + 20_000; i += 2_000) {
          const body = Buffer.concat(lines.slice(i, i + 2_000).flatMap((l) => [l, Buffer.from('\n')]));
          const r = await postEvents(server, 'payments', keys[tenant], body, {
            'content-type': 'application/x-ndjson',
          });
          assert.equal(r.status, 202, JSON.stringify(r.body));
        }
      }
      // Each tenant's file sink has its large payments; the shared table has the same, tagged.
      const fileOf = (tenant: string): string[] => {
        const file = join(dir, 'store', 'outputs', tenant, 'payments', 'large.ndjson');
        return readFileSync(file, 'utf8')
          .split('\n')
          .filter(Boolean)
          .map((l) => (JSON.parse(l) as { id: string }).id)
          .sort();
      };
      const deadline = Date.now() + 30_000;
      for (;;) {
        type Row = { tenant: string; pipeline: string; id: string };
        // The table appears with the first delivery.
        const rows: Row[] = await p.sql<Row[]>`
          SELECT sluice_tenant AS tenant, sluice_pipeline AS pipeline, record->>'id' AS id FROM large`.catch(
          () => [],
        );
        const ids = (tenant: string): string[] =>
          rows
            .filter((r) => r.tenant === tenant)
            .map((r) => r.id)
            .sort();
        let files: [string[], string[]] | undefined;
        try {
          files = [fileOf('acme'), fileOf('globex')];
        } catch {
          // Not delivered yet.
        }
        if (
          files &&
          files[0].length > 0 &&
          files[1].length > 0 &&
          rows.length === files[0].length + files[1].length
        ) {
          assert.deepEqual(ids('acme'), files[0]);
          assert.deepEqual(ids('globex'), files[1]);
          assert.ok(rows.every((r) => r.pipeline === 'payments'));
          break;
        }
        if (Date.now() > deadline)
          assert.fail(
            `the table holds ${rows.length} rows; files: ${files?.map((f) => f.length).join(' + ')}`,
          );
        await sleep(100);
      }
      assert.deepEqual(await server.stop(), { code: 0, signal: null }, server.output());
    } finally {
      await killRunning([server]);
      await p.done();
    }
  });
});
