/**
 * Promise 2 (docs/product.md): bad input is data, not a crash. Through the real CLI, the payments
 * example and small fixture pipelines (test/fixtures/bad-input/) get every corruption class of the
 * workload, empty and CRLF lines, invalid UTF-8, deep nesting, `__proto__` keys, oversized lines,
 * malformed JSON array elements, a throwing transform, broken gzip and Ctrl-C. Every bad record
 * must become exactly one dead letter, the rest of the input must still reach the outputs, and a
 * run that cannot finish must leave no output behind.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { BIN, PAYMENTS, ROOT, sampleInput, sluice, tempDir } from './helpers.ts';
import type { Ran } from './helpers.ts';

const FIXTURES = join(ROOT, 'test', 'fixtures', 'bad-input');
const PAYMENTS_OUTPUTS = ['windows.ndjson', 'large.ndjson', 'dead.ndjson', 'summary.json'];

type Json = Record<string, unknown>;

interface DeadLetter {
  line: number;
  index?: number;
  reason: string;
  detail: string;
  pointer?: string;
  keyword?: string;
  raw: string;
}

/** A valid event id (`^evt_[0-9A-HJKMNP-TV-Z]{26}$`), distinct per n. */
function eventId(n: number): string {
  return `evt_${String(n).padStart(26, '0')}`;
}

/** A valid payments event; every one falls in the window starting 2026-11-21T00:00:00Z. */
function event(n: number, patch: Json = {}): Json {
  return {
    id: eventId(n),
    type: 'payment.captured',
    ts: `2026-11-21T00:00:${String(n % 60).padStart(2, '0')}.250Z`,
    user: { id: 'usr_000001', country: 'de', email: ' Ana.000001@Example.com ' },
    amount: '12.34',
    currency: 'EUR',
    card: { bin: '424242', last4: '4242', brand: 'visa' },
    ip: '192.0.2.10',
    ua: 'Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0',
    tags: ['web'],
    meta: { order: 'ord_1', note: 'ok' },
    ...patch,
  };
}

/** 20,000 USD: above the 10,000 USD threshold, so the normalized record is written to large.ndjson. */
const LARGE = { amount: '20000.00', currency: 'USD' };

/** The normalized record the payments example writes for `event(n, LARGE)`. */
function normalizedLarge(n: number): Json {
  return {
    id: eventId(n),
    type: 'payment.captured',
    ts_ms: Date.parse(event(n).ts as string),
    user_id: 'usr_000001',
    email: 'ana.000001@example.com',
    country: 'DE',
    region: 'EU',
    tier: 'free',
    amount_minor: '2000000',
    currency: 'USD',
    amount_usd_micros: '20000000000',
    browser: 'firefox',
    card_masked: '424242******4242',
  };
}

function readNdjson(file: string): Json[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Json);
}

function deadLetters(dir: string): DeadLetter[] {
  return readNdjson(join(dir, 'dead.ndjson')) as unknown as DeadLetter[];
}

/** The one dead letter for `line`; fails when there is none or more than one. */
function deadAt(letters: DeadLetter[], line: number): DeadLetter {
  const found = letters.filter((d) => d.line === line);
  assert.equal(found.length, 1, `expected exactly one dead letter for line ${line}, got ${found.length}`);
  return found[0]!;
}

function assertReadable(d: DeadLetter): void {
  assert.equal(typeof d.detail, 'string', `line ${d.line}: detail should be a string`);
  assert.ok(d.detail.trim().length > 0, `line ${d.line}: detail should not be empty`);
}

/** Every own key anywhere inside `value`, for finding a `polluted` field in any output. */
function hasKey(value: unknown, key: string): boolean {
  if (value === null || typeof value !== 'object') return false;
  if (Object.prototype.hasOwnProperty.call(value, key)) return true;
  return Object.values(value as Json).some((v) => hasKey(v, key));
}

/** Rows of the example's sqlite table, or undefined when the file or the table does not exist. */
function sqliteWindowRows(dir: string): number | undefined {
  const file = join(dir, 'payments.db');
  if (!existsSync(file)) return undefined;
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const table = db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'windows'")
      .get();
    if (table === undefined) return undefined;
    return (db.prepare('SELECT count(*) AS n FROM windows').get() as { n: number }).n;
  } finally {
    db.close();
  }
}

/** A failed run leaves neither the example's output files nor temporary files in `dir`. */
function assertNothingWritten(dir: string): void {
  const files = existsSync(dir) ? readdirSync(dir) : [];
  for (const f of PAYMENTS_OUTPUTS) assert.ok(!files.includes(f), `${f} must not exist, found: ${files}`);
  const tmp = files.filter((f) => f.endsWith('.tmp'));
  assert.deepEqual(tmp, [], `temporary files left behind: ${tmp}`);
  const rows = sqliteWindowRows(dir);
  assert.ok(rows === undefined || rows === 0, `payments.db has ${rows} rows in table windows`);
}

/** Each output file's lines, sorted (rows may come in any order), and summary.json as an object. */
function resultsOf(dir: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of ['windows.ndjson', 'large.ndjson', 'dead.ndjson'])
    out[f] = readFileSync(join(dir, f), 'utf8').split('\n').sort();
  out['summary.json'] = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8'));
  return out;
}

function runPayments(input: string, out: string, options: { input?: string } = {}): Promise<Ran> {
  return sluice(['run', PAYMENTS, '--input', input, '--out', out], options);
}

interface Corruption {
  name: string;
  line(e: Json): string;
  reason: 'parse' | 'invalid';
  /** JSON pointer of the bad field; undefined for parse failures. */
  pointer?: string;
  /** The schema catches it, so the dead letter names the JSON Schema keyword; a string is checked exactly. */
  keyword?: true | string;
}

/** The reference workload's corruption classes (../shared/workload/generate.mjs CORRUPTIONS), in order. */
const CORRUPTIONS: Corruption[] = [
  {
    name: 'missing amount',
    line: (e) => JSON.stringify({ ...e, amount: undefined }),
    reason: 'invalid',
    pointer: '/amount',
    keyword: 'required',
  },
  {
    name: "amount '12.3.4'",
    line: (e) => JSON.stringify({ ...e, amount: '12.3.4' }),
    reason: 'invalid',
    pointer: '/amount',
    keyword: true,
  },
  {
    name: 'amount as a number',
    line: (e) => JSON.stringify({ ...e, amount: Number(e.amount) }),
    reason: 'invalid',
    pointer: '/amount',
    keyword: 'type',
  },
  {
    name: "JPY amount '100.5'",
    line: (e) => JSON.stringify({ ...e, currency: 'JPY', amount: '100.5' }),
    reason: 'invalid',
    pointer: '/amount',
  },
  {
    name: 'currency XYZ',
    line: (e) => JSON.stringify({ ...e, currency: 'XYZ' }),
    reason: 'invalid',
    pointer: '/currency',
  },
  {
    name: "ts '2026-13-45T99:00:00Z'",
    line: (e) => JSON.stringify({ ...e, ts: '2026-13-45T99:00:00Z' }),
    reason: 'invalid',
    pointer: '/ts',
  },
  {
    name: "id 'evt_short'",
    line: (e) => JSON.stringify({ ...e, id: 'evt_short' }),
    reason: 'invalid',
    pointer: '/id',
    keyword: true,
  },
  {
    name: "type 'payment.exploded'",
    line: (e) => JSON.stringify({ ...e, type: 'payment.exploded' }),
    reason: 'invalid',
    pointer: '/type',
    keyword: 'enum',
  },
  {
    name: "email 'not-an-email'",
    line: (e) => JSON.stringify({ ...e, user: { ...(e.user as Json), email: 'not-an-email' } }),
    reason: 'invalid',
    pointer: '/user/email',
    keyword: true,
  },
  {
    name: '11 tags',
    line: (e) => JSON.stringify({ ...e, tags: Array.from({ length: 11 }, () => 'x') }),
    reason: 'invalid',
    pointer: '/tags',
    keyword: 'maxItems',
  },
  {
    name: 'no user',
    line: (e) => JSON.stringify({ ...e, user: undefined }),
    reason: 'invalid',
    pointer: '/user',
    keyword: 'required',
  },
  {
    name: "country 'Germany'",
    line: (e) => JSON.stringify({ ...e, user: { ...(e.user as Json), country: 'Germany' } }),
    reason: 'invalid',
    pointer: '/user/country',
    keyword: true,
  },
  { name: 'a truncated line', line: (e) => JSON.stringify(e).slice(0, 40), reason: 'parse' },
  { name: `'{"id": "evt_01'`, line: () => '{"id": "evt_01', reason: 'parse' },
  { name: "'[1,2,3]'", line: () => '[1,2,3]', reason: 'invalid', pointer: '' },
  {
    name: 'a __proto__ key (constructor.prototype payload)',
    line: (e) =>
      JSON.stringify({ ...e, constructor: { prototype: { polluted: true } } }).replace(
        '"constructor"',
        '"__proto__"',
      ),
    reason: 'invalid',
    pointer: '/__proto__',
    keyword: 'additionalProperties',
  },
];

describe('payments example on bad lines', () => {
  const DEEP = 10_000;
  const deepArray = '['.repeat(DEEP) + ']'.repeat(DEEP);
  const deepObject = '{"a":'.repeat(DEEP) + '1' + '}'.repeat(DEEP);
  const text = (s: string): Buffer => Buffer.from(s, 'utf8');
  /** `s` with the placeholder BYTES replaced by bytes that are not UTF-8 (one lone 0xff, one cut 3-byte sequence). */
  const withInvalidUtf8 = (s: string): Buffer => {
    const [a, b] = s.split('BYTES') as [string, string];
    return Buffer.concat([text(a), Buffer.from([0xff, 0xe2, 0x82]), text(b)]);
  };

  // Line numbers below are 1-based positions in the input file.
  const lines: Buffer[] = [text(JSON.stringify(event(1)))];
  CORRUPTIONS.forEach((c, i) => lines.push(text(c.line(event(2 + i)))));
  const L = {
    protoDirect: 18,
    empty: 19,
    crlf: 20,
    utf8Email: 21,
    utf8Id: 22,
    deepArray: 23,
    deepObject: 24,
    deepMeta: 25,
    afterProto: 26,
    last: 27,
  };
  const protoDirect = `{"__proto__":{"polluted":true},${JSON.stringify(event(L.protoDirect)).slice(1)}`;
  lines.push(text(protoDirect));
  lines.push(text(''));
  lines.push(text(JSON.stringify(event(L.crlf, LARGE)) + '\r'));
  const utf8User = { id: 'usr_000001', country: 'de', email: ' AnBYTESa.000001@Example.com ' };
  lines.push(withInvalidUtf8(JSON.stringify(event(L.utf8Email, { ...LARGE, user: utf8User }))));
  lines.push(withInvalidUtf8(JSON.stringify(event(L.utf8Id, { id: 'evt_BYTES' }))));
  lines.push(text(deepArray));
  lines.push(text(deepObject));
  lines.push(
    text(JSON.stringify(event(L.deepMeta, { ...LARGE, meta: 'DEEP' })).replace('"DEEP"', deepObject)),
  );
  lines.push(text(JSON.stringify(event(L.afterProto, LARGE))));
  lines.push(text(JSON.stringify(event(L.last))));
  assert.equal(lines.length, L.last);
  // The last line has no newline: it is still a record.
  const input = Buffer.concat(lines.flatMap((l, i) => (i < lines.length - 1 ? [l, text('\n')] : [l])));
  const rawOf = (line: number): string => lines[line - 1]!.toString('utf8').replace(/\r$/, '');

  const accepted = [1, L.crlf, L.utf8Email, L.deepMeta, L.afterProto, L.last];
  const large = [L.crlf, L.utf8Email, L.deepMeta, L.afterProto];

  let out: string;
  let r: Ran;
  let dead: DeadLetter[];

  before(async () => {
    out = tempDir();
    const file = join(out, 'input.ndjson');
    writeFileSync(file, input);
    out = join(out, 'out');
    r = await runPayments(file, out);
    dead = r.code === 0 ? deadLetters(out) : [];
  });

  it('exits 0', () => {
    assert.equal(r.code, 0, r.stderr);
  });

  for (const [i, c] of CORRUPTIONS.entries()) {
    const line = 2 + i;
    it(`${c.name} → one ${c.reason} dead letter with line, detail and raw text`, () => {
      const d = deadAt(dead, line);
      assert.equal(d.reason, c.reason);
      assertReadable(d);
      assert.equal(d.raw, rawOf(line));
      if (c.pointer !== undefined) {
        assert.equal(d.pointer, c.pointer);
        const field = c.pointer.split('/').pop()!;
        assert.ok(d.detail.includes(field), `detail ${JSON.stringify(d.detail)} should name ${field}`);
      }
      if (c.keyword === true) assert.ok(typeof d.keyword === 'string' && d.keyword !== '', 'keyword');
      else if (c.keyword !== undefined) assert.equal(d.keyword, c.keyword);
    });
  }

  it('an empty line → one parse dead letter', () => {
    const d = deadAt(dead, L.empty);
    assert.equal(d.reason, 'parse');
    assertReadable(d);
    assert.equal(d.raw, '');
  });

  it('a line ending in \\r\\n is still a valid event, and its \\r is dropped', () => {
    assert.ok(!dead.some((d) => d.line === L.crlf), 'the CRLF line must not be a dead letter');
    const rec = readNdjson(join(out, 'large.ndjson')).find((x) => x.id === eventId(L.crlf));
    assert.deepEqual(rec, normalizedLarge(L.crlf));
  });

  it('bytes that are not UTF-8 inside a string are decoded as U+FFFD', () => {
    assert.ok(!dead.some((d) => d.line === L.utf8Email), 'the event is valid after decoding');
    const rec = readNdjson(join(out, 'large.ndjson')).find((x) => x.id === eventId(L.utf8Email));
    assert.ok(rec, 'the event with invalid UTF-8 in its email is in large.ndjson');
    assert.equal(rec.email, 'an\uFFFD\uFFFDa.000001@example.com');

    const d = deadAt(dead, L.utf8Id);
    assert.equal(d.reason, 'invalid');
    assert.equal(d.pointer, '/id');
    assert.ok(d.raw.includes('"evt_\uFFFD\uFFFD"'), `raw keeps the decoded text: ${d.raw.slice(0, 60)}`);
  });

  it(`${DEEP}-deep nesting → a dead letter, and the run goes on`, () => {
    for (const [line, raw] of [
      [L.deepArray, deepArray],
      [L.deepObject, deepObject],
    ] as const) {
      const d = deadAt(dead, line);
      assert.ok(d.reason === 'parse' || d.reason === 'invalid', `line ${line}: reason ${d.reason}`);
      assertReadable(d);
      assert.equal(d.raw, raw);
    }
    // `meta` may hold anything: deep nesting inside it is still a valid event.
    assert.ok(!dead.some((d) => d.line === L.deepMeta), 'deep meta is valid');
    const rec = readNdjson(join(out, 'large.ndjson')).find((x) => x.id === eventId(L.deepMeta));
    assert.deepEqual(rec, normalizedLarge(L.deepMeta));
  });

  it('a plain {"__proto__": …} key → an invalid dead letter', () => {
    const d = deadAt(dead, L.protoDirect);
    assert.equal(d.reason, 'invalid');
    assert.equal(d.pointer, '/__proto__');
    assert.equal(d.raw, protoDirect);
  });

  it('__proto__ keys do not pollute Object.prototype: later records and all outputs are clean', () => {
    const rec = readNdjson(join(out, 'large.ndjson')).find((x) => x.id === eventId(L.afterProto));
    assert.deepEqual(rec, normalizedLarge(L.afterProto));
    for (const f of ['windows.ndjson', 'large.ndjson', 'dead.ndjson'])
      for (const row of readNdjson(join(out, f)))
        assert.ok(
          !hasKey(row, 'polluted'),
          `${f} has a polluted field: ${JSON.stringify(row).slice(0, 200)}`,
        );
    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as Json;
    assert.ok(!hasKey(summary, 'polluted'));
  });

  it('every bad line is exactly one dead letter; the valid events reach every output', () => {
    const expectedDead = Array.from({ length: L.last }, (_, i) => i + 1).filter((n) => !accepted.includes(n));
    assert.deepEqual(
      dead.map((d) => d.line),
      expectedDead,
      'dead letters, one per bad line, in input order',
    );
    for (const d of dead) {
      assertReadable(d);
      assert.equal(typeof d.raw, 'string');
    }
    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as Json;
    assert.deepEqual(summary, {
      lines: L.last,
      accepted: accepted.length,
      invalid: expectedDead.length,
      duplicates: 0,
      late: 0,
      large: large.length,
    });
    const windows = readNdjson(join(out, 'windows.ndjson'));
    assert.equal(
      windows.reduce((n, w) => n + Number(w.count), 0),
      accepted.length,
      'every accepted event is counted in windows.ndjson',
    );
    for (const w of windows) assert.equal(w.window_start, '2026-11-21T00:00:00.000Z');
    assert.deepEqual(
      readNdjson(join(out, 'large.ndjson'))
        .map((x) => x.id)
        .sort(),
      large.map(eventId),
    );
    assert.equal(sqliteWindowRows(out), windows.length, 'payments.db has the same windows');
  });
});

describe('input files', () => {
  let plain: string;
  let reference: string;

  before(async () => {
    plain = sampleInput(20_000);
    reference = tempDir();
    const r = await runPayments(plain, reference);
    assert.equal(r.code, 0, r.stderr);
  });

  it('a missing input file → exit 2 (a usage error), SLUICE_ERR_INPUT_NOT_FOUND naming the path, no output files', async () => {
    const dir = tempDir();
    const missing = join(dir, 'no-such-events.ndjson');
    const out = join(dir, 'out');
    const r = await runPayments(missing, out);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /SLUICE_ERR_INPUT_NOT_FOUND/);
    assert.ok(r.stderr.includes(missing), `stderr names the path: ${r.stderr}`);
    const files = existsSync(out) ? readdirSync(out) : [];
    assert.deepEqual(files, [], 'no output files are created in --out');
  });

  it('a pipeline error with an input large enough for workers → exit 2 at once: workers started early do not hold the process', async () => {
    // sluice run starts its workers before it reads the pipeline file (src/core/prestart.ts); a run
    // that fails before the engine takes them must still end.
    const dir = tempDir();
    const big = join(dir, 'big.ndjson');
    writeFileSync(big, '');
    truncateSync(big, 40 * 1024 * 1024); // sparse: above the 32 MiB under which runs stay inline
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'name: bad\nsource: { type: file }\nsteps: [{ type: nope }]\nsinks: {}\n');
    const r = await sluice(['run', bad, '--input', big, '--out', join(dir, 'out')], { killAfterMs: 20_000 });
    assert.equal(r.signal, null, `the run ended by itself: ${r.stderr}`);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /SLUICE_ERR_CONFIG_INVALID/);
  });

  it('a complete gzip input named .ndjson gives the same results as the uncompressed file', async () => {
    const dir = tempDir();
    const gz = join(dir, 'events.ndjson');
    writeFileSync(gz, gzipSync(readFileSync(plain)));
    const r = await runPayments(gz, join(dir, 'out'));
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(resultsOf(join(dir, 'out')), resultsOf(reference));
  });

  for (const [what, cut] of [
    ['its last 10 bytes', (n: number) => n - 10],
    ['its second half', (n: number) => Math.floor(n / 2)],
  ] as const) {
    it(`a gzip input missing ${what} → exit 1, SLUICE_ERR_INPUT_CORRUPT, no output left behind`, async () => {
      const dir = tempDir();
      const gz = gzipSync(readFileSync(plain));
      const file = join(dir, 'events.ndjson.gz');
      writeFileSync(file, gz.subarray(0, cut(gz.length)));
      const out = join(dir, 'out');
      const r = await runPayments(file, out);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /SLUICE_ERR_INPUT_CORRUPT/);
      assert.match(r.stderr, /truncated|corrupt/i);
      assert.ok(r.stderr.includes(file), `stderr names the input: ${r.stderr}`);
      assertNothingWritten(out);
    });
  }

  it('--input - reads standard input', async () => {
    const out = join(tempDir(), 'out');
    const r = await runPayments('-', out, { input: readFileSync(plain, 'utf8') });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(resultsOf(out), resultsOf(reference));
  });
});

describe('paths that cannot be used (issue 13, finding 7)', () => {
  // Each of these hung at 100% CPU (--out, --data under /proc: Node's recursive mkdir loops on
  // ENOENT from an existing parent) or exited 1 with a stack trace and no help line.
  const bounded = { killAfterMs: 30_000 };
  const sample = (): string => {
    const file = join(tempDir(), 'events.ndjson');
    writeFileSync(file, JSON.stringify({ id: eventId(1) }) + '\n');
    return file;
  };
  const usageError = (r: Ran, path: string): void => {
    assert.equal(r.signal, null, `ended by itself, not killed after 30 s: ${r.stderr}`);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^error\[SLUICE_ERR_PATH_UNWRITABLE\]: cannot create or write /m);
    assert.ok(r.stderr.includes(path), `names ${path}: ${r.stderr}`);
    assert.match(r.stderr, /^ {2}help: /m);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  };

  it('--out where no directory can be created → exit 2, SLUICE_ERR_PATH_UNWRITABLE with help, at once', async () => {
    const r = await sluice(['run', PAYMENTS, '--input', sample(), '--out', '/proc/sluice-nope'], bounded);
    usageError(r, '/proc/sluice-nope');
  });

  it('--out under a regular file → exit 2 naming the file that is in the way', async () => {
    const file = sample();
    const r = await sluice(['run', PAYMENTS, '--input', file, '--out', join(file, 'out')], bounded);
    usageError(r, file);
    assert.match(r.stderr, /exists and is not a directory/);
  });

  it('sluice serve --data where no directory can be created → exit 2 before listening', async () => {
    const r = await sluice(
      ['serve', '--data', '/proc/sluice-nope', '--host', '127.0.0.1', '--port', '0'],
      bounded,
    );
    usageError(r, '/proc/sluice-nope');
  });

  it('an input that is a directory → exit 2, SLUICE_ERR_INPUT_NOT_FOUND', async () => {
    const dir = tempDir();
    const r = await sluice(['run', PAYMENTS, '--input', dir, '--out', join(dir, 'out')], bounded);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /SLUICE_ERR_INPUT_NOT_FOUND.*is a directory/);
  });
});

describe('JSON array input (format: json)', () => {
  it('malformed elements become dead letters carrying line and index', async () => {
    const elements = [
      JSON.stringify(event(1)),
      '{"id": "evt_x", "amount": }',
      '[1, 2, 3]',
      JSON.stringify({ ...event(4), amount: undefined }),
      'nope',
      // Brackets and quotes inside strings must not confuse the cutting between elements.
      JSON.stringify(event(6, { meta: { note: '] } [ { " \\ ],[' } })),
      '"a string"',
      JSON.stringify(event(8)),
    ];
    const dir = tempDir();
    const file = join(dir, 'events.json');
    writeFileSync(file, `[\n  ${elements.join(',\n  ')}\n]\n`);
    const out = join(dir, 'out');
    const r = await sluice(['run', join(FIXTURES, 'json-array.yaml'), '--input', file, '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const dead = deadLetters(out);
    // Element i (0-based) is on line i + 2.
    const expected = [
      { index: 1, reason: 'parse' },
      { index: 2, reason: 'invalid', pointer: '' },
      { index: 3, reason: 'invalid', pointer: '/amount' },
      { index: 4, reason: 'parse' },
      { index: 6, reason: 'invalid', pointer: '' },
    ];
    assert.deepEqual(
      dead.map((d) => [d.line, d.index]),
      expected.map((e) => [e.index + 2, e.index]),
    );
    for (const e of expected) {
      const d = deadAt(dead, e.index + 2);
      assert.equal(d.reason, e.reason);
      assertReadable(d);
      assert.equal(d.raw, elements[e.index]);
      if (e.pointer !== undefined) assert.equal(d.pointer, e.pointer);
    }
    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as Json;
    assert.equal(summary.lines, elements.length);
    assert.equal(summary.accepted, 3);
    assert.equal(summary.invalid, expected.length);
    const windows = readNdjson(join(out, 'windows.ndjson'));
    assert.equal(
      windows.reduce((n, w) => n + Number(w.count), 0),
      3,
    );
  });
});

describe('a transform that throws', () => {
  it('turns only the records it throws on into error dead letters; every other record is written', async () => {
    const records = [
      { id: 1, boom: 'first' },
      { id: 2 },
      { id: 3, boom_value: 'kaput' },
      { id: 4 },
      { id: 5, boom: 'last' },
    ];
    const dir = tempDir();
    const file = join(dir, 'events.ndjson');
    writeFileSync(file, records.map((x) => JSON.stringify(x) + '\n').join(''));
    const out = join(dir, 'out');
    const r = await sluice(['run', join(FIXTURES, 'throws.yaml'), '--input', file, '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readNdjson(join(out, 'out.ndjson')), [
      { id: 2, seen: true },
      { id: 4, seen: true },
    ]);
    const dead = deadLetters(out);
    assert.deepEqual(
      dead.map((d) => [d.line, d.reason]),
      [
        [1, 'error'],
        [3, 'error'],
        [5, 'error'],
      ],
    );
    for (const [line, message] of [
      [1, 'boom: first'],
      [3, 'kaput'],
      [5, 'boom: last'],
    ] as const) {
      const d = deadAt(dead, line);
      assert.ok(d.detail.includes(message), `detail ${JSON.stringify(d.detail)} has the error message`);
      assert.equal(d.raw, JSON.stringify(records[line - 1]));
    }
  });
});

describe('a module predicate that throws', () => {
  it('turns only the records it throws on into error dead letters, in a route and in a filter', async () => {
    const records = [
      { id: 1, color: 'red' },
      { id: 2, boom: 'x', color: 'red' },
      { id: 3, color: 'blue' },
    ];
    const dir = tempDir();
    const file = join(dir, 'events.ndjson');
    writeFileSync(file, records.map((x) => JSON.stringify(x) + '\n').join(''));
    const out = join(dir, 'out');
    const r = await sluice(['run', join(FIXTURES, 'throws-predicate.yaml'), '--input', file, '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    // The route throws on record 2 first, so it never reaches the filter.
    assert.deepEqual(readNdjson(join(out, 'red.ndjson')), [records[0]]);
    assert.deepEqual(readNdjson(join(out, 'out.ndjson')), [records[2]]);
    const dead = deadLetters(out);
    assert.deepEqual(
      dead.map((d) => [d.line, d.reason]),
      [[2, 'error']],
    );
    assert.match(dead[0]!.detail, /boom: x/);
  });
});

describe('max_record_bytes', () => {
  const pipeline = join(FIXTURES, 'max-record.yaml');

  for (const [what, size] of [
    ['10 KB', 10_000],
    ['3 MB (longer than a read and a chunk)', 3 * 1024 * 1024],
  ] as const) {
    it(`a ${what} line above max_record_bytes (2048) → a too_large dead letter; later lines still processed`, async () => {
      // The long line is valid JSON and a valid event: only its length is wrong.
      const long = JSON.stringify(event(2, { ua: 'x'.repeat(size) }));
      const lines = [JSON.stringify(event(1)), long, JSON.stringify(event(3)), JSON.stringify(event(4))];
      const dir = tempDir();
      const file = join(dir, 'events.ndjson');
      writeFileSync(file, lines.join('\n') + '\n');
      const out = join(dir, 'out');
      const r = await sluice(['run', pipeline, '--input', file, '--out', out]);
      assert.equal(r.code, 0, r.stderr);
      const dead = deadLetters(out);
      assert.deepEqual(
        dead.map((d) => [d.line, d.reason]),
        [[2, 'too_large']],
      );
      const d = dead[0]!;
      assertReadable(d);
      assert.ok(long.startsWith(d.raw), 'raw is the beginning of the line');
      assert.ok(d.raw.length > 0 && d.raw.length <= 2048, `raw keeps at most the limit (${d.raw.length})`);
      assert.deepEqual(
        readNdjson(join(out, 'out.ndjson')).map((x) => x.id),
        [1, 3, 4].map(eventId),
      );
    });
  }
});

describe('Ctrl-C', () => {
  it('SIGINT during a run → exit 130, SLUICE_ERR_INTERRUPTED, no outputs and no temporary files', async () => {
    const input = sampleInput(1_000_000);
    const out = join(tempDir(), 'out');
    const child = spawn(process.execPath, [BIN, 'run', PAYMENTS, '--input', input, '--out', out], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdout.resume();
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('close', (code, signal) => resolve({ code, signal })),
    );
    let running = true;
    void exited.then(() => (running = false));
    try {
      // The sinks' temporary files appear once the run has started (the signal handler is set).
      const deadline = Date.now() + 30_000;
      while (running && Date.now() < deadline) {
        if (existsSync(out) && readdirSync(out).some((f) => f.endsWith('.tmp'))) break;
        await sleep(25);
      }
      assert.ok(running, `sluice exited before it was interrupted: ${stderr}`);
      await sleep(1000);
      assert.ok(running, `sluice finished the 1M-event run within 1 s; nothing to interrupt: ${stderr}`);
      child.kill('SIGINT');
      const timeout = sleep(30_000, 'timeout' as const, { ref: false });
      const result = await Promise.race([exited, timeout]);
      assert.notEqual(result, 'timeout', 'sluice did not exit within 30 s of SIGINT');
      const { code, signal } = result as { code: number | null; signal: NodeJS.Signals | null };
      assert.equal(signal, null, `killed by ${signal} instead of exiting: ${stderr}`);
      assert.equal(code, 130, stderr);
      assert.match(stderr, /SLUICE_ERR_INTERRUPTED/);
      assertNothingWritten(out);
    } finally {
      if (running) child.kill('SIGKILL');
    }
  });
});
