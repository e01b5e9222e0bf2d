/**
 * Helpers for tests of `sluice serve`: a real server process on 127.0.0.1 with a real SQLite
 * store in a temporary directory, a config written for it, and undici-free HTTP via fetch.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { BIN, PAYMENTS, ROOT } from './helpers.ts';

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
}

export interface DeadLine {
  line: number;
  reason: string;
  detail?: string;
}

/** The workload's dead letters, by input line, from the 202 answers of `batches`. */
export function deadFromAnswers(batches: Batch[], answers: Answer[]): DeadLine[] {
  return answers.flatMap((a, b) =>
    a.rejected.map((x) => ({ line: batches[b]!.first + x.index + 1, reason: x.reason, detail: x.detail })),
  );
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
