/**
 * HTTP benchmark of `sluice serve` on the payments pipeline, against the bare Fastify it runs on
 * (bench/bare-fastify.ts: same route and body parser, nothing done) in the same run. Each sluice
 * phase gets a fresh server process with its SQLite store in a temporary directory; the bodies
 * are payments workload events made unique (bench/http-events.ts), so dedupe and lateness see
 * what a real stream would give them. Phases:
 *
 * 1. maximum throughput with autocannon (closed loop: each connection sends its next request
 *    when the last is answered), one event per request (application/json), bare then sluice;
 * 2. the same with 100-event NDJSON batches;
 * 3. a fixed --rate of single-event requests with the open-loop generator (bench/http-open-loop.ts,
 *    its own process), bare then sluice: latency from each request's scheduled start (the bare
 *    row is the floor that the generator and the machine set);
 * 4. sluice with 100-event batches at a fixed share of phase 2's maximum for --sustain seconds
 *    (open loop too), the server's RSS reported every interval;
 * 5. (`cores`) phases 1 and 2 again with the server pinned to one core
 *    (`taskset -c 0`; the load generator still runs on both): how the service scales from 1 to 2
 *    cores, read against phases 1 and 2.
 *
 * Before the sluice phases, a probe times 4 KiB appends with fdatasync where the stores go: the
 * disk's floor for a durable answer.
 *
 * The server's RSS (VmRSS) is sampled from /proc throughout, and its CPU time read around each
 * measured period, as is the load generator's and the whole machine's (the difference is other
 * work: the load generator shares the 2 cores with the server). Prints a markdown table on stdout,
 * progress on stderr. Targets are reported, never enforced: the exit code is non-zero only when a
 * process crashes.
 *
 * Usage: npm run bench:http -- [--duration S] [--warmup S] [--connections N] [--batch-connections N]
 *          [--rate REQ_PER_S] [--rate-duration S] [--sustain S] [--sustain-share F]
 *          [--sustain-rate EVENTS_PER_S] [--cpu-prof DIR] [--phases bare,single,batch,fixed,sustain,cores]
 *          [--max-others PCT] [--attempts N] [--service-config JSON]
 *
 * The machine is shared: a maximum-throughput or fixed-rate run during which other work took more
 * than --max-others percent of it (default 15) is measured again, at most --attempts times in all
 * (default 3), and the least disturbed attempt is kept; each row shows that share.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  fdatasyncSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  symlinkSync,
  writeSync,
} from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { buildSync } from 'esbuild';
import { BIN as SLUICE_BIN, workloadInput } from '../test/helpers.ts';
import { writeServiceConfig } from '../test/serve-helpers.ts';
import { BodySequence, loadTemplates, type BodyKind } from './http-events.ts';
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
const KEY = 'sk_bench_http_5c1f0e7d2b9a4c3e';
const PIPELINE = 'payments';
const EVENTS_PATH = `/v1/pipelines/${PIPELINE}/events`;
const BATCH = 100;
/** Connections of the closed-loop warm-up before an open-loop phase. */
const WARMUP_CONNECTIONS = 16;
const TEMPLATE_EVENTS = 100_000;

const { values: flags } = parseArgs({
  options: {
    duration: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '3' },
    connections: { type: 'string', default: '64' },
    'batch-connections': { type: 'string', default: '32' },
    rate: { type: 'string', default: '3500' },
    'rate-duration': { type: 'string', default: '20' },
    sustain: { type: 'string', default: '30' },
    'sustain-share': { type: 'string', default: '0.6' },
    'sustain-rate': { type: 'string' },
    'cpu-prof': { type: 'string' },
    phases: { type: 'string', default: 'bare,single,batch,fixed,sustain,cores' },
    'max-others': { type: 'string', default: '15' },
    attempts: { type: 'string', default: '3' },
    'service-config': { type: 'string', default: '{}' },
  },
});
const ALL_PHASES = ['bare', 'single', 'batch', 'fixed', 'sustain', 'cores'];
/** Percent of the machine that other work may take during a measured period before it is measured again. */
const MAX_OTHERS = Number(flags['max-others']);
const ATTEMPTS = Number(flags.attempts);
const PHASES = new Set(flags.phases.split(',').map((p) => p.trim()));
const DURATION_S = Number(flags.duration);
const WARMUP_S = Number(flags.warmup);
const CONNECTIONS = Number(flags.connections);
const BATCH_CONNECTIONS = Number(flags['batch-connections']);
const RATE = Number(flags.rate);
const RATE_DURATION_S = Number(flags['rate-duration']);
const SUSTAIN_S = Number(flags.sustain);
const SUSTAIN_SHARE = Number(flags['sustain-share']);
const SUSTAIN_RATE = flags['sustain-rate'] === undefined ? undefined : Number(flags['sustain-rate']);
const CPU_PROF = flags['cpu-prof'] === undefined ? undefined : resolve(flags['cpu-prof']);
/** Extra top-level service config sections for every sluice server (to compare settings). */
const SERVICE_CONFIG = JSON.parse(flags['service-config']) as Record<string, unknown>;
const positive = (x: number | undefined): boolean => x === undefined || (Number.isFinite(x) && x > 0);
if (
  ![DURATION_S, RATE, RATE_DURATION_S, SUSTAIN_S, SUSTAIN_SHARE, SUSTAIN_RATE].every(positive) ||
  !(WARMUP_S >= 0) ||
  !Number.isInteger(CONNECTIONS) ||
  CONNECTIONS < 1 ||
  !Number.isInteger(BATCH_CONNECTIONS) ||
  BATCH_CONNECTIONS < 1 ||
  [...PHASES].some((p) => !ALL_PHASES.includes(p)) ||
  !(MAX_OTHERS >= 0 && MAX_OTHERS <= 100) ||
  !Number.isInteger(ATTEMPTS) ||
  ATTEMPTS < 1
) {
  console.error(
    'usage: bench/http.ts [--duration S] [--warmup S] [--connections N] [--batch-connections N] [--rate REQ_PER_S] [--rate-duration S] [--sustain S] [--sustain-share F] [--sustain-rate EVENTS_PER_S] [--cpu-prof DIR] [--phases bare,single,batch,fixed,sustain,cores] [--max-others PCT] [--attempts N] [--service-config JSON]',
  );
  process.exit(2);
}
/** RSS lines during the sustained run: every minute for a long one, every 10 s (or a third) for a short one. */
const SUSTAIN_INTERVAL_S =
  SUSTAIN_S >= 120 ? 60 : SUSTAIN_S >= 30 ? 10 : Math.max(1, Math.floor(SUSTAIN_S / 3));

// ---- measuring processes from /proc

/** Samples a process's RSS every 200 ms while the phase runs. */
class RssSampler {
  peakMiB = 0;
  lastMiB = NaN;
  readonly #timer: NodeJS.Timeout;

  constructor(readonly pid: number) {
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), 200);
  }

  #sample(): number {
    const v = rssMiB(this.pid);
    if (v !== undefined) {
      this.peakMiB = Math.max(this.peakMiB, v);
      this.lastMiB = v;
    }
    return this.lastMiB;
  }

  now(): number {
    return this.#sample();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#sample();
  }
}

/** CPU shares over a measured period: the server, the load generator, and everything else. */
class CpuWindow {
  readonly #wall = performance.now();
  readonly #busy = busyCpuS();
  readonly #server: number | undefined;
  readonly #load: number | undefined;

  constructor(
    readonly serverPid: number,
    readonly loadPid: number,
  ) {
    this.#server = processCpuS(serverPid);
    this.#load = processCpuS(loadPid);
  }

  /**
   * Percent of one core for the server and the load; others as percent of the whole machine.
   * `loadPct` stands in for the load's CPU when it measured itself (it may have exited by now).
   */
  end(loadPct?: number): { serverPct: number; loadPct: number; othersPct: number } {
    const wallS = (performance.now() - this.#wall) / 1000;
    const server = (processCpuS(this.serverPid) ?? NaN) - (this.#server ?? NaN);
    const load =
      loadPct !== undefined
        ? (loadPct / 100) * wallS
        : (processCpuS(this.loadPid) ?? NaN) - (this.#load ?? NaN);
    const busy = (busyCpuS() ?? NaN) - (this.#busy ?? NaN);
    return {
      serverPct: (server / wallS) * 100,
      loadPct: (load / wallS) * 100,
      othersPct: (Math.max(0, busy - server - load) / (wallS * availableParallelism())) * 100,
    };
  }
}

// ---- the child scripts, bundled once as plain JavaScript (as sluice runs from dist/)

/**
 * Bundles the bench's own child scripts with esbuild into a temporary directory that links the
 * repo's node_modules, so that they run on plain `node` without the tsx loader in their process.
 */
function bundleChildren(): { dir: string; bare: string; openLoop: string } {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-http-js-'));
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
  const out = (name: string): string => {
    const outfile = join(dir, `${name}.mjs`);
    buildSync({
      entryPoints: [join(ROOT, 'bench', `${name}.ts`)],
      outfile,
      bundle: true,
      packages: 'external',
      platform: 'node',
      format: 'esm',
      target: 'node20',
      logLevel: 'error',
    });
    return outfile;
  };
  return { dir, bare: out('bare-fastify'), openLoop: out('http-open-loop') };
}

// ---- servers

/** `cpus`: a taskset CPU list to pin the server to (taskset execs node, so the pid is the server's). */
async function startSluice(cpus?: string): Promise<RunningServer & { dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-http-'));
  const config = writeServiceConfig(dir, { bench: { keys: [KEY] } }, SERVICE_CONFIG);
  // --cpu-prof is refused in NODE_OPTIONS, so the server is started here rather than by startServer.
  const profile = CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', CPU_PROF] : [];
  const argv = [process.execPath, ...profile, SLUICE_BIN, 'serve', config, '--log-level', 'info'];
  if (cpus !== undefined) argv.unshift('taskset', '-c', cpus);
  const proc = spawn(argv[0]!, argv.slice(1), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    proc.on('exit', (code, signal) => r({ code, signal })),
  );
  const url = await new Promise<string>((done, fail) => {
    const onData = (d: Buffer): void => {
      out = (out + d.toString('utf8')).slice(-8000);
      const m = /"url":"(http:\/\/[^"]+)".*"msg":"listening"/.exec(out);
      if (m) done(m[1]!);
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    void exited.then(({ code, signal }) => {
      rmSync(dir, { recursive: true, force: true });
      fail(new Error(`sluice serve exited (${code ?? signal}): ${out}`));
    });
  });
  return {
    dir,
    url,
    pid: proc.pid!,
    tail: () => out.trim().split('\n').slice(-5).join('\n'),
    stop: async () => {
      const started = performance.now();
      proc.kill('SIGTERM');
      const r = await exited;
      rmSync(dir, { recursive: true, force: true });
      return { ...r, ms: performance.now() - started };
    },
  };
}

/**
 * What the server counted, from its /metrics: events by fate (`events_received`, ...) and its
 * event-loop delay (`lag_p99`, `lag_max`, seconds) over its life.
 */
async function counters(url: string): Promise<Record<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const sums: Record<string, number> = {};
  for (const m of text.matchAll(/^sluice_(events_\w+)_total\{[^}]*\} (\S+)$/gm))
    sums[m[1]!] = (sums[m[1]!] ?? 0) + Number(m[2]);
  const lag = (name: string): number | undefined => {
    const m = new RegExp(`^sluice_(?:process_)?nodejs_eventloop_lag_${name}_seconds (\\S+)$`, 'm').exec(text);
    return m ? Number(m[1]) : undefined;
  };
  sums.lag_p99 = lag('p99') ?? NaN;
  sums.lag_max = lag('max') ?? NaN;
  // Group commits: how many, how many requests each, how long each transaction took.
  const one = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN);
  sums.commits = one(/^sluice_store_commit_seconds_count(?:\{[^}]*\})? (\S+)$/m);
  sums.commit_s = one(/^sluice_store_commit_seconds_sum(?:\{[^}]*\})? (\S+)$/m);
  for (const m of text.matchAll(/^sluice_thread_busy_seconds_total\{thread="([\w-]+)"\} (\S+)$/gm))
    sums[`busy_${m[1]}`] = Number(m[2]);
  sums.committed_requests = one(/^sluice_store_committed_requests_total(?:\{[^}]*\})? (\S+)$/m);
  return sums;
}

// ---- loads

interface LoadResult {
  /** Answers in the measured period. */
  answered: number;
  /** Answers by status (or client error code). */
  statuses: Record<string, number>;
  reqPerS: number;
  /** Latencies, ms. */
  p50: number;
  p95: number;
  p99: number;
  p999: number;
  max: number;
}

const headersFor = (kind: BodyKind): Record<string, string> => ({
  authorization: `Bearer ${KEY}`,
  'content-type': kind === 'single' ? 'application/json' : 'application/x-ndjson',
});

/** autocannon for `seconds` against a server; latencies from its per-response times (fractional ms). */
async function cannon(
  url: string,
  kind: BodyKind,
  bodies: BodySequence,
  connections: number,
  seconds: number,
): Promise<LoadResult> {
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  const instance = autocannon({
    url: url + EVENTS_PATH,
    method: 'POST',
    connections,
    duration: seconds,
    headers: headersFor(kind),
    requests: [{ setupRequest: (req) => ({ ...req, body: bodies.next() }) }],
  });
  instance.on('response', (_client, status, _bytes, ms) => {
    latencies.push(ms);
    statuses[status] = (statuses[status] ?? 0) + 1;
  });
  const r = await instance;
  if (r.errors > 0) statuses['client errors'] = r.errors;
  if (r.timeouts > 0) statuses.timeouts = r.timeouts;
  const sorted = Float64Array.from(latencies).sort();
  return {
    answered: latencies.length,
    statuses,
    reqPerS: latencies.length / r.duration,
    p50: percentile(sorted, 0.5),
    p95: percentile(sorted, 0.95),
    p99: percentile(sorted, 0.99),
    p999: percentile(sorted, 0.999),
    max: percentile(sorted, 1),
  };
}

interface OpenLoopResult extends LoadResult {
  rate: number;
  unanswered: number;
  sendLagP99: number;
  generatorCpuPct: number;
}

interface IntervalLine {
  atS: number;
  ratePerS: number;
  p50: number;
  p99: number;
  max: number;
}

/**
 * The open-loop generator as a child process. `onMeasuring` runs when its measured period begins,
 * `onInterval` at each of its interval reports; resolves with its result once it exits.
 */
async function openLoop(
  script: string,
  url: string,
  kind: BodyKind,
  rate: number,
  seconds: number,
  interval: number,
  start: number,
  hooks: { onMeasuring?(pid: number): void; onInterval?(line: IntervalLine): void } = {},
): Promise<OpenLoopResult> {
  const templates = workloadInput(TEMPLATE_EVENTS);
  const args = [
    script,
    ...['--url', url, '--key', KEY, '--templates', templates, '--kind', kind],
    ...['--rate', String(rate), '--duration', String(seconds), '--warmup', String(WARMUP_S)],
    ...['--interval', String(interval), '--start', String(start)],
  ];
  const child: ChildProcess = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  let result: Record<string, unknown> | undefined;
  createInterface({ input: child.stdout! }).on('line', (l) => {
    const msg = JSON.parse(l) as Record<string, unknown>;
    if (msg.t === 'measuring') hooks.onMeasuring?.(child.pid!);
    else if (msg.t === 'interval') hooks.onInterval?.(msg as unknown as IntervalLine);
    else if (msg.t === 'result') result = msg;
  });
  const code = await new Promise<number | null>((done) => child.on('close', (c) => done(c)));
  if (code !== 0 || !result) throw new Error(`open-loop generator exited with ${code}: ${stderr}`);
  const us = (k: string): number =>
    typeof result![k] === 'number' ? (result![k] as number) / 1000 : Infinity;
  return {
    rate,
    answered: result.answered as number,
    unanswered: result.unanswered as number,
    statuses: result.statuses as Record<string, number>,
    reqPerS: result.achievedPerS as number,
    p50: us('p50'),
    p95: us('p95'),
    p99: us('p99'),
    p999: us('p999'),
    max: us('max'),
    sendLagP99: us('sendLagP99'),
    generatorCpuPct: result.cpuPercent as number,
  };
}

// ---- phases

interface Row {
  name: string;
  load: string;
  result: LoadResult;
  eventsPerRequest: number;
  serverPct: number;
  loadPct: number;
  othersPct: number;
  rssPeakMiB: number;
  rssEndMiB: number;
  /** The server's own counts (sluice only). */
  counted?: Record<string, number>;
  notes: string[];
}

let crashed = false;
const rows: Row[] = [];

async function stopServer(server: RunningServer, what: string, row?: Row): Promise<void> {
  const stopped = await server.stop();
  const note = `stopped in ${(stopped.ms / 1000).toFixed(1)} s`;
  if (stopped.code !== 0) {
    crashed = true;
    log(`${what}: exited with ${stopped.code ?? stopped.signal} after SIGTERM:\n${server.tail()}`);
    row?.notes.push(`${note}, exit ${stopped.code ?? stopped.signal}`);
  } else row?.notes.push(note);
}

/**
 * Measures up to --attempts times while other work takes more than --max-others of the machine
 * during the measured period, and keeps the attempt it disturbed least (noted in the row).
 */
async function leastDisturbed(name: string, measure: () => Promise<Row>): Promise<Row> {
  let best: Row | undefined;
  const shares: string[] = [];
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    if (attempt > 1) log(`[${name}] other work took ${pct(best!.othersPct)} of the machine; measuring again`);
    await waitQuiet(name);
    const row = await measure();
    shares.push(pct(row.othersPct));
    if (!best || !(row.othersPct >= best.othersPct)) best = row;
    if (!(row.othersPct > MAX_OTHERS)) break;
  }
  if (shares.length > 1)
    best!.notes.push(
      `measured ${shares.length} times (others ${shares.join(', ')}), kept the least disturbed`,
    );
  return best!;
}

/** One autocannon phase: warm-up, then the measured run with CPU and RSS around it. */
async function cannonPhase(
  server: RunningServer,
  name: string,
  kind: BodyKind,
  bodies: BodySequence,
  connections: number,
): Promise<Row> {
  await waitQuiet(name);
  const rss = new RssSampler(server.pid);
  if (WARMUP_S > 0) await cannon(server.url, kind, bodies, connections, WARMUP_S);
  const row = await leastDisturbed(name, async () => {
    const cpu = new CpuWindow(server.pid, process.pid);
    const result = await cannon(server.url, kind, bodies, connections, DURATION_S);
    const r: Row = {
      name,
      load: `autocannon, ${connections} connections, ${DURATION_S} s`,
      result,
      eventsPerRequest: kind === 'single' ? 1 : BATCH,
      ...cpu.end(),
      rssPeakMiB: NaN,
      rssEndMiB: NaN,
      notes: [],
    };
    log(`[${name}] ${describe(r)}`);
    return r;
  });
  rss.stop();
  row.rssPeakMiB = rss.peakMiB;
  row.rssEndMiB = rss.lastMiB;
  return row;
}

function describe(row: Row): string {
  const r = row.result;
  return (
    `${int(r.reqPerS)} req/s, ${int(r.reqPerS * row.eventsPerRequest)} events/s, ` +
    `p50 ${ms(r.p50)} ms, p99 ${ms(r.p99)} ms, statuses ${JSON.stringify(r.statuses)}, ` +
    `server CPU ${pct(row.serverPct)}, load CPU ${pct(row.loadPct)}, others ${pct(row.othersPct)}`
  );
}

async function sluicePhase(run: (server: RunningServer) => Promise<Row>, cpus?: string): Promise<Row> {
  const server = await startSluice(cpus);
  let row: Row | undefined;
  try {
    row = await run(server);
    row.counted = await counters(server.url);
  } finally {
    await stopServer(server, 'sluice serve', row);
  }
  rows.push(row);
  return row;
}

// ---- formatting

function otherStatuses(r: LoadResult, extra = 0): string {
  const parts = Object.entries(r.statuses)
    .filter(([s]) => s !== '202')
    .map(([s, n]) => `${n.toLocaleString('en-US')}× ${s}`);
  if (extra > 0) parts.push(`${extra.toLocaleString('en-US')} unanswered`);
  return parts.length ? parts.join(', ') : 'none';
}

/**
 * An open-loop phase against a running server: a short closed-loop warm-up with autocannon first
 * (a cold server falls behind a fixed rate while its code is still being compiled, and would spend
 * the measured period working off that backlog), then the generator, which warms up again at the
 * rate before it measures.
 */
async function openLoopPhase(
  server: RunningServer,
  name: string,
  kind: BodyKind,
  rate: number,
  seconds: number,
  interval: number,
  onInterval?: (line: IntervalLine, rssNow: number) => void,
): Promise<Row> {
  await waitQuiet(name);
  const rss = new RssSampler(server.pid);
  const bodies = new BodySequence(kind === 'single' ? singles : batches);
  if (WARMUP_S > 0) await cannon(server.url, kind, bodies, WARMUP_CONNECTIONS, WARMUP_S);
  let start = bodies.position;
  const measure = async (): Promise<Row> => {
    let cpu: CpuWindow | undefined;
    const result = await openLoop(children.openLoop, server.url, kind, rate, seconds, interval, start, {
      onMeasuring: (pid) => (cpu = new CpuWindow(server.pid, pid)),
      onInterval: (line) => onInterval?.(line, rss.now()),
    });
    // The next attempt starts after every body this one sent, warm-up included.
    start += Math.round(WARMUP_S * rate) + Math.round(seconds * rate);
    // The generator has exited by now: its CPU time comes from its own report.
    const shares = cpu?.end(result.generatorCpuPct) ?? { serverPct: NaN, loadPct: NaN, othersPct: NaN };
    const r: Row = {
      name,
      load: `open loop, ${int(rate)} req/s evenly spaced, ${seconds} s`,
      result,
      eventsPerRequest: kind === 'single' ? 1 : BATCH,
      ...shares,
      rssPeakMiB: NaN,
      rssEndMiB: NaN,
      notes: [`the generator's own send lag p99 ${ms(result.sendLagP99)} ms`],
    };
    if (result.unanswered > 0) r.notes.push(`${result.unanswered} requests unanswered after the schedule`);
    log(`[${name}] ${describe(r)}`);
    return r;
  };
  // A sustained run is about what happens over its whole length: it is not measured again.
  const row = interval > 0 ? await measure() : await leastDisturbed(name, measure);
  rss.stop();
  row.rssPeakMiB = rss.peakMiB;
  row.rssEndMiB = rss.lastMiB;
  return row;
}

/**
 * The disk's floor for a durable answer: 4 KiB appends, each followed by fdatasync (what a WAL
 * commit does), one at a time for about two seconds in the directory the stores go to.
 */
function diskFloor(): { p50: number; p99: number; max: number; perS: number } {
  const dir = mkdtempSync(join(tmpdir(), 'sluice-bench-disk-'));
  const fd = openSync(join(dir, 'probe'), 'a');
  const page = Buffer.alloc(4096, 0x61);
  const times: number[] = [];
  const started = performance.now();
  try {
    while (performance.now() - started < 2000 && times.length < 5000) {
      const t = performance.now();
      writeSync(fd, page);
      fdatasyncSync(fd);
      times.push(performance.now() - t);
    }
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
  const sorted = Float64Array.from(times).sort();
  return {
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    max: percentile(sorted, 1),
    perS: times.length / ((performance.now() - started) / 1000),
  };
}

// ---- the run

const started = performance.now();
const loadBefore = loadavg()[0]!;
const templatesFile = workloadInput(TEMPLATE_EVENTS);
const singles = loadTemplates(templatesFile, 'single');
const batches = loadTemplates(templatesFile, 'batch', BATCH);
const children = bundleChildren();
// Also when a phase throws: the bundle is this run's alone.
process.on('exit', () => rmSync(children.dir, { recursive: true, force: true }));
if (CPU_PROF) mkdirSync(CPU_PROF, { recursive: true });
log(
  `bodies: ${singles.length.toLocaleString('en-US')} single events and ${batches.length.toLocaleString('en-US')} batches of ${BATCH} per pass, made unique pass after pass`,
);

// 1 and 2, the ceiling: bare Fastify, one process for both loads.
let bareSingle: Row | undefined;
let bareBatch: Row | undefined;
let bareFixed: Row | undefined;
if (PHASES.has('bare')) {
  const bare = await startBare([children.bare], 'bare Fastify', ROOT);
  try {
    bareSingle = await cannonPhase(
      bare,
      'bare Fastify, 1 event/request',
      'single',
      new BodySequence(singles),
      CONNECTIONS,
    );
    rows.push(bareSingle);
    bareBatch = await cannonPhase(
      bare,
      `bare Fastify, ${BATCH}-event NDJSON`,
      'batch',
      new BodySequence(batches),
      BATCH_CONNECTIONS,
    );
    rows.push(bareBatch);
    if (PHASES.has('fixed')) {
      bareFixed = await openLoopPhase(
        bare,
        `bare Fastify, 1 event/request at ${int(RATE)} req/s`,
        'single',
        RATE,
        RATE_DURATION_S,
        0,
      );
      rows.push(bareFixed);
    }
  } finally {
    await stopServer(bare, 'bare Fastify');
  }
}

await waitQuiet('disk probe');
const disk = diskFloor();
log(
  `[disk] 4 KiB append + fdatasync: p50 ${ms(disk.p50)} ms, p99 ${ms(disk.p99)} ms, max ${ms(disk.max)} ms`,
);

// 1 and 2, sluice: a fresh server (and store) for each; with `cpus`, pinned to those cores (5).
const maxPhase = (kind: BodyKind, cpus?: string): Promise<Row> =>
  sluicePhase(
    (s) =>
      cannonPhase(
        s,
        (kind === 'single' ? 'sluice serve, 1 event/request' : `sluice serve, ${BATCH}-event NDJSON`) +
          (cpus === undefined ? '' : ', server on 1 core'),
        kind,
        new BodySequence(kind === 'single' ? singles : batches),
        kind === 'single' ? CONNECTIONS : BATCH_CONNECTIONS,
      ),
    cpus,
  );
const sluiceSingle = PHASES.has('single') ? await maxPhase('single') : undefined;
const sluiceBatch =
  PHASES.has('batch') || (PHASES.has('sustain') && SUSTAIN_RATE === undefined)
    ? await maxPhase('batch')
    : undefined;
// 5: the same with the server on one core.
const sluiceSingle1 = PHASES.has('cores') ? await maxPhase('single', '0') : undefined;
const sluiceBatch1 = PHASES.has('cores') ? await maxPhase('batch', '0') : undefined;

// 3: latency at a fixed rate of single events.
const fixedRate = PHASES.has('fixed')
  ? await sluicePhase((s) =>
      openLoopPhase(
        s,
        `sluice serve, 1 event/request at ${int(RATE)} req/s`,
        'single',
        RATE,
        RATE_DURATION_S,
        0,
      ),
    )
  : undefined;

// 4: batches at a sustained, moderate rate; RSS at every interval.
const maxBatchEvents = sluiceBatch ? sluiceBatch.result.reqPerS * BATCH : NaN;
const sustainEvents = SUSTAIN_RATE ?? Math.max(BATCH, SUSTAIN_SHARE * maxBatchEvents);
const sustainReqs = sustainEvents / BATCH;
const timeline: { atS: number; eventsPerS: number; p50: number; p99: number; rssMiB: number }[] = [];
const sustained = PHASES.has('sustain')
  ? await sluicePhase((s) =>
      openLoopPhase(
        s,
        `sluice serve, ${BATCH}-event NDJSON at ${int(sustainEvents)} events/s`,
        'batch',
        sustainReqs,
        SUSTAIN_S,
        SUSTAIN_INTERVAL_S,
        (line, rssNow) => {
          const point = {
            atS: line.atS,
            eventsPerS: line.ratePerS * BATCH,
            p50: line.p50 / 1000,
            p99: line.p99 / 1000,
            rssMiB: rssNow,
          };
          timeline.push(point);
          log(
            `[sustain ${point.atS} s] ${int(point.eventsPerS)} events/s, p50 ${ms(point.p50)} ms, p99 ${ms(point.p99)} ms, RSS ${int(point.rssMiB)} MiB`,
          );
        },
      ),
    )
  : undefined;

rmSync(children.dir, { recursive: true, force: true });
const elapsedS = (performance.now() - started) / 1000;
const loadAfter = loadavg()[0]!;

// ---- report
const out: string[] = [];
out.push(
  `sluice serve, payments pipeline (examples/payments/pipeline.yaml), store in ${tmpdir()} (WAL, synchronous=FULL); server and load generator on the same ${availableParallelism()} cores.`,
  `Node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'}, ${Math.round(totalmem() / 2 ** 30)} GiB; commit ${gitCommit(ROOT)}; 1-min load average ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after.`,
  `Bodies: the seed-1 workload (${TEMPLATE_EVENTS.toLocaleString('en-US')} events, ~3% bad lines, ~1% redeliveries), ids and years rewritten per pass so that no two passes repeat an event.`,
  `autocannon rows: closed loop, latency from when a request was written (its per-response times, µs resolution), after a ${WARMUP_S} s warm-up; open-loop rows: latency from each request's scheduled start, after a ${WARMUP_S} s warm-up at the same rate.`,
  `Disk (${tmpdir()}): a 4 KiB append + fdatasync, one at a time, takes p50 ${ms(disk.p50)} ms, p99 ${ms(disk.p99)} ms, max ${ms(disk.max)} ms (${int(disk.perS)}/s); every 202 waits for at least one such sync of the store's WAL.`,
  `CPU: % of one core for the server (all threads) and the load generator over the measured period; "others" is the rest of the machine's busy time, % of all ${availableParallelism()} cores.`,
  '',
  row([
    'server, body',
    'load',
    'req/s',
    'events/s',
    'vs bare',
    'p50 ms',
    'p95 ms',
    'p99 ms',
    'p99.9 ms',
    'max ms',
    'not 202',
    'server CPU',
    'load CPU',
    'others',
    'server RSS peak / end MiB',
  ]),
  '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|',
);
const vsBare = new Map<Row | undefined, string>();
const share = (sluice: Row | undefined, base: Row | undefined): number =>
  sluice && base ? sluice.result.reqPerS / base.result.reqPerS : NaN;
vsBare.set(sluiceSingle, pct(share(sluiceSingle, bareSingle) * 100));
vsBare.set(sluiceBatch, pct(share(sluiceBatch, bareBatch) * 100));
for (const r of rows) {
  const unanswered = (r.result as Partial<OpenLoopResult>).unanswered ?? 0;
  out.push(
    row([
      r.name,
      r.load,
      int(r.result.reqPerS),
      int(r.result.reqPerS * r.eventsPerRequest),
      vsBare.get(r) ?? '',
      ms(r.result.p50),
      ms(r.result.p95),
      ms(r.result.p99),
      ms(r.result.p999),
      ms(r.result.max),
      otherStatuses(r.result, unanswered),
      pct(r.serverPct),
      pct(r.loadPct),
      pct(r.othersPct),
      `${int(r.rssPeakMiB)} / ${int(r.rssEndMiB)}`,
    ]),
  );
}
out.push('', 'What each sluice server counted (from its /metrics) and how it stopped:', '');
for (const r of rows) {
  if (!r.counted) continue;
  const c = r.counted;
  const received = c.events_received ?? 0;
  const part = (n: number | undefined): string =>
    `${int(n ?? 0)} (${received ? (((n ?? 0) / received) * 100).toFixed(1) : '0'}%)`;
  out.push(
    `- ${r.name}: ${int(received)} events received, accepted ${part(c.events_accepted)}, duplicates ${part(c.events_duplicate)}, dead letters ${part(c.events_dead)}; event-loop delay p99 ${ms((c.lag_p99 ?? NaN) * 1000)} ms, max ${ms((c.lag_max ?? NaN) * 1000)} ms over the server's life (start-up included); ${int(c.commits ?? NaN)} group commits of ${(c.committed_requests! / c.commits!).toFixed(1)} requests on average, ${ms((c.commit_s! / c.commits!) * 1000)} ms each; busy time over its life: ${Object.keys(
      c,
    )
      .filter((k) => k.startsWith('busy_'))
      .map((k) => `${k.slice(5)} thread ${c[k]!.toFixed(1)} s`)
      .join(', ')}; ${r.notes.join('; ')}.`,
  );
}

if (sustained) {
  out.push(
    '',
    `Sustained batches, the server's RSS every ${SUSTAIN_INTERVAL_S} s (rate: ${SUSTAIN_RATE === undefined ? `${Math.round(SUSTAIN_SHARE * 100)}% of the measured maximum` : 'as given'}, ${int(sustainReqs)} req/s):`,
    '',
    '| at s | events/s | p50 ms | p99 ms | RSS MiB |',
    '|--:|--:|--:|--:|--:|',
  );
  for (const p of timeline)
    out.push(row([String(p.atS), int(p.eventsPerS), ms(p.p50), ms(p.p99), int(p.rssMiB)]));
}

// Targets of issue 11 (one runtime on all cores); MB read as MiB. A verdict is information, never an exit code.
const verdict = (ok: boolean | undefined): string =>
  ok === undefined ? 'not run' : ok ? 'holds' : '**misses**';
const targets: [string, string, boolean | undefined][] = [];
const batchEvents = sluiceBatch ? sluiceBatch.result.reqPerS * BATCH : NaN;
targets.push([
  '100-event batches ≥ 150,000 events/s, durable',
  sluiceBatch
    ? `${int(batchEvents)} events/s at most (autocannon)` +
      (sustained ? `; ${int(sustained.result.reqPerS * BATCH)} events/s held for ${SUSTAIN_S} s` : '')
    : 'not run',
  sluiceBatch ? batchEvents >= 150_000 : undefined,
]);
if (fixedRate) {
  const keptUp = fixedRate.result.reqPerS >= 0.99 * RATE;
  targets.push(
    [
      `at ${int(RATE)} single-event req/s: p50 ≤ 1 ms`,
      `${ms(fixedRate.result.p50)} ms (${int(fixedRate.result.reqPerS)} req/s achieved)` +
        (bareFixed ? `; bare Fastify at the same rate: ${ms(bareFixed.result.p50)} ms` : ''),
      fixedRate.result.p50 <= 1 && keptUp,
    ],
    [
      `at ${int(RATE)} single-event req/s: p99 ≤ 5 ms, p99.9 ≤ 15 ms`,
      `${ms(fixedRate.result.p99)} ms (p99.9 ${ms(fixedRate.result.p999)} ms)` +
        (bareFixed
          ? `; bare Fastify at the same rate: ${ms(bareFixed.result.p99)} ms (p99.9 ${ms(bareFixed.result.p999)} ms)`
          : ''),
      fixedRate.result.p99 <= 5 && fixedRate.result.p999 <= 15 && keptUp,
    ],
  );
} else
  targets.push([
    `at ${int(RATE)} single-event req/s: p50 ≤ 1 ms, p99 ≤ 5 ms, p99.9 ≤ 15 ms`,
    'not run',
    undefined,
  ]);
const loaded = [fixedRate, sustained].filter((r): r is Row => r !== undefined);
const rssUnderLoad = loaded.length ? Math.max(...loaded.map((r) => r.rssPeakMiB)) : NaN;
const anySluice = rows.filter((r) => r.counted).map((r) => r.rssPeakMiB);
targets.push([
  'RSS ≤ 150 MiB under sustained load',
  loaded.length
    ? `peak ${int(rssUnderLoad)} MiB (${loaded.map((r) => `${r === fixedRate ? 'fixed rate' : 'sustained batches'} ${int(r.rssPeakMiB)}`).join(', ')}); at most ${int(Math.max(...anySluice))} MiB in any sluice run`
    : 'not run',
  loaded.length ? rssUnderLoad <= 150 : undefined,
]);
const firstPoint = timeline[0];
if (sustained && firstPoint) {
  const growth = sustained.rssEndMiB - firstPoint.rssMiB;
  const perMinute = (growth / Math.max(1, SUSTAIN_S - firstPoint.atS)) * 60;
  const signed = (x: number): string => `${x >= 0 ? '+' : ''}${int(x)}`;
  targets.push([
    `RSS stable over ${SUSTAIN_S >= 300 ? '5 minutes' : `${SUSTAIN_S} s (the target is 5 minutes: --sustain 300)`}`,
    `${int(firstPoint.rssMiB)} MiB at ${firstPoint.atS} s → ${int(sustained.rssEndMiB)} MiB at the end (${signed(growth)} MiB, ${signed(perMinute)} MiB/min)`,
    growth <= Math.max(10, 0.1 * firstPoint.rssMiB),
  ]);
} else targets.push(['RSS stable over 5 minutes', 'not run', undefined]);
const singleShare = share(sluiceSingle, bareSingle);
targets.push([
  'single-event req/s ≥ 60% of bare Fastify',
  Number.isFinite(singleShare)
    ? `${pct(singleShare * 100)} (${int(sluiceSingle!.result.reqPerS)} vs ${int(bareSingle!.result.reqPerS)} req/s)`
    : 'not run',
  Number.isFinite(singleShare) ? singleShare >= 0.6 : undefined,
]);
if (PHASES.has('cores')) {
  const scaling = (two: Row | undefined, one: Row | undefined): string =>
    two && one
      ? `${(two.result.reqPerS / one.result.reqPerS).toFixed(2)}×`
      : 'not run (needs single/batch too)';
  out.push(
    '',
    `Scaling from 1 core to 2 (the server on both cores vs pinned to one; the load generator on both either way): single events ${scaling(sluiceSingle, sluiceSingle1)}, ${BATCH}-event batches ${scaling(sluiceBatch, sluiceBatch1)}.`,
  );
}
out.push('', '| target | measured | verdict |', '|---|---|---|');
for (const [what, measured, ok] of targets) out.push(row([what, measured, verdict(ok)]));
out.push('', `Benchmark took ${(elapsedS / 60).toFixed(1)} min.`);
process.stdout.write(out.join('\n') + '\n');
process.exitCode = crashed ? 1 : 0;
