/**
 * Slow-client benchmark of `sluice serve` (issue 13): clients that declare large bodies and trickle
 * them, against a tenant that sends normal requests meanwhile. One server process on 127.0.0.1 runs
 * the payments pipeline (examples/payments/pipeline.yaml) for two tenants, `flood` and `light`, each
 * with its own key, with the default limits (in-flight budgets, the 30 s body deadline) and its
 * SQLite store in a temporary directory. Phases, on that server:
 *
 * 1. light alone: tenant light sends single events open loop at --light-rate req/s for --baseline
 *    seconds (after a --warmup at the same rate): its unloaded latency;
 * 2. slow clients: --connections connections without a key and as many with tenant flood's key each
 *    send the headers of a POST declaring `Content-Length: --declared` (1 MiB) and then 1 byte every
 *    --trickle seconds, for --duration seconds (long enough for the body deadline to show), while
 *    tenant light sends as in 1.
 *
 * Light's requests are timed from their scheduled start (open loop, so a stall is charged to every
 * request it delayed); the trickling connections record when and how they were answered and when
 * the server closed them. The server's RSS, open file descriptors and in-flight gauges
 * (sluice_in_flight_requests, sluice_in_flight_bytes) are sampled every second.
 *
 * Prints a markdown table on stdout, progress on stderr. Verdicts are information, never enforced:
 * the exit code is non-zero only when a process crashes.
 *
 * Usage: npm run bench:slow-client -- [--duration S] [--connections N] [--trickle S] [--declared BYTES]
 *          [--light-rate REQ_PER_S] [--baseline S] [--warmup S]
 */
import { readdirSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Pool } from 'undici';
import { sampleInput } from '../test/helpers.ts';
import { BodySequence, loadTemplates } from './http-events.ts';
import { PIPELINE, startTwoTenants } from './two-tenants.ts';
import { gitCommit, int, log, ms, percentile, row, rssMiB, waitQuiet } from './measure.ts';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
const EVENTS_PATH = `/v1/pipelines/${PIPELINE}/events`;
const SAMPLE_EVENTS = 100_000;
const KEYS = { flood: 'sk_bench_slow_flood_9c2e5a7f1b3d', light: 'sk_bench_slow_light_4e8b0d6a2c9f' };
/** The body deadline of docs/http-api.md ("Rate limits and backpressure"). */
const BODY_DEADLINE_S = 30;
/** An answer within this long of the headers counts as "at once". */
const AT_ONCE_MS = 1000;

const { values: flags } = parseArgs({
  options: {
    duration: { type: 'string', default: '45' },
    connections: { type: 'string', default: '64' },
    trickle: { type: 'string', default: '2' },
    declared: { type: 'string', default: String(1024 * 1024) },
    'light-rate': { type: 'string', default: '50' },
    baseline: { type: 'string', default: '15' },
    warmup: { type: 'string', default: '3' },
  },
});
const DURATION_S = Number(flags.duration);
const CONNECTIONS = Number(flags.connections);
const TRICKLE_S = Number(flags.trickle);
const DECLARED = Number(flags.declared);
const LIGHT_RATE = Number(flags['light-rate']);
const BASELINE_S = Number(flags.baseline);
const WARMUP_S = Number(flags.warmup);
if (
  ![DURATION_S, TRICKLE_S, LIGHT_RATE, BASELINE_S].every((x) => Number.isFinite(x) && x > 0) ||
  !(WARMUP_S >= 0) ||
  !Number.isInteger(CONNECTIONS) ||
  CONNECTIONS < 1 ||
  !Number.isInteger(DECLARED) ||
  DECLARED < 1
) {
  console.error(
    'usage: bench/slow-client.ts [--duration S] [--connections N] [--trickle S] [--declared BYTES] [--light-rate REQ_PER_S] [--baseline S] [--warmup S]',
  );
  process.exit(2);
}

// ---- the server

async function metricsText(url: string): Promise<string> {
  return (await fetch(`${url}/metrics`)).text();
}

const gauge = (text: string, name: string): number =>
  Number(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);

function openFds(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return NaN;
  }
}

// ---- tenant light: single events on a fixed schedule

interface LightResult {
  sent: number;
  statuses: Record<string, number>;
  unanswered: number;
  /** 202s: latency from the scheduled start, ms. */
  p50: number;
  p99: number;
  max: number;
  accepted: number;
  /** Per second of the schedule: the 202s' latencies. */
  bySecond: number[][];
}

/** Sends single events at `rate` for `warmupS + seconds`, measuring the last `seconds`. */
async function lightLoad(
  pool: Pool,
  bodies: BodySequence,
  rate: number,
  warmupS: number,
  seconds: number,
): Promise<LightResult> {
  const headers = { authorization: `Bearer ${KEYS.light}`, 'content-type': 'application/json' };
  const t0 = performance.now() + 20;
  const measureStart = t0 + warmupS * 1000;
  const gap = 1000 / rate;
  const total = Math.round((warmupS + seconds) * rate);
  const latency: number[] = [];
  const scheduledS: number[] = [];
  const status: (number | string | undefined)[] = [];
  let outstanding = 0;
  let stopped = false;
  let drained: (() => void) | undefined;
  const send = (scheduled: number): void => {
    const i = scheduled >= measureStart ? latency.length : -1;
    if (i >= 0) {
      latency.push(NaN);
      scheduledS.push((scheduled - measureStart) / 1000);
      status.push(undefined);
    }
    outstanding++;
    pool
      .request({ path: EVENTS_PATH, method: 'POST', headers, body: bodies.next() })
      .then(
        async (res) => {
          if (i >= 0 && !stopped) {
            latency[i] = performance.now() - scheduled;
            status[i] = res.statusCode;
          }
          await res.body.dump().catch(() => undefined);
        },
        (err: Error & { code?: string }) => {
          if (i >= 0 && !stopped) status[i] = err.code ?? err.message;
        },
      )
      .finally(() => {
        outstanding--;
        if (outstanding === 0) drained?.();
      });
  };
  let k = 0;
  await new Promise<void>((done) => {
    const tick = (): void => {
      for (const now = performance.now(); k < total && t0 + k * gap <= now; k++) send(t0 + k * gap);
      if (k >= total) done();
      else setTimeout(tick, Math.max(0, t0 + k * gap - performance.now()));
    };
    setTimeout(tick, Math.max(0, t0 - performance.now()));
  });
  if (outstanding > 0)
    await Promise.race([
      new Promise<void>((done) => (drained = done)),
      new Promise<void>((done) => setTimeout(done, 10_000)),
    ]);
  stopped = true;
  const statuses: Record<string, number> = {};
  const accepted: number[] = [];
  const bySecond: number[][] = [];
  let unanswered = 0;
  for (let i = 0; i < latency.length; i++) {
    const s = status[i];
    if (s === undefined) unanswered++;
    else statuses[s] = (statuses[s] ?? 0) + 1;
    if (s === 202) {
      accepted.push(latency[i]!);
      (bySecond[Math.floor(scheduledS[i]!)] ??= []).push(latency[i]!);
    }
  }
  const sorted = Float64Array.from(accepted).sort();
  return {
    sent: latency.length,
    statuses,
    unanswered,
    accepted: accepted.length,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    max: percentile(sorted, 1),
    bySecond,
  };
}

// ---- the slow clients

type Group = 'no key' | 'tenant flood';

interface Trickler {
  group: Group;
  socket: Socket;
  /** When its headers were written (performance.now() ms); NaN until connected. */
  sentAt: number;
  bytes: number;
  head: string;
  status?: number;
  retryAfter?: boolean;
  connectionClose?: boolean;
  /** ms after the headers. */
  answeredAfter?: number;
  closedAfter?: number;
  /** How the connection ended: the server closed it, an error, or still open at the end. */
  closedBy?: string;
}

function openTrickler(group: Group, port: number, key: string | undefined): Trickler {
  const socket = connect({ host: '127.0.0.1', port });
  const t: Trickler = { group, socket, sentAt: NaN, bytes: 0, head: '' };
  const closed = (how: string): void => {
    if (t.closedBy !== undefined) return;
    t.closedBy = how;
    t.closedAfter = performance.now() - t.sentAt;
  };
  socket.setNoDelay(true);
  socket.on('connect', () => {
    socket.write(
      `POST ${EVENTS_PATH} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
        (key ? `Authorization: Bearer ${key}\r\n` : '') +
        `Content-Type: application/x-ndjson\r\nContent-Length: ${DECLARED}\r\n\r\n`,
    );
    t.sentAt = performance.now();
  });
  socket.on('data', (d: Buffer) => {
    if (t.status !== undefined || t.head.length > 16_384) return;
    if (t.answeredAfter === undefined) t.answeredAfter = performance.now() - t.sentAt;
    t.head += d.toString('latin1');
    const end = t.head.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = t.head.slice(0, end);
    t.status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? NaN);
    t.retryAfter = /\r\nretry-after:/i.test(head);
    t.connectionClose = /\r\nconnection: *close/i.test(head);
  });
  socket.on('end', () => closed('server'));
  socket.on('error', (err: Error & { code?: string }) => closed(`error ${err.code ?? err.message}`));
  socket.on('close', () => closed('server'));
  return t;
}

// ---- the run

const started = performance.now();
const loadBefore = loadavg()[0]!;
const templates = sampleInput(SAMPLE_EVENTS);
const singles = new BodySequence(loadTemplates(templates, 'single'));
const server = await startTwoTenants('sluice-bench-slow-client-', KEYS);
const port = Number(new URL(server.url).port);
log(`sluice serve at ${server.url} (pid ${server.pid})`);
const pool = new Pool(new URL(server.url).origin, {
  connections: 64,
  pipelining: 1,
  headersTimeout: 60_000,
  bodyTimeout: 60_000,
});
let crashed = false;
let baseline: LightResult | undefined;
let attacked: LightResult | undefined;
const tricklers: Trickler[] = [];
const samples: { atS: number; requests: number; bytes: number; fds: number; rss: number }[] = [];
const rejected: Record<string, number> = {};
/** The server before the slow clients came. */
const before = { fds: NaN, rssMiB: NaN };
try {
  // 1. Tenant light alone.
  await waitQuiet('light alone', 0.15, 20);
  baseline = await lightLoad(pool, singles, LIGHT_RATE, WARMUP_S, BASELINE_S);
  log(
    `[light alone] ${JSON.stringify(baseline.statuses)}, p50 ${ms(baseline.p50)} ms, p99 ${ms(baseline.p99)} ms`,
  );
  before.fds = openFds(server.pid);
  before.rssMiB = rssMiB(server.pid) ?? NaN;

  // 2. Slow clients, and tenant light meanwhile.
  await waitQuiet('slow clients', 0.15, 20);
  for (let i = 0; i < CONNECTIONS; i++) {
    tricklers.push(openTrickler('no key', port, undefined));
    tricklers.push(openTrickler('tenant flood', port, KEYS.flood));
  }
  const attackStart = performance.now();
  const trickle = setInterval(() => {
    for (const t of tricklers)
      if (t.closedBy === undefined && !Number.isNaN(t.sentAt) && t.bytes < DECLARED) {
        t.socket.write('x');
        t.bytes++;
      }
  }, TRICKLE_S * 1000);
  let sampling = false;
  const sampler = setInterval(() => {
    if (sampling) return;
    sampling = true;
    const atS = (performance.now() - attackStart) / 1000;
    metricsText(server.url)
      .then(
        (text) =>
          samples.push({
            atS,
            requests: gauge(text, 'sluice_in_flight_requests'),
            bytes: gauge(text, 'sluice_in_flight_bytes'),
            fds: openFds(server.pid),
            rss: rssMiB(server.pid) ?? NaN,
          }),
        () => undefined,
      )
      .finally(() => (sampling = false));
  }, 1000);
  attacked = await lightLoad(pool, singles, LIGHT_RATE, 0, DURATION_S);
  const left = DURATION_S * 1000 - (performance.now() - attackStart);
  if (left > 0) await new Promise((done) => setTimeout(done, left));
  clearInterval(trickle);
  clearInterval(sampler);
  log(
    `[light with slow clients] ${JSON.stringify(attacked.statuses)}, p50 ${ms(attacked.p50)} ms, p99 ${ms(attacked.p99)} ms`,
  );
  for (const t of tricklers) {
    if (t.closedBy === undefined) {
      t.closedBy = 'still open';
      t.closedAfter = undefined;
    }
    t.socket.destroy();
  }
  const text = await metricsText(server.url);
  for (const m of text.matchAll(/^sluice_http_rejected_total\{([^}]*)\} (\S+)$/gm)) {
    const tenant = /tenant="([^"]*)"/.exec(m[1]!)?.[1] ?? '';
    const code = /code="([^"]*)"/.exec(m[1]!)?.[1] ?? '';
    rejected[`${tenant || '(no tenant)'} ${code}`] = Number(m[2]);
  }
} finally {
  for (const t of tricklers) t.socket.destroy();
  await pool.destroy().catch(() => undefined);
  const stopped = await server.stop();
  if (stopped.code !== 0) {
    crashed = true;
    log(`sluice serve exited with ${stopped.code ?? stopped.signal} after SIGTERM:\n${server.tail()}`);
  }
  log(`server stopped in ${(stopped.ms / 1000).toFixed(1)} s`);
}
const loadAfter = loadavg()[0]!;

// ---- report
const out: string[] = [];
out.push(
  `sluice serve, payments pipeline for two tenants (flood, light), default limits (in_flight_bytes 64 MiB, half of it at most per tenant, the ${BODY_DEADLINE_S} s body deadline), store in ${tmpdir()}; server and clients on the same ${availableParallelism()} cores.`,
  `Node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'}, ${Math.round(totalmem() / 2 ** 30)} GiB; commit ${gitCommit(ROOT)}; 1-min load average ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after.`,
  `Slow clients: ${CONNECTIONS} connections without a key and ${CONNECTIONS} with tenant flood's key, each declaring Content-Length ${int(DECLARED)} and sending 1 byte every ${TRICKLE_S} s for ${DURATION_S} s. Tenant light: single events at ${int(LIGHT_RATE)} req/s, open loop, latency from the scheduled start.`,
  '',
  '| tenant light | sent | 202 | other | errors / unanswered | p50 ms | p99 ms | max ms | p99 vs alone |',
  '|---|--:|--:|---|--:|--:|--:|--:|--:|',
);
const lightRow = (name: string, r: LightResult | undefined): string => {
  if (!r) return row([name, 'not run', '', '', '', '', '', '', '']);
  const other = Object.entries(r.statuses)
    .filter(([s]) => /^\d+$/.test(s) && s !== '202')
    .map(([s, n]) => `${int(n)}× ${s}`);
  const errors = Object.entries(r.statuses)
    .filter(([s]) => !/^\d+$/.test(s))
    .reduce((n, [, x]) => n + x, 0);
  return row([
    name,
    int(r.sent),
    int(r.accepted),
    other.length ? other.join(', ') : 'none',
    `${int(errors)} / ${int(r.unanswered)}`,
    ms(r.p50),
    ms(r.p99),
    ms(r.max),
    baseline && r !== baseline ? `${(r.p99 / baseline.p99).toFixed(2)}×` : '',
  ]);
};
out.push(
  lightRow(`alone, ${BASELINE_S} s`, baseline),
  lightRow(`with the slow clients, ${DURATION_S} s`, attacked),
);

const seconds = (x: number | undefined): string => (x === undefined ? 'n/a' : (x / 1000).toFixed(2));
out.push(
  '',
  'The slow clients, by how they were answered (times in s after their headers were sent):',
  '',
  '| client | connections | answer | Retry-After | connection: close | answered after (min / median / max) | then closed by the server | closed after (min / median / max) | bytes of body sent (max) |',
  '|---|--:|---|--:|--:|--:|---|--:|--:|',
);
for (const group of ['no key', 'tenant flood'] as const) {
  const mine = tricklers.filter((t) => t.group === group);
  const byAnswer = new Map<string, Trickler[]>();
  for (const t of mine) {
    const k = t.status !== undefined ? String(t.status) : 'no answer';
    byAnswer.set(k, [...(byAnswer.get(k) ?? []), t]);
  }
  for (const [answer, ts] of [...byAnswer.entries()].sort()) {
    const spread = (xs: (number | undefined)[]): string => {
      const v = Float64Array.from(xs.filter((x): x is number => x !== undefined)).sort();
      return v.length
        ? `${seconds(v[0])} / ${seconds(percentile(v, 0.5))} / ${seconds(v[v.length - 1])}`
        : 'n/a';
    };
    const how = new Map<string, number>();
    for (const t of ts) how.set(t.closedBy ?? 'still open', (how.get(t.closedBy ?? 'still open') ?? 0) + 1);
    out.push(
      row([
        group,
        int(ts.length),
        answer,
        int(ts.filter((t) => t.retryAfter).length),
        int(ts.filter((t) => t.connectionClose).length),
        spread(ts.map((t) => t.answeredAfter)),
        [...how.entries()].map(([h, n]) => `${int(n)}× ${h}`).join(', '),
        spread(ts.map((t) => (t.closedBy === 'still open' ? undefined : t.closedAfter))),
        int(Math.max(...ts.map((t) => t.bytes))),
      ]),
    );
  }
}

out.push(
  '',
  `The server while the slow clients were connected (before them: ${int(before.fds)} open fds, RSS ${int(before.rssMiB)} MiB):`,
  '',
  '| at s | in-flight requests | in-flight MiB | open fds | RSS MiB | light 202 p99 ms in the last 5 s |',
  '|--:|--:|--:|--:|--:|--:|',
);
for (let at = 5; at <= DURATION_S + 1e-9; at += 5) {
  const s = samples.filter((x) => x.atS <= at).at(-1);
  if (!s) continue;
  const lat = Float64Array.from((attacked?.bySecond ?? []).slice(at - 5, at).flat()).sort();
  out.push(
    row([
      String(at),
      int(s.requests),
      (s.bytes / 2 ** 20).toFixed(1),
      int(s.fds),
      int(s.rss),
      ms(percentile(lat, 0.99)),
    ]),
  );
}
out.push(
  '',
  `Refusals the server counted (sluice_http_rejected_total, tenant and code): ${
    Object.entries(rejected)
      .map(([k, n]) => `${k} ${int(n)}`)
      .join(', ') || 'none'
  }.`,
);

// What docs/http-api.md says should happen, against what did. A verdict is information, never an exit code.
const verdict = (ok: boolean | undefined): string =>
  ok === undefined ? 'not measured' : ok ? 'holds' : '**misses**';
const targets: [string, string, boolean | undefined][] = [];
if (baseline && attacked)
  targets.push([
    'tenant light: every request 202, p99 ≤ 2× its p99 alone',
    `${int(attacked.accepted)} of ${int(attacked.sent)} 202; p99 ${ms(attacked.p99)} ms vs ${ms(baseline.p99)} ms alone (${(attacked.p99 / baseline.p99).toFixed(2)}×)`,
    attacked.accepted === attacked.sent && attacked.p99 <= 2 * baseline.p99,
  ]);
const keyless = tricklers.filter((t) => t.group === 'no key');
const keyed = tricklers.filter((t) => t.group === 'tenant flood');
if (keyless.length) {
  const atOnce = keyless.filter((t) => t.status === 401 && (t.answeredAfter ?? Infinity) <= AT_ONCE_MS);
  targets.push([
    `no key: 401 before the body is read (within ${AT_ONCE_MS / 1000} s)`,
    `${int(atOnce.length)} of ${int(keyless.length)}`,
    atOnce.length === keyless.length,
  ]);
}
if (keyed.length) {
  const refused = keyed.filter((t) => t.status === 503 && (t.answeredAfter ?? Infinity) <= AT_ONCE_MS);
  const timedOut = keyed.filter(
    (t) =>
      t.status === 408 &&
      t.answeredAfter !== undefined &&
      Math.abs(t.answeredAfter / 1000 - BODY_DEADLINE_S) <= 2 &&
      t.closedBy !== 'still open',
  );
  const unanswered = keyed.filter((t) => t.status === undefined);
  targets.push([
    `tenant flood: 503 with Retry-After at once beyond its share of in_flight_bytes, else 408 and the connection closed at ~${BODY_DEADLINE_S} s`,
    `${int(refused.length)} 503 at once (${int(refused.filter((t) => t.retryAfter).length)} with Retry-After), ${int(timedOut.length)} 408 at ${BODY_DEADLINE_S} ± 2 s and closed, ${int(unanswered.length)} without an answer, ${int(keyed.length - refused.length - timedOut.length - unanswered.length)} otherwise`,
    DURATION_S > BODY_DEADLINE_S + 2
      ? refused.length + timedOut.length === keyed.length && refused.every((t) => t.retryAfter)
      : undefined,
  ]);
}
out.push('', '| expected | measured | verdict |', '|---|---|---|');
for (const [what, measured, ok] of targets) out.push(row([what, measured, verdict(ok)]));
out.push('', `Benchmark took ${((performance.now() - started) / 60_000).toFixed(1)} min.`);
process.stdout.write(out.join('\n') + '\n');
process.exitCode = crashed ? 1 : 0;
