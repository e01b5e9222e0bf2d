/**
 * Two clusters sharing one PostgreSQL database, a schema each, run pipelines of the same names at
 * the same time. PostgreSQL's advisory locks belong to the whole database: when a pipeline's lock
 * was keyed by its name alone, the second cluster could not own its `acme/payments` while the
 * first owned its own, and its requests waited unprocessed in its stream (the suite's cluster
 * tests, running side by side, saw pipelines unowned for a minute).
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import {
  caughtUp,
  freshCluster,
  lastSeqOf,
  ownerNow,
  pgResults,
  WORKLOAD_KEY,
  type FreshCluster,
} from './cluster-helpers.ts';
import { paymentEvent, postEvents, startServer, type Server, killRunning } from './serve-helpers.ts';
import { haveServices } from './services.ts';

describe('clusters in two schemas of one database', () => {
  const servers: Server[] = [];
  const clusters: FreshCluster[] = [];
  after(async () => {
    await killRunning(servers);
    for (const c of clusters) await c.clear();
  });

  it('each owns and processes its own pipeline of the same name at once', { timeout: 60_000 }, async (t) => {
    if (!(await haveServices(t, 'postgres', 'nats'))) return;
    for (const label of ['schemas1', 'schemas2']) clusters.push(await freshCluster(label, { instances: 1 }));
    for (const c of clusters) servers.push(await startServer(c.configs[0]!));
    for (const s of servers) assert.equal(await ownerNow([s], 'acme/payments', 10_000), 0);
    for (const [i, c] of clusters.entries()) {
      const event = paymentEvent({ id: `evt_SCHEMA${String(i).padStart(20, '0')}` });
      const r = await postEvents(servers[i]!, 'payments', WORKLOAD_KEY, JSON.stringify(event) + '\n');
      assert.equal(r.status, 202, JSON.stringify(r.body));
      await caughtUp(c.sql, 'acme/payments', await lastSeqOf(c.stream, 'acme', 'payments'), 15_000);
      const { windows } = await pgResults(c.sql, 'acme/payments');
      assert.deepEqual(
        windows.map((w) => w.count),
        [1],
        `cluster ${i + 1} holds its one event`,
      );
    }
    for (const s of servers)
      assert.deepEqual(await s.stop(), { code: 0, signal: null }, s.output().slice(-3000));
  });
});
