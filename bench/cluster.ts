/**
 * `sluice serve` on the payments pipeline, embedded runtime against cluster runtime, in one run:
 *
 * 1. embedded: one process with its SQLite store in a temporary directory;
 * 2. cluster, 1 instance: one process with `runtime: { type: cluster }` on the local NATS JetStream
 *    and PostgreSQL;
 * 3. cluster, 2 instances: two such processes (and 3 with `--instances 1,2,3`, the default).
 *
 * In the cluster runtime one pipeline has one owner at a time (docs/architecture.md), so a single
 * pipeline cannot use a second instance's processing. Every mode therefore serves two tenants, `t1`
 * and `t2`, each with a copy of the payments pipeline whose sinks are one postgres sink for large
 * payments (test/cluster-helpers.ts clusterPayments), into a table per tenant (in the embedded mode
 * the sink gets the mode's schema as its url). Before posting, the cluster modes wait (at most
 * 15 s) until every pipeline has an owner and, with 2 instances, each instance owns one (GET
 * /readyz `owns`); who owns what is printed. Each mode gets a fresh PostgreSQL schema and a fresh
 * JetStream stream, dropped at the end.
 *
 * Both tenants post the same seed-1 workload events (--events per tenant, default 200,000) as
 * 100-event NDJSON bodies, --concurrency requests in flight per tenant (default 16), each request to
 * the mode's next instance in turn. Concurrent requests to one pipeline reach it in any order,
 * which changes which events count as duplicates or late: each mode's counts (from /metrics) are
 * printed. The clock starts before the first request; ingest is events over the time to the last
 * 202, processed is events over the time until every pipeline's committed position in PostgreSQL
 * (`sluice_pipelines.position`) reaches the last stream sequence of its subject. In the embedded
 * runtime a request is processed before its 202, so both are the same (its sinks, though, are fed
 * from its outbox afterwards, where the cluster runtime writes the postgres sink's rows in the
 * owner's transaction). There is no warm-up: the numbers include each server's first requests.
 * Latency is per 202, from the request's start. RSS (VmRSS) of the sluice processes is sampled from
 * /proc every 200 ms while a mode is measured; with 2 instances the peak is of their sum.
 *
 * Prints a markdown table on stdout, progress on stderr. The exit code is non-zero only when a
 * process crashes or a mode fails.
 *
 * A second table shows what the instances' number must not change (issue 15, watermarks per ingest
 * path): `late` dead letters and the large payments rows in PostgreSQL, each mode beside the
 * embedded run on the same load.
 *
 * Usage: npm run bench:cluster -- [--events N] [--concurrency N] [--instances 1,2,3]
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import postgres from 'postgres';
import { Agent, request } from 'undici';
import { subjectOf } from '../dist/cluster/log.js';
import { clusterPayments, dropStream, pgUrlIn } from '../test/cluster-helpers.ts';
import { BIN as SLUICE_BIN, ROOT, workloadInput } from '../test/helpers.ts';
import { sha256Hex } from '../test/serve-helpers.ts';
import { NATS_URL, PG_URL } from '../test/services.ts';
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
  waitQuiet,
} from './measure.ts';

const TENANTS = ['t1', 't2'];
const PIPELINE = 'payments';
const BATCH = 100;
const keyOf = (tenant: string): string => `sk_bench_cluster_${tenant}_7d3a9c51`;
/** How long the cluster modes wait for every pipeline to have its owner before posting. */
const OWNERSHIP_WAIT_MS = 15_000;

const { values: flags } = parseArgs({
  options: {
    events: { type: 'string', default: '200000' },
    concurrency: { type: 'string', default: '16' },
    // Each request with an Idempotency-Key: costs a key lookup per request on the owner.
    'idempotency-keys': { type: 'boolean', default: false },
    /** Cluster modes to run, by number of instances. */
    instances: { type: 'string', default: '1,2,3' },
  },
});
const INSTANCES = flags.instances.split(',').map(Number);
const KEYED = flags['idempotency-keys'];
const EVENTS = Number(flags.events);
const CONCURRENCY = Number(flags.concurrency);
if (
  !Number.isInteger(EVENTS) ||
  EVENTS < 1 ||
  !Number.isInteger(CONCURRENCY) ||
  CONCURRENCY < 1 ||
  !INSTANCES.every((n) => Number.isInteger(n) && n >= 1 && n <= 4)
) {
  console.error(
    'usage: bench/cluster.ts [--events N] [--concurrency N] [--idempotency-keys] [--instances 1,2,3]',
  );
  process.exit(2);
}

// ---- measuring processes from /proc

/** Samples the RSS of a mode's processes every 200 ms: each one's peak and the peak of their sum. */
class RssSampler {
  readonly peaks: number[];
  peakSumMiB = 0;
  readonly #timer: NodeJS.Timeout;

  constructor(readonly pids: number[]) {
    this.peaks = pids.map(() => 0);
    this.#sample();
    this.#timer = setInterval(() => this.#sample(), 200);
  }

  #sample(): void {
    let sum = 0;
    for (const [i, pid] of this.pids.entries()) {
      const v = rssMiB(pid) ?? 0;
      this.peaks[i] = Math.max(this.peaks[i]!, v);
      sum += v;
    }
    this.peakSumMiB = Math.max(this.peakSumMiB, sum);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#sample();
  }
}

const SERVICE_COMMANDS = new Set(['nats-server', 'postgres']);

/** The machine's nats-server and postgres processes, by pid: the services the cluster runtime works with. */
function servicePids(): number[] {
  try {
    return readdirSync('/proc')
      .filter((d) => /^\d+$/.test(d))
      .filter((d) => {
        try {
          return SERVICE_COMMANDS.has(readFileSync(`/proc/${d}/comm`, 'utf8').trim());
        } catch {
          return false;
        }
      })
      .map(Number);
  } catch {
    return [];
  }
}
/**
 * CPU shares over a measured period: the sluice processes, the local NATS and PostgreSQL (their
 * work is part of the cluster runtime's; a PostgreSQL connection that ends within the period is
 * missed), this load generator, and everything else.
 */
class CpuWindow {
  readonly #wall = performance.now();
  readonly #busy = busyCpuS();
  readonly #servers: (number | undefined)[];
  readonly #services = new Map(servicePids().map((pid) => [pid, processCpuS(pid)]));
  readonly #load = process.cpuUsage();

  constructor(readonly pids: number[]) {
    this.#servers = pids.map(processCpuS);
  }

  /** Percent of one core for each server, the services and the load; others as percent of the machine. */
  end(): { serverPct: number[]; servicesPct: number; loadPct: number; othersPct: number } {
    const wallS = (performance.now() - this.#wall) / 1000;
    const servers = this.pids.map((pid, i) => (processCpuS(pid) ?? NaN) - (this.#servers[i] ?? NaN));
    let services = servicePids().reduce(
      (sum, pid) => sum + Math.max(0, (processCpuS(pid) ?? 0) - (this.#services.get(pid) ?? 0)),
      0,
    );
    if (this.#services.size === 0) services = NaN;
    const used = process.cpuUsage(this.#load);
    const load = (used.user + used.system) / 1e6;
    const busy = (busyCpuS() ?? NaN) - (this.#busy ?? NaN);
    const ours = servers.reduce((a, b) => a + b, 0) + (services || 0) + load;
    return {
      serverPct: servers.map((s) => (s / wallS) * 100),
      servicesPct: (services / wallS) * 100,
      loadPct: (load / wallS) * 100,
      othersPct: (Math.max(0, busy - ours) / (wallS * availableParallelism())) * 100,
    };
  }
}

// ---- cleaning up, also on failure and on Ctrl-C

const children = new Set<ChildProcess>();
/** Set on Ctrl-C: the servers are killed then, which is no crash to report. */
let interrupted = false;
const cleanups = new Set<() => Promise<void>>();

process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.once(signal, () => {
    interrupted = true;
    log(`${signal}: stopping the servers and dropping this run's schemas and streams`);
    for (const c of children) c.kill('SIGKILL');
    void Promise.race([Promise.allSettled([...cleanups].map((c) => c())), sleep(5000)]).then(() =>
      process.exit(130),
    );
  });

/** Runs `work`, and `cleanup` after it (or on Ctrl-C meanwhile). */
async function withCleanup<T>(cleanup: () => Promise<void>, work: () => Promise<T>): Promise<T> {
  cleanups.add(cleanup);
  try {
    return await work();
  } finally {
    cleanups.delete(cleanup);
    await cleanup();
  }
}

// ---- PostgreSQL schemas, JetStream streams, configs

const runId = `${process.pid}_${Date.now().toString(36)}`;

async function createSchema(schema: string): Promise<void> {
  const sql = postgres(PG_URL, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`CREATE SCHEMA ${schema}`);
  } finally {
    await sql.end();
  }
}

async function dropSchema(schema: string): Promise<void> {
  const sql = postgres(PG_URL, { max: 1, onnotice: () => {} });
  try {
    await sql.unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await sql.end();
  }
}

/** How many rows each tenant's large payments table holds: the same work done in every mode. */
async function largeRows(schema: string): Promise<string[]> {
  const sql = postgres(PG_URL, { max: 1, onnotice: () => {}, connection: { search_path: schema } });
  try {
    const counts: string[] = [];
    for (const t of TENANTS) {
      const [row] = await sql
        .unsafe<{ n: string }[]>(`SELECT count(*) AS n FROM large_payments_${t}`)
        .catch((err: Error) => [{ n: err.message }]);
      counts.push(row?.n ?? '?');
    }
    return counts;
  } finally {
    await sql.end();
  }
}

interface Mode {
  name: string;
  instances: number;
  cluster: boolean;
}

interface Place {
  dir: string;
  schema: string;
  stream: string;
}

/**
 * A tenant's pipeline file: payments with its large payments in a postgres sink, in a table of the
 * tenant's own (two pipelines creating one table at once in a fresh schema race in PostgreSQL's
 * catalogue, and tenants do not share tables). The cluster runtime writes the sink into
 * runtime.postgres; the embedded one needs its url.
 */
function pipelineFile(place: Place, cluster: boolean, tenant: string): string {
  const file = clusterPayments(join(place.dir, tenant));
  const yaml = readFileSync(file, 'utf8');
  const edited = yaml.replace(
    /^( {4}type: postgres\n)( {4}input: large\n {4}table: large_payments)\n/m,
    `$1${cluster ? '' : `    url: ${JSON.stringify(pgUrlIn(place.schema))}\n`}$2_${tenant}\n`,
  );
  if (edited === yaml) throw new Error(`no postgres sink for large payments in ${file}`);
  writeFileSync(file, edited);
  return file;
}

/** A service config for one instance of `mode`; returns its path. */
function writeConfig(place: Place, mode: Mode, instance: string, pipelines: Record<string, string>): string {
  const where = mode.cluster
    ? {
        runtime: {
          type: 'cluster',
          instance,
          nats: { url: NATS_URL, stream: place.stream },
          postgres: { url: pgUrlIn(place.schema) },
        },
      }
    : { store: { path: join(place.dir, 'store', 'sluice.db') } };
  const config = {
    ...where,
    listen: { host: '127.0.0.1', port: 0 },
    tenants: Object.fromEntries(
      TENANTS.map((t) => [
        t,
        { api_keys: [{ sha256: sha256Hex(keyOf(t)) }], pipelines: { [PIPELINE]: pipelines[t]! } },
      ]),
    ),
  };
  const file = join(place.dir, `${instance}.json`);
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

// ---- servers

interface Instance {
  name: string;
  url: string;
  pid: number;
  /** Times the instance logged that it took a pipeline, and that it handed one over. */
  claims: number;
  handovers: number;
  /** Its warning and error log lines (pino level 40 and above), the first few kept. */
  warnings: number;
  firstWarnings: string[];
  /** Stops the server; resolves with its exit status and how long it took. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
  /** The server's last output lines, for a crash report. */
  tail(): string;
}

async function startSluice(name: string, config: string): Promise<Instance> {
  const proc = spawn(process.execPath, [SLUICE_BIN, 'serve', config, '--log-level', 'info'], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  const lines: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    proc.on('exit', (code, signal) => {
      children.delete(proc);
      r({ code, signal });
    }),
  );
  const instance: Instance = {
    name,
    url: '',
    pid: proc.pid!,
    claims: 0,
    handovers: 0,
    warnings: 0,
    firstWarnings: [],
    tail: () => lines.join('\n'),
    stop: async () => {
      const started = performance.now();
      proc.kill('SIGTERM');
      const killer = setTimeout(() => proc.kill('SIGKILL'), 20_000);
      const r = await exited;
      clearTimeout(killer);
      return { ...r, ms: performance.now() - started };
    },
  };
  const onLine = (l: string): void => {
    lines.push(l);
    if (lines.length > 20) lines.shift();
    if (l.includes('"msg":"owning the pipeline"')) instance.claims++;
    else if (l.includes('"msg":"pipeline handed over')) instance.handovers++;
    // The cluster runtime warns once at start that Redis is not set: expected here.
    if (/"level":(4|5|6)0/.test(l) && !l.includes('runtime.redis is not set')) {
      if (++instance.warnings <= 3) {
        instance.firstWarnings.push(/"msg":"([^"]*)"/.exec(l)?.[1] ?? l.slice(0, 200));
        log(`[${name}] ${l.slice(0, 1000)}`);
      }
    }
  };
  createInterface({ input: proc.stdout }).on('line', onLine);
  createInterface({ input: proc.stderr }).on('line', onLine);
  instance.url = await new Promise<string>((done, fail) => {
    const onData = (d: Buffer): void => {
      const m = /"url":"(http:\/\/[^"]+)".*"msg":"listening"/.exec(d.toString('utf8'));
      if (m) {
        proc.stdout.off('data', onData);
        done(m[1]!);
      }
    };
    proc.stdout.on('data', onData);
    void exited.then(({ code, signal }) =>
      fail(new Error(`sluice serve (${name}) exited (${code ?? signal}):\n${instance.tail()}`)),
    );
  });
  return instance;
}

/** What each instance owns, from its GET /readyz. */
async function ownership(instances: Instance[]): Promise<Map<string, string[]>> {
  const owns = new Map<string, string[]>();
  for (const i of instances) {
    const res = await request(`${i.url}/readyz`);
    const body = (await res.body.json()) as { owns?: string[] };
    owns.set(i.name, [...(body.owns ?? [])].sort());
  }
  return owns;
}

/**
 * What the instances counted, from their /metrics, summed over them: events by fate, dead letters
 * by reason. Concurrent requests reorder events, which moves some between accepted, duplicate and
 * late: this shows how much.
 */
async function counted(instances: Instance[]): Promise<Map<string, number>> {
  const sums = new Map<string, number>();
  for (const i of instances) {
    const text = await (await request(`${i.url}/metrics`)).body.text();
    for (const m of text.matchAll(/^sluice_events_(\w+)_total\{([^}]*)\} (\S+)$/gm)) {
      const reason = /reason="([^"]+)"/.exec(m[2]!)?.[1];
      const key = reason ? `${m[1]} ${reason}` : m[1]!;
      sums.set(key, (sums.get(key) ?? 0) + Number(m[3]));
    }
  }
  return sums;
}

const describeOwnership = (owns: Map<string, string[]>): string =>
  [...owns].map(([name, keys]) => `${name} owns ${keys.length ? keys.join(', ') : 'nothing'}`).join('; ');

/**
 * Waits until every pipeline has exactly one owner and, with several instances, the pipelines are
 * spread evenly (what the cluster runtime is meant to do on its own); at most OWNERSHIP_WAIT_MS.
 */
async function settledOwnership(
  instances: Instance[],
  pipelines: string[],
): Promise<{ owns: Map<string, string[]>; settled: boolean; ms: number }> {
  const started = performance.now();
  const fair = Math.floor(pipelines.length / instances.length);
  for (;;) {
    const owns = await ownership(instances);
    const all = [...owns.values()].flat();
    const settled =
      pipelines.every((p) => all.filter((o) => o === p).length === 1) &&
      [...owns.values()].every(
        (o) => o.length >= fair && o.length <= Math.ceil(pipelines.length / instances.length),
      );
    const ms = performance.now() - started;
    if (settled || ms > OWNERSHIP_WAIT_MS) return { owns, settled, ms };
    await sleep(250);
  }
}

// ---- the load

interface LoadResult {
  /** From the first request to the last 202. */
  ingestMs: number;
  /** Latencies of the 202s, ms, sorted. */
  latencies: Float64Array;
  /** Answers by status (or client error), retried ones included. */
  statuses: Record<string, number>;
}

/** The workload's lines as 100-event NDJSON bodies. */
function bodiesOf(file: string, count: number): Buffer[] {
  const lines = readFileSync(file, 'utf8').split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const bodies: Buffer[] = [];
  for (let at = 0; at < Math.min(count, lines.length); at += BATCH)
    bodies.push(Buffer.from(lines.slice(at, Math.min(at + BATCH, count)).join('\n') + '\n'));
  return bodies;
}

/**
 * Posts every body for every tenant, CONCURRENCY requests in flight per tenant, each request to the
 * next instance in turn. A request answered with something else than 202 (a 503 or 429 under load)
 * is sent again after its Retry-After, so that every event gets in.
 */
async function post(instances: Instance[], bodies: Buffer[]): Promise<LoadResult> {
  const agent = new Agent({ connections: CONCURRENCY * TENANTS.length, keepAliveTimeout: 30_000 });
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  let turn = 0;
  const send = async (tenant: string, body: Buffer, b: number): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      const target = instances[turn++ % instances.length]!;
      const started = performance.now();
      let status: string;
      let retryAfterS = 0.1;
      try {
        const res = await request(`${target.url}/v1/pipelines/${PIPELINE}/events`, {
          method: 'POST',
          headers: {
            authorization: `Bearer ${keyOf(tenant)}`,
            'content-type': 'application/x-ndjson',
            ...(KEYED ? { 'idempotency-key': `bench-${b}` } : {}),
          },
          body,
          dispatcher: agent,
        });
        await res.body.dump();
        status = String(res.statusCode);
        retryAfterS = Number(res.headers['retry-after'] ?? retryAfterS) || retryAfterS;
      } catch (err) {
        status = (err as { code?: string }).code ?? 'client error';
      }
      statuses[status] = (statuses[status] ?? 0) + 1;
      if (status === '202') {
        latencies.push(performance.now() - started);
        return;
      }
      if (attempt >= 20)
        throw new Error(`${tenant}: a body got no 202 in ${attempt} attempts (last: ${status})`);
      await sleep(Math.min(retryAfterS, 2) * 1000);
    }
  };
  // Open the pool's connections to every instance before the clock starts, as a producer's pool
  // is open in steady state: Node accepts one new connection per event-loop turn, so connections
  // opened mid-load to a busy owner instance reached it seconds late, behind bodies sent after them
  // on open connections, and their events counted as late (measured, docs/benchmarks.md).
  await Promise.all(
    instances.flatMap((i) =>
      Array.from({ length: CONCURRENCY * TENANTS.length }, async () => {
        const res = await request(`${i.url}/healthz`, { dispatcher: agent });
        await res.body.dump();
      }),
    ),
  );
  const started = performance.now();
  try {
    await Promise.all(
      TENANTS.flatMap((tenant) => {
        let next = 0;
        return Array.from({ length: CONCURRENCY }, async () => {
          for (let b = next++; b < bodies.length; b = next++) await send(tenant, bodies[b]!, b);
        });
      }),
    );
  } finally {
    await agent.close();
  }
  return {
    ingestMs: performance.now() - started,
    latencies: Float64Array.from(latencies).sort(),
    statuses,
  };
}

/**
 * Waits until every pipeline's committed position reaches the last stream sequence of its subject
 * (read now, after the last 202). A subject without messages left was purged by a checkpoint, which
 * is committed after the position it covers: that pipeline has caught up already.
 */
async function caughtUp(place: Place, timeoutMs: number): Promise<{ positions: Record<string, number> }> {
  const nc = await connect({ servers: NATS_URL, timeout: 2000 });
  const targets = new Map<string, number>();
  try {
    const jsm = await jetstreamManager(nc);
    for (const t of TENANTS) {
      const last = await jsm.streams.getMessage(place.stream, {
        last_by_subj: subjectOf(place.stream, t, PIPELINE),
      });
      targets.set(`${t}/${PIPELINE}`, last?.seq ?? 0);
    }
  } finally {
    await nc.close();
  }
  const sql = postgres(PG_URL, { max: 1, onnotice: () => {}, connection: { search_path: place.schema } });
  const deadline = performance.now() + timeoutMs;
  try {
    for (;;) {
      const rows = await sql<{ pipeline: string; position: string }[]>`
        SELECT pipeline, position FROM sluice_pipelines`;
      const positions = Object.fromEntries(rows.map((r) => [r.pipeline, Number(r.position)]));
      if ([...targets].every(([p, seq]) => (positions[p] ?? -1) >= seq)) return { positions };
      if (performance.now() > deadline)
        throw new Error(
          `not caught up after ${timeoutMs / 1000} s: positions ${JSON.stringify(positions)}, stream ${JSON.stringify(Object.fromEntries(targets))}`,
        );
      await sleep(25);
    }
  } finally {
    await sql.end();
  }
}

// ---- one mode

interface Row {
  mode: Mode;
  events: number;
  ingestPerS: number;
  processedPerS: number;
  p50: number;
  p99: number;
  rssPeakMiB: number;
  rssPeaks: number[];
  notes: string[];
  failed?: string;
  /** `late` dead letters, summed over the instances' /metrics. */
  late?: number;
  /** Large payments rows in PostgreSQL after the stop, per tenant. */
  large?: string[];
}

let crashed = false;

async function runMode(mode: Mode, bodies: Buffer[], events: number): Promise<Row> {
  const label = mode.cluster ? `c${mode.instances}` : 'emb';
  const place: Place = {
    dir: mkdtempSync(join(tmpdir(), `sluice-bench-cluster-${label}-`)),
    schema: `sluice_bench_${label}_${runId}`,
    stream: `BENCH_${label}_${runId}`.toUpperCase(),
  };
  const instances: Instance[] = [];
  const row: Row = {
    mode,
    events,
    ingestPerS: NaN,
    processedPerS: NaN,
    p50: NaN,
    p99: NaN,
    rssPeakMiB: NaN,
    rssPeaks: [],
    notes: [],
  };
  const cleanup = async (): Promise<void> => {
    for (const i of instances.splice(0)) {
      const stopped = await i.stop();
      row.notes.push(`${i.name} stopped in ${(stopped.ms / 1000).toFixed(1)} s`);
      if (i.warnings > 0)
        row.notes.push(
          `${i.name} logged ${i.warnings} warnings or errors (${i.firstWarnings.map((w) => JSON.stringify(w)).join(', ')})`,
        );
      if (stopped.code !== 0 && !interrupted) {
        crashed = true;
        row.notes.push(`${i.name} exited with ${stopped.code ?? stopped.signal}`);
        log(
          `[${mode.name}] ${i.name} exited with ${stopped.code ?? stopped.signal} after SIGTERM:\n${i.tail()}`,
        );
      }
    }
    if (!interrupted) row.large = await largeRows(place.schema);
    await dropSchema(place.schema).catch((err: Error) => log(`[${mode.name}] DROP SCHEMA: ${err.message}`));
    if (mode.cluster)
      await dropStream(place.stream).catch((err: Error) => log(`[${mode.name}] drop stream: ${err.message}`));
    rmSync(place.dir, { recursive: true, force: true });
  };
  await withCleanup(cleanup, async () => {
    await createSchema(place.schema);
    const pipelines = Object.fromEntries(TENANTS.map((t) => [t, pipelineFile(place, mode.cluster, t)]));
    const names = mode.cluster ? ['a', 'b', 'c', 'd'].slice(0, mode.instances) : ['embedded'];
    // One after the other: each migrates the schema at start.
    for (const name of names)
      instances.push(await startSluice(name, writeConfig(place, mode, name, pipelines)));
    const keys = TENANTS.map((t) => `${t}/${PIPELINE}`);
    let ownedAtStart: Map<string, string[]> | undefined;
    if (mode.cluster) {
      const o = await settledOwnership(instances, keys);
      ownedAtStart = o.owns;
      const said = `${describeOwnership(o.owns)} (after ${(o.ms / 1000).toFixed(1)} s)`;
      log(`[${mode.name}] ${o.settled ? '' : 'NOT SETTLED: '}${said}`);
      row.notes.push(`at the start ${said}${o.settled ? '' : ', **not spread as expected**'}`);
    }
    await waitQuiet(mode.name, 0.15, 30);
    log(`[${mode.name}] posting ${events.toLocaleString('en-US')} events`);
    const pids = instances.map((i) => i.pid);
    const rss = new RssSampler(pids);
    const cpu = new CpuWindow(pids);
    const started = performance.now();
    let load: LoadResult;
    let processedMs: number;
    try {
      load = await post(instances, bodies);
      if (mode.cluster) {
        const { positions } = await caughtUp(place, Math.max(60_000, 5 * load.ingestMs));
        processedMs = performance.now() - started;
        log(`[${mode.name}] caught up: ${JSON.stringify(positions)}`);
      } else processedMs = load.ingestMs;
    } finally {
      rss.stop();
    }
    const shares = cpu.end();
    row.ingestPerS = events / (load.ingestMs / 1000);
    row.processedPerS = events / (processedMs / 1000);
    row.p50 = percentile(load.latencies, 0.5);
    row.p99 = percentile(load.latencies, 0.99);
    row.rssPeakMiB = rss.peakSumMiB;
    row.rssPeaks = rss.peaks;
    const others = Object.entries(load.statuses).filter(([s]) => s !== '202');
    row.notes.push(
      `ingest ${(load.ingestMs / 1000).toFixed(1)} s, processed ${(processedMs / 1000).toFixed(1)} s`,
      `answers: ${others.length ? others.map(([s, n]) => `${int(n)}× ${s} (sent again)`).join(', ') : 'all 202'}`,
      `CPU: ${instances.map((i, n) => `${i.name} ${pct(shares.serverPct[n]!)}`).join(', ')} of one core; local nats-server + postgres ${pct(shares.servicesPct)} of one core; load generator ${pct(shares.loadPct)}; others ${pct(shares.othersPct)} of the machine`,
    );
    const sums = await counted(instances).catch((err: Error) => err);
    if (sums instanceof Error) row.notes.push(`events counted: ${sums.message}`);
    else {
      row.late = sums.get('dead late') ?? 0;
      row.notes.push(`events counted: ${[...sums].map(([k, n]) => `${k} ${int(n)}`).join(', ')}`);
    }
    if (mode.cluster) {
      const after = await ownership(instances);
      const moved = JSON.stringify([...after]) !== JSON.stringify([...ownedAtStart!]);
      row.notes.push(
        `at the end ${describeOwnership(after)}${moved ? ' (**ownership moved during the run**)' : ''}`,
        `ownership log lines: ${instances.map((i) => `${i.name} took ${i.claims}, handed over ${i.handovers}`).join('; ')}`,
      );
    }
    log(
      `[${mode.name}] ingest ${int(row.ingestPerS)} events/s, processed ${int(row.processedPerS)} events/s, p50 ${ms(row.p50)} ms, p99 ${ms(row.p99)} ms, peak RSS ${int(row.rssPeakMiB)} MiB`,
    );
  }).catch((err: Error) => {
    crashed = true;
    row.failed = err.message.split('\n', 1)[0]!;
    log(`[${mode.name}] failed: ${err.stack ?? err.message}`);
  });
  return row;
}

// ---- formatting

/**
 * What one process gives on one tenant's input read in order (`sluice run` of the payments example):
 * the late count and large payments that no number of instances should change.
 */
function sequentialReference(file: string): { late: number; large: number } {
  const out = mkdtempSync(join(tmpdir(), 'sluice-bench-cluster-ref-'));
  try {
    const r = spawnSync(
      process.execPath,
      [SLUICE_BIN, 'run', join(ROOT, 'examples', 'payments', 'pipeline.yaml'), '--input', file, '--out', out],
      { encoding: 'utf8' },
    );
    if (r.status !== 0) throw new Error(`sluice run for the reference: ${r.stderr}`);
    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as {
      late: number;
      large: number;
    };
    return { late: summary.late, large: summary.large };
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

// ---- the run

const started = performance.now();
const loadBefore = loadavg()[0]!;
const input = workloadInput(EVENTS);
const reference = sequentialReference(input);
const bodies = bodiesOf(input, EVENTS);
const perTenant = bodies.reduce((n, b) => n + b.toString('utf8').split('\n').length - 1, 0);
const events = perTenant * TENANTS.length;
log(
  `bodies: ${int(bodies.length)} of ${BATCH} events per tenant (${int(perTenant)} events), ${TENANTS.length} tenants`,
);

const modes: Mode[] = [
  { name: 'embedded', instances: 1, cluster: false },
  ...INSTANCES.map((instances) => ({ name: 'cluster', instances, cluster: true })),
];
const rows: Row[] = [];
for (const mode of modes) rows.push(await runMode(mode, bodies, events));

const elapsedS = (performance.now() - started) / 1000;
const loadAfter = loadavg()[0]!;

// ---- report
const out: string[] = [];
out.push(
  `sluice serve, payments pipeline with its large payments in a postgres sink (a table per tenant), two tenants (${TENANTS.join(', ')}) with one such pipeline each; embedded: SQLite store in ${tmpdir()}; cluster: NATS JetStream at ${NATS_URL}, PostgreSQL at ${PG_URL.replace(/\/\/[^@/]*@/, '//')}. Servers, services and load generator on the same ${availableParallelism()} cores.`,
  `Machine: ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown CPU'}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}; ${new Date().toISOString().slice(0, 10)}; commit ${gitCommit(ROOT)}; 1-min load average ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after.`,
  `Load: the seed-1 workload, ${int(perTenant)} events per tenant in ${BATCH}-event NDJSON bodies${KEYED ? ', each with an Idempotency-Key' : ''}, ${CONCURRENCY} requests in flight per tenant, each request to the next instance in turn; no warm-up. Ingest: events over the time to the last 202; processed: until every pipeline's committed position reaches the end of its subject (embedded: the same as ingest; its sinks are fed afterwards from its outbox, every 200 ms, and not at shutdown, so its large payments rows are those delivered by the stop). Latency per 202. Peak RSS: of the sum of the mode's sluice processes (each one's peak in the notes).`,
  '',
  row([
    'mode',
    'instances',
    'events',
    'ingest events/s',
    'processed events/s',
    'p50 ms',
    'p99 ms',
    'peak RSS MiB',
  ]),
  '|---|--:|--:|--:|--:|--:|--:|--:|',
);
for (const r of rows)
  out.push(
    row([
      r.mode.name,
      String(r.mode.instances),
      int(r.events),
      r.failed ? 'failed' : int(r.ingestPerS),
      r.failed ? 'failed' : int(r.processedPerS),
      ms(r.p50),
      ms(r.p99),
      int(r.rssPeakMiB),
    ]),
  );
out.push(
  '',
  `What the number of instances must not change (docs/architecture.md, watermarks per ingest path): \`late\` dead letters and large payments rows in PostgreSQL, against the sequential reference (\`sluice run\` of each tenant's input in order: ${int(reference.late)} late and ${int(reference.large)} large payments per tenant) and the embedded run on the same load.`,
  '',
  row([
    'mode',
    'instances',
    'late',
    'late vs reference',
    'late vs embedded',
    ...TENANTS.map((t) => `large rows ${t}`),
    'large rows vs reference',
  ]),
  `|---|--:|--:|--:|--:|${TENANTS.map(() => '--:|').join('')}--:|`,
  row([
    'sequential reference',
    '—',
    int(reference.late * TENANTS.length),
    '0',
    '',
    ...TENANTS.map(() => int(reference.large)),
    '0',
  ]),
);
const signed = (n: number): string => (n > 0 ? `+${int(n)}` : n < 0 ? `−${int(-n)}` : '0');
for (const r of rows) {
  const base = rows[0]!;
  const lateVs = (than: number | undefined): string =>
    r.late !== undefined && than !== undefined ? signed(r.late - than) : '?';
  const largeVs = r.large
    ? signed(r.large.reduce((n, x) => n + Number(x), 0) - reference.large * TENANTS.length)
    : '?';
  out.push(
    row([
      r.mode.name,
      String(r.mode.instances),
      r.late === undefined ? '?' : int(r.late),
      lateVs(reference.late * TENANTS.length),
      lateVs(base.late),
      ...TENANTS.map((_, i) => (r.large?.[i] === undefined ? '?' : int(Number(r.large[i])))),
      largeVs,
    ]),
  );
}
out.push('');
const embedded = rows[0]!;
for (const r of rows) {
  const vs =
    r !== embedded && Number.isFinite(r.processedPerS / embedded.processedPerS)
      ? `processed ${(r.processedPerS / embedded.processedPerS).toFixed(2)}× embedded; `
      : '';
  const peaks = r.rssPeaks.length > 1 ? `peak RSS per instance ${r.rssPeaks.map(int).join(' + ')} MiB; ` : '';
  out.push(
    `- ${r.mode.name}, ${r.mode.instances} instance${r.mode.instances > 1 ? 's' : ''}: ${r.failed ? `**failed**: ${r.failed}; ` : ''}${vs}${peaks}${r.notes.join('; ')}.`,
  );
}
out.push('', `Benchmark took ${(elapsedS / 60).toFixed(1)} min.`);
process.stdout.write(out.join('\n') + '\n');
process.exitCode = crashed ? 1 : 0;
