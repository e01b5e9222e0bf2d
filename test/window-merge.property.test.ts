/**
 * Window aggregates are exactly mergeable: aggregating random partitions of the records
 * separately, passing each partial state through serialize → JSON text or structured clone →
 * deserialize, and merging them in a random grouping and order gives the same row (and the same
 * state) as aggregating all the records at once. The rows are also checked against a BigInt
 * reference: exact count; sums of JSON numbers correctly rounded from the exact sum of the doubles
 * (whatever the grouping), exact decimal sums, min and max once decimal text takes part;
 * quantiles within the sketch's relative accuracy;
 * distinct counts exact below HyperLogLog's sparse threshold, min(2^(p-3), 2048).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { formatScaled } from './helpers.ts';
import { Aggregation, type Acc, type AccState, type MetricConfig } from '../dist/transforms/window/state.js';

type Rec = Record<string, unknown>;

// `maxLength` means what it says: lengths range up to it, not up to fast-check's small default size.
fc.configureGlobal({ defaultSizeToMaxWhenMaxSpecified: true, includeErrorInReport: true });

const ALPHA = 0.005;
const FEE_ALPHA = 0.02;
const QUANTILES = { p0: 0, p25: 0.25, p50: 0.5, p90: 0.9, p99: 0.99, p100: 1 } as const;
const PRECISIONS = { users: 14, users_p8: 8, users_p4: 4 } as const;

const METRICS: Record<string, MetricConfig> = {
  count: { op: 'count' },
  sum: { op: 'sum', field: 'amount' },
  min: { op: 'min', field: 'amount' },
  max: { op: 'max', field: 'amount' },
  avg: { op: 'avg', field: 'amount' },
  ...Object.fromEntries(
    Object.entries(PRECISIONS).map(([name, p]) => [
      name,
      { op: 'distinct', field: 'user', ...(p === 14 ? {} : { precision: p }) },
    ]),
  ),
  ...Object.fromEntries(
    Object.entries(QUANTILES).map(([name, q]) => [name, { op: 'quantile', field: 'amount', q }]),
  ),
  fee_sum: { op: 'sum', field: 'fee' },
  fee_p75: { op: 'quantile', field: 'fee', q: 0.75, relative_accuracy: FEE_ALPHA },
};

// ---------------------------------------------------------------------------------------------
// Reference arithmetic: every exact value as an integer count of 10^-SCALE.

const SCALE = 60;

/** The exact value of a record field, × 10^SCALE; undefined for anything not numeric. */
function exactOf(v: unknown): bigint | undefined {
  let text: string;
  if (typeof v === 'number') text = Number.isInteger(v) ? BigInt(v).toString() : String(v);
  else if (typeof v === 'string') text = v;
  else return undefined;
  const m = /^(-?)(\d+)(?:\.(\d+))?(?:e([+-]?\d+))?$/.exec(text);
  if (!m) return undefined;
  const frac = m[3] ?? '';
  const shift = SCALE - frac.length + Number(m[4] ?? 0);
  assert.ok(shift >= 0, `reference scale too small for ${text}`);
  const units = BigInt(m[2]! + frac) * 10n ** BigInt(shift);
  return m[1] === '-' ? -units : units;
}

/** What a quantile sketch sees: the value as a double. */
const floatOf = (v: unknown): number => (typeof v === 'number' ? v : Number(v));

// ---------------------------------------------------------------------------------------------
// Records

const digits = (minLength: number, maxLength: number): fc.Arbitrary<string> =>
  fc.string({ unit: fc.constantFrom(...'0123456789'), minLength, maxLength });
const sign = fc.constantFrom('', '-');

/** Numeric field values in every representation the aggregates accept, and a few they skip. */
const amount: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: -1000, max: 1000 }) },
  { weight: 2, arbitrary: fc.maxSafeInteger() },
  { weight: 1, arbitrary: fc.maxSafeInteger().map(String) },
  // Integers beyond 2^53: decimal text, and JSON numbers that are integral doubles.
  {
    weight: 2,
    arbitrary: fc.tuple(sign, fc.bigInt({ min: 2n ** 53n, max: 10n ** 30n })).map(([s, n]) => `${s}${n}`),
  },
  { weight: 1, arbitrary: fc.constantFrom(2 ** 53 + 2, -(2 ** 60), 1e20, -3e21) },
  // Decimal text with fractions, integer parts up to 10^20.
  {
    weight: 3,
    arbitrary: fc
      .tuple(sign, fc.bigInt({ min: 0n, max: 10n ** 20n }), digits(1, 6))
      .map(([s, int, frac]) => `${s}${int}.${frac}`),
  },
  // Non-integral JSON numbers, some printed with an exponent (`1.5e-7`).
  {
    weight: 1,
    arbitrary: fc
      .integer({ min: -1e9, max: 1e9 })
      .map((n) => n / 1e7)
      .filter((x) => !Number.isInteger(x)),
  },
  { weight: 1, arbitrary: fc.constantFrom(undefined, null, 'abc', '', true, { x: 1 }) },
);

const fee: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer({ min: 0, max: 100_000 }),
  fc.tuple(fc.integer({ min: 0, max: 10_000 }), digits(1, 2)).map(([i, f]) => `${i}.${f}`),
  fc.constant(undefined),
);

/** Records with user ids drawn from a pool, so ids repeat and partitions overlap. */
function records(options: { maxRecords: number; maxUsers: number }): fc.Arbitrary<Rec[]> {
  return fc
    .uniqueArray(fc.string({ maxLength: 8 }), { minLength: 1, maxLength: options.maxUsers })
    .chain((users) =>
      fc.array(
        fc.record({
          amount,
          fee,
          user: fc.option(fc.constantFrom(...users), { nil: undefined, freq: 10 }),
        }),
        { maxLength: options.maxRecords },
      ),
    );
}

/**
 * Many distinct users: enough to push HyperLogLog far past its sparse threshold, and in about half
 * of the runs past p = 14's 2048 too.
 */
function manyUsers(): fc.Arbitrary<Rec[]> {
  return fc
    .tuple(fc.noBias(fc.integer({ min: 100, max: 5000 })), fc.noBias(fc.nat({ max: 1000 })))
    .chain(([users, extra]) =>
      fc.array(
        fc.record({
          amount: fc.integer({ min: -1_000_000, max: 1_000_000 }),
          fee: fc.constant(undefined),
          user: fc.noBias(fc.nat({ max: users - 1 })).map((u) => `user-${u}`),
        }),
        { minLength: users + extra, maxLength: users + extra },
      ),
    );
}

// ---------------------------------------------------------------------------------------------
// Partitions and merges

const agg = new Aggregation(METRICS);
const KEYS = ['g'];

function aggregate(recs: readonly Rec[]): Acc {
  const acc = agg.create([...KEYS]);
  for (const r of recs) agg.add(acc, r);
  return acc;
}

function row(acc: Acc): Rec {
  const out: Rec = {};
  agg.write(acc, out);
  return out;
}

/** Serialize → JSON text → parse → deserialize; the JSON text must survive a second round. */
function throughJson(acc: Acc): Acc {
  const text = JSON.stringify(agg.serialize(acc));
  const back = agg.deserialize(JSON.parse(text) as AccState);
  assert.equal(JSON.stringify(agg.serialize(back)), text, 'a state changed through JSON');
  return back;
}

/** How a state travels: as JSON text (a store, another instance) or structured-cloned (a thread). */
type Via = 'json' | 'clone';

function transport(acc: Acc, via: Via): Acc {
  return via === 'json' ? throughJson(acc) : agg.deserialize(structuredClone(agg.serialize(acc)));
}

interface Plan {
  /** Partition of each record. */
  parts: number[];
  /** How each partition's state travels before merging. */
  vias: Via[];
  /** Merge choices: which two states to merge next, and whether the result travels again. */
  picks: [number, number, Via | 'stay'][];
}

const via = fc.constantFrom<Via>('json', 'clone');

function plan(n: number): fc.Arbitrary<Plan> {
  return fc.integer({ min: 1, max: 9 }).chain((partitions) =>
    fc.record({
      parts: fc.array(fc.nat({ max: partitions - 1 }), { minLength: n, maxLength: n }),
      vias: fc.array(via, { minLength: partitions, maxLength: partitions }),
      picks: fc.array(fc.tuple(fc.nat(), fc.nat(), fc.oneof(via, fc.constant('stay' as const))), {
        minLength: partitions,
        maxLength: partitions,
      }),
    }),
  );
}

function mergeInParts(recs: readonly Rec[], { parts, vias, picks }: Plan): Acc {
  const groups: Rec[][] = vias.map(() => []);
  recs.forEach((r, i) => groups[parts[i]!]!.push(r));
  // Some partitions stay empty: an empty partial state must merge as a no-op.
  const states = groups.map((g, i) => transport(aggregate(g), vias[i]!));
  let step = 0;
  while (states.length > 1) {
    const [x, y, then] = picks[step++ % picks.length]!;
    const i = x % states.length;
    const j = (i + 1 + (y % (states.length - 1))) % states.length;
    agg.merge(states[i]!, states[j]!);
    states.splice(j, 1);
    const at = j < i ? i - 1 : i;
    if (then !== 'stay') states[at] = transport(states[at]!, then);
  }
  return states[0]!;
}

// ---------------------------------------------------------------------------------------------
// Reference checks

/** A double's exact value × 2^1074, an integer (the smallest subnormal is 2^-1074). */
function binaryOf(x: number): bigint {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const bits = view.getBigUint64(0);
  const exponent = Number((bits >> 52n) & 0x7ffn);
  const fraction = bits & ((1n << 52n) - 1n);
  const units = exponent === 0 ? fraction : (fraction | (1n << 52n)) << BigInt(exponent - 1);
  return bits >> 63n ? -units : units;
}

/** `units × 2^-1074` rounded to the nearest double, ties to even (for the values these tests use). */
function roundBinary(units: bigint): number {
  if (units === 0n) return 0;
  const magnitude = units < 0n ? -units : units;
  const shift = Math.max(0, magnitude.toString(2).length - 53);
  let q = magnitude >> BigInt(shift);
  if (shift > 0) {
    const rest = magnitude - (q << BigInt(shift));
    const half = 1n << BigInt(shift - 1);
    if (rest > half || (rest === half && (q & 1n) === 1n)) q += 1n;
  }
  const x = Number(q) * 2 ** (shift - 537) * 2 ** -537;
  return units < 0n ? -x : x;
}

/**
 * What a sum, min and max must be: JSON numbers alone give JSON numbers (the sum correctly rounded
 * from the exact sum of the doubles); once a decimal string takes part, exact decimal text, with
 * the numbers' rounded sum added exactly.
 */
function expectedNumeric(values: readonly unknown[]): {
  sum: number | string;
  min: number | string | null;
  max: number | string | null;
  avg: number | null;
} {
  const numbers = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  const texts = values.filter((v) => typeof v !== 'number' && exactOf(v) !== undefined);
  const fsum = roundBinary(numbers.reduce((s, x) => s + binaryOf(x), 0n));
  const n = numbers.length + texts.length;
  if (texts.length === 0) {
    return {
      sum: fsum,
      min: n === 0 ? null : Math.min(...numbers) || 0,
      max: n === 0 ? null : Math.max(...numbers) || 0,
      avg: n === 0 ? null : fsum / n,
    };
  }
  const exacts = [...numbers, ...texts].map((v) => exactOf(v)!);
  const textSum = texts.reduce((s: bigint, v) => s + exactOf(v)!, 0n);
  return {
    sum: formatScaled(textSum + (numbers.length > 0 ? exactOf(fsum)! : 0n), SCALE),
    min: formatScaled(
      exacts.reduce((m, x) => (x < m ? x : m)),
      SCALE,
    ),
    max: formatScaled(
      exacts.reduce((m, x) => (x > m ? x : m)),
      SCALE,
    ),
    avg: (Number(formatScaled(textSum, SCALE)) + fsum) / n,
  };
}

/** Exact count, sum, min, max and avg; distinct counts exact below the sparse threshold. */
function checkExact(recs: readonly Rec[], out: Rec): void {
  assert.equal(out.count, recs.length, 'count');
  const amounts = expectedNumeric(recs.map((r) => r.amount));
  assert.deepEqual(
    { sum: out.sum, min: out.min, max: out.max, avg: out.avg },
    amounts,
    'sum, min, max and avg',
  );
  assert.equal(out.fee_sum, expectedNumeric(recs.map((r) => r.fee)).sum, 'fee_sum');

  const distinct = new Set(recs.map((r) => r.user).filter((u) => u !== undefined)).size;
  for (const [name, p] of Object.entries(PRECISIONS)) {
    const threshold = Math.min(2 ** (p - 3), 2048);
    const estimate = out[name] as number;
    if (distinct <= threshold) assert.equal(estimate, distinct, `${name} is exact up to ${threshold}`);
    // Dense: a loose sanity bound (standard error 1.04/√2^p is 6.5% at p = 8).
    else if (p >= 8)
      assert.ok(
        Math.abs(estimate - distinct) <= 0.4 * distinct,
        `${name}: estimate ${estimate} for ${distinct} distinct values`,
      );
  }
}

/** Each quantile is within α (relative) of the true value at rank floor(q × (n − 1)). */
function checkQuantiles(recs: readonly Rec[], out: Rec): void {
  const within = (field: string, quantiles: Record<string, number>, alpha: number): void => {
    const sorted = recs
      .map((r) => r[field])
      .filter((v) => exactOf(v) !== undefined)
      .map(floatOf)
      .sort((a, b) => a - b);
    for (const [name, q] of Object.entries(quantiles)) {
      if (sorted.length === 0) {
        assert.equal(out[name], null, `${name} of nothing`);
        continue;
      }
      const rank = Math.floor(q * (sorted.length - 1));
      const truth = sorted[rank]!;
      const estimate = out[name] as number;
      // A hair above α for the floating-point log and power of the bucket mapping.
      assert.ok(
        Math.abs(estimate - truth) <= alpha * Math.abs(truth) * (1 + 1e-9),
        `${name} = ${estimate} is not within ${alpha} of ${truth}, the value at rank ${rank} of ` +
          `[${sorted.join(', ')}]`,
      );
    }
  };
  within('amount', QUANTILES, ALPHA);
  within('fee', { fee_p75: 0.75 }, FEE_ALPHA);
}

// ---------------------------------------------------------------------------------------------

const withPlan = (recs: fc.Arbitrary<Rec[]>): fc.Arbitrary<[Rec[], Plan]> =>
  recs.chain((r) => fc.tuple(fc.constant(r), plan(r.length)));

function mergesExactly([recs, p]: [Rec[], Plan]): void {
  const whole = aggregate(recs);
  const merged = mergeInParts(recs, p);
  assert.deepEqual(row(merged), row(whole));
  assert.equal(
    JSON.stringify(agg.serialize(merged)),
    JSON.stringify(agg.serialize(whole)),
    'the merged state differs from the state of all records at once',
  );
}

describe('window aggregates', () => {
  const small = records({ maxRecords: 120, maxUsers: 80 });

  it('merged from random partitions, sent through JSON or structured clone, in random order, equal the one-pass aggregate', () => {
    fc.assert(fc.property(withPlan(small), mergesExactly), { numRuns: 1000 });
  });

  it('merge exactly with thousands of distinct values (dense HyperLogLog, also at p = 14)', () => {
    fc.assert(
      fc.property(withPlan(manyUsers()), (input) => {
        mergesExactly(input);
        checkExact(input[0], row(mergeInParts(...input)));
      }),
      { numRuns: 50 },
    );
  });

  it('merged give exact count, sum, min, max and avg, and exact distinct counts while sparse', () => {
    fc.assert(
      fc.property(withPlan(small), ([recs, p]) => checkExact(recs, row(mergeInParts(recs, p)))),
      { numRuns: 500 },
    );
  });

  it('merged give quantiles within the relative accuracy of the true value at their rank', () => {
    fc.assert(
      fc.property(withPlan(small), ([recs, p]) => checkQuantiles(recs, row(mergeInParts(recs, p)))),
      { numRuns: 500 },
    );
  });

  it('an empty state is neutral and serializes to plain JSON', () => {
    const empty = throughJson(agg.create([...KEYS]));
    const r = row(empty);
    assert.equal(r.count, 0);
    assert.equal(r.sum, 0);
    for (const name of ['min', 'max', 'avg', ...Object.keys(QUANTILES), 'fee_p75'])
      assert.equal(r[name], null);
    for (const name of Object.keys(PRECISIONS)) assert.equal(r[name], 0);
    const some = aggregate([
      { amount: '12.345', fee: 3, user: 'a' },
      { amount: -7, user: 'b' },
    ]);
    const before = row(some);
    agg.merge(some, empty);
    assert.deepEqual(row(some), before);
    agg.merge(empty, throughJson(some));
    assert.deepEqual(row(empty), before);
  });
});
