/**
 * Overload benchmark of `sluice serve` (issue 13): what happens at a multiple of its capacity. One
 * server process on 127.0.0.1 runs the payments pipeline (examples/payments/pipeline.yaml) for two
 * tenants, `flood` and `light`, each with its own key, with the default limits (`queue_delay`
 * 250 ms, in-flight budgets) and its SQLite store in a temporary directory. Phases, on that server:
 *
 * 1. capacity: tenant flood sends 100-event NDJSON bodies in a closed loop (each of --connections
 *    connections sends its next request once the last is answered) for --capacity seconds after a
 *    --warmup: the 202s per second are the capacity C;
 * 2. light alone: tenant light sends single events open loop at --light-rate req/s for --duration
 *    seconds (after a --warmup at the same rate): its unloaded latency;
 * 3. overload: tenant flood sends 100-event bodies open loop at --factor × C req/s (or
 *    --flood-rate) for --duration seconds, while tenant light sends as in 2.
 *
 * The bodies are the project's own sample events (`sluice demo`'s generator, 100,000 of them) made
 * unique pass after pass (bench/http-events.ts), so dedupe sees what a real stream would give it.
 *
 * Each load runs in a process of its own (this script with --role load), so the flood's generator
 * does not delay the light one's timings. Open-loop requests go out on a fixed schedule whatever
 * the server answers, through an undici Pool that may open as many connections as the cap on
 * outstanding requests (--max-outstanding; a request due while that many are outstanding is not
 * sent, and counted); --preconnect of them (16 for light) are opened before the start, so that the
 * flood does not begin with a burst of connects. Each request is timed from its scheduled start to
 * its answer's headers, so that a stall is charged to every request it delayed. For each request
 * the status, the latency and whether Retry-After came are recorded; the server's RSS is read from
 * /proc every 500 ms, and the kernel's count of connections dropped from a full listen queue
 * (TcpExt ListenOverflows, machine-wide) around each phase.
 *
 * 4. the floor (unless --skip-floor): phases 2 and 3 again, at the same flood rate, against
 *    bench/floor-server.ts, a bare node:http server that refuses the whole flood at its headers and
 *    only parses light's events: the least any server could do here, so its figures are a lower
 *    bound for sluice's on this machine with these generators on the same cores.
 *
 * Prints a markdown table on stdout, progress on stderr. The issue's targets are reported with a
 * verdict, never enforced: the exit code is non-zero only when a process crashes.
 *
 * Usage: npm run bench:overload -- [--duration S] [--factor F] [--flood-rate REQ_PER_S] [--capacity S]
 *          [--warmup S] [--connections N] [--light-rate REQ_PER_S] [--max-outstanding N]
 *          [--preconnect N] [--drain S] [--interval S] [--skip-floor]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import { sampleInput } from '../test/helpers.ts';
import { BodySequence, loadTemplates, type BodyKind } from './http-events.ts';
import { cleanups, PIPELINE, startTwoTenants } from './two-tenants.ts';
import {
  busyCpuS,
  gitCommit,
  int,
  log,
  ms,
  pct,
  percentile,
  processCpuS,
  row,
  rssMiB,
  startBare,
  waitQuiet,
  type RunningServer,
} from './measure.ts';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
const SCRIPT = fileURLToPath(import.meta.url);
const EVENTS_PATH = `/v1/pipelines/${PIPELINE}/events`;
const BATCH = 100;
const SAMPLE_EVENTS = 100_000;
const KEYS = { flood: 'sk_bench_overload_flood_7d3a91c4e2b8', light: 'sk_bench_overload_light_0f5e28b6a1d4' };
type TenantName = keyof typeof KEYS;
/** What the issue asks of a refusal: an answer within this many ms. */
const REFUSAL_MS = 50;
const RSS_EVERY_MS = 500;

const { values: flags } = parseArgs({
  options: {
    duration: { type: 'string', default: '30' },
    factor: { type: 'string', default: '3' },
    'flood-rate': { type: 'string' },
    capacity: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '2' },
    connections: { type: 'string', default: '32' },
    'light-rate': { type: 'string', default: '50' },
    'max-outstanding': { type: 'string', default: '2000' },
    preconnect: { type: 'string', default: '256' },
    drain: { type: 'string', default: '10' },
    interval: { type: 'string', default: '5' },
    'skip-floor': { type: 'boolean', default: false },
    role: { type: 'string' },
    spec: { type: 'string' },
  },
});

// ---- the load generator (a child process: --role load --spec JSON)

interface LoadSpec {
  url: string;
  key: string;
  templates: string;
  kind: BodyKind;
  /** The first body's number in the endless sequence of distinct bodies. */
  start: number;
  /** open: `rate` requests/s on a fixed schedule; closed: `connections` loops, each waits for its answer. */
  mode: 'open' | 'closed';
  rate: number;
  connections: number;
  maxOutstanding: number;
  /** Connections opened before the start (concurrent GET /healthz), so the start is not a burst of connects. */
  preconnect: number;
  warmupS: number;
  durationS: number;
  drainS: number;
  intervalS: number;
}

interface Summary {
  n: number;
  p50: number;
  p99: number;
  max: number;
}

interface IntervalStats {
  atS: number;
  sent: number;
  accepted: number;
  refused: number;
  acceptedP99: number;
  refusedMax: number;
}

interface LoadResult {
  /** Requests sent in the measured period. */
  sent: number;
  /** Requests due while --max-outstanding were outstanding: not sent. */
  skipped: number;
  /** The most requests outstanding at once, and the connections the pool opened in all. */
  peakOutstanding: number;
  connects: number;
  /** The next body's number, for the next phase. */
  position: number;
  /** Answers by status, failures by error code. */
  statuses: Record<string, number>;
  /** Sent and neither answered nor failed once the drain time was up. */
  unanswered: number;
  /** 202s, latency from the scheduled start (ms). */
  accepted: Summary;
  /** 429s and 503s, latency from the scheduled start (ms). */
  refused: Summary & { withRetryAfter: number; over: number };
  /** 429s and 503s, latency from when the request was handed to the client (ms). */
  refusedFromSend: Summary;
  /** How late requests left after their scheduled start: the generator's own lag (ms). */
  sendLag: Summary;
  measuredS: number;
  /** CPU seconds the generator used in the measured period. */
  cpuS: number;
  intervals: IntervalStats[];
}

function summary(values: number[]): Summary {
  const sorted = Float64Array.from(values).sort();
  return {
    n: sorted.length,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    max: percentile(sorted, 1),
  };
}

const emit = (x: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(x)}\n`);

async function loadMain(spec: LoadSpec): Promise<void> {
  // The parent going away closes stdin: nothing is left sending.
  process.stdin.on('end', () => process.exit(1));
  const bodies = new BodySequence(loadTemplates(spec.templates, spec.kind, BATCH), spec.start);
  const origin = new URL(spec.url).origin;
  const pool = new Pool(origin, {
    connections: spec.connections,
    pipelining: 1,
    headersTimeout: 60_000,
    bodyTimeout: 60_000,
    connect: { timeout: 10_000 },
  });
  const headers = {
    authorization: `Bearer ${spec.key}`,
    'content-type': spec.kind === 'single' ? 'application/json' : 'application/x-ndjson',
  };
  let connects = 0;
  pool.on('connect', () => connects++);
  await Promise.all(
    Array.from({ length: spec.preconnect }, () =>
      pool.request({ path: '/healthz', method: 'GET' }).then((res) => res.body.dump()),
    ),
  );
  emit({ t: 'ready' });
  // The parent says when to start (Date.now() ms), so that loads in two processes start together.
  const startAt = await new Promise<number>((done) =>
    createInterface({ input: process.stdin }).once('line', (l) => done(Number(l))),
  );
  const t0 = performance.now() + (startAt - Date.now());
  const measureStart = t0 + spec.warmupS * 1000;
  const measureEnd = measureStart + spec.durationS * 1000;

  // One entry per measured request: scheduled start (ms into the measured period), send lag,
  // latency (NaN until answered), from-send latency, status (-1 pending, 0 failed), Retry-After.
  const scheduledAt: number[] = [];
  const lag: number[] = [];
  const latency: number[] = [];
  const fromSend: number[] = [];
  const status: number[] = [];
  const retryAfter: boolean[] = [];
  const failures: Record<string, number> = {};
  let outstanding = 0;
  let skipped = 0;
  let peakOutstanding = 0;
  let stopped = false;
  let drained: (() => void) | undefined;

  const send = (scheduled: number): Promise<void> => {
    const at = performance.now();
    const i = scheduled >= measureStart && scheduled < measureEnd ? scheduledAt.length : -1;
    if (i >= 0) {
      scheduledAt.push(scheduled - measureStart);
      lag.push(at - scheduled);
      latency.push(NaN);
      fromSend.push(NaN);
      status.push(-1);
      retryAfter.push(false);
    }
    if (++outstanding > peakOutstanding) peakOutstanding = outstanding;
    return pool
      .request({ path: EVENTS_PATH, method: 'POST', headers, body: bodies.next() })
      .then(
        async (res) => {
          const now = performance.now();
          if (i >= 0 && !stopped) {
            latency[i] = now - scheduled;
            fromSend[i] = now - at;
            status[i] = res.statusCode;
            retryAfter[i] = res.headers['retry-after'] !== undefined;
          }
          await res.body.dump().catch(() => undefined);
        },
        (err: Error & { code?: string }) => {
          if (i >= 0 && !stopped) {
            status[i] = 0;
            const code = err.code ?? err.message;
            failures[code] = (failures[code] ?? 0) + 1;
          }
        },
      )
      .finally(() => {
        outstanding--;
        if (outstanding === 0) drained?.();
      });
  };

  await new Promise((done) => setTimeout(done, Math.max(0, t0 - performance.now())));
  let cpuStart: NodeJS.CpuUsage | undefined;
  const cpuTimer = setTimeout(
    () => (cpuStart = process.cpuUsage()),
    Math.max(0, measureStart - performance.now()),
  );
  if (spec.mode === 'open') {
    const gap = 1000 / spec.rate;
    const total = Math.round((spec.warmupS + spec.durationS) * spec.rate);
    let k = 0;
    await new Promise<void>((done) => {
      const tick = (): void => {
        const now = performance.now();
        for (; k < total && t0 + k * gap <= now; k++) {
          const scheduled = t0 + k * gap;
          if (outstanding >= spec.maxOutstanding) {
            if (scheduled >= measureStart) skipped++;
          } else void send(scheduled);
        }
        if (k >= total) done();
        else setTimeout(tick, Math.max(0, t0 + k * gap - performance.now()));
      };
      tick();
    });
  } else {
    const loop = async (): Promise<void> => {
      while (performance.now() < measureEnd) await send(performance.now());
    };
    await Promise.all(Array.from({ length: spec.connections }, loop));
  }
  clearTimeout(cpuTimer);
  const cpu = process.cpuUsage(cpuStart);
  const scheduleEnd = performance.now();
  if (outstanding > 0)
    await Promise.race([
      new Promise<void>((done) => (drained = done)),
      new Promise<void>((done) => setTimeout(done, spec.drainS * 1000)),
    ]);
  stopped = true;

  const statuses: Record<string, number> = { ...failures };
  const accepted: number[] = [];
  const refused: number[] = [];
  const refusedFromSend: number[] = [];
  let withRetryAfter = 0;
  let unanswered = 0;
  const buckets = new Map<number, { sent: number; accepted: number[]; refused: number[] }>();
  for (let i = 0; i < scheduledAt.length; i++) {
    const s = status[i]!;
    if (s > 0) statuses[s] = (statuses[s] ?? 0) + 1;
    else if (s === -1) unanswered++;
    const b = Math.floor(scheduledAt[i]! / 1000 / spec.intervalS);
    let bucket = buckets.get(b);
    if (!bucket) buckets.set(b, (bucket = { sent: 0, accepted: [], refused: [] }));
    bucket.sent++;
    if (s === 202) {
      accepted.push(latency[i]!);
      bucket.accepted.push(latency[i]!);
    } else if (s === 429 || s === 503) {
      refused.push(latency[i]!);
      refusedFromSend.push(fromSend[i]!);
      bucket.refused.push(latency[i]!);
      if (retryAfter[i]) withRetryAfter++;
    }
  }
  const intervals = [...buckets.entries()]
    .sort(([a], [b]) => a - b)
    .map(([b, x]) => ({
      atS: (b + 1) * spec.intervalS,
      sent: x.sent,
      accepted: x.accepted.length,
      refused: x.refused.length,
      acceptedP99: summary(x.accepted).p99,
      refusedMax: summary(x.refused).max,
    }));
  const result: LoadResult = {
    sent: scheduledAt.length,
    skipped,
    peakOutstanding,
    connects,
    position: bodies.position,
    statuses,
    unanswered,
    accepted: summary(accepted),
    refused: { ...summary(refused), withRetryAfter, over: refused.filter((x) => x > REFUSAL_MS).length },
    refusedFromSend: summary(refusedFromSend),
    sendLag: summary(lag),
    measuredS: spec.mode === 'open' ? spec.durationS : (scheduleEnd - measureStart) / 1000,
    cpuS: (cpu.user + cpu.system) / 1e6,
    intervals,
  };
  emit({ t: 'result', ...result });
  await pool.destroy().catch(() => undefined);
  process.exit(0);
}

// ---- the server

/** What the server counted, from its /metrics: refusals by tenant and code, events by fate, event-loop delay. */
async function counters(url: string): Promise<{ rejected: Record<string, number>; text: string[] }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const rejected: Record<string, number> = {};
  for (const m of text.matchAll(/^sluice_http_rejected_total\{([^}]*)\} (\S+)$/gm)) {
    const tenant = /tenant="([^"]*)"/.exec(m[1]!)?.[1] ?? '';
    const code = /code="([^"]*)"/.exec(m[1]!)?.[1] ?? '';
    rejected[`${tenant || '(none)'} ${code}`] = Number(m[2]);
  }
  const sums: Record<string, number> = {};
  for (const m of text.matchAll(/^sluice_(events_\w+)_total\{([^}]*)\} (\S+)$/gm)) {
    const tenant = /tenant="([^"]*)"/.exec(m[2]!)?.[1] ?? '';
    const k = `${tenant} ${m[1]}`;
    sums[k] = (sums[k] ?? 0) + Number(m[3]);
  }
  const lag = (name: string): number =>
    Number(
      new RegExp(`^sluice_(?:process_)?nodejs_eventloop_lag_${name}_seconds (\\S+)$`, 'm').exec(text)?.[1] ??
        NaN,
    ) * 1000;
  const lines = (Object.keys(KEYS) as TenantName[]).map((t) => {
    const received = sums[`${t} events_received`] ?? 0;
    return `${t}: ${int(received)} events received, ${int(sums[`${t} events_accepted`] ?? 0)} accepted, ${int(sums[`${t} events_duplicate`] ?? 0)} duplicates, ${int(sums[`${t} events_dead`] ?? 0)} dead letters`;
  });
  lines.push(
    `event-loop delay of the server's main thread p99 ${ms(lag('p99'))} ms, max ${ms(lag('max'))} ms over its life`,
  );
  return { rejected, text: lines };
}

/** Starts bench/floor-server.ts; resolves once it listens. Killed if the benchmark ends first. */
async function startFloor(): Promise<RunningServer> {
  const script = fileURLToPath(new URL('floor-server.ts', import.meta.url));
  const floor = await startBare(
    [...process.execArgv, script, JSON.stringify(KEYS)],
    'the floor server',
    ROOT,
  );
  const kill = (): void => {
    try {
      process.kill(floor.pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  };
  cleanups.add(kill);
  return { ...floor, stop: () => floor.stop().finally(() => cleanups.delete(kill)) };
}

// ---- measuring the server and the machine

interface RssPoint {
  at: number;
  mib: number;
}

class RssSampler {
  readonly points: RssPoint[] = [];
  readonly #timer: NodeJS.Timeout;

  constructor(readonly pid: number) {
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), RSS_EVERY_MS);
  }

  #sample(): void {
    const mib = rssMiB(this.pid);
    if (mib !== undefined) this.points.push({ at: Date.now(), mib });
  }

  /** Peak and last sample within [from, to] (Date.now() ms). */
  between(from: number, to: number): { peak: number; end: number } {
    this.#sample();
    const inside = this.points.filter((p) => p.at >= from && p.at <= to);
    return {
      peak: inside.length ? Math.max(...inside.map((p) => p.mib)) : NaN,
      end: inside.length ? inside[inside.length - 1]!.mib : NaN,
    };
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

interface CpuShares {
  serverPct: number;
  othersPct: number;
}

/** Starts a CPU window at `from` and ends it at `to` (Date.now() ms); resolves with the server's share. */
function cpuWindow(
  serverPid: number,
  from: number,
  to: number,
): Promise<{ server: number; busy: number; s: number }> {
  return new Promise((done) => {
    setTimeout(
      () => {
        const server = processCpuS(serverPid) ?? NaN;
        const busy = busyCpuS() ?? NaN;
        const wall = performance.now();
        setTimeout(
          () =>
            done({
              server: (processCpuS(serverPid) ?? NaN) - server,
              busy: (busyCpuS() ?? NaN) - busy,
              s: (performance.now() - wall) / 1000,
            }),
          Math.max(0, to - Date.now()),
        );
      },
      Math.max(0, from - Date.now()),
    );
  });
}

/** TcpExt ListenOverflows: connections the kernel dropped because a listen queue was full (machine-wide). */
function listenOverflows(): number {
  try {
    const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n');
    const at = lines.findIndex((l) => l.startsWith('TcpExt:'));
    const names = lines[at]!.split(/\s+/);
    const values = lines[at + 1]!.split(/\s+/);
    return Number(values[names.indexOf('ListenOverflows')]);
  } catch {
    return NaN;
  }
}

// ---- phases

interface Phase {
  name: string;
  load: string;
  tenant: TenantName;
  result: LoadResult;
  rss: { peak: number; end: number };
}

let crashed = false;

/** Runs load processes together; they start at the same moment once all are ready. */
async function runLoads(
  server: RunningServer,
  specs: { tenant: TenantName; spec: LoadSpec }[],
): Promise<{ results: LoadResult[]; cpu: CpuShares; from: number; to: number; overflows: number }> {
  const children = specs.map(({ spec }) => {
    const child: ChildProcess = spawn(
      process.execPath,
      [...process.execArgv, SCRIPT, '--role', 'load', '--spec', JSON.stringify(spec)],
      { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] },
    );
    const kill = (): void => void child.kill('SIGKILL');
    cleanups.add(kill);
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
    let result: LoadResult | undefined;
    let markReady: () => void;
    const ready = new Promise<void>((r) => (markReady = r));
    createInterface({ input: child.stdout! }).on('line', (l) => {
      const msg = JSON.parse(l) as { t: string } & LoadResult;
      if (msg.t === 'ready') markReady();
      else if (msg.t === 'result') result = msg;
    });
    const finished = new Promise<LoadResult>((done, fail) =>
      child.on('close', (code) => {
        cleanups.delete(kill);
        if (code === 0 && result) done(result);
        else fail(new Error(`load generator exited with ${code}: ${stderr}`));
      }),
    );
    // A generator that fails before it is ready must not leave the others waiting for it.
    return { child, ready: Promise.race([ready, finished.then(() => undefined)]), finished };
  });
  await Promise.all(children.map((c) => c.ready));
  const overflowsBefore = listenOverflows();
  const startAt = Date.now() + 200;
  for (const c of children) c.child.stdin!.write(`${startAt}\n`);
  const warmupMs = specs[0]!.spec.warmupS * 1000;
  const from = startAt + warmupMs;
  const to = from + specs[0]!.spec.durationS * 1000;
  const window = cpuWindow(server.pid, from, to);
  const results = await Promise.all(children.map((c) => c.finished));
  for (const c of children) c.child.stdin!.end();
  const w = await window;
  const loadCpu = results.reduce((s, r) => s + r.cpuS, 0);
  return {
    results,
    cpu: {
      serverPct: (w.server / w.s) * 100,
      othersPct: (Math.max(0, w.busy - w.server - loadCpu) / (w.s * availableParallelism())) * 100,
    },
    from,
    to: Date.now(),
    overflows: listenOverflows() - overflowsBefore,
  };
}

function describe(p: Phase): string {
  const r = p.result;
  return (
    `sent ${int(r.sent)}, statuses ${JSON.stringify(r.statuses)}, 202 p50 ${ms(r.accepted.p50)} ms ` +
    `p99 ${ms(r.accepted.p99)} ms, refused p99 ${ms(r.refused.p99)} ms max ${ms(r.refused.max)} ms, ` +
    `RSS peak ${int(p.rss.peak)} MiB`
  );
}

// ---- the run

async function main(): Promise<void> {
  const DURATION_S = Number(flags.duration);
  const FACTOR = Number(flags.factor);
  const FLOOD_RATE = flags['flood-rate'] === undefined ? undefined : Number(flags['flood-rate']);
  const CAPACITY_S = Number(flags.capacity);
  const WARMUP_S = Number(flags.warmup);
  const CONNECTIONS = Number(flags.connections);
  const LIGHT_RATE = Number(flags['light-rate']);
  const MAX_OUTSTANDING = Number(flags['max-outstanding']);
  const PRECONNECT = Number(flags.preconnect);
  const DRAIN_S = Number(flags.drain);
  const INTERVAL_S = Number(flags.interval);
  if (
    ![DURATION_S, FACTOR, CAPACITY_S, LIGHT_RATE, INTERVAL_S].every((x) => Number.isFinite(x) && x > 0) ||
    !(WARMUP_S >= 0) ||
    !(DRAIN_S >= 0) ||
    !(FLOOD_RATE === undefined || FLOOD_RATE > 0) ||
    !Number.isInteger(CONNECTIONS) ||
    CONNECTIONS < 1 ||
    !Number.isInteger(MAX_OUTSTANDING) ||
    MAX_OUTSTANDING < 1 ||
    !Number.isInteger(PRECONNECT) ||
    PRECONNECT < 0
  ) {
    console.error(
      'usage: bench/overload.ts [--duration S] [--factor F] [--flood-rate REQ_PER_S] [--capacity S] [--warmup S] [--connections N] [--light-rate REQ_PER_S] [--max-outstanding N] [--preconnect N] [--drain S] [--interval S]',
    );
    process.exit(2);
  }

  const started = performance.now();
  const loadBefore = loadavg()[0]!;
  const templates = sampleInput(SAMPLE_EVENTS);
  const server = await startTwoTenants('sluice-bench-overload-', KEYS);
  log(`sluice serve at ${server.url} (pid ${server.pid})`);
  const rss = new RssSampler(server.pid);
  const phases: Phase[] = [];
  const cpuNotes: string[] = [];
  const spec = (tenant: TenantName, over: Partial<LoadSpec>): { tenant: TenantName; spec: LoadSpec } => ({
    tenant,
    spec: {
      url: server.url,
      key: KEYS[tenant],
      templates,
      kind: tenant === 'flood' ? 'batch' : 'single',
      start: 0,
      mode: 'open',
      rate: LIGHT_RATE,
      connections: 256,
      preconnect: 16,
      maxOutstanding: MAX_OUTSTANDING,
      warmupS: 0,
      durationS: DURATION_S,
      drainS: DRAIN_S,
      intervalS: INTERVAL_S,
      ...over,
    },
  });
  /** What the phases found, filled in as they run. */
  const run = { capacity: NaN, floodRate: NaN, overloadFrom: 0, overloadTo: 0 };
  /** The flood's and the light tenant's phases of one overload run, named `names`. */
  const overloadPhases = (
    names: [string, string],
    results: LoadResult[],
    rssOf: Phase['rss'],
  ): [Phase, Phase] => [
    {
      name: names[0],
      load: `open loop, ${int(run.floodRate)} req/s, ${BATCH}-event NDJSON, ${DURATION_S} s`,
      tenant: 'flood',
      result: results[0]!,
      rss: rssOf,
    },
    {
      name: names[1],
      load: `open loop, ${int(LIGHT_RATE)} req/s, 1 event, ${DURATION_S} s`,
      tenant: 'light',
      result: results[1]!,
      rss: rssOf,
    },
  ];
  let counted: Awaited<ReturnType<typeof counters>> | undefined;
  try {
    // 1. Capacity.
    await waitQuiet('capacity', 0.15, 60);
    const cap = await runLoads(server, [
      spec('flood', {
        mode: 'closed',
        connections: CONNECTIONS,
        preconnect: CONNECTIONS,
        warmupS: WARMUP_S,
        durationS: CAPACITY_S,
      }),
    ]);
    const capPhase: Phase = {
      name: 'flood, capacity',
      load: `closed loop, ${CONNECTIONS} connections, ${BATCH}-event NDJSON, ${CAPACITY_S} s`,
      tenant: 'flood',
      result: cap.results[0]!,
      rss: rss.between(cap.from, cap.to),
    };
    phases.push(capPhase);
    run.capacity = capPhase.result.accepted.n / capPhase.result.measuredS;
    cpuNotes.push(
      `capacity: server ${pct(cap.cpu.serverPct)} of a core, others ${pct(cap.cpu.othersPct)}, listen-queue overflows ${int(cap.overflows)}`,
    );
    log(
      `[capacity] ${describe(capPhase)}; C = ${int(run.capacity)} req/s (${int(run.capacity * BATCH)} events/s)`,
    );
    if (!(run.capacity > 0)) throw new Error('no 202 in the capacity phase: nothing to overload');

    // 2. Tenant light alone.
    await waitQuiet('light alone', 0.15, 60);
    const alone = await runLoads(server, [spec('light', { warmupS: WARMUP_S })]);
    const alonePhase: Phase = {
      name: 'light, alone',
      load: `open loop, ${int(LIGHT_RATE)} req/s, 1 event, ${DURATION_S} s`,
      tenant: 'light',
      result: alone.results[0]!,
      rss: rss.between(alone.from, alone.to),
    };
    phases.push(alonePhase);
    cpuNotes.push(
      `light alone: server ${pct(alone.cpu.serverPct)} of a core, others ${pct(alone.cpu.othersPct)}, listen-queue overflows ${int(alone.overflows)}`,
    );
    log(`[light alone] ${describe(alonePhase)}`);

    // 3. Overload: flood at FACTOR × C, light as before.
    await waitQuiet('overload', 0.15, 60);
    const floodRate = FLOOD_RATE ?? FACTOR * run.capacity;
    run.floodRate = floodRate;
    const over = await runLoads(server, [
      spec('flood', {
        rate: floodRate,
        connections: MAX_OUTSTANDING,
        preconnect: Math.min(PRECONNECT, MAX_OUTSTANDING),
        start: capPhase.result.position,
      }),
      spec('light', { start: alonePhase.result.position }),
    ]);
    run.overloadFrom = over.from;
    run.overloadTo = over.to;
    phases.push(
      ...overloadPhases(
        [`flood, ${(floodRate / run.capacity).toFixed(1)}× capacity`, 'light, during the flood'],
        over.results,
        rss.between(over.from, over.to),
      ),
    );
    cpuNotes.push(
      `overload: server ${pct(over.cpu.serverPct)} of a core, others ${pct(over.cpu.othersPct)}, listen-queue overflows ${int(over.overflows)}`,
    );
    log(`[overload flood] ${describe(phases[2]!)}`);
    log(`[overload light] ${describe(phases[3]!)}`);
    counted = await counters(server.url);
  } finally {
    rss.stop();
    const stopped = await server.stop();
    if (stopped.code !== 0) {
      crashed = true;
      log(`sluice serve exited with ${stopped.code ?? stopped.signal} after SIGTERM:\n${server.tail()}`);
    }
    cpuNotes.push(
      `server stopped in ${(stopped.ms / 1000).toFixed(1)} s (exit ${stopped.code ?? stopped.signal})`,
    );
  }
  // 4. The floor: the same light load alone and beside the same flood, against a server that
  // does nothing but refuse the flood and parse light's events.
  const floorPhases: Phase[] = [];
  if (!flags['skip-floor'] && Number.isFinite(run.floodRate) && !crashed) {
    const floor = await startFloor();
    log(`floor server at ${floor.url} (pid ${floor.pid})`);
    const floorRss = new RssSampler(floor.pid);
    try {
      await waitQuiet('floor, light alone', 0.15, 60);
      const alone = await runLoads(floor, [spec('light', { url: floor.url, warmupS: WARMUP_S })]);
      floorPhases.push({
        name: 'floor: light, alone',
        load: `open loop, ${int(LIGHT_RATE)} req/s, 1 event, ${DURATION_S} s`,
        tenant: 'light',
        result: alone.results[0]!,
        rss: floorRss.between(alone.from, alone.to),
      });
      log(`[floor light alone] ${describe(floorPhases[0]!)}`);
      await waitQuiet('floor, overload', 0.15, 60);
      const over = await runLoads(floor, [
        spec('flood', {
          url: floor.url,
          rate: run.floodRate,
          connections: MAX_OUTSTANDING,
          preconnect: Math.min(PRECONNECT, MAX_OUTSTANDING),
        }),
        spec('light', { url: floor.url }),
      ]);
      floorPhases.push(
        ...overloadPhases(
          ['floor: flood, every request refused', 'floor: light, during the flood'],
          over.results,
          floorRss.between(over.from, over.to),
        ),
      );
      cpuNotes.push(
        `floor, light alone: server ${pct(alone.cpu.serverPct)} of a core; floor, overload: server ${pct(over.cpu.serverPct)} of a core, others ${pct(over.cpu.othersPct)}, listen-queue overflows ${int(over.overflows)}`,
      );
      log(`[floor flood] ${describe(floorPhases[1]!)}`);
      log(`[floor light] ${describe(floorPhases[2]!)}`);
    } finally {
      floorRss.stop();
      await floor.stop();
    }
  }
  const loadAfter = loadavg()[0]!;

  // ---- report
  const out: string[] = [];
  out.push(
    `sluice serve, payments pipeline for two tenants (flood, light), default limits (queue_delay 250 ms, in_flight_requests 4096, in_flight_bytes 64 MiB), store in ${tmpdir()}; server and load generators on the same ${availableParallelism()} cores.`,
    `Node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'}, ${Math.round(totalmem() / 2 ** 30)} GiB; commit ${gitCommit(ROOT)}; 1-min load average ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after.`,
    `Capacity C = ${int(run.capacity)} req/s of ${BATCH}-event bodies (${int(run.capacity * BATCH)} events/s), the 202s per second of the closed loop; the flood then sends ${FLOOD_RATE === undefined ? `${FACTOR}× C` : `${int(FLOOD_RATE)} req/s (--flood-rate, ${(FLOOD_RATE / run.capacity).toFixed(1)}× C)`} open loop (at most ${int(MAX_OUTSTANDING)} outstanding).`,
    `Open-loop latencies are from each request's scheduled start to its answer's headers; closed-loop ones from its send. "refused" is 429 and 503.`,
    '',
    row([
      'tenant, phase',
      'load',
      'sent',
      '202',
      '429',
      '503',
      'other',
      'errors / unanswered / not sent',
      '202/s',
      '202 p50 ms',
      '202 p99 ms',
      '202 max ms',
      'refused p50 ms',
      'refused p99 ms',
      'refused max ms',
      'refused with Retry-After',
      'server RSS peak / end MiB',
    ]),
    '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
  );
  for (const p of [...phases, ...floorPhases]) {
    const r = p.result;
    const st = r.statuses;
    const other = Object.entries(st)
      .filter(([s]) => /^\d+$/.test(s) && !['202', '429', '503'].includes(s))
      .map(([s, n]) => `${int(n)}× ${s}`);
    const errors = Object.entries(st)
      .filter(([s]) => !/^\d+$/.test(s))
      .reduce((n, [, x]) => n + x, 0);
    out.push(
      row([
        p.name,
        p.load,
        int(r.sent),
        int(st['202'] ?? 0),
        int(st['429'] ?? 0),
        int(st['503'] ?? 0),
        other.length ? other.join(', ') : '0',
        `${int(errors)} / ${int(r.unanswered)} / ${int(r.skipped)}`,
        int(r.accepted.n / r.measuredS),
        ms(r.accepted.p50),
        ms(r.accepted.p99),
        ms(r.accepted.max),
        ms(r.refused.p50),
        ms(r.refused.p99),
        ms(r.refused.max),
        r.refused.n ? pct((r.refused.withRetryAfter / r.refused.n) * 100) : 'n/a',
        `${int(p.rss.peak)} / ${int(p.rss.end)}`,
      ]),
    );
  }
  out.push('', 'Notes:', '');
  for (const p of [...phases, ...floorPhases]) {
    const r = p.result;
    const errors = Object.entries(r.statuses).filter(([s]) => !/^\d+$/.test(s));
    out.push(
      `- ${p.name}: the generator's send lag p50 ${ms(r.sendLag.p50)} ms, p99 ${ms(r.sendLag.p99)} ms, max ${ms(r.sendLag.max)} ms; ` +
        (r.refused.n
          ? `refusals from the request's send (without that lag): p50 ${ms(r.refusedFromSend.p50)} ms, p99 ${ms(r.refusedFromSend.p99)} ms, max ${ms(r.refusedFromSend.max)} ms; ${int(r.refused.over)} refusals over ${REFUSAL_MS} ms from schedule; `
          : '') +
        `generator CPU ${pct((r.cpuS / r.measuredS) * 100)}; at most ${int(r.peakOutstanding)} requests outstanding, ${int(r.connects)} connections opened` +
        (errors.length ? `; errors: ${errors.map(([c, n]) => `${int(n)}× ${c}`).join(', ')}` : '') +
        '.',
    );
  }
  out.push(
    `- CPU (% of one core for the server; others: the rest of the machine's busy time, % of all ${availableParallelism()} cores): ${cpuNotes.join('; ')} (listen-queue overflows: TcpExt ListenOverflows over the phase, machine-wide).`,
  );
  if (counted) {
    out.push(`- The server counted: ${counted.text.join('; ')}.`);
    out.push(
      `- Its refusals (sluice_http_rejected_total, tenant and code): ${
        Object.entries(counted.rejected)
          .map(([k, n]) => `${k} ${int(n)}`)
          .join(', ') || 'none'
      }.`,
    );
  }

  const flood = phases[2];
  const light = phases[3];
  const aloneLight = phases[1];
  if (flood && light) {
    out.push(
      '',
      `During the overload, every ${INTERVAL_S} s (by scheduled start; RSS: the peak of the samples in the interval):`,
      '',
      '| at s | flood sent/s | flood 202/s | flood refused/s | flood 202 p99 ms | flood refused max ms | light 202 p99 ms | light refused | RSS MiB |',
      '|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
    );
    for (const f of flood.result.intervals) {
      const l = light.result.intervals.find((x) => x.atS === f.atS);
      const w = rss.between(run.overloadFrom + (f.atS - INTERVAL_S) * 1000, run.overloadFrom + f.atS * 1000);
      out.push(
        row([
          String(f.atS),
          int(f.sent / INTERVAL_S),
          int(f.accepted / INTERVAL_S),
          int(f.refused / INTERVAL_S),
          ms(f.acceptedP99),
          ms(f.refusedMax),
          ms(l?.acceptedP99 ?? NaN),
          int(l?.refused ?? NaN),
          int(w.peak),
        ]),
      );
    }
  }

  // Targets of issue 13, at 3× capacity. A verdict is information, never an exit code.
  const verdict = (ok: boolean | undefined): string =>
    ok === undefined ? 'not measured' : ok ? 'holds' : '**misses**';
  const targets: [string, string, boolean | undefined][] = [];
  if (flood && light && aloneLight) {
    const f = flood.result;
    const l = light.result;
    const worstP99 = Math.max(f.accepted.p99, l.accepted.p99);
    targets.push([
      'p99 of answered (202) requests ≤ 1 s',
      `flood ${ms(f.accepted.p99)} ms (${int(f.accepted.n)} answered), light ${ms(l.accepted.p99)} ms (${int(l.accepted.n)})`,
      f.accepted.n + l.accepted.n > 0 ? worstP99 <= 1000 : undefined,
    ]);
    const refused = f.refused.n + l.refused.n;
    const withRetryAfter = f.refused.withRetryAfter + l.refused.withRetryAfter;
    const refusedMax = Math.max(f.refused.n ? f.refused.max : 0, l.refused.n ? l.refused.max : 0);
    const refusedP99 = f.refused.n >= l.refused.n ? f.refused.p99 : l.refused.p99;
    const fromSendMax = Math.max(
      f.refused.n ? f.refusedFromSend.max : 0,
      l.refused.n ? l.refusedFromSend.max : 0,
    );
    targets.push([
      `every refused request answered in ≤ ${REFUSAL_MS} ms, with Retry-After`,
      refused
        ? `${int(refused)} refused; max ${ms(refusedMax)} ms, p99 ${ms(refusedP99)} ms (from send: max ${ms(fromSendMax)} ms); ${int(f.refused.over + l.refused.over)} over ${REFUSAL_MS} ms; Retry-After on ${int(withRetryAfter)} (${pct((withRetryAfter / refused) * 100)})`
        : 'no request was refused',
      refused ? refusedMax <= REFUSAL_MS && withRetryAfter === refused : undefined,
    ]);
    // Bounded: the peak of the run's last third no higher than the peak before it, give or take
    // max(10 MiB, 10%): RSS levelled off instead of growing with the backlog.
    const third = run.overloadFrom + ((run.overloadTo - run.overloadFrom) * 2) / 3;
    const early = rss.between(run.overloadFrom, third).peak;
    const late = rss.between(third, run.overloadTo).peak;
    const capPeak = phases[0]!.rss.peak;
    targets.push([
      'RSS bounded (peak of the last third of the overload ≤ peak before it + max(10 MiB, 10%))',
      `peak ${int(flood.rss.peak)} MiB, ${int(flood.rss.end)} MiB at the end; ${int(early)} MiB in the first two thirds, ${int(late)} MiB in the last; ${int(capPeak)} MiB at most at capacity (closed loop)`,
      Number.isFinite(early) && Number.isFinite(late) ? late <= early + Math.max(10, 0.1 * early) : undefined,
    ]);
    const a = aloneLight.result.accepted.p99;
    targets.push([
      "light tenant's p99 ≤ 2× its unloaded p99 (and every one of its requests 202)",
      `${ms(l.accepted.p99)} ms during the flood vs ${ms(a)} ms alone (${(l.accepted.p99 / a).toFixed(2)}×); ${int(l.sent - l.accepted.n)} of its ${int(l.sent)} requests not 202`,
      l.accepted.n && aloneLight.result.accepted.n
        ? l.accepted.p99 <= 2 * a && l.accepted.n === l.sent
        : undefined,
    ]);
  }
  out.push(
    '',
    `Targets of issue 13 at 3× capacity (the flood was scheduled at ${(run.floodRate / run.capacity).toFixed(2)}× C; it sent ${flood ? (flood.result.sent / flood.result.measuredS / run.capacity).toFixed(2) : 'n/a'}× C, the rest being over --max-outstanding):`,
    '',
    '| target | measured | verdict | the floor, same flood (bench/floor-server.ts) |',
    '|---|---|---|---|',
  );
  // What the floor got against the same targets: a lower bound for any server on this machine.
  const [floorAlone, floorFlood, floorLight] = floorPhases;
  const floorCells: string[] = ['', '', '', ''].map(() => (floorPhases.length ? 'n/a' : 'not run'));
  if (floorAlone && floorFlood && floorLight) {
    const r = floorFlood.result.refused;
    floorCells[0] = `light ${ms(floorLight.result.accepted.p99)} ms`;
    floorCells[1] = `${int(r.n)} refused; max ${ms(r.max)} ms, p99 ${ms(r.p99)} ms; ${int(r.over)} over ${REFUSAL_MS} ms`;
    floorCells[2] = `peak ${int(floorFlood.rss.peak)} MiB`;
    const a = floorAlone.result.accepted.p99;
    floorCells[3] = `${ms(floorLight.result.accepted.p99)} ms during the flood vs ${ms(a)} ms alone (${(floorLight.result.accepted.p99 / a).toFixed(2)}×)`;
  }
  // The targets hold at 3× capacity: below it, a verdict would say nothing about them.
  const atThree = run.floodRate / run.capacity >= 2.99;
  targets.forEach(([what, measured, ok], i) =>
    out.push(row([what, measured, atThree ? verdict(ok) : 'not at 3× capacity', floorCells[i] ?? 'n/a'])),
  );
  out.push('', `Benchmark took ${((performance.now() - started) / 60_000).toFixed(1)} min.`);
  process.stdout.write(out.join('\n') + '\n');
  process.exitCode = crashed ? 1 : 0;
}

if (flags.role === 'load') await loadMain(JSON.parse(flags.spec ?? '{}') as LoadSpec);
else await main();
