/**
 * The aggregate of one window and group key, compiled from the `metrics:` config: each field is
 * read and converted once per record, and metrics on the same field share one state (p50, p95
 * and p99 of a field read one sketch).
 */
import type { Rec } from '../../core/types.ts';
import { hashString } from '../../core/hash.ts';
import { fieldReader } from '../../core/fields.ts';
import { compareExact, formatExact, toExact, toFloat, type Exact } from '../../helpers/decimal.ts';
import {
  DDSketch,
  ExactSum,
  HyperLogLog,
  type HllState,
  type SketchState,
  type SumState,
} from './metrics.ts';

export type MetricConfig =
  | { op: 'count' }
  | { op: 'sum' | 'min' | 'max' | 'avg'; field: string }
  | { op: 'distinct'; field: string; precision?: number }
  | { op: 'quantile'; field: string; q: number; relative_accuracy?: number };

interface NumericField {
  read: (r: Rec) => unknown;
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
  sums: ExactSum[];
  mins: (Exact | undefined)[];
  maxs: (Exact | undefined)[];
  hlls: HyperLogLog[];
  sketches: DDSketch[];
}

export interface AccState {
  keys: unknown[];
  count: number;
  sums: SumState[];
  mins: (string | null)[];
  maxs: (string | null)[];
  hlls: HllState[];
  sketches: SketchState[];
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
      let f = this.#numeric.find((n) => (n as NumericField & { name: string }).name === field);
      if (!f) {
        f = Object.assign(
          { read: fieldReader(field), sum: -1, min: -1, max: -1, sketch: -1 },
          { name: field },
        );
        this.#numeric.push(f);
      }
      return f;
    };
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
          this.#outputs.push([
            name,
            m.op === 'sum'
              ? (a) => formatExact(a.sums[slot]!.total())
              : (a) => (a.sums[slot]!.n === 0 ? null : toFloat(a.sums[slot]!.total()) / a.sums[slot]!.n),
          ]);
          break;
        }
        case 'min':
        case 'max': {
          const f = numeric(m.field);
          if (m.op === 'min') {
            if (f.min < 0) f.min = this.#minFields.push(m.field) - 1;
            const slot = f.min;
            this.#outputs.push([
              name,
              (a) => (a.mins[slot] === undefined ? null : formatExact(a.mins[slot]!)),
            ]);
          } else {
            if (f.max < 0) f.max = this.#maxFields.push(m.field) - 1;
            const slot = f.max;
            this.#outputs.push([
              name,
              (a) => (a.maxs[slot] === undefined ? null : formatExact(a.maxs[slot]!)),
            ]);
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

  create(keys: unknown[]): Acc {
    return {
      keys,
      count: 0,
      sums: this.#sumFields.map(() => new ExactSum()),
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
      const x = toExact(f.read(r));
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
    into.sums.forEach((s, i) => s.merge(from.sums[i]!));
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
    return {
      keys: acc.keys,
      count: acc.count,
      sums: acc.sums.map((s) => s.toJSON()),
      mins: acc.mins.map(exact),
      maxs: acc.maxs.map(exact),
      hlls: acc.hlls.map((h) => h.toJSON()),
      sketches: acc.sketches.map((s) => s.toJSON()),
    };
  }

  deserialize(s: AccState): Acc {
    const exact = (x: string | null): Exact | undefined => (x === null ? undefined : toExact(x));
    return {
      keys: s.keys,
      count: s.count,
      sums: s.sums.map((x) => ExactSum.from(x)),
      mins: s.mins.map(exact),
      maxs: s.maxs.map(exact),
      hlls: s.hlls.map((x) => HyperLogLog.from(x)),
      sketches: s.sketches.map((x) => DDSketch.from(x)),
    };
  }
}
