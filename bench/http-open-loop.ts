/**
 * Open-loop load generator for bench/http.ts (the wrk2 method): requests go out on a fixed
 * schedule, evenly spaced, whatever the server does, and each is timed from its scheduled start
 * with process.hrtime.bigint(), so a stall of the server (or of this process) is charged to every
 * request it delayed instead of hiding them (coordinated omission). Keep-alive connections through
 * an undici Pool. A worker thread keeps the schedule: it sleeps on Atomics.wait to each request's
 * start (sub-millisecond, where timers have 1 ms steps) and wakes the main thread, which sends.
 *
 * Prints JSON lines on stdout: `{"t":"interval",...}` every --interval seconds of the measured
 * period, then `{"t":"result",...}`. Latencies are in microseconds.
 *
 * Usage: node http-open-loop.js --url URL --key KEY --templates FILE --kind single|batch
 *          --rate REQ_PER_S --duration S [--warmup S] [--connections N] [--interval S] [--start N]
 *
 * --start is the first body's number in the endless sequence of distinct bodies (http-events.ts),
 * so that a server warmed up with the first N bodies sees no duplicates.
 */
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import { Pool } from 'undici';
import { BodySequence, loadTemplates, type BodyKind } from './http-events.ts';

const { values: o } = parseArgs({
  options: {
    url: { type: 'string' },
    key: { type: 'string' },
    templates: { type: 'string' },
    kind: { type: 'string', default: 'single' },
    rate: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string', default: '3' },
    connections: { type: 'string', default: '64' },
    interval: { type: 'string', default: '0' },
    pipeline: { type: 'string', default: 'payments' },
    start: { type: 'string', default: '0' },
  },
});
const RATE = Number(o.rate);
const DURATION_S = Number(o.duration);
const WARMUP_S = Number(o.warmup);
const INTERVAL_S = Number(o.interval);
const KIND = o.kind as BodyKind;
if (!o.url || !o.key || !o.templates || !(RATE > 0) || !(DURATION_S > 0) || !(WARMUP_S >= 0)) {
  process.stderr.write('usage: http-open-loop --url URL --key KEY --templates FILE --rate N --duration S\n');
  process.exit(2);
}
/** How long to wait for the last answers once the schedule has ended. */
const DRAIN_MS = 10_000;

const bodies = new BodySequence(loadTemplates(o.templates, KIND), Number(o.start));
const origin = new URL(o.url);
const pool = new Pool(origin.origin, { connections: Number(o.connections), pipelining: 1 });
const path = `/v1/pipelines/${o.pipeline}/events`;
const headers = {
  authorization: `Bearer ${o.key}`,
  'content-type': KIND === 'single' ? 'application/json' : 'application/x-ndjson',
};

const warmupCount = Math.round(WARMUP_S * RATE);
const measuredCount = Math.round(DURATION_S * RATE);
const total = warmupCount + measuredCount;
const nsPer = 1e9 / RATE;
/** Each measured request's latency (µs) from its scheduled start; NaN until it is answered. */
const latency = new Float64Array(measuredCount).fill(NaN);
/** How late each measured request actually left, from its scheduled start (µs): this process's own lag. */
const sendLag = new Float64Array(measuredCount);
const statuses: Record<string, number> = {};
let answered = 0;
let lastAnswerNs = 0n;
let intervalLatencies: number[] = [];
let intervalAnswered = 0;

// Start a little ahead, so the ticker and the first connections are up by the first request.
const t0 = process.hrtime.bigint() + 50_000_000n;
const measureStart = t0 + BigInt(Math.round(warmupCount * nsPer));
const scheduledAt = (k: number): bigint => t0 + BigInt(Math.round(k * nsPer));

let outstanding = 0;
let drained: (() => void) | undefined;

function finish(k: number, scheduled: bigint, status: string): void {
  outstanding--;
  const now = process.hrtime.bigint();
  if (k >= warmupCount) {
    const us = Number(now - scheduled) / 1000;
    latency[k - warmupCount] = us;
    statuses[status] = (statuses[status] ?? 0) + 1;
    answered++;
    lastAnswerNs = now;
    intervalAnswered++;
    intervalLatencies.push(us);
  }
  if (outstanding === 0 && drained) drained();
}

function send(k: number): void {
  const scheduled = scheduledAt(k);
  if (k >= warmupCount) sendLag[k - warmupCount] = Number(process.hrtime.bigint() - scheduled) / 1000;
  outstanding++;
  pool.request({ path, method: 'POST', headers, body: bodies.next() }).then(
    (res) =>
      res.body.dump().then(
        () => finish(k, scheduled, String(res.statusCode)),
        () => finish(k, scheduled, 'body error'),
      ),
    (err: Error & { code?: string }) => finish(k, scheduled, err.code ?? err.message),
  );
}

function percentile(sorted: Float64Array | number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
}

const emit = (x: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(x)}\n`);

// The ticker: the schedule in a thread of its own, sleeping on a futex between requests.
const tickerSource = `
const { parentPort, workerData } = require('node:worker_threads');
const { t0, nsPer, total } = workerData;
const t0n = BigInt(t0);
const cell = new Int32Array(new SharedArrayBuffer(4));
let next = 0;
while (next < total) {
  const now = process.hrtime.bigint();
  let due = next;
  while (due < total && t0n + BigInt(Math.round(due * nsPer)) <= now) due++;
  if (due > next) {
    parentPort.postMessage(due);
    next = due;
    continue;
  }
  const waitMs = Number(t0n + BigInt(Math.round(next * nsPer)) - now) / 1e6;
  Atomics.wait(cell, 0, 0, waitMs);
}
`;
const ticker = new Worker(tickerSource, { eval: true, workerData: { t0: String(t0), nsPer, total } });
let sent = 0;
ticker.on('message', (upTo: number) => {
  while (sent < upTo) send(sent++);
});

let cpuAtStart: NodeJS.CpuUsage | undefined;
let intervalTimer: NodeJS.Timeout | undefined;
let intervalsEmitted = 0;
let intervalStartNs = 0n;

/** Reports the answers since the last report, `atS` seconds into the measured period. */
function emitInterval(atS: number): void {
  const lat = Float64Array.from(intervalLatencies).sort();
  const now = process.hrtime.bigint();
  emit({
    t: 'interval',
    atS,
    answered: intervalAnswered,
    ratePerS: intervalAnswered / (Number(now - intervalStartNs) / 1e9),
    p50: percentile(lat, 0.5),
    p99: percentile(lat, 0.99),
    max: lat.length ? lat[lat.length - 1] : NaN,
  });
  intervalStartNs = now;
  intervalAnswered = 0;
  intervalLatencies = [];
}

const startTimer = setTimeout(
  () => {
    cpuAtStart = process.cpuUsage();
    emit({ t: 'measuring' });
    intervalAnswered = 0;
    intervalLatencies = [];
    intervalStartNs = process.hrtime.bigint();
    if (INTERVAL_S > 0)
      intervalTimer = setInterval(() => emitInterval(++intervalsEmitted * INTERVAL_S), INTERVAL_S * 1000);
  },
  Number(measureStart - process.hrtime.bigint()) / 1e6,
);

await new Promise<void>((resolve) => ticker.on('exit', () => resolve()));
while (sent < total) send(sent++);
const scheduleEnd = process.hrtime.bigint();
if (outstanding > 0)
  await Promise.race([
    new Promise<void>((resolve) => (drained = resolve)),
    new Promise<void>((resolve) => setTimeout(resolve, DRAIN_MS)),
  ]);
clearTimeout(startTimer);
if (intervalTimer) clearInterval(intervalTimer);
// The last interval may end with the schedule, as its timer fires: report it here if it did not.
if (INTERVAL_S > 0 && intervalsEmitted * INTERVAL_S < DURATION_S - 1e-6) emitInterval(DURATION_S);
const cpu = process.cpuUsage(cpuAtStart);
const measuredWallS = Number(scheduleEnd - measureStart) / 1e9;

// Unanswered requests are as late as can be: they sort last.
const sorted = latency.map((x) => (Number.isNaN(x) ? Infinity : x)).sort();
const lag = sendLag.slice().sort();
const spanS = answered > 0 ? Number(lastAnswerNs - measureStart) / 1e9 : NaN;
emit({
  t: 'result',
  rate: RATE,
  durationS: DURATION_S,
  requests: measuredCount,
  answered,
  unanswered: measuredCount - answered,
  statuses,
  /** Answers per second from the start of the measured period to the last answer. */
  achievedPerS: answered / Math.max(spanS, DURATION_S),
  p50: percentile(sorted, 0.5),
  p90: percentile(sorted, 0.9),
  p95: percentile(sorted, 0.95),
  p99: percentile(sorted, 0.99),
  p999: percentile(sorted, 0.999),
  max: percentile(sorted, 1),
  sendLagP50: percentile(lag, 0.5),
  sendLagP99: percentile(lag, 0.99),
  cpuPercent: ((cpu.user + cpu.system) / 1e6 / Math.max(measuredWallS, 1e-9)) * 100,
});
await pool.destroy();
process.exit(0);
