/**
 * `window`: event-time tumbling or hopping windows with a watermark and allowed lateness.
 *
 * The watermark is the largest event time accepted so far, in input order. An event is late, and
 * a dead letter, when the last window it belongs to already closed: `start + size +
 * allowed_lateness <= watermark`. The main thread decides lateness in input order and tells
 * workers when windows close; each worker aggregates its own records into partial states, and the
 * closing window's partials are merged exactly into one row per window and key.
 */
import { parseDuration, rfc3339ToEpochMs } from '../../helpers/time.ts';
import type { ComponentExtras } from '../../core/registry.ts';
import type {
  Batch,
  Decision,
  OrderedStep,
  Origin,
  Rec,
  Sequencer,
  StepContext,
  TransformSpec,
} from '../../core/types.ts';
import { verdictOf } from '../../core/types.ts';
import { fieldReader } from '../../core/fields.ts';
import { Aggregation, type Acc, type AccState, type MetricConfig } from './state.ts';

export interface WindowConfig {
  type: 'window';
  /** Event-time field: epoch milliseconds, or an RFC 3339 string. */
  time_field: string;
  size: string | number;
  /** Hop between window starts; omitted for tumbling windows (hop = size). */
  hop?: string | number;
  allowed_lateness?: string | number;
  /** Several ingest paths (the cluster): a path silent this long stops holding the watermark back. */
  idle_path_timeout?: string | number;
  group_by?: string[];
  metrics: Record<string, MetricConfig>;
  /** Output the window rows go to (default: the step id). */
  output?: string;
  /** Field of the row holding the window start (default `window_start`). */
  start_field?: string;
  /** Field for the window end, if wanted. */
  end_field?: string;
  /** How start/end are written: ISO 8601 text (default) or epoch milliseconds. */
  time_format?: 'iso' | 'epoch_ms';
}

interface Geometry {
  size: number;
  hop: number;
  lateness: number;
}

function geometry(config: WindowConfig): Geometry {
  const size = parseDuration(config.size);
  return {
    size,
    hop: config.hop === undefined ? size : parseDuration(config.hop),
    lateness: parseDuration(config.allowed_lateness ?? 0),
  };
}

const LATE = 0;
const NO_TIME = 1;
const NON_FINITE = 2;
/** What `extract` gives a record whose metric field is Infinity or NaN (a time is never -Infinity). */
const NON_FINITE_TIME = -Infinity;

/** Start of the first (earliest) window containing time t: the least multiple of hop above t − size. */
function firstWindow(g: Geometry, t: number): number {
  return Math.floor((t - g.size) / g.hop) * g.hop + g.hop;
}

/** Start of the first window containing t that was still open at watermark w. */
function firstOpen(g: Geometry, t: number, w: number): number {
  return Math.max(firstWindow(g, t), Math.floor((w - g.size - g.lateness) / g.hop) * g.hop + g.hop);
}

/**
 * Close messages: every window whose `start + size + lateness <= upTo` is final. With `keep`, the
 * windows are only reported (a preview of open windows) and stay open.
 */
interface CloseMessage {
  upTo: number;
  keep?: boolean;
}

/** Open windows in a snapshot taken before panes: [start, [[group key, state]]]. */
type OpenState = [number, [string, AccState][]][];

/** A worker's partial states for closed windows: [start, group key, state]. */
type Partials = [number, string, AccState][];

/**
 * What a window's state depends on: its geometry, keys and metrics. State saved under one shape
 * cannot be read as another (a 1 h window restored as 30 min would count events in the wrong one).
 */
function shapeOf(config: WindowConfig): string {
  const g = geometry(config);
  return JSON.stringify([
    g.size,
    g.hop,
    g.lateness,
    config.time_field,
    config.group_by ?? [],
    config.metrics,
  ]);
}

function checkShape(saved: string, config: WindowConfig): void {
  if (saved !== shapeOf(config))
    throw new Error(
      'the window state was saved with another size, hop, lateness, time field, group_by or metrics',
    );
}

function groupKeyPart(v: unknown): string {
  return typeof v === 'string' ? v : '\u0001' + JSON.stringify(v ?? null);
}

/**
 * A pane: the records of one key in one slice of time. `all` holds the records that count in every
 * window containing the pane; `tails` the records that arrived after some of those windows had
 * closed, by the first window they count in (few: they need a window to close between their event
 * time and the watermark).
 */
interface Pane {
  all: Acc | undefined;
  tails: Map<number, Acc> | undefined;
}

/** Panes saved in a snapshot: [pane start, [[group key, all state | null, [[first window, state]]]]]. */
type PaneState = [number, [string, AccState | null, [number, AccState][]][]][];

class WindowStep implements OrderedStep {
  readonly kind = 'ordered';
  readonly outcomes = [
    { kind: 'dead', reason: 'late' },
    { kind: 'dead', reason: 'invalid' },
    { kind: 'dead', reason: 'invalid' },
  ] as const;
  readonly #g: Geometry;
  readonly #config: WindowConfig;
  readonly #time: (r: Rec) => unknown;
  readonly #groupBy: ((r: Rec) => unknown)[];
  readonly #numbers: readonly ((r: Rec) => unknown)[];
  readonly #agg: Aggregation;
  /**
   * Window slicing (Scotty, Traub et al., ICDE 2019; Flink's panes): time is cut at every window
   * start and every window end, each record updates the one pane it falls in, and a window's rows
   * are merged from its panes when it closes. A record costs one update whatever size/hop is; with
   * a 300 s window and a 60 s hop that is 1 update instead of 5. Starts are the multiples of hop and
   * ends lie `cut` = size mod hop past one, so a hop holds at most two panes ("pairs", Krishnamurthy
   * et al., SIGMOD 2006) and a window at most 2·⌈size/hop⌉. Panes of gcd(size, hop), as before,
   * are the same when hop divides size, but a 1 h window with a 59,999 ms hop made 1 ms panes: a
   * state per key and millisecond, and 3.6 million panes to merge per window.
   */
  readonly #cut: number;
  /** Pane start → group key → pane. */
  readonly #panes = new Map<number, Map<string, Pane>>();
  /** Windows starting before this have been closed and sent. */
  #closedBelow = -Infinity;
  /** Windows restored from a snapshot taken before panes (start → key → state), merged at close. */
  readonly #legacy = new Map<number, Map<string, Acc>>();

  constructor(config: WindowConfig) {
    this.#config = config;
    this.#g = geometry(config);
    this.#cut = this.#g.size % this.#g.hop;
    this.#time = fieldReader(config.time_field);
    this.#groupBy = (config.group_by ?? []).map(fieldReader);
    this.#agg = new Aggregation(config.metrics);
    this.#numbers = this.#agg.numericFields.map((f) => f.read);
  }

  #timeOf(r: Rec): number {
    const v = this.#time(r);
    if (typeof v === 'number') return Number.isFinite(v) ? v : NaN;
    if (typeof v === 'string') return rfc3339ToEpochMs(v);
    return NaN;
  }

  /** The first numeric metric field holding Infinity or NaN (a transform can make them; JSON cannot). */
  #nonFinite(r: Rec): number {
    const numbers = this.#numbers;
    for (let k = 0; k < numbers.length; k++) {
      const v = numbers[k]!(r);
      if (typeof v === 'number' && !Number.isFinite(v)) return k;
    }
    return -1;
  }

  extract(input: Batch): Float64Array {
    const times = new Float64Array(input.records.length);
    const check = this.#numbers.length > 0;
    for (let i = 0; i < times.length; i++) {
      const r = input.records[i]!;
      times[i] = check && this.#nonFinite(r) >= 0 ? NON_FINITE_TIME : this.#timeOf(r);
    }
    return times;
  }

  describe(outcome: number, record: Rec): string {
    if (outcome === NO_TIME)
      return `window time field ${this.#config.time_field} is missing, or is not epoch milliseconds or an RFC 3339 time`;
    if (outcome === NON_FINITE) {
      const k = this.#nonFinite(record);
      const field = this.#agg.numericFields[k]?.name ?? 'a metric field';
      return `window metric field ${field} is ${String(this.#numbers[k]?.(record))}: only finite numbers can be aggregated`;
    }
    const t = this.#timeOf(record);
    const { size, hop, lateness } = this.#g;
    const start = Math.floor(t / hop) * hop;
    return `event time ${new Date(t).toISOString()} falls in window [${new Date(start).toISOString()}, ${new Date(start + size).toISOString()}), closed once the watermark passed ${new Date(start + size + lateness).toISOString()}`;
  }

  /** Start of the pane that holds time t. */
  #paneStart(t: number): number {
    const base = Math.floor(t / this.#g.hop) * this.#g.hop;
    return this.#cut === 0 || t < base + this.#cut ? base : base + this.#cut;
  }

  apply(input: Batch, _ctx: StepContext, decision: Decision): void {
    const times = decision.payload as Float64Array;
    const watermarks = decision.info as Float64Array | undefined;
    const indices = decision.indices;
    const records = input.records;
    const groupBy = this.#groupBy;
    for (let i = 0; i < records.length; i++) {
      const r = records[i]!;
      const t = times[indices[i]!]!;
      let key: string;
      if (groupBy.length === 1) key = groupKeyPart(groupBy[0]!(r));
      else {
        key = '';
        for (let k = 0; k < groupBy.length; k++)
          key += (k > 0 ? '\u0000' : '') + groupKeyPart(groupBy[k]!(r));
      }
      const start = this.#paneStart(t);
      let panes = this.#panes.get(start);
      if (!panes) this.#panes.set(start, (panes = new Map()));
      let pane = panes.get(key);
      if (!pane) panes.set(key, (pane = { all: undefined, tails: undefined }));
      // Hopping windows: the windows that closed before this record was decided do not get it.
      const from = watermarks ? firstOpen(this.#g, t, watermarks[indices[i]!]!) : -Infinity;
      let acc: Acc | undefined;
      if (from <= firstWindow(this.#g, t)) {
        acc = pane.all ??= this.#agg.create(this.#keysOf(r));
      } else {
        pane.tails ??= new Map();
        acc = pane.tails.get(from);
        if (!acc) pane.tails.set(from, (acc = this.#agg.create(this.#keysOf(r))));
      }
      this.#agg.add(acc, r);
    }
  }

  #keysOf(r: Rec): unknown[] {
    return this.#groupBy.map((read) => read(r) ?? null);
  }

  /**
   * The panes of the window [from, to): stepping through its pane starts (two per hop at most), or,
   * when fewer panes are held than that (a long window of rare keys), through the panes held.
   */
  *#panesIn(from: number, to: number): Iterable<Map<string, Pane>> {
    const { hop } = this.#g;
    const cut = this.#cut;
    if (((to - from) / hop) * (cut === 0 ? 1 : 2) <= this.#panes.size) {
      for (let b = from; b < to; b += hop) {
        const panes = this.#panes.get(b);
        if (panes) yield panes;
        if (cut === 0 || b + cut >= to) continue;
        const second = this.#panes.get(b + cut);
        if (second) yield second;
      }
    } else for (const [p, panes] of this.#panes) if (p >= from && p < to) yield panes;
  }

  command(message: unknown): Partials {
    const { upTo, keep } = message as CloseMessage;
    const g = this.#g;
    // Windows that close now: start + size + lateness <= upTo, not closed before.
    const below = Math.floor((upTo - g.size - g.lateness) / g.hop) * g.hop + g.hop;
    const starts = new Set<number>();
    for (const p of this.#panes.keys()) {
      const last = Math.min(Math.floor(p / g.hop) * g.hop, below - g.hop);
      for (let s = Math.max(firstWindow(g, p), this.#closedBelow); s <= last; s += g.hop) starts.add(s);
    }
    for (const s of this.#legacy.keys()) if (s < below) starts.add(s);
    const out: Partials = [];
    for (const start of [...starts].sort((a, b) => a - b)) {
      // A key's parts of this window. One part (a tumbling window, or a key seen in one pane) is
      // sent as it is; several are merged into a new state (panes are shared by later windows).
      const rows = new Map<string, Acc[]>();
      const into = (key: string, acc: Acc): void => {
        const parts = rows.get(key);
        if (parts) parts.push(acc);
        else rows.set(key, [acc]);
      };
      for (const panes of this.#panesIn(start, start + g.size)) {
        for (const [key, pane] of panes) {
          if (pane.all) into(key, pane.all);
          if (pane.tails) for (const [from, acc] of pane.tails) if (from <= start) into(key, acc);
        }
      }
      const legacy = this.#legacy.get(start);
      if (legacy) for (const [key, acc] of legacy) into(key, acc);
      for (const [key, parts] of rows) {
        let acc = parts[0]!;
        if (parts.length > 1) {
          acc = this.#agg.create(acc.keys);
          for (const part of parts) this.#agg.merge(acc, part);
        }
        out.push([start, key, this.#agg.serialize(acc)]);
      }
    }
    if (!keep) {
      // A pane goes once the last window containing it has closed.
      for (const p of this.#panes.keys()) if (Math.floor(p / g.hop) * g.hop < below) this.#panes.delete(p);
      for (const s of this.#legacy.keys()) if (s < below) this.#legacy.delete(s);
      // After closing everything (upTo = Infinity) no pane is left to send twice.
      if (Number.isFinite(below) && below > this.#closedBelow) this.#closedBelow = below;
    }
    return out;
  }

  snapshot(): { shape: string; panes: PaneState; closedBelow: number | null; open?: OpenState } {
    const state = (acc: Acc): AccState => this.#agg.serialize(acc);
    return {
      shape: shapeOf(this.#config),
      panes: [...this.#panes].map(([start, panes]) => [
        start,
        [...panes].map(([key, pane]) => [
          key,
          pane.all ? state(pane.all) : null,
          pane.tails ? [...pane.tails].map(([from, acc]): [number, AccState] => [from, state(acc)]) : [],
        ]),
      ]),
      // JSON has no -Infinity.
      closedBelow: Number.isFinite(this.#closedBelow) ? this.#closedBelow : null,
      ...(this.#legacy.size > 0 && {
        open: [...this.#legacy].map(([start, groups]): OpenState[number] => [
          start,
          [...groups].map(([key, acc]): [string, AccState] => [key, state(acc)]),
        ]),
      }),
    };
  }

  restore(state: unknown): void {
    const saved = state as {
      shape: string;
      panes?: PaneState;
      closedBelow?: number | null;
      open?: OpenState;
    };
    checkShape(saved.shape, this.#config);
    const acc = (s: AccState): Acc => this.#agg.deserialize(s);
    this.#panes.clear();
    this.#legacy.clear();
    this.#closedBelow = saved.closedBelow ?? -Infinity;
    // A snapshot taken with panes of gcd(size, hop) may hold several panes that are one now: each
    // is merged into the pane that holds its start (every old pane lies inside one new pane).
    const into = (a: Acc | undefined, b: Acc): Acc => {
      if (!a) return b;
      this.#agg.merge(a, b);
      return a;
    };
    for (const [savedStart, panes] of saved.panes ?? []) {
      const start = this.#paneStart(savedStart);
      let held = this.#panes.get(start);
      if (!held) this.#panes.set(start, (held = new Map()));
      for (const [key, all, tails] of panes) {
        let pane = held.get(key);
        if (!pane) held.set(key, (pane = { all: undefined, tails: undefined }));
        if (all) pane.all = into(pane.all, acc(all));
        for (const [from, s] of tails) {
          pane.tails ??= new Map();
          pane.tails.set(from, into(pane.tails.get(from), acc(s)));
        }
      }
    }
    // A snapshot from before panes holds whole windows: they are merged in when they close.
    for (const [start, groups] of saved.open ?? [])
      this.#legacy.set(start, new Map(groups.map(([key, s]) => [key, acc(s)])));
  }
}

/** One ingest path's progress: the largest event time it brought, and when it last sent. */
interface Path {
  max: number;
  seenMs: number;
}

const DEFAULT_IDLE_PATH_MS = 10_000;

class WindowSequencer implements Sequencer {
  readonly #g: Geometry;
  readonly #config: WindowConfig;
  readonly #agg: Aggregation;
  /**
   * The watermark lateness is decided against. With one ingest path (a file, the embedded
   * service) it is the largest event time accepted so far. With several (cluster instances), each
   * path keeps its own largest event time and the watermark is the least of them over the paths
   * that sent something within `idle_path_timeout` (Flink's per-partition watermarks and
   * idleness): a fast instance cannot make a slower one's events late. It never goes back.
   */
  #watermark = -Infinity;
  readonly #paths = new Map<string, Path>();
  /** Latest receive time of any chunk: the clock idleness is measured by, stored with the input. */
  #nowMs = -Infinity;
  readonly #idleMs: number;
  /**
   * The earliest close time of a window that may hold records and is still open, and the latest.
   * Two numbers instead of the set of open windows: a record opens windows from the first still
   * open to its last, so per record this is O(1) however many windows contain it.
   */
  #minClose = Infinity;
  #maxClose = -Infinity;

  constructor(config: WindowConfig) {
    this.#config = config;
    this.#g = geometry(config);
    this.#agg = new Aggregation(config.metrics);
    this.#idleMs =
      config.idle_path_timeout === undefined ? DEFAULT_IDLE_PATH_MS : parseDuration(config.idle_path_timeout);
  }

  decide(payload: unknown, verdicts: Uint16Array, slot: number, origin?: Origin): Float64Array | undefined {
    const times = payload as Float64Array;
    const g = this.#g;
    const { size, hop, lateness } = g;
    const hopping = hop < size;
    const watermarks = hopping ? new Float64Array(times.length) : undefined;
    // `idle_path_timeout: 0s`: one watermark for the whole stream, whatever path a chunk took.
    const path = origin === undefined || this.#idleMs === 0 ? undefined : this.#arrive(origin);
    for (let i = 0; i < times.length; i++) {
      if (verdicts[i] !== 0) continue;
      const t = times[i]!;
      if (Number.isNaN(t)) {
        verdicts[i] = verdictOf(slot, NO_TIME);
        continue;
      }
      if (t === NON_FINITE_TIME) {
        verdicts[i] = verdictOf(slot, NON_FINITE);
        continue;
      }
      const last = Math.floor(t / hop) * hop;
      const lastClose = last + size + lateness;
      if (lastClose <= this.#watermark) {
        verdicts[i] = verdictOf(slot, LATE);
        // The path's progress counts late events too: a path catching up holds the others back.
        if (path !== undefined && t > path.max) path.max = t;
        continue;
      }
      if (watermarks) watermarks[i] = this.#watermark;
      const firstClose = firstOpen(g, t, this.#watermark) + size + lateness;
      if (firstClose < this.#minClose) this.#minClose = firstClose;
      if (lastClose > this.#maxClose) this.#maxClose = lastClose;
      if (path === undefined) {
        if (t > this.#watermark) this.#watermark = t;
      } else if (t > path.max) {
        path.max = t;
        this.#advance();
      }
    }
    return watermarks;
  }

  /** Records a chunk's arrival on its path; paths silent for longer than the timeout stop counting. */
  #arrive(origin: Origin): Path {
    let path = this.#paths.get(origin.path);
    if (!path) this.#paths.set(origin.path, (path = { max: -Infinity, seenMs: origin.receivedMs }));
    if (origin.receivedMs > path.seenMs) path.seenMs = origin.receivedMs;
    if (origin.receivedMs > this.#nowMs) {
      this.#nowMs = origin.receivedMs;
      // A path that went idle no longer holds the watermark back: it may move on now.
      this.#advance();
    }
    return path;
  }

  /** The watermark: the least largest event time over the active paths, never lower than before. */
  #advance(): void {
    let min = Infinity;
    for (const [name, p] of this.#paths) {
      if (this.#nowMs - p.seenMs > this.#idleMs) {
        // Gone quiet: forgotten, so the snapshot and this loop stay as small as the live paths.
        if (p.max <= this.#watermark) this.#paths.delete(name);
        continue;
      }
      // A path with no event time yet (nothing but invalid records) has nothing to hold back.
      if (p.max !== -Infinity && p.max < min) min = p.max;
    }
    if (min !== Infinity && min > this.#watermark) this.#watermark = min;
  }

  /** Each active path's largest event time, and the watermark (for metrics). */
  watermarks(): { watermark: number; paths: Map<string, number> } {
    const paths = new Map<string, number>();
    for (const [name, p] of this.#paths) if (this.#nowMs - p.seenMs <= this.#idleMs) paths.set(name, p.max);
    return { watermark: this.#watermark, paths };
  }

  pollBroadcast(): CloseMessage | undefined {
    if (this.#minClose > this.#watermark) return undefined;
    return this.#close(this.#watermark);
  }

  finish(): CloseMessage | undefined {
    return this.#maxClose > -Infinity ? this.#close(Infinity) : undefined;
  }

  preview(): CloseMessage {
    return { upTo: Infinity, keep: true };
  }

  snapshot(): {
    shape: string;
    watermark: number;
    open: number[];
    paths: [string, number | null, number][];
    nowMs: number | null;
  } {
    // `open` keeps the format of the set of open window starts it replaced: the first and last.
    const { size, lateness } = this.#g;
    const open =
      this.#maxClose === -Infinity
        ? []
        : [this.#minClose - size - lateness, this.#maxClose - size - lateness];
    const finite = (x: number): number | null => (Number.isFinite(x) ? x : null);
    return {
      shape: shapeOf(this.#config),
      watermark: this.#watermark,
      open,
      // [path, largest event time or null, last receive time]
      paths: [...this.#paths].map(([name, p]) => [name, finite(p.max), p.seenMs]),
      nowMs: finite(this.#nowMs),
    };
  }

  restore(state: unknown): void {
    const { shape, watermark, open, paths, nowMs } = state as {
      shape: string;
      watermark: number | null;
      open: number[];
      paths?: [string, number | null, number][];
      nowMs?: number | null;
    };
    checkShape(shape, this.#config);
    const { size, lateness } = this.#g;
    // JSON turns -Infinity (nothing seen yet) into null.
    this.#watermark = watermark ?? -Infinity;
    this.#nowMs = nowMs ?? -Infinity;
    this.#paths.clear();
    for (const [name, max, seenMs] of paths ?? []) this.#paths.set(name, { max: max ?? -Infinity, seenMs });
    this.#minClose = Infinity;
    this.#maxClose = -Infinity;
    for (const start of open) {
      this.#minClose = Math.min(this.#minClose, start + size + lateness);
      this.#maxClose = Math.max(this.#maxClose, start + size + lateness);
    }
  }

  /**
   * Closes every window with `start + size + lateness <= upTo`. The next window that may close is
   * the first one after those, if any window reaches that far; when it holds no records, workers
   * answer its close with nothing.
   */
  #close(upTo: number): CloseMessage {
    const { size, hop, lateness } = this.#g;
    const next = Math.floor((upTo - size - lateness) / hop) * hop + hop + size + lateness;
    if (next <= this.#maxClose) this.#minClose = next;
    else {
      this.#minClose = Infinity;
      this.#maxClose = -Infinity;
    }
    return { upTo };
  }

  gather(_message: unknown, replies: unknown[]): Rec[] {
    const merged = new Map<number, Map<string, Acc>>();
    for (const partials of replies as Partials[]) {
      for (const [start, key, state] of partials) {
        let groups = merged.get(start);
        if (!groups) merged.set(start, (groups = new Map()));
        const acc = this.#agg.deserialize(state);
        const into = groups.get(key);
        if (into) this.#agg.merge(into, acc);
        else groups.set(key, acc);
      }
    }
    const { size } = this.#g;
    const c = this.#config;
    const startField = c.start_field ?? 'window_start';
    const groupBy = c.group_by ?? [];
    const time = (ms: number): string | number =>
      c.time_format === 'epoch_ms' ? ms : new Date(ms).toISOString();
    const rows: Rec[] = [];
    for (const start of [...merged.keys()].sort((a, b) => a - b)) {
      const groups = merged.get(start)!;
      for (const key of [...groups.keys()].sort()) {
        const acc = groups.get(key)!;
        const row: Rec = { [startField]: time(start) };
        if (c.end_field) row[c.end_field] = time(start + size);
        groupBy.forEach((field, i) => (row[field] = acc.keys[i]));
        this.#agg.write(acc, row);
        rows.push(row);
      }
    }
    return rows;
  }
}

const metricSchema = {
  type: 'object',
  required: ['op'],
  properties: {
    op: { enum: ['count', 'sum', 'min', 'max', 'avg', 'distinct', 'quantile'] },
    field: { type: 'string', description: 'Record field the metric reads (not for count).' },
    q: { type: 'number', minimum: 0, maximum: 1, description: 'Quantile, e.g. 0.99 (quantile only).' },
    decimal: {
      type: 'boolean',
      default: false,
      description:
        'Aggregate JSON numbers of this field exactly, as decimals, and write sum, min and max as decimal strings (decimal strings in the input always are).',
    },
    relative_accuracy: {
      type: 'number',
      exclusiveMinimum: 0,
      maximum: 0.1,
      default: 0.005,
      description: 'DDSketch relative error (quantile only).',
    },
    precision: {
      type: 'integer',
      minimum: 4,
      maximum: 18,
      default: 14,
      description: 'HyperLogLog precision p: error ≈ 1.04/√2^p (distinct only).',
    },
  },
  additionalProperties: false,
  allOf: [
    {
      if: { properties: { op: { enum: ['sum', 'min', 'max', 'avg', 'distinct', 'quantile'] } } },
      then: { required: ['field'] },
    },
    { if: { properties: { op: { const: 'quantile' } } }, then: { required: ['q'] } },
    {
      if: { required: ['decimal'] },
      then: { properties: { op: { enum: ['sum', 'min', 'max', 'avg'] } } },
    },
  ],
};

const duration = { anyOf: [{ type: 'string' }, { type: 'number', minimum: 0 }] };

export const windowTransform: TransformSpec<WindowConfig> & ComponentExtras<WindowConfig> = {
  type: 'window',
  description:
    'Aggregates records in event-time tumbling or hopping windows with a watermark and allowed lateness; late records become dead letters.',
  schema: {
    type: 'object',
    required: ['time_field', 'size', 'metrics'],
    properties: {
      time_field: { type: 'string', description: 'Event time: epoch milliseconds or an RFC 3339 string.' },
      size: { ...duration, description: 'Window length, e.g. 60s or 5m.' },
      hop: { ...duration, description: 'Distance between window starts; omit for tumbling windows.' },
      allowed_lateness: {
        ...duration,
        default: 0,
        description: 'How long after its end a window still accepts events.',
      },
      idle_path_timeout: {
        ...duration,
        default: '10s',
        description:
          'Cluster: an ingest path (instance) that sent nothing for this long, by receive time, stops holding the watermark back.',
      },
      group_by: {
        type: 'array',
        items: { type: 'string' },
        description: 'Fields whose values key each window row.',
      },
      metrics: {
        type: 'object',
        minProperties: 1,
        additionalProperties: metricSchema,
        description: 'Output field → metric.',
      },
      output: { type: 'string', description: 'Name of the output the rows go to (default: the step id).' },
      start_field: { type: 'string', default: 'window_start' },
      end_field: { type: 'string' },
      time_format: { enum: ['iso', 'epoch_ms'], default: 'iso' },
    },
  },
  outputs: (config, stepId) => [config.output ?? stepId],
  knownFields: (_config, before) => before,
  readsFields: (config) => [
    {
      option: ['time_field'],
      field: config.time_field,
      without: 'becomes an `invalid` dead letter at this step',
    },
    ...(config.group_by ?? []).map((field, i) => ({
      option: ['group_by', i],
      field,
      without: 'is counted in the row where this field is null',
    })),
    ...Object.entries(config.metrics).flatMap(([name, metric]) =>
      'field' in metric
        ? [
            {
              option: ['metrics', name, 'field'],
              field: metric.field,
              without: `adds nothing to metric ${name}`,
            },
          ]
        : [],
    ),
  ],
  windowed: (config, stepId) => ({
    output: config.output ?? stepId,
    startField: config.start_field ?? 'window_start',
    keys: config.group_by ?? [],
  }),
  check: (config) => {
    for (const key of ['size', 'hop', 'allowed_lateness', 'idle_path_timeout'] as const) {
      const value = config[key];
      if (value === undefined) continue;
      const ms = parseDuration(value);
      if (!Number.isFinite(ms) || ((key === 'size' || key === 'hop') && ms <= 0)) {
        return {
          key,
          message: `${JSON.stringify(value)} is not a duration`,
          hint: 'Write durations like 60s, 5m, 1h30m or 250ms.',
        };
      }
    }
    const g = geometry(config);
    for (const key of ['size', 'hop'] as const)
      if (!Number.isInteger(g[key]))
        return {
          key,
          message: `${JSON.stringify(config[key])} is not a whole number of milliseconds`,
          hint: 'Windows are cut into panes of whole milliseconds; write sizes like 60s or 1500ms.',
        };
    if (g.hop > g.size)
      return {
        key: 'hop',
        message: `hop ${JSON.stringify(config.hop)} is longer than size ${JSON.stringify(config.size)}`,
        hint: 'A hop must not exceed the window size; omit it for tumbling windows.',
      };
    return undefined;
  },
  create: (config) => new WindowStep(config),
  sequencer: (config) => new WindowSequencer(config),
};
