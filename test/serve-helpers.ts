/**
 * Helpers for tests of `sluice serve`: a real server process on 127.0.0.1 with a real SQLite
 * store in a temporary directory, a config written for it, and undici-free HTTP via fetch.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
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
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** GETs a JSON resource of the API with a key. */
export async function getJson(server: { url: string }, path: string, key?: string): Promise<Posted> {
  const res = await fetch(`${server.url}${path}`, { headers: key ? { authorization: `Bearer ${key}` } : {} });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

/** Every window row of a pipeline, following cursors. */
export async function allWindows(
  server: { url: string },
  pipeline: string,
  key: string,
): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  let cursor: string | null = null;
  do {
    const q: string = cursor ? `&cursor=${cursor}` : '';
    const page = await getJson(server, `/v1/pipelines/${pipeline}/windows?limit=10000${q}`, key);
    if (page.status !== 200) throw new Error(`windows: ${page.status} ${JSON.stringify(page.body)}`);
    const body = page.body as { items: Record<string, unknown>[]; next_cursor: string | null };
    rows.push(...body.items);
    cursor = body.next_cursor;
  } while (cursor);
  return rows;
}
