/**
 * Property tests of the public helpers (`sluice`'s exports) against references written here with
 * BigInt and `Date`: exact decimals, half-to-even division, RFC 3339 parsing and classification.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { classifier, mulDivHalfEven, rfc3339ToEpochMs, toMinorUnits } from '../dist/index.js';

// `maxLength` means what it says: lengths range up to it, not up to fast-check's small default size.
fc.configureGlobal({ defaultSizeToMaxWhenMaxSpecified: true, includeErrorInReport: true });

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

const digits = (minLength: number, maxLength: number): fc.Arbitrary<string> =>
  fc.string({ unit: fc.constantFrom(...'0123456789'), minLength, maxLength });

/** `true` when `x` is the representation decimal.ts promises: a number while safe, a bigint beyond. */
function canonicalInt(x: number | bigint): boolean {
  if (typeof x === 'number') return Number.isSafeInteger(x) && !Object.is(x, -0);
  return x < -MAX_SAFE || x > MAX_SAFE;
}

// ---------------------------------------------------------------------------------------------
// toMinorUnits

function minorUnitsReference(amount: string, exponent: number): bigint | undefined {
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(amount);
  if (!m) return undefined;
  const frac = m[3] ?? '';
  if (frac.length > exponent) return undefined;
  const units = BigInt(m[2]! + frac.padEnd(exponent, '0'));
  return m[1] === '-' ? -units : units;
}

/** Plain decimals: optional sign, 1–30 integer digits (leading zeros too), 0–12 fraction digits. */
const plainDecimal = fc
  .tuple(fc.boolean(), digits(1, 30), fc.option(digits(1, 12), { nil: undefined }))
  .map(([negative, int, frac]) => `${negative ? '-' : ''}${int}${frac === undefined ? '' : `.${frac}`}`);

/** Strings near the grammar: signs, dots, exponents, spaces and letters in random places. */
const nearDecimal = fc.string({ unit: fc.constantFrom(...'0123456789.-+e x'), maxLength: 12 });

describe('toMinorUnits', () => {
  it('equals a BigInt reference for plain decimals of any length and sign', () => {
    fc.assert(
      fc.property(plainDecimal, fc.integer({ min: 0, max: 18 }), (amount, exponent) => {
        const expected = minorUnitsReference(amount, exponent);
        const actual = toMinorUnits(amount, exponent);
        if (expected === undefined) assert.equal(actual, undefined);
        else {
          assert.notEqual(actual, undefined, `${amount} at exponent ${exponent}`);
          assert.equal(BigInt(actual!), expected, `${amount} at exponent ${exponent}`);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('returns undefined when there are more fraction digits than the exponent', () => {
    fc.assert(
      fc.property(
        fc.boolean(),
        digits(1, 25),
        fc.integer({ min: 0, max: 12 }),
        fc.integer({ min: 1, max: 8 }),
        (negative, int, exponent, extra) => {
          const frac = '7'.repeat(exponent + extra);
          assert.equal(toMinorUnits(`${negative ? '-' : ''}${int}.${frac}`, exponent), undefined);
        },
      ),
    );
  });

  it('returns undefined for anything that is not a plain decimal', () => {
    fc.assert(
      fc.property(nearDecimal, fc.integer({ min: 0, max: 18 }), (amount, exponent) => {
        const expected = minorUnitsReference(amount, exponent);
        const actual = toMinorUnits(amount, exponent);
        assert.equal(actual === undefined ? undefined : BigInt(actual), expected, JSON.stringify(amount));
      }),
      { numRuns: 2000 },
    );
  });

  it('returns a number exactly when the result is a safe integer, as decimal.ts documents', () => {
    fc.assert(
      fc.property(plainDecimal, fc.integer({ min: 0, max: 18 }), (amount, exponent) => {
        const actual = toMinorUnits(amount, exponent);
        if (actual === undefined) return;
        assert.ok(
          canonicalInt(actual),
          `toMinorUnits(${JSON.stringify(amount)}, ${exponent}) returned ${typeof actual} ${String(actual)}`,
        );
      }),
      { numRuns: 2000 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// mulDivHalfEven

function halfEvenReference(n: bigint, d: bigint): bigint {
  let q = n / d;
  let r = n % d;
  if (r < 0n) {
    q -= 1n;
    r += d;
  }
  if (2n * r > d || (2n * r === d && q % 2n !== 0n)) q += 1n;
  return q;
}

const safeOrHuge: fc.Arbitrary<number | bigint> = fc.oneof(
  fc.integer({ min: -1000, max: 1000 }),
  fc.integer({ min: -(2 ** 27), max: 2 ** 27 }),
  fc.maxSafeInteger(),
  fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }),
  fc.bigInt({ min: -MAX_SAFE, max: MAX_SAFE }),
);

const positiveDivisor: fc.Arbitrary<number | bigint> = fc.oneof(
  fc.integer({ min: 1, max: 1000 }),
  fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
  fc.bigInt({ min: 1n, max: 10n ** 30n }),
  fc.constantFrom(1, 2, 10, 100, 1_000_000, 2 ** 52, 2 ** 53 - 1),
);

describe('mulDivHalfEven', () => {
  it('equals a BigInt half-to-even reference for safe and huge inputs', () => {
    fc.assert(
      fc.property(safeOrHuge, safeOrHuge, positiveDivisor, (a, b, d) => {
        const expected = halfEvenReference(BigInt(a) * BigInt(b), BigInt(d));
        const actual = mulDivHalfEven(a, b, d);
        assert.equal(BigInt(actual), expected, `mulDivHalfEven(${a}, ${b}, ${d})`);
        assert.ok(canonicalInt(actual), `mulDivHalfEven(${a}, ${b}, ${d}) returned ${typeof actual}`);
      }),
      { numRuns: 5000 },
    );
  });

  it('rounds exact halves to even, on both sides of zero', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
        fc.integer({ min: 1, max: 2 ** 11 }).map((h) => 2 * h),
        fc.constantFrom(1, -1),
        (q, d, sign) => {
          // a × b = (q + ½) × d exactly.
          const a = q * d + d / 2;
          const expected = halfEvenReference(BigInt(a) * BigInt(sign), BigInt(d));
          assert.equal(BigInt(mulDivHalfEven(a, sign, d)), expected, `mulDivHalfEven(${a}, ${sign}, ${d})`);
          assert.equal(BigInt(mulDivHalfEven(BigInt(a), sign, d)), expected);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('is exact for products right around 2^53, where the number path hands over to BigInt', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2 ** 26, max: 2 ** 27 }),
        fc.integer({ min: 2 ** 26, max: 2 ** 27 }),
        fc.constantFrom(1, -1),
        positiveDivisor,
        (a, b, sign, d) => {
          const expected = halfEvenReference(BigInt(sign * a) * BigInt(b), BigInt(d));
          assert.equal(BigInt(mulDivHalfEven(sign * a, b, d)), expected, `(${sign * a}, ${b}, ${d})`);
        },
      ),
      { numRuns: 3000 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// rfc3339ToEpochMs

const isLeap = (y: number): boolean => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
const monthDays = (y: number, m: number): number =>
  m === 2 ? (isLeap(y) ? 29 : 28) : [4, 6, 9, 11].includes(m) ? 30 : 31;
const pad = (n: number, width = 2): string => String(n).padStart(width, '0');

interface Stamp {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
  fraction: string | undefined;
  /** Offset in minutes east of UTC; undefined for `Z`. */
  offset: number | undefined;
}

function format(s: Stamp): string {
  const zone =
    s.offset === undefined
      ? 'Z'
      : `${s.offset < 0 ? '-' : '+'}${pad(Math.floor(Math.abs(s.offset) / 60))}:${pad(Math.abs(s.offset) % 60)}`;
  return (
    `${pad(s.year, 4)}-${pad(s.month)}-${pad(s.day)}T${pad(s.hour)}:${pad(s.minute)}:${pad(s.second)}` +
    `${s.fraction === undefined ? '' : `.${s.fraction}`}${zone}`
  );
}

function stamp(years: { min: number; max: number }): fc.Arbitrary<Stamp> {
  return fc
    .record({
      year: fc.integer(years),
      month: fc.integer({ min: 1, max: 12 }),
      day: fc.integer({ min: 1, max: 31 }),
      hour: fc.integer({ min: 0, max: 23 }),
      minute: fc.integer({ min: 0, max: 59 }),
      second: fc.integer({ min: 0, max: 59 }),
      fraction: fc.option(digits(1, 9), { nil: undefined }),
      offset: fc.option(fc.integer({ min: -(23 * 60 + 59), max: 23 * 60 + 59 }), { nil: undefined }),
    })
    .map((s) => ({ ...s, day: Math.min(s.day, monthDays(s.year, s.month)) }));
}

/** The same instant through `Date`'s setters, which take years 0–99 literally. */
function dateReference(s: Stamp): number {
  const d = new Date(0);
  d.setUTCFullYear(s.year, s.month - 1, s.day);
  d.setUTCHours(s.hour, s.minute, s.second, Number((s.fraction ?? '0').slice(0, 3).padEnd(3, '0')));
  return d.getTime() - (s.offset ?? 0) * 60_000;
}

const noon: Stamp = {
  year: 2000,
  month: 1,
  day: 1,
  hour: 12,
  minute: 0,
  second: 0,
  fraction: undefined,
  offset: undefined,
};

describe('rfc3339ToEpochMs', () => {
  it('equals Date.parse for valid timestamps in 1970–9999 with offsets, fractions truncated to ms', () => {
    fc.assert(
      fc.property(stamp({ min: 1970, max: 9999 }), (s) => {
        const text = format(s);
        const ms = format({ ...s, fraction: s.fraction?.slice(0, 3) });
        assert.equal(rfc3339ToEpochMs(text), Date.parse(ms), text);
      }),
      { numRuns: 5000 },
    );
  });

  it('takes years 0000–0099 literally', () => {
    fc.assert(
      fc.property(stamp({ min: 0, max: 99 }), (s) => {
        const text = format(s);
        assert.equal(rfc3339ToEpochMs(text), dateReference(s), text);
      }),
      { numRuns: 3000 },
    );
  });

  it('agrees with the Date setters over all of 0000–9999', () => {
    fc.assert(
      fc.property(stamp({ min: 0, max: 9999 }), (s) => {
        const text = format(s);
        assert.equal(rfc3339ToEpochMs(text), dateReference(s), text);
      }),
      { numRuns: 3000 },
    );
  });

  it('accepts Feb 29 exactly in leap years (1900, 2100 and 0100 are not; 0000, 2000 are)', () => {
    for (const [year, leap] of [
      [0, true],
      [100, false],
      [1900, false],
      [2000, true],
      [2024, true],
      [2100, false],
      [2023, false],
    ] as const) {
      const text = `${pad(year, 4)}-02-29T12:00:00Z`;
      if (leap)
        assert.equal(rfc3339ToEpochMs(text), dateReference({ ...noon, year, month: 2, day: 29 }), text);
      else assert.ok(Number.isNaN(rfc3339ToEpochMs(text)), text);
    }
  });

  it('returns NaN for impossible dates, times and offsets', () => {
    type Break = (s: Stamp, n: number) => string;
    const breaks: Record<string, Break> = {
      'day past the end of the month': (s, n) =>
        format(s).replace(/^(\d{4}-\d\d)-\d\d/, `$1-${pad(monthDays(s.year, s.month) + 1 + (n % 3))}`),
      'Feb 30 / 31': (s, n) => format({ ...s, month: 2 }).replace(/^(\d{4}-02)-\d\d/, `$1-${30 + (n % 2)}`),
      'Feb 29 in a common year': (s) =>
        format({ ...s, year: isLeap(s.year) ? s.year + 1 : s.year }).replace(
          /^(\d{4})-\d\d-\d\d/,
          '$1-02-29',
        ),
      'day 00': (s) => format(s).replace(/^(\d{4}-\d\d)-\d\d/, '$1-00'),
      'month 00': (s) => format(s).replace(/^(\d{4})-\d\d/, '$1-00'),
      'month 13 and up': (s, n) => format({ ...s, day: 1 }).replace(/^(\d{4})-\d\d/, `$1-${13 + (n % 87)}`),
      'hour 24 and up': (s, n) => format(s).replace(/T\d\d/, `T${24 + (n % 76)}`),
      'minute 60 and up': (s, n) => format(s).replace(/T(\d\d):\d\d/, `T$1:${60 + (n % 40)}`),
      'second 60 (no leap seconds) and up': (s, n) =>
        format(s).replace(/:(\d\d)(?=[.Z+-])/, `:${60 + (n % 40)}`),
      'offset hour 24 and up': (s, n) =>
        format({ ...s, offset: undefined }).replace(/Z$/, `+${24 + (n % 76)}:00`),
      'offset minute 60 and up': (s, n) =>
        format({ ...s, offset: undefined }).replace(/Z$/, `-01:${60 + (n % 40)}`),
      'ten fraction digits': (s) => format({ ...s, fraction: '1234567890' }),
      'a dot without digits': (s) =>
        format({ ...s, fraction: undefined }).replace(/(Z|[+-]\d\d:\d\d)$/, '.$1'),
      'no zone': (s) => format({ ...s, offset: undefined }).slice(0, -1),
    };
    fc.assert(
      fc.property(
        stamp({ min: 0, max: 9999 }),
        fc.constantFrom(...Object.keys(breaks)),
        fc.nat(),
        (s, name, n) => {
          const text = breaks[name]!(s, n);
          assert.ok(Number.isNaN(rfc3339ToEpochMs(text)), `${name}: ${text} → ${rfc3339ToEpochMs(text)}`);
        },
      ),
      { numRuns: 5000 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// classifier

interface PatternSpec {
  source: string;
  flags: string;
  asString: boolean;
}

const patternSpec: fc.Arbitrary<PatternSpec> = fc.record({
  source: fc.oneof(
    fc.string({ unit: fc.constantFrom('a', 'b', 'c'), minLength: 1, maxLength: 3 }),
    fc.string({ unit: fc.constantFrom('a', 'b', 'c'), minLength: 1, maxLength: 2 }).map((s) => `^${s}`),
    fc.string({ unit: fc.constantFrom('a', 'b', 'c'), minLength: 1, maxLength: 2 }).map((s) => `${s}$`),
    fc.constantFrom('a+b', '[bc]{2}', '^$', '.'),
  ),
  // Stateful flags: the classifier must test every input from the start regardless.
  flags: fc.constantFrom('', 'i', 'g', 'y', 'gi'),
  asString: fc.boolean(),
});

const ruleSpec = fc.record({
  patterns: fc.array(patternSpec, { minLength: 0, maxLength: 3 }),
  single: fc.boolean(),
  label: fc.constantFrom('one', 'two', 'three', 'four'),
});

describe('classifier', () => {
  it("returns the first rule's label whose patterns all match, else `otherwise`, cached or not", () => {
    fc.assert(
      fc.property(
        fc.array(ruleSpec, { maxLength: 6 }),
        fc.array(fc.string({ unit: fc.constantFrom('a', 'b', 'c', 'A', 'B'), maxLength: 6 }), {
          minLength: 1,
          maxLength: 30,
        }),
        fc.integer({ min: 0, max: 5 }),
        (specs, inputs, cacheSize) => {
          const rules = specs.map((r) => {
            const compiled = r.patterns.map((p) => (p.asString ? p.source : new RegExp(p.source, p.flags)));
            return {
              match: r.single && compiled.length === 1 ? compiled[0]! : compiled,
              label: r.label,
            };
          });
          const classify = classifier(rules, { otherwise: 'other', cacheSize });
          const reference = (input: string): string => {
            for (const r of specs) {
              const all = r.patterns.every((p) =>
                new RegExp(p.source, p.asString ? '' : p.flags).test(input),
              );
              if (all) return r.label;
            }
            return 'other';
          };
          // Twice over, so cached answers and repeated stateful regexes are exercised.
          for (const input of [...inputs, ...inputs])
            assert.equal(classify(input), reference(input), JSON.stringify(input));
        },
      ),
      { numRuns: 1000 },
    );
  });
});
