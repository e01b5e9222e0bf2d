/**
 * One conformance suite for every sink: what a run commits is exactly what was written, in order;
 * what a run aborts leaves nothing behind (and the previous output intact); an unusable target is
 * a SLUICE_ERR_SINK_WRITE, not a crash. Real files and a real SQLite database, no mocks.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { gunzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import '../dist/components.js';
import { checkSinks } from '../dist/cluster/service.js';
import { loadPipeline } from '../dist/core/config.js';
import { registry } from '../dist/core/registry.js';
import type { InStoreTransaction, Rec } from '../dist/core/types.js';
import { loadServiceConfig } from '../dist/service/config.js';
import { pgUrlIn } from './cluster-helpers.ts';
import { ROOT, tempDir } from './helpers.ts';
import { writeServiceConfig } from './serve-helpers.ts';
import { freshSchema, haveServices, pgIn } from './services.ts';

interface Case {
  name: string;
  config: Record<string, unknown> & { type: string };
  /** Reads back what the sink committed in `dir`, as records; undefined when nothing is there. */
  read(dir: string): Rec[] | undefined;
}

const records: Rec[] = [
  { id: 'a', n: 1, amount: '12.50', note: 'plain' },
  { id: 'b', n: 2, amount: '99999999999999999999.99', note: 'comma, "quote"\nnewline' },
  { id: 'c', n: 3, amount: '-0.01', note: 'ünïcödé 李' },
];

const ndjsonLines = (text: string): Rec[] =>
  text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Rec);

function parseCsv(text: string): Rec[] {
  // Minimal RFC 4180 reader for the test: quoted cells may hold commas, quotes and newlines.
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        cell += '"';
        i++;
      } else if (c === '"') quoted = false;
      else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(cell);
      cell = '';
    } else if (c === '\n') {
      row.push(cell);
      rows.push(row);
      row = [];
      cell = '';
    } else cell += c;
  }
  const [header, ...body] = rows;
  return body.map((r) => Object.fromEntries(header!.map((h, i) => [h, h === 'n' ? Number(r[i]) : r[i]])));
}

function readTable(dir: string): Rec[] | undefined {
  const file = join(dir, 'out.db');
  if (!existsSync(file)) return undefined;
  const db = new Database(file, { readonly: true });
  try {
    const exists = db.prepare("select 1 from sqlite_master where type = 'table' and name = 'rows'").get();
    return exists
      ? (db.prepare('select id, n, amount, note from rows order by rowid').all() as Rec[])
      : undefined;
  } finally {
    db.close();
  }
}

const cases: Case[] = [
  {
    name: 'file ndjson',
    config: { type: 'file', path: 'out.ndjson' },
    read: (dir) =>
      existsSync(join(dir, 'out.ndjson'))
        ? ndjsonLines(readFileSync(join(dir, 'out.ndjson'), 'utf8'))
        : undefined,
  },
  {
    name: 'file ndjson gzip',
    config: { type: 'file', path: 'out.ndjson.gz', gzip: true },
    read: (dir) =>
      existsSync(join(dir, 'out.ndjson.gz'))
        ? ndjsonLines(gunzipSync(readFileSync(join(dir, 'out.ndjson.gz'))).toString('utf8'))
        : undefined,
  },
  {
    name: 'file csv',
    config: { type: 'file', path: 'out.csv', format: 'csv', columns: ['id', 'n', 'amount', 'note'] },
    read: (dir) =>
      existsSync(join(dir, 'out.csv')) ? parseCsv(readFileSync(join(dir, 'out.csv'), 'utf8')) : undefined,
  },
  {
    name: 'sqlite',
    config: {
      type: 'sqlite',
      path: 'out.db',
      table: 'rows',
      columns: { id: 'TEXT', n: 'INTEGER', amount: 'TEXT', note: 'TEXT' },
    },
    read: readTable,
  },
];

async function writeAll(
  config: Case['config'],
  dir: string,
  batches: Rec[][],
  finish: 'commit' | 'abort',
): Promise<void> {
  const spec = registry.sinks.get(config.type)!;
  const encode = spec.encoder(config);
  const writer = await spec.open(config, { outDir: dir, sinkId: 'test' });
  for (const batch of batches) await writer.write(encode(batch), batch.length);
  await (finish === 'commit' ? writer.commit() : writer.abort());
}

describe('sink conformance', () => {
  for (const c of cases) {
    describe(c.name, () => {
      it('commits exactly the records written, in order, across batches', async () => {
        const dir = tempDir();
        await writeAll(c.config, dir, [records.slice(0, 2), [], records.slice(2)], 'commit');
        assert.deepEqual(c.read(dir), records);
        assert.deepEqual(
          readdirSync(dir).filter((f) => f.endsWith('.tmp')),
          [],
          'no temporary files left',
        );
      });

      it('leaves nothing behind when aborted', async () => {
        const dir = tempDir();
        await writeAll(c.config, dir, [records], 'abort');
        assert.equal(c.read(dir), undefined);
        assert.deepEqual(
          readdirSync(dir).filter((f) => f.endsWith('.tmp')),
          [],
        );
      });

      it('keeps the previous output when a later run aborts', async () => {
        const dir = tempDir();
        await writeAll(c.config, dir, [records], 'commit');
        await writeAll(c.config, dir, [[{ id: 'z', n: 9, amount: '0', note: 'aborted' }]], 'abort');
        assert.deepEqual(c.read(dir), records);
      });

      it('reports an unusable target as SLUICE_ERR_SINK_WRITE', async () => {
        const dir = tempDir();
        // A directory where the output file (or database) should be.
        const target = String(c.config.path);
        mkdirSync(join(dir, target), { recursive: true });
        writeFileSync(join(dir, target, 'keep'), 'x');
        await assert.rejects(
          writeAll(c.config, dir, [records], 'commit'),
          (err: Error & { code?: string }) => {
            assert.equal(err.code, 'SLUICE_ERR_SINK_WRITE', err.message);
            return true;
          },
        );
      });
    });
  }

  it('sqlite append mode adds to the table; replace mode swaps it', async () => {
    const dir = tempDir();
    const base = {
      type: 'sqlite',
      path: 'out.db',
      table: 'rows',
      columns: { id: 'TEXT', n: 'INTEGER', amount: 'TEXT', note: 'TEXT' },
    };
    await writeAll({ ...base, mode: 'append' }, dir, [records.slice(0, 1)], 'commit');
    await writeAll({ ...base, mode: 'append' }, dir, [records.slice(1)], 'commit');
    assert.deepEqual(readTable(dir), records);
    await writeAll({ ...base, mode: 'replace' }, dir, [records.slice(2)], 'commit');
    assert.deepEqual(readTable(dir), records.slice(2));
  });

  it('sqlite without columns stores each record whole, queryable with json_extract', async () => {
    const dir = tempDir();
    await writeAll({ type: 'sqlite', path: 'out.db', table: 'rows' }, dir, [records], 'commit');
    const db = new Database(join(dir, 'out.db'), { readonly: true });
    const amounts = db
      .prepare("select json_extract(record, '$.amount') as a from rows order by rowid")
      .all() as { a: string }[];
    db.close();
    assert.deepEqual(
      amounts.map((r) => r.a),
      records.map((r) => r.amount),
    );
  });

  it('encodes bigint values as decimal strings', () => {
    const encode = registry.sinks.get('file')!.encoder({ type: 'file', path: 'x' });
    assert.equal(encode([{ big: 12345678901234567890n }]), '{"big":"12345678901234567890"}\n');
  });
});

/**
 * Sink capabilities (docs/architecture.md, "Sink capabilities"): runtimes act on what a sink's spec
 * declares, never on its name, so a declaration that is incomplete, misspelt or not what the sink
 * does would go unnoticed until production. These checks run against every registered sink.
 */
const CAPABILITIES = ['inStoreTransaction', 'service', 'origin'];
const IN_STORE_HOOKS = ['database', 'createTable', 'row', 'write'];

/** A valid config of every registered sink: a new sink must add one here. */
const samples: Record<string, Record<string, unknown> & { type: string }> = {
  file: { type: 'file', path: 'out.ndjson' },
  sqlite: { type: 'sqlite', path: 'out.db', table: 'rows' },
  postgres: { type: 'postgres', table: 'rows' },
  nats: { type: 'nats', subject: 'sluice.out' },
  stdout: { type: 'stdout' },
};

/** For each sink written in the owner's transaction: a config writing table `table` of database `url`. */
const inStoreTargets: Record<string, (url: string, table: string) => Record<string, unknown>> = {
  postgres: (url, table) => ({
    type: 'postgres',
    url,
    table,
    columns: { id: 'TEXT', n: 'INTEGER', amount: 'NUMERIC', note: 'TEXT' },
  }),
};

const sinkPipeline = (dir: string, sink: Record<string, unknown>): string => {
  const file = join(dir, 'pipeline.json');
  writeFileSync(
    file,
    JSON.stringify({
      name: 'p',
      source: { type: 'http' },
      steps: [],
      sinks: { out: { ...sink, input: 'out' } },
    }),
  );
  return file;
};

/** The section of docs/architecture.md's table for `sink`: column → cell text. */
function documented(): Map<string, Record<string, string>> {
  const text = readFileSync(join(ROOT, 'docs', 'architecture.md'), 'utf8');
  const section = text.split(/^## /m).find((s) => s.startsWith('Sink capabilities\n'));
  assert.ok(section, 'docs/architecture.md has a "Sink capabilities" section');
  const rows = section
    .split('\n')
    .filter((l) => l.startsWith('|') && !/^\|\s*-/.test(l))
    .map((l) =>
      l
        .slice(1, -1)
        .split('|')
        .map((c) => c.trim().replace(/`/g, '')),
    );
  const [header, ...body] = rows;
  assert.ok(header, 'the section has a table');
  return new Map(body.map((r) => [r[0]!, Object.fromEntries(header.slice(1).map((h, i) => [h, r[i + 1]!]))]));
}

describe('sink capabilities', () => {
  it('every registered sink has a sample config here', () => {
    assert.deepEqual(Object.keys(samples).sort(), [...registry.sinks.keys()].sort());
  });

  it('docs/architecture.md lists every sink with the capabilities its spec declares', () => {
    const table = documented();
    assert.deepEqual([...table.keys()].sort(), [...registry.sinks.keys()].sort());
    for (const [type, spec] of registry.sinks) {
      const caps = spec.capabilities ?? {};
      for (const name of CAPABILITIES)
        assert.equal(
          table.get(type)![name] !== '',
          (caps as Record<string, unknown>)[name] !== undefined,
          `${type}: docs and spec disagree about ${name}`,
        );
    }
  });

  it('keeps the texts users saw when runtimes tested sink names', () => {
    const dir = tempDir();
    const pipeline = sinkPipeline(dir, { type: 'stdout' });
    const config = writeServiceConfig(dir, { acme: { keys: ['k'], pipelines: { orders: pipeline } } });
    assert.throws(() => loadServiceConfig(config), {
      message: "sink out: a stdout sink would write into the service's log stream",
      hint: 'Use a file or sqlite sink in pipelines that `sluice serve` runs.',
    });
    const runtime = { postgres: { url: 'postgres://a@store:5432/s' } } as Parameters<typeof checkSinks>[1];
    assert.throws(
      () =>
        checkSinks(
          [
            {
              id: 'out',
              type: 'postgres',
              config: { type: 'postgres', table: 't', url: 'postgres://a@b:5432/c' },
            },
          ],
          runtime,
          'acme/orders',
        ),
      {
        message:
          "pipeline acme/orders, sink out: in the cluster runtime a postgres sink writes into runtime.postgres (in the owner's transaction), not into postgres://a@b:5432/c",
      },
    );
  });

  for (const [type, spec] of registry.sinks) {
    const caps = spec.capabilities;
    describe(type, () => {
      it('declares only known capabilities, each complete', () => {
        for (const name of Object.keys(caps ?? {}))
          assert.ok(CAPABILITIES.includes(name), `unknown capability ${name}: no runtime reads it`);
        const inStore = caps?.inStoreTransaction as Record<string, unknown> | undefined;
        if (inStore)
          for (const hook of IN_STORE_HOOKS)
            assert.equal(typeof inStore[hook], 'function', `inStoreTransaction without ${hook}`);
        if (caps?.service) {
          assert.equal(caps.service.allowed, false);
          // It completes "sink <id>: a <type> sink …".
          assert.match(caps.service.reason, /^[a-z].*[^.]$/);
          assert.ok(caps.service.hint.length > 0, 'a refusal says what to do instead');
        }
        if (caps?.origin) assert.equal(typeof caps.origin, 'function');
        if (inStore) assert.ok(inStoreTargets[type], `no in-store target for ${type} in this test`);
      });

      it('is refused or loaded by `sluice serve` as its `service` capability says', () => {
        const dir = tempDir();
        const pipeline = sinkPipeline(dir, samples[type]!);
        const config = writeServiceConfig(dir, { acme: { keys: ['k'], pipelines: { orders: pipeline } } });
        const refused = caps?.service;
        if (refused) {
          assert.throws(
            () => loadServiceConfig(config),
            (err: Error & { code?: string; hint?: string }) => {
              assert.equal(err.code, 'SLUICE_ERR_CONFIG_INVALID');
              assert.equal(err.message, `sink out: a ${type} sink ${refused.reason}`);
              assert.equal(err.hint, refused.hint);
              return true;
            },
          );
          return;
        }
        const sink = loadServiceConfig(config)
          .tenants.find((t) => t.id === 'acme')!
          .pipelines.get('orders')!
          .sinks.find((s) => s.id === 'out')!;
        const plain = loadPipeline(pipeline).sinks.find((s) => s.id === 'out')!.config;
        // Only a sink declaring `origin` has its config changed, and only through it.
        assert.deepEqual(
          sink.config,
          caps?.origin ? caps.origin(plain, { tenant: 'acme', pipeline: 'orders' }) : plain,
        );
      });

      if (caps?.origin) {
        it('origin: records tenant and pipeline, without changing the config it was given', () => {
          const base = structuredClone(samples[type]!);
          const at = (tenant: string, pipeline: string): string =>
            spec.encoder(caps.origin!(base, { tenant, pipeline }))(records);
          const encoded = at('acme', 'orders');
          assert.notEqual(encoded, at('globex', 'orders'), 'the tenant is recorded');
          assert.notEqual(encoded, at('acme', 'refunds'), 'the pipeline is recorded');
          assert.deepEqual(base, samples[type], 'the given config is unchanged');
        });
      }

      if (caps?.inStoreTransaction) {
        const hooks = caps.inStoreTransaction as InStoreTransaction<Record<string, unknown>>;

        it('inStoreTransaction: the cluster refuses a config naming a database other than the store', () => {
          const target = inStoreTargets[type]!;
          const store = 'postgres://sluice@store.example:5432/sluice';
          const other = 'postgres://sluice@other.example:5432/sluice';
          assert.equal(hooks.database(target(other, 'rows')), other);
          const runtime = { postgres: { url: store } } as Parameters<typeof checkSinks>[1];
          const sink = (url: string) => [{ id: 'out', type, config: target(url, 'rows') }];
          checkSinks(sink(store), runtime, 'acme/orders');
          assert.throws(
            () => checkSinks(sink(other), runtime, 'acme/orders'),
            (err: Error & { code?: string }) => {
              assert.equal(err.code, 'SLUICE_ERR_CONFIG_INVALID');
              assert.equal(
                err.message,
                `pipeline acme/orders, sink out: in the cluster runtime a ${type} sink writes into runtime.postgres (in the owner's transaction), not into ${other}`,
              );
              return true;
            },
          );
        });

        it("inStoreTransaction: the owner's hooks write what the sink's own writer commits, in the owner's transaction", async (t) => {
          if (!(await haveServices(t, 'postgres'))) return;
          const db = await freshSchema('sinkcaps');
          const sql = pgIn(db.schema, 1);
          try {
            const url = pgUrlIn(db.schema);
            const viaOwner = inStoreTargets[type]!(url, 'via_owner');
            const viaSink = inStoreTargets[type]!(url, 'via_sink');
            assert.equal(hooks.database(viaOwner), url, 'database() is where the sink itself writes');
            const rowsOf = (rs: Rec[]) => rs.map((r) => hooks.row(viaOwner, r));
            await sql.begin(async (tx) => {
              // An owner creates the table each time it takes the pipeline.
              await hooks.createTable(tx, viaOwner);
              await hooks.createTable(tx, viaOwner);
              await hooks.write(tx, viaOwner, rowsOf(records.slice(0, 2)));
              await hooks.write(tx, viaOwner, rowsOf(records.slice(2)));
            });
            // A transaction that rolls back (a commit that lost its epoch) leaves no rows behind.
            await assert.rejects(
              sql.begin(async (tx) => {
                await hooks.write(tx, viaOwner, rowsOf(records));
                throw new Error('lost ownership');
              }),
              /lost ownership/,
            );
            const writer = await spec.open(viaSink, { outDir: tempDir(), sinkId: 'out', append: {} });
            await writer.write(spec.encoder(viaSink)(records), records.length);
            await writer.commit();
            const contents = async (table: string) =>
              (
                await sql.unsafe<{ r: string }[]>(
                  `SELECT row_to_json(t)::text AS r FROM ${table} t ORDER BY ctid`,
                )
              ).map((x) => x.r);
            const committed = await contents('via_sink');
            assert.equal(committed.length, records.length);
            assert.deepEqual(await contents('via_owner'), committed);
          } finally {
            await sql.end();
            await db.drop();
          }
        });
      }
    });
  }
});
