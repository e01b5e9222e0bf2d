/**
 * Mergeable, serializable aggregate states. Merging partial states in any grouping gives exactly
 * the state of aggregating everything at once (test/window-merge.property.test.ts), so workers,
 * instances and restarts can each aggregate a part.
 */
import { asDecimal, pow10n, type Exact } from '../../helpers/decimal.ts';

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/** Exact sum of any size: adds safe integers as numbers until they would overflow, then BigInt. */
export class ExactSum {
  n = 0;
  small = 0;
  big = 0n;
  scale = 0;

  add(x: Exact): void {
    this.n++;
    if (typeof x === 'number' && this.scale === 0) {
      const t = this.small + x;
      if (t <= MAX_SAFE && t >= -MAX_SAFE) this.small = t;
      else {
        this.big += BigInt(this.small) + BigInt(x);
        this.small = 0;
      }
      return;
    }
    const d = asDecimal(x);
    this.#rescale(d.scale);
    this.big += d.units * pow10n(this.scale - d.scale);
  }

  #rescale(scale: number): void {
    if (scale <= this.scale) return;
    this.big = (this.big + BigInt(this.small)) * pow10n(scale - this.scale);
    this.small = 0;
    this.scale = scale;
  }

  /** The total as `units / 10^scale`. */
  total(): { units: bigint; scale: number } {
    return { units: this.big + BigInt(this.small), scale: this.scale };
  }

  merge(o: ExactSum): void {
    this.n += o.n;
    const t = o.total();
    this.#rescale(t.scale);
    this.big += t.units * pow10n(this.scale - t.scale);
  }

  toJSON(): SumState {
    const t = this.total();
    return { n: this.n, units: t.units.toString(), scale: t.scale };
  }

  static from(s: SumState): ExactSum {
    const sum = new ExactSum();
    sum.n = s.n;
    sum.big = BigInt(s.units);
    sum.scale = s.scale;
    return sum;
  }
}

export interface SumState {
  n: number;
  units: string;
  scale: number;
}

// ---------------------------------------------------------------------------------------------
// Sums of JSON numbers in double arithmetic, independent of order. Plain `+=` rounds after every
// addition, so two workers summing halves would not give the one-pass result to the last bit.
// Shewchuk's non-overlapping partials (Python's math.fsum) hold the exact sum of the doubles, and
// `total()` rounds it once, correctly: any grouping or order gives the same double. One to three
// partials in practice, so an add costs a few float operations instead of the decimal path's
// BigInt and text parsing.

export interface FloatSumState {
  n: number;
  /** The exact sum as a canonical list of doubles (see `toJSON`). */
  p: number[];
}

export class FloatSum {
  n = 0;
  #partials: number[] = [];

  add(x: number): void {
    this.n++;
    this.#addExact(x);
  }

  #addExact(x: number): void {
    const partials = this.#partials;
    let i = 0;
    for (let j = 0; j < partials.length; j++) {
      let y = partials[j]!;
      if (Math.abs(x) < Math.abs(y)) {
        const t = x;
        x = y;
        y = t;
      }
      const hi = x + y;
      const lo = y - (hi - x);
      if (lo !== 0) partials[i++] = lo;
      x = hi;
    }
    partials.length = i;
    partials.push(x);
  }

  /** The exact sum rounded once to the nearest double (ties to even); 0 when empty. */
  total(): number {
    const p = this.#partials;
    let n = p.length;
    if (n === 0) return 0;
    let hi = p[--n]!;
    let lo = 0;
    while (n > 0) {
      const x = hi;
      const y = p[--n]!;
      hi = x + y;
      lo = y - (hi - x);
      if (lo !== 0) break;
    }
    // Half-way cases: the next partial decides the direction of rounding.
    if (n > 0 && ((lo < 0 && p[n - 1]! < 0) || (lo > 0 && p[n - 1]! > 0))) {
      const y = lo * 2;
      const x = hi + y;
      if (y === x - hi) hi = x;
    }
    return hi === 0 ? 0 : hi;
  }

  merge(o: FloatSum): void {
    this.n += o.n;
    for (const x of o.#partials) this.#addExact(x);
  }

  /**
   * The same exact sum always serializes the same way, whatever partials it was built from:
   * c1 = round(S), c2 = round(S − c1), … (so merged and one-pass states compare equal).
   */
  toJSON(): FloatSumState {
    const rest = new FloatSum();
    rest.#partials = [...this.#partials];
    const p: number[] = [];
    for (let h = rest.total(); h !== 0 && p.length < 40; h = rest.total()) {
      p.push(h);
      rest.#addExact(-h);
    }
    return { n: this.n, p };
  }

  static from(s: FloatSumState): FloatSum {
    const sum = new FloatSum();
    sum.n = s.n;
    for (const x of s.p) sum.#addExact(x);
    return sum;
  }
}

// ---------------------------------------------------------------------------------------------
// HyperLogLog over 32-bit hashes. Exact (a set of hashes) while small, which keeps windows with
// few distinct values exact; dense registers with Ertl's improved estimator beyond that
// ("New cardinality estimation algorithms for HyperLogLog sketches", 2017: no bias tables).

export interface HllState {
  p: number;
  /** Sparse: the distinct hashes, sorted. */
  s?: number[];
  /** Dense: registers, base64. */
  r?: string;
}

export class HyperLogLog {
  readonly p: number;
  /**
   * Sparse: the distinct hashes in an open-addressing table (0 marks a free slot; the hash 0 is
   * `#zero`). A `Set<number>` here, filled per record, merged per pane and window and rebuilt from
   * every worker's partials, took ~1 s of a CPU profile's samples on the telemetry workload with two
   * workers (add, merge, toJSON, from); the table, with no per-entry objects, about half of that.
   */
  #table: Uint32Array | null = new Uint32Array(16);
  #size = 0;
  #zero = false;
  #regs: Uint8Array | null = null;

  constructor(p = 14) {
    this.p = p;
  }

  get #threshold(): number {
    return Math.min(1 << (this.p - 3), 2048);
  }

  add(hash: number): void {
    if (this.#table) {
      this.#addSparse(hash);
      if (this.#size > this.#threshold) this.#densify();
      return;
    }
    this.#insert(this.#regs!, hash);
  }

  #addSparse(hash: number): void {
    if (hash === 0) {
      if (!this.#zero) this.#size++;
      this.#zero = true;
      return;
    }
    let table = this.#table!;
    let mask = table.length - 1;
    let slot = (Math.imul(hash, 0x9e3779b1) >>> 0) & mask;
    for (;;) {
      const v = table[slot]!;
      if (v === hash) return;
      if (v === 0) break;
      slot = (slot + 1) & mask;
    }
    table[slot] = hash;
    if (++this.#size * 2 <= table.length) return;
    // Over half full: twice the slots, every hash placed again.
    const old = table;
    table = this.#table = new Uint32Array(old.length * 2);
    mask = table.length - 1;
    for (let i = 0; i < old.length; i++) {
      const h = old[i]!;
      if (h === 0) continue;
      let at = (Math.imul(h, 0x9e3779b1) >>> 0) & mask;
      while (table[at] !== 0) at = (at + 1) & mask;
      table[at] = h;
    }
  }

  /** The sparse hashes, unordered. */
  #hashes(): Uint32Array {
    const out = new Uint32Array(this.#size);
    let k = 0;
    if (this.#zero) out[k++] = 0;
    const table = this.#table!;
    for (let i = 0; i < table.length; i++) if (table[i] !== 0) out[k++] = table[i]!;
    return out;
  }

  #insert(regs: Uint8Array, hash: number): void {
    const p = this.p;
    const idx = hash >>> (32 - p);
    const w = (hash << p) >>> 0;
    const rank = w === 0 ? 32 - p + 1 : Math.clz32(w) + 1;
    if (rank > regs[idx]!) regs[idx] = rank;
  }

  #densify(): void {
    const regs = new Uint8Array(1 << this.p);
    for (const h of this.#hashes()) this.#insert(regs, h);
    this.#regs = regs;
    this.#table = null;
    this.#size = 0;
    this.#zero = false;
  }

  estimate(): number {
    if (this.#table) return this.#size;
    const regs = this.#regs!;
    const m = regs.length;
    const q = 32 - this.p;
    const c = new Array<number>(q + 2).fill(0);
    for (let i = 0; i < m; i++) c[regs[i]!]!++;
    let z = m * tau(1 - c[q + 1]! / m);
    for (let k = q; k >= 1; k--) z = 0.5 * (z + c[k]!);
    z += m * sigma(c[0]! / m);
    return Math.round((m * m) / (2 * Math.LN2) / z);
  }

  merge(o: HyperLogLog): void {
    if (o.p !== this.p) throw new Error(`cannot merge HyperLogLog precisions ${this.p} and ${o.p}`);
    if (this.#table && o.#table) {
      if (o.#zero) this.#addSparse(0);
      const table = o.#table;
      for (let i = 0; i < table.length; i++) if (table[i] !== 0) this.#addSparse(table[i]!);
      if (this.#size > this.#threshold) this.#densify();
      return;
    }
    if (this.#table) this.#densify();
    const regs = this.#regs!;
    if (o.#table) for (const h of o.#hashes()) this.#insert(regs, h);
    else for (let i = 0; i < regs.length; i++) if (o.#regs![i]! > regs[i]!) regs[i] = o.#regs![i]!;
  }

  toJSON(): HllState {
    // Sorted, so that the same set always serializes the same way whatever order it was built in.
    if (this.#table) return { p: this.p, s: Array.from(this.#hashes().sort()) };
    return { p: this.p, r: Buffer.from(this.#regs!).toString('base64') };
  }

  static from(s: HllState): HyperLogLog {
    const h = new HyperLogLog(s.p);
    if (s.s) {
      let slots = 16;
      while (slots < s.s.length * 2) slots *= 2;
      h.#table = new Uint32Array(slots);
      for (const x of s.s) h.#addSparse(x);
    } else {
      h.#table = null;
      h.#regs = new Uint8Array(Buffer.from(s.r!, 'base64'));
    }
    return h;
  }
}

function sigma(x: number): number {
  if (x === 1) return Infinity;
  let y = 1;
  let z = x;
  for (;;) {
    x *= x;
    const prev = z;
    z += x * y;
    y += y;
    if (z === prev) return z;
  }
}

function tau(x: number): number {
  if (x === 0 || x === 1) return 0;
  let y = 1;
  let z = 1 - x;
  for (;;) {
    x = Math.sqrt(x);
    const prev = z;
    y *= 0.5;
    z -= (1 - x) ** 2 * y;
    if (z === prev) return z / 3;
  }
}

// ---------------------------------------------------------------------------------------------
// DDSketch (Masson, Rim, Lee, VLDB 2019): log-spaced buckets give every quantile within a relative
// error α of the true value at its rank; buckets add, so merges are exact.

export interface SketchState {
  a: number;
  n: number;
  zero: number;
  min: number;
  max: number;
  pos: [number, number][];
  neg: [number, number][];
}

const MIN_INDEXABLE = 1e-300;

export class DDSketch {
  readonly alpha: number;
  readonly #gamma: number;
  readonly #mult: number;
  readonly #pos = new Map<number, number>();
  readonly #neg = new Map<number, number>();
  #zero = 0;
  n = 0;
  #min = Infinity;
  #max = -Infinity;

  constructor(alpha = 0.005) {
    this.alpha = alpha;
    this.#gamma = (1 + alpha) / (1 - alpha);
    this.#mult = 1 / Math.log(this.#gamma);
  }

  add(v: number): void {
    if (Number.isNaN(v)) return;
    this.n++;
    if (v < this.#min) this.#min = v;
    if (v > this.#max) this.#max = v;
    if (v > MIN_INDEXABLE) {
      const k = Math.ceil(Math.log(v) * this.#mult);
      this.#pos.set(k, (this.#pos.get(k) ?? 0) + 1);
    } else if (v < -MIN_INDEXABLE) {
      const k = Math.ceil(Math.log(-v) * this.#mult);
      this.#neg.set(k, (this.#neg.get(k) ?? 0) + 1);
    } else {
      this.#zero++;
    }
  }

  #value(k: number): number {
    return (2 * this.#gamma ** k) / (this.#gamma + 1);
  }

  /** The value at rank `q × (n − 1)`, within relative error α; NaN when empty. */
  quantile(q: number): number {
    if (this.n === 0) return NaN;
    const rank = q * (this.n - 1);
    let seen = 0;
    let v = NaN;
    const negKeys = [...this.#neg.keys()].sort((a, b) => b - a);
    for (const k of negKeys) {
      seen += this.#neg.get(k)!;
      if (seen > rank) {
        v = -this.#value(k);
        break;
      }
    }
    if (Number.isNaN(v)) {
      seen += this.#zero;
      if (seen > rank) v = 0;
    }
    if (Number.isNaN(v)) {
      const posKeys = [...this.#pos.keys()].sort((a, b) => a - b);
      for (const k of posKeys) {
        seen += this.#pos.get(k)!;
        if (seen > rank) {
          v = this.#value(k);
          break;
        }
      }
    }
    if (Number.isNaN(v)) v = this.#max;
    // Not rounded to an integer even for integer data: rounding adds up to 0.5, which breaks the
    // relative-accuracy promise for values below 1/α (test/window-merge.property.test.ts).
    return Math.min(Math.max(v, this.#min), this.#max);
  }

  merge(o: DDSketch): void {
    if (o.alpha !== this.alpha)
      throw new Error(`cannot merge DDSketch accuracies ${this.alpha} and ${o.alpha}`);
    this.n += o.n;
    this.#zero += o.#zero;
    this.#min = Math.min(this.#min, o.#min);
    this.#max = Math.max(this.#max, o.#max);
    for (const [k, c] of o.#pos) this.#pos.set(k, (this.#pos.get(k) ?? 0) + c);
    for (const [k, c] of o.#neg) this.#neg.set(k, (this.#neg.get(k) ?? 0) + c);
  }

  toJSON(): SketchState {
    const sorted = (m: Map<number, number>): [number, number][] => [...m].sort((a, b) => a[0] - b[0]);
    return {
      a: this.alpha,
      n: this.n,
      zero: this.#zero,
      min: this.#min,
      max: this.#max,
      pos: sorted(this.#pos),
      neg: sorted(this.#neg),
    };
  }

  static from(s: SketchState): DDSketch {
    const d = new DDSketch(s.a);
    d.n = s.n;
    d.#zero = s.zero;
    d.#min = s.min ?? Infinity;
    d.#max = s.max ?? -Infinity;
    for (const [k, c] of s.pos) d.#pos.set(k, c);
    for (const [k, c] of s.neg) d.#neg.set(k, c);
    return d;
  }
}
