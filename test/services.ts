/**
 * The local services the cluster tests use, by URL from the environment with the machine's
 * defaults. A test asks `reachable()` first: under CI=true a missing service fails the test, elsewhere
 * the test is skipped with a message saying what to start.
 */
import { spawnSync } from 'node:child_process';
import { connect, createServer } from 'node:net';
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

/**
 * A fresh PostgreSQL schema for one test, so tests never see each other's tables; dropped by
 * `drop()`. `url` carries the schema as the connection's search_path.
 */
export async function freshSchema(label: string): Promise<{ schema: string; drop(): Promise<void> }> {
  const schema = `sluice_test_${label}_${process.pid}_${Date.now().toString(36)}`;
  const admin = postgres(PG_URL, { max: 1, onnotice: () => {} });
  await admin.unsafe(`CREATE SCHEMA ${schema}`);
  await admin.end();
  return {
    schema,
    async drop() {
      const sql = postgres(PG_URL, { max: 1, onnotice: () => {} });
      await sql.unsafe(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await sql.end();
    },
  };
}

/** A client whose tables resolve in `schema`. */
export function pgIn(schema: string, max = 2): postgres.Sql {
  return postgres(PG_URL, { max, onnotice: () => {}, connection: { search_path: schema } });
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
