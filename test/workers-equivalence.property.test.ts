/**
 * N workers give the same results as one: random inputs with duplicate ids, disordered and very
 * late event times, malformed and empty lines run through the real CLI with `--workers 0` (main
 * thread), 1 and 3 and tiny chunks; every output file must be byte-identical across the three, and
 * must match a reference model of the pipeline that processes the lines one by one in input order.
 *
 * Pipelines: test/fixtures/equivalence/{pipeline,hopping}.yaml (dedupe on `id` → window on `ts`
 * grouped by `k` → route `v >= 1000`).
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ROOT, sluice, tempDir, formatScaled } from './helpers.ts';

// `maxLength` means what it says: lengths range up to it, not up to fast-check's small default size.
fc.configureGlobal({ defaultSizeToMaxWhenMaxSpecified: true, includeErrorInReport: true });

const FIXTURES = join(ROOT, 'test', 'fixtures', 'equivalence');
const WORKERS = [0, 1, 3];
const ALPHA = 0.005;

interface Geometry {
  file: string;
  size: number;
  hop: number;
  lateness: number;
}

const TUMBLING: Geometry = {
  file: join(FIXTURES, 'pipeline.yaml'),
  size: 10_000,
  hop: 10_000,
  lateness: 5_000,
};
const HOPPING: Geometry = { file: join(FIXTURES, 'hopping.yaml'), size: 10_000, hop: 4_000, lateness: 3_000 };

type Rec = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// Inputs

const MISSING = Symbol('missing');
type Maybe<T> = T | typeof MISSING;

interface EventItem {
  kind: 'event';
  id: Maybe<unknown>;
  /** Milliseconds the event clock moves forward before this event. */
  advance: number;
  /** Event time relative to the clock: mostly small disorder, sometimes far in the past. */
  offset: number;
  time: 'number' | 'iso' | 'numeric-string' | 'garbage' | 'missing';
  k: Maybe<unknown>;
  v: Maybe<unknown>;
  u: Maybe<string>;
}

type Item =
  | EventItem
  /** A malformed, non-object or empty line. */
  | { kind: 'line'; text: string }
  /** An exact copy of an earlier event's line. */
  | { kind: 'repeat'; back: number }
  /** A large valid event, so that the input spans several of the reader's 1 MiB reads. */
  | { kind: 'filler' };

const maybe = <T>(arb: fc.Arbitrary<T>, freq: number): fc.Arbitrary<Maybe<T>> =>
  fc.oneof({ weight: freq, arbitrary: arb }, { weight: 1, arbitrary: fc.constant(MISSING) });

const event: fc.Arbitrary<EventItem> = fc.record({
  kind: fc.constant('event' as const),
  id: maybe(
    fc.oneof(
      { weight: 12, arbitrary: fc.noBias(fc.nat({ max: 150 })).map((n) => `e${n}`) },
      // 1 and "1" are different keys; null is no key at all.
      { weight: 1, arbitrary: fc.nat({ max: 3 }) },
      { weight: 1, arbitrary: fc.constant(null) },
    ),
    25,
  ),
  advance: fc.integer({ min: 0, max: 800 }),
  offset: fc.oneof(
    { weight: 10, arbitrary: fc.integer({ min: -14_000, max: 1_500 }) },
    { weight: 1, arbitrary: fc.integer({ min: -90_000, max: -15_000 }) },
  ),
  time: fc.oneof(
    { weight: 20, arbitrary: fc.constant('number' as const) },
    { weight: 2, arbitrary: fc.constant('iso' as const) },
    {
      weight: 1,
      arbitrary: fc.constantFrom('numeric-string' as const, 'garbage' as const, 'missing' as const),
    },
  ),
  k: maybe(fc.constantFrom('a', 'b', 'c', 1), 12),
  v: maybe(
    fc.oneof(
      { weight: 8, arbitrary: fc.integer({ min: -2000, max: 5000 }) },
      {
        weight: 2,
        arbitrary: fc
          .tuple(fc.integer({ min: -2000, max: 5000 }), fc.nat({ max: 99 }))
          .map(([i, f]) => `${i}.${String(f).padStart(2, '0')}`),
      },
      { weight: 1, arbitrary: fc.bigInt({ min: 2n ** 53n, max: 10n ** 24n }).map(String) },
      { weight: 1, arbitrary: fc.constant('x') },
    ),
    12,
  ),
  u: maybe(
    fc.nat({ max: 11 }).map((n) => `u${n}`),
    6,
  ),
});

const junk = fc.constantFrom(
  '',
  '',
  '   ',
  'not json',
  '{"id":',
  '[1,2,3]',
  '42',
  'null',
  '"text"',
  '{"ts":}',
);

function items(maxLength: number): fc.Arbitrary<Item[]> {
  return fc.array(
    fc.oneof(
      { weight: 20, arbitrary: event },
      { weight: 2, arbitrary: junk.map((text) => ({ kind: 'line' as const, text })) },
      { weight: 2, arbitrary: fc.nat({ max: 20 }).map((back) => ({ kind: 'repeat' as const, back })) },
    ),
    { minLength: 1, maxLength },
  );
}

const FILLER_BYTES = 600_000;

/** The input text: one line per item, every line ending in a newline. */
function render(list: readonly Item[], clockStart: number): string {
  let clock = clockStart;
  const lines: string[] = [];
  const eventLines: string[] = [];
  let fillers = 0;
  for (const item of list) {
    if (item.kind === 'line') lines.push(item.text);
    else if (item.kind === 'repeat') {
      if (eventLines.length > 0) lines.push(eventLines[Math.max(0, eventLines.length - 1 - item.back)]!);
    } else if (item.kind === 'filler') {
      const r = { id: `filler-${fillers++}`, ts: clock, k: 'pad', pad: 'x'.repeat(FILLER_BYTES) };
      lines.push(JSON.stringify(r));
    } else {
      clock += item.advance;
      const t = clock + item.offset;
      const r: Rec = {};
      if (item.id !== MISSING) r.id = item.id;
      if (item.time === 'number') r.ts = t;
      else if (item.time === 'iso') r.ts = new Date(t).toISOString();
      else if (item.time === 'numeric-string') r.ts = String(t);
      else if (item.time === 'garbage') r.ts = t % 2 === 0 ? true : 'soon';
      if (item.k !== MISSING) r.k = item.k;
      if (item.v !== MISSING) r.v = item.v;
      if (item.u !== MISSING) r.u = item.u;
      const line = JSON.stringify(r);
      lines.push(line);
      eventLines.push(line);
    }
  }
  return lines.map((l) => l + '\n').join('');
}

// ---------------------------------------------------------------------------------------------
// Reference model: the pipeline, one line at a time, in input order.

const SCALE = 20;

/** Exact value × 10^SCALE of a plain decimal (the only numeric forms the inputs contain). */
function exactOf(v: unknown): bigint | undefined {
  const text = typeof v === 'number' && Number.isInteger(v) ? String(v) : typeof v === 'string' ? v : '';
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(text);
  if (!m) return undefined;
  const units = BigInt(m[2]! + (m[3] ?? '').padEnd(SCALE, '0'));
  return m[1] === '-' ? -units : units;
}

/** How the dedupe and window steps turn a value into key text (strings as is, others as JSON). */
const keyText = (v: unknown): string => (typeof v === 'string' ? v : '\u0001' + JSON.stringify(v ?? null));

function eventTime(v: unknown): number {
  if (typeof v === 'number') return Number.isFinite(v) ? v : NaN;
  if (typeof v === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$/.test(v)) return Date.parse(v);
  return NaN;
}

interface Dead {
  line: number;
  reason: string;
  step: string;
}

interface Window {
  start: number;
  k: unknown;
  records: Rec[];
}

interface Expected {
  dead: Dead[];
  windows: Map<string, Window>;
  big: string;
  summary: Record<string, number>;
}

function model(input: string, g: Geometry): Expected {
  const lines = input === '' ? [] : input.split('\n');
  if (input.endsWith('\n')) lines.pop();
  const dead: Dead[] = [];
  const windows = new Map<string, Window>();
  const seen = new Set<string>();
  let watermark = -Infinity;
  let big = '';
  const summary = { lines: lines.length, accepted: 0, duplicates: 0, parse: 0, invalid: 0, late: 0, big: 0 };
  lines.forEach((text, i) => {
    const line = i + 1;
    const fail = (reason: 'parse' | 'invalid' | 'late', step: string): void => {
      dead.push({ line, reason, step });
      summary[reason]++;
    };
    let r: unknown;
    try {
      r = JSON.parse(text);
    } catch {
      return fail('parse', 'source');
    }
    if (r === null || typeof r !== 'object' || Array.isArray(r)) return fail('invalid', 'source');
    const rec = r as Rec;
    if (rec.id === undefined || rec.id === null) return fail('invalid', 'dedupe');
    const id = keyText(rec.id);
    if (seen.has(id)) {
      summary.duplicates++;
      return;
    }
    seen.add(id);
    const t = eventTime(rec.ts);
    if (Number.isNaN(t)) return fail('invalid', 'per_window');
    const last = Math.floor(t / g.hop) * g.hop;
    if (last + g.size + g.lateness <= watermark) return fail('late', 'per_window');
    for (let start = last; start > t - g.size; start -= g.hop) {
      // Hopping: the earlier windows of this event may have closed already.
      if (start + g.size + g.lateness <= watermark) break;
      const key = `${start}|${keyText(rec.k)}`;
      let w = windows.get(key);
      if (!w) windows.set(key, (w = { start, k: rec.k ?? null, records: [] }));
      w.records.push(rec);
    }
    if (t > watermark) watermark = t;
    summary.accepted++;
    const v = exactOf(rec.v);
    if (v !== undefined && v >= 1000n * 10n ** BigInt(SCALE)) {
      big += JSON.stringify(rec) + '\n';
      summary.big++;
    }
  });
  return { dead, windows, big, summary: { ...summary, rows: windows.size } };
}

// ---------------------------------------------------------------------------------------------
// Checks

const ROW_FIELDS = ['window_start', 'window_end', 'k', 'count', 'sum', 'min', 'max', 'users', 'p50', 'p90'];

function checkWindows(text: string, expected: Expected, g: Geometry): void {
  const rows =
    text === ''
      ? []
      : text
          .trimEnd()
          .split('\n')
          .map((l) => JSON.parse(l) as Rec);
  const byKey = new Map<string, Rec>();
  for (const row of rows) {
    const key = `${row.window_start}|${keyText(row.k)}`;
    assert.ok(!byKey.has(key), `window ${key} was written twice`);
    byKey.set(key, row);
  }
  assert.deepEqual([...byKey.keys()].sort(), [...expected.windows.keys()].sort(), 'the set of windows');
  for (const [key, w] of expected.windows) {
    const row = byKey.get(key)!;
    assert.deepEqual(Object.keys(row), ROW_FIELDS, `fields of ${key}`);
    const values = w.records.map((r) => exactOf(r.v)).filter((x) => x !== undefined);
    // JSON numbers alone come out as JSON numbers; decimal text makes the row's values decimal text.
    const text = w.records.some((r) => typeof r.v === 'string' && exactOf(r.v) !== undefined);
    const typed = <T extends string | null>(x: T): T | number => (x === null || text ? x : Number(x));
    const users = new Set(w.records.map((r) => r.u).filter((u) => u !== undefined));
    const min =
      values.length === 0
        ? null
        : formatScaled(
            values.reduce((m, x) => (x < m ? x : m)),
            SCALE,
          );
    const max =
      values.length === 0
        ? null
        : formatScaled(
            values.reduce((m, x) => (x > m ? x : m)),
            SCALE,
          );
    assert.deepEqual(
      {
        window_end: row.window_end,
        k: row.k,
        count: row.count,
        sum: row.sum,
        min: row.min,
        max: row.max,
        users: row.users,
      },
      {
        window_end: w.start + g.size,
        k: w.k,
        count: w.records.length,
        sum: typed(
          formatScaled(
            values.reduce((s, x) => s + x, 0n),
            SCALE,
          ),
        ),
        min: typed(min),
        max: typed(max),
        users: users.size,
      },
      `window ${key}`,
    );
    const floats = w.records
      .filter((r) => exactOf(r.v) !== undefined)
      .map((r) => Number(r.v))
      .sort((a, b) => a - b);
    for (const [name, q] of [
      ['p50', 0.5],
      ['p90', 0.9],
    ] as const) {
      if (floats.length === 0) {
        assert.equal(row[name], null, `${name} of ${key}`);
        continue;
      }
      const truth = floats[Math.floor(q * (floats.length - 1))]!;
      // α relative, plus the rounding of all-integer sketches to integers (see
      // window-merge.property.test.ts, which holds the sketch to α alone).
      const slack = ALPHA * Math.abs(truth) * (1 + 1e-9) + (floats.every(Number.isInteger) ? 0.5 : 0);
      const estimate = row[name] as number;
      assert.ok(Math.abs(estimate - truth) <= slack, `${name} of ${key}: ${estimate}, true value ${truth}`);
    }
  }
}

function checkAgainstModel(out: string, input: string, g: Geometry): void {
  const expected = model(input, g);
  const lines = input.split('\n');
  const deadText = readFileSync(join(out, 'dead.ndjson'), 'utf8');
  const dead =
    deadText === ''
      ? []
      : deadText
          .trimEnd()
          .split('\n')
          .map((l) => JSON.parse(l) as Rec);
  assert.deepEqual(
    dead.map((d) => ({ line: d.line, reason: d.reason, step: d.step })),
    expected.dead,
    'dead letters (line, reason, step)',
  );
  for (const d of dead) assert.equal(d.raw, lines[(d.line as number) - 1], `raw text of line ${d.line}`);
  assert.equal(readFileSync(join(out, 'big.ndjson'), 'utf8'), expected.big, 'route output');
  assert.deepEqual(JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')), expected.summary, 'summary');
  checkWindows(readFileSync(join(out, 'windows.ndjson'), 'utf8'), expected, g);
}

/** Runs the pipeline with every worker count; returns the output directory of each. */
async function runAll(g: Geometry, input: string, dir: string): Promise<string[]> {
  const file = join(dir, 'input.ndjson');
  writeFileSync(file, input);
  return Promise.all(
    WORKERS.map(async (w) => {
      const out = join(dir, `out-${w}`);
      const r = await sluice([
        'run',
        g.file,
        '--input',
        file,
        '--out',
        out,
        '--workers',
        String(w),
        '--chunk-size',
        '1k',
        '--no-progress',
      ]);
      assert.equal(r.code, 0, `--workers ${w} failed:\n${r.stderr}`);
      return out;
    }),
  );
}

function checkIdentical(outs: string[]): void {
  const names = readdirSync(outs[0]!).sort();
  assert.deepEqual(names, ['big.ndjson', 'dead.ndjson', 'summary.json', 'windows.ndjson']);
  for (let i = 1; i < outs.length; i++) {
    assert.deepEqual(readdirSync(outs[i]!).sort(), names, `files with --workers ${WORKERS[i]}`);
    for (const name of names) {
      const a = readFileSync(join(outs[0]!, name), 'utf8');
      const b = readFileSync(join(outs[i]!, name), 'utf8');
      if (a === b) continue;
      const al = a.split('\n');
      const bl = b.split('\n');
      const at = al.findIndex((l, j) => l !== bl[j]);
      assert.fail(
        `${name} differs between --workers ${WORKERS[0]} and ${WORKERS[i]} at line ${at + 1}:\n` +
          `  ${al[at]?.slice(0, 300)}\n  ${bl[at]?.slice(0, 300)}`,
      );
    }
  }
}

/** Runs one input through the CLI with every worker count and checks the outputs. */
async function equivalent(g: Geometry, input: string): Promise<void> {
  const dir = tempDir('sluice-equivalence-');
  try {
    const outs = await runAll(g, input, dir);
    checkIdentical(outs);
    checkAgainstModel(outs[0]!, input, g);
  } catch (err) {
    if (err instanceof Error) err.message += `\n(input and outputs kept in ${dir})`;
    throw err;
  }
  rmSync(dir, { recursive: true, force: true });
}

const T0 = 1_700_000_000_000;
/** The event clock starts at a random phase, so window boundaries fall anywhere. */
const phase = fc.integer({ min: 0, max: 99_999 });

/**
 * Random input text. A counterexample costs three CLI runs per shrink step, so it is shrunk a
 * little, not to the end.
 */
const inputs = fc.limitShrink(
  fc.tuple(items(160), phase).map(([list, p]) => render(list, T0 + p)),
  10,
);

describe('N workers equal one worker', () => {
  it('tumbling windows: byte-identical outputs with --workers 0, 1 and 3, matching the model', async () => {
    await fc.assert(
      fc.asyncProperty(inputs, (input) => equivalent(TUMBLING, input)),
      { numRuns: 10 },
    );
  });

  it('hopping windows (hop < size): byte-identical outputs with --workers 0, 1 and 3, matching the model', async () => {
    await fc.assert(
      fc.asyncProperty(inputs, (input) => equivalent(HOPPING, input)),
      { numRuns: 5 },
    );
  });

  it('inputs of several MiB (several chunks whatever the chunk size) give the same results too', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        items(200),
        fc.array(fc.nat(), { minLength: 5, maxLength: 5 }),
        phase,
        async (hopping, list, at, p) => {
          // Five 600 kB fillers: the input spans at least three of the reader's 1 MiB reads.
          const all = [...list];
          for (const i of at) all.splice(i % (all.length + 1), 0, { kind: 'filler' });
          await equivalent(hopping ? HOPPING : TUMBLING, render(all, T0 + p));
        },
      ),
      // The counterexample names the kept input file; shrinking megabytes is not worth it.
      { numRuns: 3, endOnFailure: true },
    );
  });

  it('--chunk-size 1k spreads a small input over several workers', async () => {
    const dir = tempDir('sluice-equivalence-');
    try {
      const file = join(dir, 'input.ndjson');
      // 60 kB: sixty 1 KiB chunks.
      writeFileSync(
        file,
        Array.from({ length: 2000 }, (_, i) => `{"id":${i},"pad":"abcdefghij"}\n`).join(''),
      );
      const out = join(dir, 'out');
      const r = await sluice([
        'run',
        join(FIXTURES, 'probe.yaml'),
        '--input',
        file,
        '--out',
        out,
        '--workers',
        '3',
        '--chunk-size',
        '1k',
        '--no-progress',
      ]);
      assert.equal(r.code, 0, r.stderr);
      const threads = new Map<number, number>();
      for (const line of readFileSync(join(out, 'records.ndjson'), 'utf8').trimEnd().split('\n')) {
        const t = (JSON.parse(line) as { thread: number }).thread;
        threads.set(t, (threads.get(t) ?? 0) + 1);
      }
      assert.ok(
        threads.size >= 2,
        `all 2000 records were processed by one thread (${JSON.stringify(Object.fromEntries(threads))}): ` +
          'the input was not cut into 1 KiB chunks',
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
