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

/**
 * Close messages: every window whose `start + size + lateness <= upTo` is final. With `keep`, the
 * windows are only reported (a preview of open windows) and stay open.
 */
interface CloseMessage {
  upTo: number;
  keep?: boolean;
}

/** Open windows as a snapshot: [start, [[group key, state]]]. */
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

class WindowStep implements OrderedStep {
  readonly kind = 'ordered';
  readonly outcomes = [
    { kind: 'dead', reason: 'late' },
    { kind: 'dead', reason: 'invalid' },
  ] as const;
  readonly #g: Geometry;
  readonly #config: WindowConfig;
  readonly #time: (r: Rec) => unknown;
  readonly #groupBy: ((r: Rec) => unknown)[];
  readonly #agg: Aggregation;
  /** Open windows: start → group key → partial aggregate. */
  readonly #open = new Map<number, Map<string, Acc>>();

  constructor(config: WindowConfig) {
    this.#config = config;
    this.#g = geometry(config);
    this.#time = fieldReader(config.time_field);
    this.#groupBy = (config.group_by ?? []).map(fieldReader);
    this.#agg = new Aggregation(config.metrics);
  }

  #timeOf(r: Rec): number {
    const v = this.#time(r);
    if (typeof v === 'number') return Number.isFinite(v) ? v : NaN;
    if (typeof v === 'string') return rfc3339ToEpochMs(v);
    return NaN;
  }

  extract(input: Batch): Float64Array {
    const times = new Float64Array(input.records.length);
    for (let i = 0; i < times.length; i++) times[i] = this.#timeOf(input.records[i]!);
    return times;
  }

  describe(outcome: number, record: Rec): string {
    if (outcome === NO_TIME)
      return `window time field ${this.#config.time_field} is missing, or is not epoch milliseconds or an RFC 3339 time`;
    const t = this.#timeOf(record);
    const { size, hop, lateness } = this.#g;
    const start = Math.floor(t / hop) * hop;
    return `event time ${new Date(t).toISOString()} falls in window [${new Date(start).toISOString()}, ${new Date(start + size).toISOString()}), closed once the watermark passed ${new Date(start + size + lateness).toISOString()}`;
  }

  apply(input: Batch, _ctx: StepContext, decision: Decision): void {
    const { size, hop, lateness } = this.#g;
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
      const last = Math.floor(t / hop) * hop;
      // Hopping windows: skip the ones that closed before this record was decided.
      const watermark = watermarks ? watermarks[indices[i]!]! : -Infinity;
      for (let start = last; start > t - size; start -= hop) {
        if (start + size + lateness <= watermark) break;
        let groups = this.#open.get(start);
        if (!groups) this.#open.set(start, (groups = new Map()));
        let acc = groups.get(key);
        if (!acc) {
          acc = this.#agg.create(groupBy.map((read) => read(r) ?? null));
          groups.set(key, acc);
        }
        this.#agg.add(acc, r);
      }
    }
  }

  command(message: unknown): Partials {
    const { upTo, keep } = message as CloseMessage;
    const { size, lateness } = this.#g;
    const out: Partials = [];
    for (const [start, groups] of this.#open) {
      if (start + size + lateness > upTo) continue;
      for (const [key, acc] of groups) out.push([start, key, this.#agg.serialize(acc)]);
      if (!keep) this.#open.delete(start);
    }
    return out;
  }

  snapshot(): { shape: string; open: OpenState } {
    return {
      shape: shapeOf(this.#config),
      open: [...this.#open].map(([start, groups]) => [
        start,
        [...groups].map(([key, acc]): [string, AccState] => [key, this.#agg.serialize(acc)]),
      ]),
    };
  }

  restore(state: unknown): void {
    const { shape, open } = state as { shape: string; open: OpenState };
    checkShape(shape, this.#config);
    this.#open.clear();
    for (const [start, groups] of open)
      this.#open.set(start, new Map(groups.map(([key, s]) => [key, this.#agg.deserialize(s)])));
  }
}

class WindowSequencer implements Sequencer {
  readonly #g: Geometry;
  readonly #config: WindowConfig;
  readonly #agg: Aggregation;
  #watermark = -Infinity;
  /** Starts of windows that received an event and have not been closed. */
  readonly #open = new Set<number>();
  #minClose = Infinity;

  constructor(config: WindowConfig) {
    this.#config = config;
    this.#g = geometry(config);
    this.#agg = new Aggregation(config.metrics);
  }

  decide(payload: unknown, verdicts: Uint16Array, slot: number): Float64Array | undefined {
    const times = payload as Float64Array;
    const { size, hop, lateness } = this.#g;
    const hopping = hop < size;
    const watermarks = hopping ? new Float64Array(times.length) : undefined;
    for (let i = 0; i < times.length; i++) {
      if (verdicts[i] !== 0) continue;
      const t = times[i]!;
      if (Number.isNaN(t)) {
        verdicts[i] = verdictOf(slot, NO_TIME);
        continue;
      }
      const last = Math.floor(t / hop) * hop;
      if (last + size + lateness <= this.#watermark) {
        verdicts[i] = verdictOf(slot, LATE);
        continue;
      }
      if (watermarks) watermarks[i] = this.#watermark;
      for (let start = last; start > t - size; start -= hop) {
        const close = start + size + lateness;
        if (close <= this.#watermark) break;
        if (!this.#open.has(start)) {
          this.#open.add(start);
          if (close < this.#minClose) this.#minClose = close;
        }
      }
      if (t > this.#watermark) this.#watermark = t;
    }
    return watermarks;
  }

  pollBroadcast(): CloseMessage | undefined {
    if (this.#minClose > this.#watermark) return undefined;
    return this.#close(this.#watermark);
  }

  finish(): CloseMessage | undefined {
    return this.#open.size > 0 ? this.#close(Infinity) : undefined;
  }

  preview(): CloseMessage {
    return { upTo: Infinity, keep: true };
  }

  snapshot(): { shape: string; watermark: number; open: number[] } {
    return { shape: shapeOf(this.#config), watermark: this.#watermark, open: [...this.#open] };
  }

  restore(state: unknown): void {
    const { shape, watermark, open } = state as { shape: string; watermark: number; open: number[] };
    checkShape(shape, this.#config);
    const { size, lateness } = this.#g;
    this.#watermark = watermark;
    this.#open.clear();
    this.#minClose = Infinity;
    for (const start of open) {
      this.#open.add(start);
      this.#minClose = Math.min(this.#minClose, start + size + lateness);
    }
  }

  #close(upTo: number): CloseMessage {
    const { size, lateness } = this.#g;
    this.#minClose = Infinity;
    for (const start of this.#open) {
      const close = start + size + lateness;
      if (close <= upTo) this.#open.delete(start);
      else if (close < this.#minClose) this.#minClose = close;
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
    for (const key of ['size', 'hop', 'allowed_lateness'] as const) {
      const value = config[key];
      if (value === undefined) continue;
      const ms = parseDuration(value);
      if (!Number.isFinite(ms) || (key !== 'allowed_lateness' && ms <= 0)) {
        return {
          key,
          message: `${JSON.stringify(value)} is not a duration`,
          hint: 'Write durations like 60s, 5m, 1h30m or 250ms.',
        };
      }
    }
    const g = geometry(config);
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
