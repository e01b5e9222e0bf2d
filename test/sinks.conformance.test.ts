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
import { registry } from '../dist/core/registry.js';
import type { Rec } from '../dist/core/types.js';
import { tempDir } from './helpers.ts';

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
