/**
 * A cluster pipeline whose owner stops before it read anything keeps the requests waiting in its
 * stream. Such an owner checkpoints at position 0; it used to purge the stream "up to sequence 1",
 * which JetStream reads as the whole subject, and acknowledged requests were gone
 * (test/jetstream-purge.test.ts has the purge itself).
 *
 * To stop an owner before its first message, deterministically, the test holds the PostgreSQL
 * lock under which owners create their sink tables (a step before they read the stream): the
 * owner waits there while requests are accepted, the instance is told to stop, and the lock is let
 * go. The instance started again must process every request.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { SINK_TABLES_LOCK } from '../dist/cluster/owner.js';
import {
  caughtUp,
  freshCluster,
  lastSeqOf,
  pgResults,
  WORKLOAD_KEY,
  type FreshCluster,
} from './cluster-helpers.ts';
import {
  paymentEvent,
  postEvents,
  startServer,
  waitForLog,
  type Server,
  killRunning,
} from './serve-helpers.ts';
import { haveServices } from './services.ts';

describe('a cluster owner stopped before its first message', () => {
  const servers: Server[] = [];
  let cluster: FreshCluster | undefined;
  after(async () => {
    await killRunning(servers);
    await cluster?.clear();
  });

  it('leaves the requests it did not read for the next owner', { timeout: 90_000 }, async (t) => {
    if (!(await haveServices(t, 'postgres', 'nats'))) return;
    const fresh = await freshCluster('purge0', { instances: 1 });
    cluster = fresh;
    const lock = await fresh.sql.reserve();
    try {
      await lock`SELECT pg_advisory_lock(${SINK_TABLES_LOCK}, hashtext(current_schema()))`;
      const first = await startServer(fresh.configs[0]!);
      servers.push(first);
      await waitForLog(first, /"pipeline":"acme\/payments","epoch":1,"msg":"owning the pipeline"/, 1);
      for (let i = 0; i < 3; i++) {
        const event = paymentEvent({ id: `evt_PVRGE${String(i).padStart(21, '0')}` });
        const r = await postEvents(first, 'payments', WORKLOAD_KEY, JSON.stringify(event) + '\n');
        assert.equal(r.status, 202, JSON.stringify(r.body));
      }
      const last = await lastSeqOf(fresh.stream, 'acme', 'payments');
      const stopped = first.stop();
      // The owner is still waiting for the lock: let it go once the instance is stopping.
      await sleep(500);
      await lock`SELECT pg_advisory_unlock(${SINK_TABLES_LOCK}, hashtext(current_schema()))`;
      assert.deepEqual(await stopped, { code: 0, signal: null }, first.output().slice(-3000));

      const second = await startServer(fresh.configs[0]!);
      servers.push(second);
      await caughtUp(fresh.sql, 'acme/payments', last, 15_000);
      const { windows } = await pgResults(fresh.sql, 'acme/payments');
      assert.equal(
        windows.reduce((n, w) => n + Number(w.count), 0),
        3,
        'the three accepted events are counted',
      );
      assert.deepEqual(await second.stop(), { code: 0, signal: null }, second.output().slice(-3000));
    } finally {
      lock.release();
    }
  });
});
