/**
 * Window slicing: the window step updates one pane (time cut at every window start and end, two
 * panes per hop at most) per record and merges a window's panes when it closes. On random geometries and random inputs (out of order, late,
 * far in the past, JSON numbers and decimal strings, Infinity/NaN from a transform), the rows and
 * dead letters equal those of the per-window model: every record added to every window that
 * contains it and was still open when the record was decided, in input order. Batches go to one of
 * 1–3 workers at random, an open-window preview is taken now and then, and with one worker the
 * worker and sequencer state is snapshotted through JSON and restored into fresh ones.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { windowTransform } from '../dist/transforms/window/index.js';
import { Aggregation, type Acc, type MetricConfig } from '../dist/transforms/window/state.js';
import type { OrderedStep, Sequencer } from '../dist/core/types.js';

fc.configureGlobal({ defaultSizeToMaxWhenMaxSpecified: true, includeErrorInReport: true });

type Rec = Record<string, unknown>;

const METRICS: Record<string, MetricConfig> = {
  count: { op: 'count' },
  sum: { op: 'sum', field: 'v' },
  min: { op: 'min', field: 'v' },
  max: { op: 'max', field: 'v' },
  avg: { op: 'avg', field: 'v' },
  p90: { op: 'quantile', field: 'v', q: 0.9 },
  users: { op: 'distinct', field: 'u' },
  dsum: { op: 'sum', field: 'd', decimal: true },
};

interface Geometry {
  size: number;
  hop: number;
  lateness: number;
}

const geometry: fc.Arbitrary<Geometry> = fc
  .record({
    pane: fc.constantFrom(250, 1000, 1500),
    hopPanes: fc.integer({ min: 1, max: 4 }),
    extraPanes: fc.integer({ min: 0, max: 9 }),
    latePanes: fc.integer({ min: 0, max: 6 }),
  })
  .map(({ pane, hopPanes, extraPanes, latePanes }) => ({
    hop: pane * hopPanes,
    size: pane * (hopPanes + extraPanes),
    lateness: pane * latePanes,
  }));

const value: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: -500, max: 500 }).map((n) => n / 8) },
  { weight: 3, arbitrary: fc.double({ min: -1e6, max: 1e6, noNaN: true }) },
  { weight: 2, arbitrary: fc.integer({ min: -10_000, max: 10_000 }) },
  { weight: 1, arbitrary: fc.constantFrom(-0, 0.1, 0.2, 0.3, 1e16, -1e16) },
  { weight: 1, arbitrary: fc.constantFrom(undefined, null, 'x') },
  // Only a transform can make these; they must be dead letters, not left out of some metrics.
  { weight: 1, arbitrary: fc.constantFrom(Infinity, -Infinity, NaN) },
);

const event = fc.record({
  /** Milliseconds the event clock moves before this event. */
  advance: fc.oneof(
    { weight: 5, arbitrary: fc.nat({ max: 700 }) },
    { weight: 1, arbitrary: fc.nat({ max: 9000 }) },
  ),
  /** Disorder: mostly small, sometimes far in the past. */
  offset: fc.oneof(
    { weight: 8, arbitrary: fc.integer({ min: -1500, max: 200 }) },
    { weight: 1, arbitrary: fc.integer({ min: -30_000, max: 0 }) },
  ),
  noTime: fc.oneof(
    { weight: 19, arbitrary: fc.constant(false) },
    { weight: 1, arbitrary: fc.constant(true) },
  ),
  k: fc.constantFrom('a', 'b', 'c', 7, null),
  v: value,
  u: fc.option(
    fc.nat({ max: 40 }).map((n) => `u${n}`),
    { nil: undefined },
  ),
  d: fc.option(
    fc.oneof(
      fc.integer({ min: -99, max: 99 }).map((n) => n / 4),
      fc.constantFrom('12.345', '-0.01', '99999999999999999.5'),
    ),
    { nil: undefined },
  ),
});

function records(): fc.Arbitrary<Rec[]> {
  return fc.array(event, { maxLength: 300 }).map((list) => {
    let clock = 1_700_000_000_000;
    return list.map((e) => {
      clock += e.advance;
      const r: Rec = { k: e.k, v: e.v, u: e.u, d: e.d };
      if (!e.noTime) r.ts = clock + e.offset;
      return r;
    });
  });
}

interface Plan {
  batches: number[];
  workers: number;
  picks: number[];
  previews: boolean[];
  snapshots: boolean[];
}

const plan: fc.Arbitrary<Plan> = fc.record({
  batches: fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 30 }),
  workers: fc.integer({ min: 1, max: 3 }),
  picks: fc.array(fc.nat({ max: 2 }), { minLength: 30, maxLength: 30 }),
  previews: fc.array(fc.boolean(), { minLength: 30, maxLength: 30 }),
  snapshots: fc.array(fc.boolean(), { minLength: 30, maxLength: 30 }),
});

// ---------------------------------------------------------------------------------------------

interface Result {
  rows: string[];
  dead: Record<string, number>;
}

const keyOf = (r: Rec): string => JSON.stringify([r.window_start, r.k]);

/** The per-window model: each record into each open window containing it, in input order. */
function model(g: Geometry, recs: Rec[]): Result {
  const agg = new Aggregation(METRICS);
  const open = new Map<string, { start: number; acc: Acc }>();
  const rows: string[] = [];
  const dead: Record<string, number> = {};
  let watermark = -Infinity;
  const closeUpTo = (upTo: number): void => {
    const closing = [...open].filter(([, w]) => w.start + g.size + g.lateness <= upTo);
    for (const [key, w] of closing) {
      const row: Rec = { window_start: w.start, k: w.acc.keys[0] };
      agg.write(w.acc, row);
      rows.push(JSON.stringify(row));
      open.delete(key);
    }
  };
  for (const r of recs) {
    const t = r.ts as number | undefined;
    if (typeof r.v === 'number' && !Number.isFinite(r.v)) {
      dead.invalid = (dead.invalid ?? 0) + 1;
      continue;
    }
    if (t === undefined) {
      dead.invalid = (dead.invalid ?? 0) + 1;
      continue;
    }
    const last = Math.floor(t / g.hop) * g.hop;
    if (last + g.size + g.lateness <= watermark) {
      dead.late = (dead.late ?? 0) + 1;
      continue;
    }
    for (let start = last; start > t - g.size; start -= g.hop) {
      if (start + g.size + g.lateness <= watermark) break;
      const key = JSON.stringify([start, r.k ?? null]);
      let w = open.get(key);
      if (!w) open.set(key, (w = { start, acc: agg.create([r.k ?? null]) }));
      agg.add(w.acc, r);
    }
    if (t > watermark) watermark = t;
    closeUpTo(watermark);
  }
  closeUpTo(Infinity);
  return { rows: rows.sort(), dead };
}

type Step = OrderedStep;
type Seq = Sequencer;

const stepOf = (config: Parameters<typeof windowTransform.create>[0]): Step =>
  windowTransform.create(config, {} as never) as Step;
const sequencerOf = (config: Parameters<typeof windowTransform.create>[0]): Seq =>
  windowTransform.sequencer!(config, 'w');

/** Extracts, decides (when given the sequencer) and applies `records` in one go. */
function applyAll(step: Step, records: Rec[], seq?: Seq): void {
  const payload = step.extract({ records, pos: [] });
  const info = seq?.decide(payload, new Uint16Array(records.length), 0);
  step.apply!({ records, pos: [] }, {} as never, { info, payload, indices: Int32Array.from(records.keys()) });
}

/** A count window of `size` and `hop` that has decided and applied `batch` in one go. */
function countedOnce(
  size: number,
  hop: number,
  batch: { ts: number }[],
): { step: Step; seq: Seq; state: { panes: [number, [string, { count: number }][]][] } } {
  const config = {
    type: 'window' as const,
    time_field: 'ts',
    size,
    hop,
    metrics: { count: { op: 'count' } } as Record<string, MetricConfig>,
    time_format: 'epoch_ms' as const,
  };
  const step = stepOf(config);
  const seq = sequencerOf(config);
  applyAll(step, batch, seq);
  return { step, seq, state: step.snapshot!() as { panes: [number, [string, { count: number }][]][] } };
}

/** The step as the engine drives it: extract on a worker, decide in order, apply, broadcasts. */
function sliced(g: Geometry, recs: Rec[], p: Plan): Result {
  const config = {
    type: 'window' as const,
    time_field: 'ts',
    size: g.size,
    hop: g.hop,
    allowed_lateness: g.lateness,
    group_by: ['k'],
    metrics: METRICS,
    time_format: 'epoch_ms' as const,
  };
  const make = (): Step => stepOf(config);
  let workers: Step[] = Array.from({ length: p.workers }, make);
  let seq = sequencerOf(config);
  const rows: string[] = [];
  const dead: Record<string, number> = {};
  const broadcast = (message: unknown): void => {
    if (message === undefined) return;
    const replies = workers.map((w) => w.command!(message));
    for (const row of seq.gather!(message, replies)) rows.push(JSON.stringify(row));
  };
  let at = 0;
  for (let b = 0; at < recs.length; b++) {
    const n = p.batches[b % p.batches.length]!;
    const batch = recs.slice(at, at + n);
    at += n;
    const worker = workers[p.picks[b % p.picks.length]! % workers.length]!;
    const payload = worker.extract({ records: batch, pos: batch.map((_, i) => i) });
    const verdicts = new Uint16Array(batch.length);
    const info = seq.decide(payload, verdicts, 0);
    const kept: Rec[] = [];
    const indices: number[] = [];
    batch.forEach((r, i) => {
      const v = verdicts[i]!;
      if (v === 0) {
        kept.push(r);
        indices.push(i);
      } else {
        const reason = worker.outcomes[(v & 0xff) - 1]!.reason;
        dead[reason] = (dead[reason] ?? 0) + 1;
        assert.match(worker.describe((v & 0xff) - 1, r, info), /./);
      }
    });
    worker.apply!({ records: kept, pos: indices }, {} as never, {
      info,
      payload,
      indices: Int32Array.from(indices),
    });
    broadcast(seq.pollBroadcast!());
    if (p.previews[b % p.previews.length]) {
      // A preview changes nothing: it is answered, and the results below must not move.
      const preview = seq.preview!();
      seq.gather!(
        preview,
        workers.map((w) => w.command!(preview)),
      );
    }
    if (workers.length === 1 && p.snapshots[b % p.snapshots.length]) {
      const stepState = JSON.parse(JSON.stringify(workers[0]!.snapshot!())) as unknown;
      const seqState = JSON.parse(JSON.stringify(seq.snapshot!())) as unknown;
      workers = [make()];
      workers[0]!.restore!(stepState);
      seq = sequencerOf(config);
      seq.restore!(seqState);
    }
  }
  broadcast(seq.finish!());
  return { rows: rows.sort(), dead };
}

describe('window slicing', () => {
  it('hopping and tumbling rows from panes equal the per-window model (random geometry, disorder, lateness, 1–3 workers, snapshots)', () => {
    fc.assert(
      fc.property(geometry, records(), plan, (g, recs, p) => {
        const expected = model(g, recs);
        const got = sliced(g, recs, p);
        assert.deepEqual(got.dead, expected.dead, 'dead letters');
        assert.deepEqual(got.rows, expected.rows, 'window rows');
        // One row per window and key.
        assert.equal(new Set(got.rows.map((r) => keyOf(JSON.parse(r) as Rec))).size, got.rows.length);
      }),
      { numRuns: 400 },
    );
  });

  it('a record costs one pane update whatever size/hop is', () => {
    // 1 h windows every minute: 60 windows contain each record, one pane holds it.
    const g = { size: 3_600_000, hop: 60_000, lateness: 0 };
    const batch = Array.from({ length: 1000 }, (_, i) => ({ ts: 1_700_000_000_000 + i * 1000 }));
    const { step, seq, state } = countedOnce(g.size, g.hop, batch);
    // 1000 s of records in 60 s panes: 17 panes, 1000 records, each counted once.
    assert.equal(state.panes.length, 17);
    const counted = state.panes.reduce((n, [, keys]) => n + keys.reduce((m, [, all]) => m + all.count, 0), 0);
    assert.equal(counted, 1000);
    const rows = seq.gather!({ upTo: Infinity }, [step.command!({ upTo: Infinity })]);
    // Windows starting from 59 minutes before the first record to the last record's minute.
    assert.equal(rows.length, 60 + 16);
    assert.equal(Math.max(...rows.map((r) => r.count as number)), 1000);
  });
  it('a hop that does not divide the size still makes at most two panes per hop', () => {
    // 1 h windows every 59,999 ms: panes of gcd(size, hop) would be 1 ms, one per record here.
    const size = 3_600_000;
    const batch = Array.from({ length: 1000 }, (_, i) => ({ ts: 1_700_000_000_000 + i * 1000 + (i % 7) }));
    const { step, seq, state } = countedOnce(size, 59_999, batch);
    // 1,000 s of records span 17 hops: at most 2 panes each, and one more at either end.
    assert.ok(state.panes.length <= 2 * 18, `${state.panes.length} panes`);
    const rows = seq.gather!({ upTo: Infinity }, [step.command!({ upTo: Infinity })]);
    assert.equal(Math.max(...rows.map((r) => r.count as number)), 1000);
    // Every window counts exactly the records in [start, start + size).
    for (const r of rows) {
      const start = r.window_start as number;
      const inside = batch.filter((b) => b.ts >= start && b.ts < start + size).length;
      assert.equal(r.count, inside, `window ${start}`);
    }
  });
  it('restores a snapshot of panes of gcd(size, hop) into the pane that holds each', () => {
    // size 2 s, hop 0.75 s: panes now [k·hop, k·hop + 0.5 s) and [k·hop + 0.5 s, (k+1)·hop); they
    // were 0.25 s (the gcd), so a saved pane may start 0.25 s into one of today's.
    const config = {
      type: 'window' as const,
      time_field: 'ts',
      size: 2000,
      hop: 750,
      metrics: { count: { op: 'count' }, sum: { op: 'sum', field: 'v' } } as Record<string, MetricConfig>,
      time_format: 'epoch_ms' as const,
    };
    const base = 1_700_000_250_000; // a multiple of 750
    const before = stepOf(config);
    applyAll(before, [{ ts: base + 300, v: 2 }]);
    const saved = before.snapshot!() as { panes: [number, unknown[]][] };
    assert.deepEqual(
      saved.panes.map(([start]) => start - base),
      [0],
    );
    saved.panes[0]![0] = base + 250; // where the 0.25 s pane started
    const after = stepOf(config);
    after.restore!(JSON.parse(JSON.stringify(saved)));
    applyAll(after, [{ ts: base + 100, v: 3 }]);
    const state = after.snapshot!() as { panes: [number, [string, { count: number }][]][] };
    assert.deepEqual(
      state.panes.map(([start, keys]) => [start - base, keys.map(([, all]) => all.count)]),
      [[0, [2]]],
    );
    const rows = sequencerOf(config).gather!({ upTo: Infinity }, [after.command!({ upTo: Infinity })]);
    for (const r of rows) assert.deepEqual([r.count, r.sum], [2, 5], `window ${String(r.window_start)}`);
    assert.equal(rows.length, 3); // the windows starting at base − 1.5 s, − 0.75 s and base
  });
});

describe('watermarks per ingest path', () => {
  const config = {
    type: 'window' as const,
    time_field: 'ts',
    size: 10_000,
    hop: 2_000,
    allowed_lateness: 0,
    idle_path_timeout: '10s',
    metrics: { count: { op: 'count' } } as Record<string, MetricConfig>,
    time_format: 'epoch_ms' as const,
  };
  const T0 = 1_700_000_000_000;

  /** Decides one chunk of event times from `path`; returns the verdicts' reasons ('' for pass). */
  const decide = (seq: Seq, times: number[], path: string, receivedMs: number): string[] => {
    const verdicts = new Uint16Array(times.length);
    seq.decide(Float64Array.from(times), verdicts, 0, { path, receivedMs });
    const step = stepOf(config);
    return [...verdicts].map((v) => (v === 0 ? '' : step.outcomes[(v & 0xff) - 1]!.reason));
  };

  it('no event is late while every path sends its own events in order, however the paths interleave (and through a snapshot)', () => {
    // A path's first chunk meets whatever watermark the others reached: every path sends its first
    // event (all at T0) before the interleaving starts, as instances do once they take traffic.
    const paths = fc.integer({ min: 1, max: 3 }).chain((n) =>
      fc.array(
        fc.array(fc.nat({ max: 3000 }), { minLength: 1, maxLength: 80 }).map((steps) => {
          // One path's event times: non-decreasing from T0.
          let t = T0;
          return steps.map((s, i) => (i === 0 ? t : (t += s)));
        }),
        { minLength: n, maxLength: n },
      ),
    );
    fc.assert(
      fc.property(
        paths,
        fc.array(fc.nat(), { minLength: 1, maxLength: 400 }),
        fc.nat(),
        (times, picks, cut) => {
          let seq = sequencerOf(config);
          const next = times.map(() => 1);
          let received = 0;
          let chunks = 0;
          times.forEach((path, p) => assert.deepEqual(decide(seq, [path[0]!], `i${p}`, T0), ['']));
          for (const pick of picks) {
            const p = pick % times.length;
            const at = next[p]!;
            if (at >= times[p]!.length) continue;
            const n = 1 + (pick % 5);
            const chunk = times[p]!.slice(at, at + n);
            next[p] = at + chunk.length;
            // Receive times move a little per chunk: every path stays active.
            received += 5;
            assert.deepEqual(
              decide(seq, chunk, `i${p}`, T0 + received),
              chunk.map(() => ''),
            );
            if (++chunks === cut % 50) {
              const saved = JSON.parse(JSON.stringify(seq.snapshot!())) as unknown;
              seq = sequencerOf(config);
              seq.restore!(saved);
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('a path ahead of another does not make its events late; an idle path stops holding the watermark', () => {
    const seq = sequencerOf(config);
    // Path b is a minute of event time ahead of path a.
    assert.deepEqual(decide(seq, [T0], 'a', T0), ['']);
    assert.deepEqual(decide(seq, [T0 + 60_000], 'b', T0 + 5), ['']);
    assert.deepEqual(decide(seq, [T0 + 1000], 'a', T0 + 10), ['']);
    assert.equal(seq.watermarks!().watermark, T0 + 1000);
    // With one watermark for both (no origin), a's next event would be late: b's 60 s is past it.
    const single = sequencerOf(config);
    const verdicts = new Uint16Array(3);
    single.decide(Float64Array.from([T0, T0 + 60_000, T0 + 2000]), verdicts, 0);
    assert.deepEqual(
      [...verdicts].map((v) => v !== 0),
      [false, false, true],
    );
    assert.deepEqual(decide(seq, [T0 + 2000], 'a', T0 + 20), ['']);
    // a goes quiet; b keeps sending. Within 10 s of receive time a still holds the watermark ...
    assert.deepEqual(decide(seq, [T0 + 61_000], 'b', T0 + 9_000), ['']);
    assert.equal(seq.watermarks!().watermark, T0 + 2000);
    assert.deepEqual([...seq.watermarks!().paths.keys()].sort(), ['a', 'b']);
    // ... after that it no longer does, and an event of a behind the watermark is late.
    assert.deepEqual(decide(seq, [T0 + 62_000], 'b', T0 + 10_021), ['']);
    assert.equal(seq.watermarks!().watermark, T0 + 62_000);
    assert.deepEqual([...seq.watermarks!().paths.keys()], ['b']);
    assert.deepEqual(decide(seq, [T0 + 3000], 'a', T0 + 10_030), ['late']);
    // Windows closed as the watermark moved: the sequencer asks workers to close them.
    assert.ok(seq.pollBroadcast!() !== undefined);
  });

  it('with one path, decisions are those of a single watermark', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: -20_000, max: 3000 }), { maxLength: 200 }), (moves) => {
        let t = T0;
        const times = moves.map((m) => (t = Math.max(T0, t + m)));
        const withPath = sequencerOf(config);
        const without = sequencerOf(config);
        const a = new Uint16Array(times.length);
        const b = new Uint16Array(times.length);
        withPath.decide(Float64Array.from(times), a, 0, { path: 'only', receivedMs: T0 });
        without.decide(Float64Array.from(times), b, 0);
        assert.deepEqual([...a], [...b]);
      }),
      { numRuns: 200 },
    );
  });
});
