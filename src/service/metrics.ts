/**
 * Prometheus metrics of `sluice serve`, on a registry of their own (so tests and embedders can run
 * several services in one process). Label sets stay small: tenant, pipeline, and a reason, sink or
 * route; never anything from a request body.
 */
import { performance, type EventLoopUtilization } from 'node:perf_hooks';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { recordCounts, type ChunkResult } from '../core/stream.ts';
import type { WindowedOutput } from '../core/types.ts';

const TP = ['tenant', 'pipeline'] as const;

/** Sub-millisecond to seconds: the service's p50 is well under a millisecond. */
const LATENCY_BUCKETS = [
  0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1, 2, 5,
];

/**
 * `defaults: false` leaves out the process and Node.js metrics: for a registry whose values are
 * added to another's (the pipeline thread's, on /metrics), which must count the process once.
 */
export function createMetrics(options: { defaults?: boolean } = {}) {
  const registry = new Registry();
  if (options.defaults !== false) {
    collectDefaultMetrics({ register: registry, prefix: 'sluice_', eventLoopMonitoringPrecision: 10 });
    // These gauges end in `_total`, which Prometheus keeps for counters (`promtool check metrics`
    // flags them). Each is the sum of the gauge of the same name without `_total`, by `type`.
    for (const kind of ['handles', 'requests', 'resources'])
      registry.removeSingleMetric(`sluice_nodejs_active_${kind}_total`);
  }
  const threads: { name: string; utilization: () => EventLoopUtilization; counted: number }[] = [];
  const tallies = new Map<string, Tally>();
  // Every counter a tally feeds moves all tallies in first, whichever is read first.
  const collect = (): void => {
    for (const t of tallies.values()) t.flush(m);
  };
  const m = {
    registry,
    /** The tally of a pipeline's per-request counts (see Tally). */
    tallyOf(labels: { tenant: string; pipeline: string }): Tally {
      const key = `${labels.tenant}/${labels.pipeline}`;
      let t = tallies.get(key);
      if (!t) tallies.set(key, (t = new Tally({ tenant: labels.tenant, pipeline: labels.pipeline })));
      return t;
    },
    /**
     * Counts a thread's busy time (its event loop's, from `eventLoopUtilization`) under `thread`.
     * The event loop lag of the default metrics is the HTTP thread's only; this shows which thread
     * of the service is the one that is full.
     */
    watchThread(name: string, utilization: () => EventLoopUtilization): void {
      threads.push({ name, utilization, counted: 0 });
    },
    threadBusy: new Counter({
      name: 'sluice_thread_busy_seconds_total',
      help: "Time a thread of the service spent working rather than waiting for work (its event loop's utilization); rate() is the share of a core it uses.",
      labelNames: ['thread'],
      registers: [registry],
      collect() {
        for (const t of threads) {
          const active = t.utilization().active / 1000;
          if (active > t.counted) this.inc({ thread: t.name }, active - t.counted);
          t.counted = active;
        }
      },
    }),
    lines: new Counter({
      name: 'sluice_lines_received_total',
      help: 'Lines (NDJSON lines, array elements, single events) in processed requests, good or bad.',
      labelNames: TP,
      registers: [registry],
      collect,
    }),
    // The four below count records: lines plus records added by fan-out. received = accepted +
    // duplicate + dead, whatever the pipeline's steps do.
    received: new Counter({
      name: 'sluice_events_received_total',
      help: 'Records in processed requests, good or bad: their lines plus records added by fan-out.',
      labelNames: TP,
      registers: [registry],
      collect,
    }),
    accepted: new Counter({
      name: 'sluice_events_accepted_total',
      help: 'Records accepted: not rejected and not duplicates.',
      labelNames: TP,
      registers: [registry],
      collect,
    }),
    duplicates: new Counter({
      name: 'sluice_events_duplicate_total',
      help: 'Records dropped as duplicates of an earlier one.',
      labelNames: TP,
      registers: [registry],
      collect,
    }),
    dead: new Counter({
      name: 'sluice_events_dead_total',
      help: 'Records that failed, by reason (with dead_letters_per: line, fewer dead letters are stored).',
      labelNames: [...TP, 'reason'],
      registers: [registry],
      collect,
    }),
    windowsClosed: new Counter({
      name: 'sluice_windows_closed_total',
      help: 'Window rows closed and written to the store.',
      labelNames: [...TP, 'output'],
      registers: [registry],
      collect,
    }),
    sinkRecords: new Counter({
      name: 'sluice_sink_records_total',
      help: 'Records delivered to sinks.',
      labelNames: [...TP, 'sink'],
      registers: [registry],
    }),
    sinkErrors: new Counter({
      name: 'sluice_sink_errors_total',
      help: 'Failed sink deliveries (retried).',
      labelNames: [...TP, 'sink'],
      registers: [registry],
    }),
    requests: new Histogram({
      name: 'sluice_http_request_duration_seconds',
      help: 'HTTP request latency, from the first byte read to the answer.',
      labelNames: ['method', 'route', 'status'],
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    ingestToDurable: new Histogram({
      name: 'sluice_ingest_to_durable_seconds',
      help: 'From a request body fully read to its events being durable in the store.',
      labelNames: TP,
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    ingestToSink: new Histogram({
      name: 'sluice_ingest_to_sink_seconds',
      help: 'From an event being received to its output being durable in a sink.',
      labelNames: [...TP, 'sink'],
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    commits: new Histogram({
      name: 'sluice_store_commit_seconds',
      help: 'Duration of one group commit (transaction and fsync) in the pipeline thread.',
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    commitRequests: new Counter({
      name: 'sluice_store_committed_requests_total',
      help: 'Requests made durable; divide by sluice_store_commit_seconds_count for the group size.',
      registers: [registry],
    }),
    rejectedRequests: new Counter({
      name: 'sluice_http_rejected_total',
      help: 'Requests refused as a whole, by error code (401, 404, 413, 429, 503, ...).',
      labelNames: ['tenant', 'code'],
      registers: [registry],
    }),
    queueDepth: new Gauge({
      name: 'sluice_queue_depth',
      help: 'Requests processed and waiting for their group commit.',
      registers: [registry],
    }),
    inFlightBytes: new Gauge({
      name: 'sluice_in_flight_bytes',
      help: 'Bytes of request bodies being processed or waiting to be durable.',
      registers: [registry],
    }),
    inFlightRequests: new Gauge({
      name: 'sluice_in_flight_requests',
      help: 'Ingest requests between arrival and answer.',
      registers: [registry],
    }),
    watermark: new Gauge({
      name: 'sluice_watermark_seconds',
      help: "A window step's watermark (event time, Unix seconds) that lateness is decided against; in a cluster the least of its active ingest paths' (reported by the owner).",
      labelNames: ['tenant', 'pipeline', 'step'],
      registers: [registry],
    }),
    pathWatermark: new Gauge({
      name: 'sluice_path_watermark_seconds',
      help: 'Cluster runtime: the largest event time (Unix seconds) each active ingest path (instance) brought to a window step; minus sluice_watermark_seconds, how far it is ahead.',
      labelNames: ['tenant', 'pipeline', 'step', 'path'],
      registers: [registry],
    }),
    ownerPending: new Gauge({
      name: 'sluice_owner_pending_messages',
      help: "Cluster runtime: requests in the stream after the last one the pipeline's owner read (reported by the owner only).",
      labelNames: ['tenant', 'pipeline'],
      registers: [registry],
    }),
  };
  if (options.defaults !== false) m.watchThread('http', () => performance.eventLoopUtilization());
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;

/**
 * Counts what processing one chunk (a request) gave: its records, the accepted, duplicates and
 * dead letters among them, and the window rows it closed. The same for both runtimes.
 */
export function countChunk(
  m: Metrics,
  labels: { tenant: string; pipeline: string },
  result: ChunkResult,
  windowed: WindowedOutput[],
): void {
  const t = m.tallyOf(labels);
  const { records, accepted, duplicates } = recordCounts(result);
  t.lines += result.records;
  t.received += records;
  t.accepted += accepted;
  t.duplicates += duplicates;
  for (const name in result.counters)
    if (name.charCodeAt(0) === 100 && name.startsWith('dead.')) {
      const reason = name.slice(5);
      t.dead.set(reason, (t.dead.get(reason) ?? 0) + result.counters[name]!);
    }
  for (const w of windowed) {
    const n = result.outputs.get(w.output)?.length ?? 0;
    if (n > 0) t.windows.set(w.output, (t.windows.get(w.output) ?? 0) + n);
  }
}

/**
 * One pipeline's per-request counts, added up in plain numbers and moved into the labelled
 * counters when /metrics is read: a labelled `inc` hashes and checks its labels (~1 µs), and five
 * or more per request were ~5% of the pipeline thread at 10k single-event requests/s.
 */
class Tally {
  lines = 0;
  received = 0;
  accepted = 0;
  duplicates = 0;
  readonly dead = new Map<string, number>();
  readonly windows = new Map<string, number>();

  constructor(readonly labels: { tenant: string; pipeline: string }) {}

  flush(m: Metrics): void {
    const labels = this.labels;
    // Every series of an active pipeline exists from its first request, at 0 if need be.
    if (this.lines > 0 || this.received > 0) {
      m.lines.inc(labels, this.lines);
      m.received.inc(labels, this.received);
      m.accepted.inc(labels, this.accepted);
      if (this.duplicates > 0) m.duplicates.inc(labels, this.duplicates);
    }
    for (const [reason, n] of this.dead) m.dead.inc({ ...labels, reason }, n);
    for (const [output, n] of this.windows) m.windowsClosed.inc({ ...labels, output }, n);
    this.lines = this.received = this.accepted = this.duplicates = 0;
    this.dead.clear();
    this.windows.clear();
  }
}
