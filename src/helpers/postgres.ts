/**
 * One way to open a PostgreSQL client, for the cluster runtime, the `postgres` sink and
 * `sluice check`.
 *
 * postgres.js 4: 3.4.9 takes the whole process down when a connection closes while a small write
 * is queued (a TypeError thrown from a setImmediate, porsager/postgres#1154 and #1208); we met it
 * in one run of three while PostgreSQL was stopped under load.
 */
import postgres from 'postgres';

export interface PgOptions {
  /** Connections in the pool. */
  max: number;
  /** Seconds to wait for a connection before a query fails. */
  connectTimeout?: number;
  /** Seconds an idle connection stays open; 0 keeps it. */
  idleTimeout?: number;
}

/**
 * While it cannot connect, postgres.js 4 fails queries at once and waits longer and longer before
 * the next attempt (up to 20 s by default). A pipeline owner must be back within a second of
 * PostgreSQL, so the wait stops growing at 1 s.
 */
const backoff = (attempt: number): number => Math.min(0.05 * 2 ** attempt, 1);

export function openPg(url: string, o: PgOptions): postgres.Sql {
  return postgres(url, {
    max: o.max,
    connect_timeout: o.connectTimeout ?? 5,
    idle_timeout: o.idleTimeout ?? 0,
    backoff,
    onnotice: () => {},
  });
}
