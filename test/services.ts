/**
 * The local services the cluster tests use, by URL from the environment with the machine's
 * defaults. A test asks `reachable()` first: under CI=true a missing service fails the test, elsewhere
 * the test is skipped with a message saying what to start.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import postgres from 'postgres';

export const PG_URL = process.env.SLUICE_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
export const NATS_URL = process.env.SLUICE_NATS_URL ?? 'nats://127.0.0.1:4222';
export const REDIS_URL = process.env.SLUICE_REDIS_URL ?? 'redis://127.0.0.1:6379';

function portOpen(url: string, fallbackPort: number): Promise<boolean> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: u.hostname, port: Number(u.port || fallbackPort) });
    socket.setTimeout(1000);
    socket.once('connect', () => (socket.destroy(), resolve(true)));
    socket.once('timeout', () => (socket.destroy(), resolve(false)));
    socket.once('error', () => resolve(false));
  });
}

/**
 * True when `url` accepts connections. Otherwise: under CI a failure, elsewhere the test is skipped
 * (the caller returns at once).
 */
export async function reachable(t: TestContext, name: string, url: string, port: number): Promise<boolean> {
  if (await portOpen(url, port)) return true;
  const message = `${name} is not reachable at ${url}; start it (see .ci/run) or set its SLUICE_*_URL`;
  if (process.env.CI === 'true') throw new Error(message);
  t.skip(message);
  return false;
}

const LOCAL = {
  postgres: ['PostgreSQL', PG_URL, 5432],
  nats: ['NATS', NATS_URL, 4222],
  redis: ['Redis', REDIS_URL, 6379],
} as const;

/** {@link reachable} for each of the machine's services named, in turn. */
export async function haveServices(t: TestContext, ...names: (keyof typeof LOCAL)[]): Promise<boolean> {
  for (const name of names) {
    const [label, url, port] = LOCAL[name];
    if (!(await reachable(t, label, url, port))) return false;
  }
  return true;
}

/**
 * A fresh PostgreSQL schema for one test, so tests never see each other's tables; dropped by
 * `drop()`. `url` carries the schema as the connection's search_path.
 */
export async function freshSchema(
  label: string,
  url = PG_URL,
): Promise<{ schema: string; drop(): Promise<void> }> {
  const schema = `sluice_test_${label}_${process.pid}_${Date.now().toString(36)}`;
  const admin = postgres(url, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE SCHEMA ${schema}`);
  await admin.end();
  return {
    schema,
    async drop() {
      const sql = postgres(url, { max: 1, onnotice: () => {} });
      await sql.unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await sql.end();
    },
  };
}

/** A client whose tables resolve in `schema`. */
export function pgIn(schema: string, max = 2, url = PG_URL): postgres.Sql {
  return postgres(url, { max, onnotice: () => {}, connection: { search_path: schema } });
}

/** A port free on 127.0.0.1 right now, for a throwaway server of a fault test. */
export const freePort = (): Promise<number> =>
  new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });

/** Resolves once something listens on 127.0.0.1:`port` (a server a test just started). */
export async function untilListening(port: number, timeoutMs = 5000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await portOpen(`tcp://127.0.0.1:${port}`, port));) {
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Whether a server binary the fault tests start themselves (nats-server, redis-server) is installed:
 * under CI it must be, elsewhere the test is skipped.
 */
export function haveBinary(t: TestContext, command: string): boolean {
  if (spawnSync(command, ['--version']).status === 0) return true;
  const message = `${command} is not installed; this test starts its own`;
  if (process.env.CI === 'true') throw new Error(message);
  t.skip(message);
  return false;
}

/** Resolves once `SELECT 1` succeeds at `url` (a server a test just started). */
async function untilQueryable(url: string, timeoutMs = 15_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; ;) {
    const sql = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 2 });
    try {
      await sql`SELECT 1`;
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      await sql.end({ timeout: 1 });
    }
  }
}

/** A server a fault test owns: stopped and started at will, removed at the end. */
export interface Throwaway {
  url: string;
  stop(): Promise<void>;
  start(): Promise<void>;
  destroy(): Promise<void>;
}

/** nats-server with JetStream on a spare port, its store in a temporary directory. */
export async function throwawayNats(options: { maxPayload?: number } = {}): Promise<Throwaway> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'sluice-nats-'));
  const conf = join(dir, 'nats.conf');
  writeFileSync(conf, options.maxPayload ? `max_payload: ${options.maxPayload}\n` : '');
  let proc: ChildProcess | undefined;
  const server: Throwaway = {
    url: `nats://127.0.0.1:${port}`,
    async start() {
      proc = spawn('nats-server', ['-c', conf, '-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir], {
        stdio: 'ignore',
      });
      await untilListening(port);
    },
    async stop() {
      const p = proc;
      if (!p || p.exitCode !== null) return;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await exited;
    },
    async destroy() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await server.start();
  return server;
}

/**
 * A PostgreSQL cluster of its own (initdb, pg_ctl) on a spare port, trust auth, user postgres,
 * database postgres. As root, its commands run as the postgres user, as PostgreSQL requires.
 */
export async function throwawayPostgres(): Promise<Throwaway> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'sluice-pg-'));
  const asRoot = process.getuid?.() === 0;
  if (asRoot) spawnSync('chown', ['postgres', dir]);
  const run = (cmd: string, args: string[]): void => {
    const r = asRoot
      ? spawnSync('runuser', ['-u', 'postgres', '--', cmd, ...args], { encoding: 'utf8' })
      : spawnSync(cmd, args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr || r.error}`);
  };
  const data = join(dir, 'data');
  run('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync']);
  const server: Throwaway = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async start() {
      run('pg_ctl', [
        '-D',
        data,
        '-l',
        join(dir, 'log'),
        '-w',
        '-o',
        `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`,
        'start',
      ]);
      // pg_ctl returns when the server says it is ready; under load the first connection can
      // still be refused for a moment: wait until a query goes through.
      await untilQueryable(server.url);
    },
    async stop() {
      run('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
    },
    async destroy() {
      spawnSync(asRoot ? 'runuser' : 'pg_ctl', [
        ...(asRoot ? ['-u', 'postgres', '--', 'pg_ctl'] : []),
        '-D',
        data,
        '-m',
        'immediate',
        '-w',
        'stop',
      ]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await server.start();
  return server;
}
