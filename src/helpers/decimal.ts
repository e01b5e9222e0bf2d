/**
 * Exact decimal arithmetic for money. Results are integers of unbounded size: a JavaScript number
 * while the value is a safe integer, a bigint beyond that. Both print exactly with `String(x)` and
 * compare with `<`/`>=` across kinds. The number path exists because BigInt parsing and division
 * cost ~1 µs per event on the payments workload, a sixth of the whole per-event budget.
 */

/** An exact integer: a safe-integer number or a bigint. */
export type ExactInt = number | bigint;

const MAX_SAFE_DIGITS = 15; // every 15-digit integer is a safe integer
const MAX_SAFE_BIG = BigInt(Number.MAX_SAFE_INTEGER);

const POW10: number[] = [];
for (let i = 0, p = 1; i <= 15; i++, p *= 10) POW10.push(p);

/**
 * Converts a decimal amount in major units (`"12.34"`, `"-0.5"`, `"100"`) to an integer count of
 * minor units for a currency with `exponent` fraction digits (2 for USD, 0 for JPY, 3 for KWD).
 * Returns undefined when the text is not a plain decimal or has more fraction digits than the
 * exponent allows. Exact for any length.
 *
 * @example
 * toMinorUnits('12.3', 2)  // 1230
 * toMinorUnits('100.5', 0) // undefined (JPY has no minor unit)
 */
export function toMinorUnits(amount: string, exponent: number): ExactInt | undefined {
  const len = amount.length;
  let at = amount.charCodeAt(0) === 45 ? 1 : 0;
  const intStart = at;
  while (at < len) {
    const c = amount.charCodeAt(at);
    if (c < 48 || c > 57) break;
    at++;
  }
  const intDigits = at - intStart;
  if (intDigits === 0) return undefined;
  let fracDigits = 0;
  if (at < len) {
    if (amount.charCodeAt(at) !== 46) return undefined;
    const fracStart = ++at;
    while (at < len) {
      const c = amount.charCodeAt(at);
      if (c < 48 || c > 57) return undefined;
      at++;
    }
    fracDigits = at - fracStart;
    if (fracDigits === 0) return undefined;
  }
  if (fracDigits > exponent) return undefined;
  const negative = intStart === 1;
  const pad = exponent - fracDigits;
  if (intDigits + exponent <= MAX_SAFE_DIGITS) {
    let v = 0;
    for (let i = intStart; i < len; i++) {
      const c = amount.charCodeAt(i);
      if (c !== 46) v = v * 10 + (c - 48);
    }
    v *= POW10[pad]!;
    return negative ? (v === 0 ? 0 : -v) : v;
  }
  const digitsOnly =
    fracDigits > 0
      ? amount.slice(intStart, intStart + intDigits) + amount.slice(intStart + intDigits + 1)
      : amount.slice(intStart);
  const big = (negative ? -BigInt(digitsOnly) : BigInt(digitsOnly)) * 10n ** BigInt(pad);
  return big >= -MAX_SAFE_BIG && big <= MAX_SAFE_BIG ? Number(big) : big;
}

const TWO53 = 2 ** 53;

function roundHalfEvenBig(n: bigint, d: bigint): bigint {
  if (d < 0n) {
    n = -n;
    d = -d;
  }
  let q = n / d;
  let r = n % d;
  if (r < 0n) {
    q -= 1n;
    r += d;
  }
  const twice = r * 2n;
  if (twice > d || (twice === d && q % 2n !== 0n)) q += 1n;
  return q;
}

/**
 * `a × b ÷ d`, rounded half to even, exactly (integer arithmetic only, never floating point).
 *
 * @example
 * mulDivHalfEven(1230, 1_084_512, 100) // 13339498 (12.30 EUR in USD micros at 1.084512)
 */
export function mulDivHalfEven(a: ExactInt, b: ExactInt, d: ExactInt): ExactInt {
  if (typeof a === 'number' && typeof b === 'number' && typeof d === 'number' && d > 0) {
    const p = a * b;
    if (p < TWO53 && p > -TWO53) {
      let q = Math.floor(p / d);
      let r = p - q * d; // exact: |q × d| ≈ |p| < 2^53
      // p / d may round across an integer in floating point; the exact remainder corrects q.
      if (r < 0) {
        q -= 1;
        r += d;
      } else if (r >= d) {
        q += 1;
        r -= d;
      }
      if (2 * r > d || (2 * r === d && q % 2 !== 0)) q += 1;
      return q === 0 ? 0 : q;
    }
  }
  const q = roundHalfEvenBig(BigInt(a) * BigInt(b), BigInt(d));
  return q >= -MAX_SAFE_BIG && q <= MAX_SAFE_BIG ? Number(q) : q;
}

/**
 * Parses a decimal given as text (`"-12.5"`, `"1e3"`) or a JSON number into an exact integer
 * mantissa and a scale (the value is `units / 10^scale`). Returns undefined when it is not a
 * finite decimal.
 */
export function parseExactDecimal(v: unknown): { units: bigint; scale: number } | undefined {
  let text: string;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) return undefined;
    if (Number.isInteger(v)) return { units: BigInt(v), scale: 0 };
    text = String(v);
  } else if (typeof v === 'bigint') {
    return { units: v, scale: 0 };
  } else if (typeof v === 'string') {
    text = v.trim();
  } else {
    return undefined;
  }
  const m = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (!m || (m[2] === '' && (m[3] ?? '') === '')) return undefined;
  const frac = m[3] ?? '';
  let units = BigInt((m[2] || '0') + frac);
  let scale = frac.length - Number(m[4] ?? 0);
  if (scale < 0) {
    units *= 10n ** BigInt(-scale);
    scale = 0;
  }
  return { units: m[1] === '-' ? -units : units, scale };
}

/** Prints `units / 10^scale` as a plain decimal string without exponent. */
export function formatExactDecimal(units: bigint, scale: number): string {
  if (scale === 0) return units.toString();
  const negative = units < 0n;
  const digits = (negative ? -units : units).toString().padStart(scale + 1, '0');
  let frac = digits.slice(-scale).replace(/0+$/, '');
  const int = digits.slice(0, -scale);
  if (frac !== '') frac = '.' + frac;
  return (negative && (int !== '0' || frac !== '') ? '-' : '') + int + frac;
}

/** An exact numeric value: a safe integer, a bigint, or a decimal `units / 10^scale`. */
export type Exact = number | bigint | { units: bigint; scale: number };

/** Converts a record value to an exact number; undefined for anything not numeric. */
export function toExact(v: unknown): Exact | undefined {
  if (typeof v === 'number') {
    if (Number.isSafeInteger(v)) return v === 0 ? 0 : v;
    return Number.isFinite(v) ? (Number.isInteger(v) ? BigInt(v) : parseExactDecimal(v)) : undefined;
  }
  if (typeof v === 'string') {
    const len = v.length;
    if (len > 0 && len <= 15) {
      // Fast path: a plain integer of up to 15 digits is always a safe integer.
      let i = v.charCodeAt(0) === 45 ? 1 : 0;
      if (i < len) {
        let n = 0;
        for (; i < len; i++) {
          const d = v.charCodeAt(i) - 48;
          if (d < 0 || d > 9) break;
          n = n * 10 + d;
        }
        if (i === len) return v.charCodeAt(0) === 45 ? (n === 0 ? 0 : -n) : n;
      }
    }
    const d = parseExactDecimal(v);
    if (d === undefined) return undefined;
    if (d.scale === 0) return d.units >= -MAX_SAFE_BIG && d.units <= MAX_SAFE_BIG ? Number(d.units) : d.units;
    return d;
  }
  if (typeof v === 'bigint') return v;
  return undefined;
}

export function asDecimal(x: Exact): { units: bigint; scale: number } {
  if (typeof x === 'number') return { units: BigInt(x), scale: 0 };
  if (typeof x === 'bigint') return { units: x, scale: 0 };
  return x;
}

/** 10^n as a bigint. */
export const pow10n = (n: number): bigint => 10n ** BigInt(n);

export function compareExact(a: Exact, b: Exact): number {
  if (typeof a !== 'object' && typeof b !== 'object') return a < b ? -1 : a > b ? 1 : 0;
  const x = asDecimal(a);
  const y = asDecimal(b);
  const scale = Math.max(x.scale, y.scale);
  const xu = x.units * pow10n(scale - x.scale);
  const yu = y.units * pow10n(scale - y.scale);
  return xu < yu ? -1 : xu > yu ? 1 : 0;
}

export function formatExact(x: Exact): string {
  if (typeof x === 'object') return formatExactDecimal(x.units, x.scale);
  return x.toString();
}

export function toFloat(x: Exact): number {
  if (typeof x === 'number') return x;
  if (typeof x === 'bigint') return Number(x);
  return Number(formatExactDecimal(x.units, x.scale));
}
