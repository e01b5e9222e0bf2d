/**
 * Helpers for tests of `sluice serve`: a real server process on 127.0.0.1 with a real SQLite
 * store in a temporary directory, a config written for it, and undici-free HTTP via fetch.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import Database from 'better-sqlite3';
import { assertSameResults, BIN, PAYMENTS, ROOT } from './helpers.ts';

export const sha256Hex = (key: string): string => createHash('sha256').update(key).digest('hex');

export interface TenantSpec {
  keys: string[];
  /** Pipeline name → pipeline file (default: the payments example). */
  pipelines?: Record<string, string>;
  limits?: { events_per_second?: number; bytes_per_second?: number; burst?: string };
}

/** Writes a service config into `dir` (store and outputs inside it); returns its path. */
export function writeServiceConfig(
  dir: string,
  tenants: Record<string, TenantSpec>,
  extra: Record<string, unknown> = {},
): string {
  const config = {
    listen: { host: '127.0.0.1', port: 0 },
    store: { path: join(dir, 'store', 'sluice.db') },
    ...extra,
    tenants: Object.fromEntries(
      Object.entries(tenants).map(([id, t]) => [
        id,
        {
          api_keys: t.keys.map((k) => ({ sha256: sha256Hex(k) })),
          ...(t.limits ? { limits: t.limits } : {}),
          pipelines: t.pipelines ?? { payments: PAYMENTS },
        },
      ]),
    ),
  };
  const file = join(dir, 'sluice.json');
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

export interface Server {
  url: string;
  proc: ChildProcess;
  /** Everything the process wrote so far (JSON log lines on stdout, warnings on stderr). */
  output(): string;
  /** Resolves with the exit code (or signal) once the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGTERM, then waits for the exit. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL, then waits for the exit. */
  kill(): Promise<void>;
}

/** SIGKILLs each server given that is still running: after() hooks clean up what a failed test left. */
export async function killRunning(servers: Iterable<Server | undefined>): Promise<void> {
  for (const s of servers) if (s && s.proc.exitCode === null && s.proc.signalCode === null) await s.kill();
}

/**
 * Starts `sluice serve <config>` on a free port (port 0 unless the config says otherwise) and
 * waits until it logs that it is listening.
 */
export function startServer(
  config: string,
  options: { env?: NodeJS.ProcessEnv; args?: string[] } = {},
): Promise<Server> {
  return new Promise((resolveStart, rejectStart) => {
    const proc = spawn(
      process.execPath,
      [BIN, 'serve', config, '--log-level', 'info', ...(options.args ?? [])],
      {
        cwd: ROOT,
        env: { ...process.env, ...options.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    let started = false;
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
      proc.on('exit', (code, signal) => r({ code, signal })),
    );
    const onData = (d: Buffer): void => {
      out += d.toString('utf8');
      if (started) return;
      const m = /"url":"(http:\/\/[^"]+)".*"msg":"listening"/.exec(out);
      if (m) {
        started = true;
        resolveStart({
          url: m[1]!,
          proc,
          output: () => out,
          exited,
          stop: async () => {
            proc.kill('SIGTERM');
            return exited;
          },
          kill: async () => {
            proc.kill('SIGKILL');
            await exited;
          },
        });
      }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    void exited.then(({ code, signal }) => {
      if (!started)
        rejectStart(new Error(`sluice serve exited (${code ?? signal}) before listening:\n${out}`));
    });
  });
}

/**
 * A valid payments event (payment.captured, DE → EU, EUR 12.50 at 2026-11-21T10:00:00Z; the README's
 * example), with `patch` over it.
 */
export function paymentEvent(patch: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: 'evt_01HZX3K4M5N6P7Q8R9S0T1V2W3',
    type: 'payment.captured',
    ts: '2026-11-21T10:00:00Z',
    user: { id: 'usr_000042', country: 'de' },
    amount: '12.50',
    currency: 'EUR',
    ...patch,
  };
}

export interface Posted {
  status: number;
  headers: Headers;
  body: unknown;
}

/** POSTs events; `body` goes as is (string or bytes). */
export async function postEvents(
  server: { url: string },
  pipeline: string,
  key: string | undefined,
  body: string | Uint8Array,
  headers: Record<string, string> = { 'content-type': 'application/x-ndjson' },
): Promise<Posted> {
  const res = await fetch(`${server.url}/v1/pipelines/${pipeline}/events`, {
    method: 'POST',
    headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers },
    body,
  });
  return answerOf(res);
}

/** GETs a JSON resource of the API with a key. */
export async function getJson(server: { url: string }, path: string, key?: string): Promise<Posted> {
  return answerOf(
    await fetch(`${server.url}${path}`, { headers: key ? { authorization: `Bearer ${key}` } : {} }),
  );
}

/** POSTs a JSON body (a string goes as is) to a path of the API with a key. */
export async function postJson(
  server: { url: string },
  path: string,
  key: string,
  body: unknown,
): Promise<Posted> {
  const res = await fetch(`${server.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return answerOf(res);
}

/** A response with its body parsed as JSON when it is JSON, else as text. */
async function answerOf(res: Response): Promise<Posted> {
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** Every item of a paged collection (windows, dead letters), in pages of `limit`, following cursors. */
async function allPages<T>(server: { url: string }, path: string, key: string, limit: number): Promise<T[]> {
  const items: T[] = [];
  let cursor: string | null = null;
  do {
    const q: string = cursor ? `&cursor=${cursor}` : '';
    const page = await getJson(server, `${path}?limit=${limit}${q}`, key);
    if (page.status !== 200) throw new Error(`${path}: ${page.status} ${JSON.stringify(page.body)}`);
    const body = page.body as { items: T[]; next_cursor: string | null };
    if (body.items.length > limit)
      throw new Error(`${path}: a page of ${body.items.length} items above limit=${limit}`);
    items.push(...body.items);
    cursor = body.next_cursor;
  } while (cursor);
  return items;
}

/** Every window row of a pipeline. */
export function allWindows(
  server: { url: string },
  pipeline: string,
  key: string,
  limit = 10_000,
): Promise<Record<string, unknown>[]> {
  return allPages(server, `/v1/pipelines/${pipeline}/windows`, key, limit);
}

export interface Letter {
  id: number;
  request_id: string | null;
  index: number;
  reason: string;
}

/** Every dead letter of a pipeline, oldest first. */
export function allDeadLetters(
  server: { url: string },
  pipeline: string,
  key: string,
  limit = 1000,
): Promise<Letter[]> {
  return allPages(server, `/v1/pipelines/${pipeline}/dead-letters`, key, limit);
}

/** Waits until the server's log holds `count` lines matching `pattern`; fails on `refusal`. */
export async function waitForLog(
  server: Server,
  pattern: RegExp,
  count: number,
  refusal?: RegExp,
): Promise<string[]> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const lines = server.output().split('\n');
    const found = lines.filter((l) => pattern.test(l));
    if (found.length >= count) return found;
    if (refusal && lines.some((l) => refusal.test(l)))
      assert.fail(
        `the server logged ${refusal} while we waited for ${pattern}:\n${server.output().slice(-3000)}`,
      );
    if (Date.now() > deadline)
      assert.fail(
        `timed out waiting for ${count} log lines matching ${pattern}:\n${server.output().slice(-3000)}`,
      );
    await sleep(20);
  }
}

/** The lines of an NDJSON file, without their newline. */
export function readLines(file: string): Buffer[] {
  const buf = readFileSync(file);
  const lines: Buffer[] = [];
  let from = 0;
  for (let nl = buf.indexOf(10); nl >= 0; nl = buf.indexOf(10, from)) {
    lines.push(buf.subarray(from, nl));
    from = nl + 1;
  }
  if (from < buf.length) lines.push(buf.subarray(from));
  return lines;
}

export interface Batch {
  /** 0-based index of the batch's first input line. */
  first: number;
  count: number;
  kind: string;
  body: Buffer;
  headers: Record<string, string>;
}

/**
 * Cuts workload lines into consecutive batches of every body type the API takes: NDJSON (LF or
 * CRLF, with or without the last line end, which an empty last line always keeps), JSON arrays,
 * single JSON objects, some gzip. A JSON array can only hold lines that are JSON, so an array
 * batch stops before the next line that is not; a line that is not JSON but starts like an object
 * sometimes goes alone as a JSON body.
 */
export function planBatches(lines: Buffer[], random: () => number): Batch[] {
  const isJson = lines.map((l) => {
    try {
      JSON.parse(l.toString('utf8'));
      return true;
    } catch {
      return false;
    }
  });
  const batches: Batch[] = [];
  const nl = Buffer.from('\n');
  const crlf = Buffer.from('\r\n');
  let at = 0;
  while (at < lines.length) {
    let count = Math.min(
      lines.length - at,
      random() < 0.25 ? 1 + Math.floor(random() * 10) : 1 + Math.floor(random() * 500),
    );
    const gzip = random() < 0.4;
    let kind: string;
    let body: Buffer;
    let type: string;
    const pick = random();
    if (pick < 0.45 || (!isJson[at] && lines[at]![0] !== 0x7b)) {
      const crlfEnds = random() < 0.2;
      const end = crlfEnds ? crlf : nl;
      const parts: Buffer[] = [];
      for (let i = at; i < at + count; i++) parts.push(lines[i]!, end);
      // Without its line end, an empty last line would be no record at all.
      if (!crlfEnds && random() < 0.5 && lines[at + count - 1]!.length > 0) parts.pop();
      body = Buffer.concat(parts);
      kind = crlfEnds ? 'ndjson-crlf' : 'ndjson';
      type = random() < 0.5 ? 'application/x-ndjson' : 'application/ndjson';
    } else if (!isJson[at]) {
      count = 1;
      body = lines[at]!;
      kind = 'json-object';
      type = 'application/json';
    } else {
      let n = 0;
      while (n < count && isJson[at + n]) n++;
      count = n;
      const parts: Buffer[] = [Buffer.from('[')];
      for (let i = at; i < at + count; i++)
        parts.push(lines[i]!, Buffer.from(i + 1 < at + count ? ',\n' : ']'));
      body = Buffer.concat(parts);
      kind = 'json-array';
      type = random() < 0.5 ? 'application/json' : 'application/json; charset=utf-8';
      if (count === 1 && lines[at]![0] === 0x7b && random() < 0.5) {
        body = lines[at]!;
        kind = 'json-object';
      }
    }
    const headers: Record<string, string> = { 'content-type': type };
    if (gzip) {
      body = gzipSync(body);
      headers['content-encoding'] = 'gzip';
      kind += '+gzip';
    }
    batches.push({ first: at, count, kind, body, headers });
    at += count;
  }
  return batches;
}

export interface Answer {
  accepted: number;
  duplicates: number;
  rejected: { index: number; reason: string; detail: string; pointer?: string }[];
  /** Past 100 rejections, the rest counted (docs/http-api.md). */
  rejected_omitted?: { count: number; records: number; reasons: Record<string, number> };
}

/** Records an answer rejected, listed or counted. */
export const rejectedRecords = (a: Answer): number => a.rejected.length + (a.rejected_omitted?.records ?? 0);

export interface DeadLine {
  line: number;
  reason: string;
  detail?: string;
}

/** The workload's dead letters, by input line, from the 202 answers of `batches`. */
export function deadFromAnswers(batches: Batch[], answers: Answer[]): DeadLine[] {
  return answers.flatMap((a, b) => {
    // Only a listed rejection says which line failed: every one must be listed here.
    if (a.rejected_omitted) throw new Error(`batch ${b}: ${a.rejected_omitted.count} rejections not listed`);
    return a.rejected.map((x) => ({
      line: batches[b]!.first + x.index + 1,
      reason: x.reason,
      detail: x.detail,
    }));
  });
}

/** The same from the dead-letter store, through each letter's request id. */
export function deadFromLetters(
  batches: Batch[],
  letters: Letter[],
  requestId: (b: number) => string,
): DeadLine[] {
  const firstLine = new Map(batches.map((batch, b) => [requestId(b), batch.first]));
  return letters.map((l) => {
    const first = firstLine.get(l.request_id ?? '');
    assert.ok(first !== undefined, `dead letter ${l.id} has request_id ${l.request_id}`);
    return { line: first + l.index + 1, reason: l.reason };
  });
}

/**
 * Writes a workload result directory in the comparison format (windows from the API, dead letters
 * as given, large from the sink file, the summary from the answers); returns it, to compare with a
 * `sluice run` of the same input ({@link assertSameResults}) or with expected results.
 */
export function workloadResults(
  out: string,
  r: {
    batches: Batch[];
    answers: Answer[];
    windows: Record<string, unknown>[];
    dead: DeadLine[];
    largeSink: string;
  },
): string {
  const count = (reason: string): number => r.dead.filter((d) => d.reason === reason).length;
  const summary = {
    lines: r.batches.reduce((n, b) => n + b.count, 0),
    accepted: r.answers.reduce((n, a) => n + a.accepted, 0),
    invalid: count('parse') + count('invalid'),
    duplicates: r.answers.reduce((n, a) => n + a.duplicates, 0),
    late: count('late'),
    large: readFileSync(r.largeSink, 'utf8')
      .split('\n')
      .filter((l) => l !== '').length,
  };
  return writeResults(out, {
    windows: r.windows,
    dead: r.dead,
    large: readFileSync(r.largeSink, 'utf8'),
    summary,
  });
}

/**
 * Writes a result directory in the comparison format (window rows without `closed`, dead letters
 * by line, large payments as NDJSON text, the summary); returns it.
 */
export function writeResults(
  out: string,
  r: { windows: Record<string, unknown>[]; dead: DeadLine[]; large: string; summary: object },
): string {
  mkdirSync(out, { recursive: true });
  writeFileSync(
    join(out, 'windows.ndjson'),
    r.windows.map(({ closed: _closed, ...row }) => JSON.stringify(row) + '\n').join(''),
  );
  const sorted = [...r.dead].sort((x, y) => x.line - y.line);
  writeFileSync(join(out, 'dead.ndjson'), sorted.map((d) => JSON.stringify(d) + '\n').join(''));
  writeFileSync(join(out, 'large.ndjson'), r.large);
  writeFileSync(join(out, 'summary.json'), JSON.stringify(r.summary, null, 2) + '\n');
  return out;
}

const LF = Buffer.from('\n');

/**
 * One request per workload line, as a client that sends single events would post them: a line
 * that is a JSON object, or starts like one, as `application/json`; any other line (an empty one,
 * a JSON array) as a one-line NDJSON body, since as JSON it would be no record, or several.
 */
export function singleEventRequests(lines: Buffer[]): Batch[] {
  return lines.map((line, at) =>
    line[0] === 0x7b
      ? {
          first: at,
          count: 1,
          kind: 'json-object',
          body: line,
          headers: { 'content-type': 'application/json' },
        }
      : {
          first: at,
          count: 1,
          kind: 'ndjson',
          body: Buffer.concat([line, LF]),
          headers: { 'content-type': 'application/x-ndjson' },
        },
  );
}

/** Consecutive NDJSON batches of 1 to `max` lines, every line with its LF. */
export function ndjsonBatches(lines: Buffer[], random: () => number, max = 500): Batch[] {
  const batches: Batch[] = [];
  for (let at = 0; at < lines.length;) {
    const count = Math.min(lines.length - at, 1 + Math.floor(random() * max));
    batches.push({
      first: at,
      count,
      kind: 'ndjson',
      body: Buffer.concat(lines.slice(at, at + count).flatMap((l) => [l, LF])),
      headers: { 'content-type': 'application/x-ndjson' },
    });
    at += count;
  }
  return batches;
}

/** A client of a kill run: posts its batches to its pipeline in order, each once it has a 202. */
export interface Producer {
  /** Its part of request ids (`<name>-<batch>`) and Idempotency-Keys. */
  name: string;
  pipeline: string;
  batches: Batch[];
  /** Its tenant and the tenant's API key, when not the run's. */
  tenant?: string;
  key?: string;
}

/** The request id of a producer's batch `b` (for {@link deadFromLetters}). */
export const producerRequestId =
  (name: string) =>
  (b: number): string =>
    `${name}-${b}`;

/** The Idempotency-Key of a producer's batch `b` in a kill run (`run` is {@link KillOptions.run}). */
export const producerIdempotencyKey = (run: string, name: string, b: number): string => `${run}-${name}-${b}`;

export interface KillOptions {
  /** How many servers run at once; `start(slot)` starts the one in a slot, and starts it again after a kill. */
  slots: number;
  start(slot: number): Promise<Server>;
  key: string;
  producers: Producer[];
  /** Kills to make, each when the producers have done a seeded random share of their work. */
  kills: number;
  random: () => number;
  /** Part of every Idempotency-Key: unique per run, so that no key is answered from an earlier run. */
  run: string;
  /** The slot to kill (the owner, in a cluster); slot 0 by default. */
  victim?(servers: Server[]): Promise<number>;
  /** How long one batch may go without a 202 (ms; 60 s by default). */
  retryForMs?: number;
  /** Told of each kill once its slot is up again (a benchmark's progress line). */
  onKill?(kill: KillRun['kills'][number], n: number): void;
  /** Stops the load and the kills (a test's `t.signal`, aborted when it times out). */
  signal?: AbortSignal;
}

export interface KillRun {
  /** By producer, the body of each batch's 202, by batch. */
  answers: unknown[][];
  /** Every request sent: first attempts and retries. */
  requests: number;
  retries: number;
  /** 202 answers with `idempotent-replayed: true`. */
  replays: number;
  /** Attempts that got no 202, by cause: fetch's error code (ECONNREFUSED, UND_ERR_SOCKET...) or `HTTP <status>`. */
  failures: Map<string, number>;
  /**
   * Each kill: the slot, requests in flight, the producers' share of work done when it came, and
   * how long the slot was down (ms, from the kill until its new server listened).
   */
  kills: { slot: number; inFlight: number; progress: number; downMs: number }[];
  /** The servers running at the end, by slot. */
  servers: Server[];
  /** Output of the servers that exited without being killed. */
  exitedAlone: string[];
  wallMs: number;
}

/**
 * Producers post their batches at once, each batch with a stable Idempotency-Key and X-Request-Id,
 * retrying it on connection errors and 5xx (on the next slot that is up) until it gets a 202,
 * while a server is SIGKILLed `o.kills` times and started again in its slot. The kills are spread
 * over the load: kill k comes when the producers' mean share of events acknowledged passes a
 * seeded random point in the k-th of `o.kills` equal parts of 5% to 90%, after a seeded random
 * delay of up to 100 ms. The load never gets more than half a part past a kill that has not come
 * yet (the producers wait for it), so every kill comes while the load runs, even where another
 * slot takes the load while the victim restarts.
 */
export async function ingestUnderKills(o: KillOptions): Promise<KillRun> {
  const started = performance.now();
  const servers: Server[] = [];
  for (let slot = 0; slot < o.slots; slot++) servers.push(await o.start(slot));
  /** A slot being restarted: resolves with its new server, or rejects when it fails to start. */
  const restarting = new Map<number, Promise<Server>>();
  const acked = o.producers.map(() => 0);
  const totals = o.producers.map((p) => p.batches.reduce((n, b) => n + b.count, 0));
  const progress = (): number =>
    acked.reduce((sum, n, p) => sum + (totals[p] ? n / totals[p]! : 1), 0) / o.producers.length;
  const run: KillRun = {
    answers: o.producers.map(() => []),
    requests: 0,
    retries: 0,
    replays: 0,
    failures: new Map(),
    kills: [],
    servers,
    exitedAlone: [],
    wallMs: 0,
  };
  const fail = (cause: string): void => void run.failures.set(cause, (run.failures.get(cause) ?? 0) + 1);
  let inFlight = 0;
  let done = false;
  const finish = (): void => {
    done = true;
    for (const wake of waiting.splice(0)) wake();
  };
  const points = Array.from({ length: o.kills }, (_, k) => 0.05 + (0.85 * (k + o.random())) / o.kills);
  /** How far the load may run past a kill's point before the producers wait for that kill. */
  const slack = 0.85 / o.kills / 2;
  /** Producers waiting for the next kill. */
  const waiting: (() => void)[] = [];

  const target = async (n: number): Promise<Server> => {
    for (let i = 0; i < o.slots; i++) {
      const slot = (n + i) % o.slots;
      if (!restarting.has(slot)) return servers[slot]!;
    }
    return restarting.get(n % o.slots)!;
  };

  const produce = async (p: number): Promise<void> => {
    const producer = o.producers[p]!;
    const requestId = producerRequestId(producer.name);
    for (const [b, batch] of producer.batches.entries()) {
      while (!done && run.kills.length < points.length && progress() > points[run.kills.length]! + slack)
        await new Promise<void>((wake) => waiting.push(wake));
      const deadline = Date.now() + (o.retryForMs ?? 60_000);
      for (let attempt = 1; !done; attempt++) {
        const server = await target(b + attempt);
        run.requests++;
        if (attempt > 1) run.retries++;
        let res: Response | undefined;
        let text = '';
        inFlight++;
        try {
          res = await fetch(`${server.url}/v1/pipelines/${producer.pipeline}/events`, {
            method: 'POST',
            headers: {
              ...batch.headers,
              authorization: `Bearer ${producer.key ?? o.key}`,
              'idempotency-key': producerIdempotencyKey(o.run, producer.name, b),
              'x-request-id': requestId(b),
            },
            body: batch.body,
            // A request the server does not answer in this time is a hang, not a crash.
            signal: AbortSignal.timeout(30_000),
          });
          text = await res.text();
        } catch (err) {
          if ((err as Error).name === 'TimeoutError')
            throw new Error(`${producer.name} batch ${b} attempt ${attempt}: no answer in 30 s`, {
              cause: err,
            });
          res = undefined;
          fail((err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name);
        } finally {
          inFlight--;
        }
        if (res?.status === 202) {
          if (res.headers.get('idempotent-replayed') === 'true') {
            if (attempt === 1) throw new Error(`${producer.name} batch ${b}: a first attempt was a replay`);
            run.replays++;
          }
          run.answers[p]![b] = JSON.parse(text);
          acked[p]! += batch.count;
          break;
        }
        if (res && res.status < 500)
          throw new Error(`${producer.name} batch ${b} (${batch.kind}): ${res.status} ${text}`);
        if (res) fail(`HTTP ${res.status}`);
        if (Date.now() > deadline)
          throw new Error(`${producer.name} batch ${b}: no 202 in ${o.retryForMs ?? 60_000} ms`);
        await sleep(10);
      }
    }
  };

  const killLoop = async (): Promise<void> => {
    for (const point of points) {
      while (!done && progress() < point) await sleep(5);
      await sleep(o.random() * 100);
      if (done) return;
      const slot = o.victim ? await o.victim(servers) : 0;
      const victim = servers[slot]!;
      if (victim.proc.exitCode !== null || victim.proc.signalCode !== null)
        run.exitedAlone.push(victim.output().slice(-2000));
      let up!: (s: Server) => void;
      let broken!: (e: unknown) => void;
      const next = new Promise<Server>((resolve, reject) => ((up = resolve), (broken = reject)));
      next.catch(() => {});
      restarting.set(slot, next);
      const kill = { slot, inFlight, progress: progress(), downMs: 0 };
      const killedAt = performance.now();
      run.kills.push(kill);
      for (const wake of waiting.splice(0)) wake();
      await victim.kill();
      try {
        servers[slot] = await o.start(slot);
      } catch (err) {
        broken(err);
        throw err;
      }
      kill.downMs = performance.now() - killedAt;
      restarting.delete(slot);
      up(servers[slot]);
      o.onKill?.(kill, run.kills.length);
    }
  };

  o.signal?.addEventListener('abort', finish);
  const killer = killLoop().catch((err: unknown) => {
    finish();
    throw err;
  });
  killer.catch(() => {}); // awaited below, after the producers
  const producing = Promise.allSettled(
    o.producers.map((_, p) =>
      produce(p).catch((err: unknown) => {
        finish();
        throw err;
      }),
    ),
  ).finally(finish);
  const settled = [...(await producing), ...(await Promise.allSettled([killer]))];
  for (const s of servers)
    if (s.proc.exitCode !== null || s.proc.signalCode !== null) run.exitedAlone.push(s.output().slice(-2000));
  const failed = settled.find((s) => s.status === 'rejected');
  if (failed) throw failed.reason;
  o.signal?.throwIfAborted();
  run.wallMs = performance.now() - started;
  return run;
}

export interface ProducerResults {
  /** The result directory with the dead letters from the 202 answers, and the same from GET dead-letters. */
  fromAnswers: string;
  fromLetters: string;
  /** The answers the store keeps for the producer's pipeline (its `requests` table), by Idempotency-Key. */
  stored: Map<string, unknown>;
}

/**
 * What the embedded runtime holds at the end of a kill run, per producer, in the comparison format
 * (to compare with `sluice run` of its input): windows and dead letters from the API, then, once the
 * server has stopped (and delivered its sinks), large payments from the pipeline's `large` file
 * sink and the answers kept in the store. The server must be the one started on `config`'s store in `dir`.
 */
export async function killRunResults(r: {
  dir: string;
  server: Server;
  tenant: string;
  key: string;
  producers: Producer[];
  answers: unknown[][];
}): Promise<ProducerResults[]> {
  const { dir, server, tenant, key, producers, answers } = r;
  const fromApi: { windows: Record<string, unknown>[]; letters: Letter[] }[] = [];
  for (const p of producers)
    fromApi.push({
      windows: await allWindows(server, p.pipeline, p.key ?? key),
      letters: await allDeadLetters(server, p.pipeline, p.key ?? key),
    });
  const stopped = await server.stop();
  assert.deepEqual(stopped, { code: 0, signal: null }, server.output().slice(-3000));
  const db = new Database(join(dir, 'store', 'sluice.db'), { readonly: true });
  try {
    const storedOf = db.prepare('SELECT key, answer FROM requests WHERE pipeline = ?');
    return producers.map((p, i) => {
      const common = {
        batches: p.batches,
        answers: answers[i] as Answer[],
        windows: fromApi[i]!.windows,
        largeSink: join(dir, 'store', 'outputs', p.tenant ?? tenant, p.pipeline, 'large.ndjson'),
      };
      const rows = storedOf.all(`${p.tenant ?? tenant}/${p.pipeline}`) as { key: string; answer: string }[];
      return {
        fromAnswers: workloadResults(join(dir, 'actual', p.name, 'answers'), {
          ...common,
          dead: deadFromAnswers(p.batches, common.answers),
        }),
        fromLetters: workloadResults(join(dir, 'actual', p.name, 'letters'), {
          ...common,
          dead: deadFromLetters(p.batches, fromApi[i]!.letters, producerRequestId(p.name)),
        }),
        stored: new Map(rows.map((row) => [row.key, JSON.parse(row.answer) as unknown])),
      };
    });
  } finally {
    db.close();
  }
}

/** The events counted in a result directory's windows. */
function windowCount(resultDir: string): number {
  return readFileSync(join(resultDir, 'windows.ndjson'), 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .reduce((n, l) => n + (JSON.parse(l) as { count: number }).count, 0);
}

/**
 * After a kill run: for each producer, every answer accounts for every record of its batch, the
 * events accepted in the answers are the events in the windows, the results equal `sluice run` of
 * its input (`references`, by producer) with the dead letters from the answers and from the API,
 * and the store keeps exactly one answer per acknowledged request, the one the producer got.
 */
export function assertKillRunExact(
  producers: Producer[],
  answers: unknown[][],
  results: ProducerResults[],
  references: string[],
  run: string,
): void {
  for (const [i, p] of producers.entries()) {
    const mine = answers[i] as Answer[];
    for (const [b, batch] of p.batches.entries()) {
      const a = mine[b]!;
      assert.equal(a.accepted + a.duplicates + rejectedRecords(a), batch.count, `${p.name} batch ${b}`);
    }
    const accepted = mine.reduce((n, a) => n + a.accepted, 0);
    assert.equal(windowCount(results[i]!.fromAnswers), accepted, `${p.name}: events in the windows`);
    assertSameResults(
      references[i]!,
      results[i]!.fromAnswers,
      `${p.name}, with the dead letters from the answers`,
    );
    assertSameResults(
      references[i]!,
      results[i]!.fromLetters,
      `${p.name}, with the dead letters from the API`,
    );
    assert.deepEqual(
      results[i]!.stored,
      new Map(mine.map((a, b) => [producerIdempotencyKey(run, p.name, b), a])),
      `${p.name}: the answers in the store`,
    );
  }
}

/** The records of an NDJSON file a sink writes, once `ready` holds for them or `timeoutMs` passed. */
export async function sinkRecords<T = Record<string, unknown>>(
  file: string,
  ready: (records: T[]) => boolean = () => true,
  timeoutMs = 10_000,
): Promise<T[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const records = existsSync(file)
      ? readFileSync(file, 'utf8')
          .split('\n')
          .filter((l) => l !== '')
          .map((l) => JSON.parse(l) as T)
      : [];
    if (ready(records) || Date.now() > deadline) return records;
    await sleep(50);
  }
}
