/**
 * The aggregate of one window and group key, compiled from the `metrics:` config: each field is
 * read and converted once per record, and metrics on the same field share one state (p50, p95
 * and p99 of a field read one sketch).
 *
 * Numeric metrics follow their input. JSON numbers are summed and compared as doubles and come out
 * as JSON numbers; decimal strings (money: `"12.34"`) are exact and come out as decimal strings of
 * any size, and so do JSON numbers of a metric declared `decimal: true`. The exact path parses text
 * into integers or BigInts (~1 µs a value on the payments workload); the double path is a few float
 * operations, and its sums are still independent of order (FloatSum), so N workers equal 1.
 */
import type { Rec } from '../../core/types.ts';
import { hashString } from '../../core/hash.ts';
import { fieldReader } from '../../core/fields.ts';
import { compareExact, formatExact, toExact, toFloat, type Exact } from '../../helpers/decimal.ts';
import {
  DDSketch,
  ExactSum,
  FloatSum,
  HyperLogLog,
  type FloatSumState,
  type HllState,
  type SketchState,
  type SumState,
} from './metrics.ts';

export type MetricConfig =
  | { op: 'count' }
  | { op: 'sum' | 'min' | 'max' | 'avg'; field: string; decimal?: boolean }
  | { op: 'distinct'; field: string; precision?: number }
  | { op: 'quantile'; field: string; q: number; relative_accuracy?: number };

interface NumericField {
  name: string;
  read: (r: Rec) => unknown;
  /** JSON numbers too take the exact decimal path (a metric on the field says `decimal: true`). */
  decimal: boolean;
  sum: number;
  min: number;
  max: number;
  sketch: number;
}

interface DistinctField {
  read: (r: Rec) => unknown;
  hll: number;
}

type Output = (acc: Acc) => unknown;

export interface Acc {
  keys: unknown[];
  count: number;
  /** Per sum slot: the JSON numbers (double path) and the decimals (exact path). */
  fsums: FloatSum[];
  sums: ExactSum[];
  /** Per min/max slot: the least/greatest JSON number (±Infinity for none) and decimal. */
  fmins: number[];
  fmaxs: number[];
  mins: (Exact | undefined)[];
  maxs: (Exact | undefined)[];
  hlls: HyperLogLog[];
  sketches: DDSketch[];
}

export interface AccState {
  keys: unknown[];
  count: number;
  /** Absent in states saved before numbers took the double path. */
  fsums?: FloatSumState[];
  sums: SumState[];
  fmins?: (number | null)[];
  fmaxs?: (number | null)[];
  mins: (string | null)[];
  maxs: (string | null)[];
  hlls: HllState[];
  sketches: SketchState[];
}

/** Least of a slot's number and decimal parts; a decimal string once any decimal took part. */
function extreme(f: number, x: Exact | undefined, sign: 1 | -1): number | string | null {
  if (x === undefined) return Number.isFinite(f) ? f : null;
  if (Number.isFinite(f)) {
    const fx = toExact(f)!;
    if (compareExact(fx, x) * sign < 0) return formatExact(fx);
  }
  return formatExact(x);
}

/** A sum slot's value: a JSON number, or a decimal string once any decimal took part. */
function sumOf(f: FloatSum, x: ExactSum, decimal: boolean): number | string {
  if (x.n === 0 && !decimal) return f.total();
  const t = x.total();
  if (f.n === 0) return formatExact(t);
  // Both kinds in one window: the numbers' correctly rounded sum, added exactly to the decimals'.
  const fx = toExact(f.total())!;
  const total = new ExactSum();
  total.add(t);
  total.add(fx);
  return formatExact(total.total());
}

export class Aggregation {
  readonly #numeric: NumericField[] = [];
  readonly #distinct: DistinctField[] = [];
  readonly #sumFields: string[] = [];
  readonly #minFields: string[] = [];
  readonly #maxFields: string[] = [];
  readonly #hlls: { field: string; p: number }[] = [];
  readonly #sketches: { field: string; alpha: number }[] = [];
  readonly #outputs: [string, Output][] = [];

  constructor(metrics: Record<string, MetricConfig>) {
    const numeric = (field: string): NumericField => {
      let f = this.#numeric.find((n) => n.name === field);
      if (!f) {
        f = { name: field, read: fieldReader(field), decimal: false, sum: -1, min: -1, max: -1, sketch: -1 };
        this.#numeric.push(f);
      }
      return f;
    };
    for (const m of Object.values(metrics))
      if ('decimal' in m && m.decimal === true) numeric(m.field).decimal = true;
    for (const [name, m] of Object.entries(metrics)) {
      switch (m.op) {
        case 'count':
          this.#outputs.push([name, (a) => a.count]);
          break;
        case 'sum':
        case 'avg': {
          const f = numeric(m.field);
          if (f.sum < 0) f.sum = this.#sumFields.push(m.field) - 1;
          const slot = f.sum;
          const decimal = f.decimal;
          this.#outputs.push([
            name,
            m.op === 'sum'
              ? (a) => sumOf(a.fsums[slot]!, a.sums[slot]!, decimal)
              : (a) => {
                  const fs = a.fsums[slot]!;
                  const xs = a.sums[slot]!;
                  const n = fs.n + xs.n;
                  if (n === 0) return null;
                  return ((xs.n === 0 ? 0 : toFloat(xs.total())) + fs.total()) / n;
                },
          ]);
          break;
        }
        case 'min':
        case 'max': {
          const f = numeric(m.field);
          if (m.op === 'min') {
            if (f.min < 0) f.min = this.#minFields.push(m.field) - 1;
            const slot = f.min;
            this.#outputs.push([name, (a) => extreme(a.fmins[slot]!, a.mins[slot], 1)]);
          } else {
            if (f.max < 0) f.max = this.#maxFields.push(m.field) - 1;
            const slot = f.max;
            this.#outputs.push([name, (a) => extreme(a.fmaxs[slot]!, a.maxs[slot], -1)]);
          }
          break;
        }
        case 'distinct': {
          const p = m.precision ?? 14;
          let slot = this.#hlls.findIndex((h) => h.field === m.field && h.p === p);
          if (slot < 0) {
            slot = this.#hlls.push({ field: m.field, p }) - 1;
            this.#distinct.push({ read: fieldReader(m.field), hll: slot });
          }
          this.#outputs.push([name, (a) => a.hlls[slot]!.estimate()]);
          break;
        }
        case 'quantile': {
          const alpha = m.relative_accuracy ?? 0.005;
          const f = numeric(m.field);
          let slot = this.#sketches.findIndex((s) => s.field === m.field && s.alpha === alpha);
          if (slot < 0) slot = this.#sketches.push({ field: m.field, alpha }) - 1;
          if (f.sketch >= 0 && f.sketch !== slot)
            throw new Error(`quantiles of ${m.field} must share one relative_accuracy`);
          f.sketch = slot;
          const q = m.q;
          this.#outputs.push([
            name,
            (a) => (a.sketches[slot]!.n === 0 ? null : a.sketches[slot]!.quantile(q)),
          ]);
          break;
        }
      }
    }
  }

  /** Fields read by numeric metrics, for checks before aggregation (non-finite numbers). */
  get numericFields(): readonly { name: string; read: (r: Rec) => unknown }[] {
    return this.#numeric;
  }

  create(keys: unknown[]): Acc {
    return {
      keys,
      count: 0,
      fsums: this.#sumFields.map(() => new FloatSum()),
      sums: this.#sumFields.map(() => new ExactSum()),
      fmins: this.#minFields.map(() => Infinity),
      fmaxs: this.#maxFields.map(() => -Infinity),
      mins: this.#minFields.map(() => undefined),
      maxs: this.#maxFields.map(() => undefined),
      hlls: this.#hlls.map((h) => new HyperLogLog(h.p)),
      sketches: this.#sketches.map((s) => new DDSketch(s.alpha)),
    };
  }

  add(acc: Acc, r: Rec): void {
    acc.count++;
    const numeric = this.#numeric;
    for (let i = 0; i < numeric.length; i++) {
      const f = numeric[i]!;
      const v = f.read(r);
      if (typeof v === 'number' && !f.decimal) {
        // Non-finite numbers never get here: the window step makes them dead letters.
        if (!Number.isFinite(v)) continue;
        const x = v === 0 ? 0 : v; // -0 and 0 alike, or min/max would depend on order
        if (f.sum >= 0) acc.fsums[f.sum]!.add(x);
        if (f.min >= 0 && x < acc.fmins[f.min]!) acc.fmins[f.min] = x;
        if (f.max >= 0 && x > acc.fmaxs[f.max]!) acc.fmaxs[f.max] = x;
        if (f.sketch >= 0) acc.sketches[f.sketch]!.add(x);
        continue;
      }
      const x = toExact(v);
      if (x === undefined) continue;
      if (f.sum >= 0) acc.sums[f.sum]!.add(x);
      if (f.min >= 0) {
        const cur = acc.mins[f.min];
        if (cur === undefined || compareExact(x, cur) < 0) acc.mins[f.min] = x;
      }
      if (f.max >= 0) {
        const cur = acc.maxs[f.max];
        if (cur === undefined || compareExact(x, cur) > 0) acc.maxs[f.max] = x;
      }
      if (f.sketch >= 0) acc.sketches[f.sketch]!.add(typeof x === 'number' ? x : toFloat(x));
    }
    const distinct = this.#distinct;
    for (let i = 0; i < distinct.length; i++) {
      const d = distinct[i]!;
      const v = d.read(r);
      if (v === undefined || v === null) continue;
      acc.hlls[d.hll]!.add(hashString(typeof v === 'string' ? v : JSON.stringify(v)));
    }
  }

  merge(into: Acc, from: Acc): void {
    into.count += from.count;
    into.fsums.forEach((s, i) => s.merge(from.fsums[i]!));
    into.sums.forEach((s, i) => s.merge(from.sums[i]!));
    into.fmins.forEach((m, i) => (into.fmins[i] = Math.min(m, from.fmins[i]!)));
    into.fmaxs.forEach((m, i) => (into.fmaxs[i] = Math.max(m, from.fmaxs[i]!)));
    into.mins.forEach((m, i) => {
      const o = from.mins[i];
      if (o !== undefined && (m === undefined || compareExact(o, m) < 0)) into.mins[i] = o;
    });
    into.maxs.forEach((m, i) => {
      const o = from.maxs[i];
      if (o !== undefined && (m === undefined || compareExact(o, m) > 0)) into.maxs[i] = o;
    });
    into.hlls.forEach((h, i) => h.merge(from.hlls[i]!));
    into.sketches.forEach((s, i) => s.merge(from.sketches[i]!));
  }

  /** Output fields of a finished aggregate, in the order the metrics were configured. */
  write(acc: Acc, row: Rec): void {
    for (const [name, out] of this.#outputs) row[name] = out(acc);
  }

  serialize(acc: Acc): AccState {
    const exact = (x: Exact | undefined): string | null => (x === undefined ? null : formatExact(x));
    const finite = (x: number): number | null => (Number.isFinite(x) ? x : null);
    return {
      keys: acc.keys,
      count: acc.count,
      fsums: acc.fsums.map((s) => s.toJSON()),
      sums: acc.sums.map((s) => s.toJSON()),
      fmins: acc.fmins.map(finite),
      fmaxs: acc.fmaxs.map(finite),
      mins: acc.mins.map(exact),
      maxs: acc.maxs.map(exact),
      hlls: acc.hlls.map((h) => h.toJSON()),
      sketches: acc.sketches.map((s) => s.toJSON()),
    };
  }

  deserialize(s: AccState): Acc {
    const exact = (x: string | null): Exact | undefined => (x === null ? undefined : toExact(x));
    const or = (x: number | null | undefined, none: number): number => x ?? none;
    return {
      keys: s.keys,
      count: s.count,
      fsums: s.sums.map((_, i) => (s.fsums?.[i] ? FloatSum.from(s.fsums[i]) : new FloatSum())),
      sums: s.sums.map((x) => ExactSum.from(x)),
      fmins: s.mins.map((_, i) => or(s.fmins?.[i], Infinity)),
      fmaxs: s.maxs.map((_, i) => or(s.fmaxs?.[i], -Infinity)),
      mins: s.mins.map(exact),
      maxs: s.maxs.map(exact),
      hlls: s.hlls.map((x) => HyperLogLog.from(x)),
      sketches: s.sketches.map((x) => DDSketch.from(x)),
    };
  }
}
