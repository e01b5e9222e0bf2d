/**
 * A sink that fails is retried until it takes its records, and gets each exactly once, in both
 * runtimes (src/runtime/delivery.ts is the one delivery routine they share). The failure is real:
 * the file sink's target path is a directory, so opening it fails (EISDIR) until the test removes
 * the directory. Meanwhile the service keeps accepting requests, counts the failures in
 * `sluice_sink_errors_total` and logs them; afterwards the records arrive without any new request
 * to trigger a delivery.
 */
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { freshCluster, WORKLOAD_KEY, type FreshCluster } from './cluster-helpers.ts';
import { tempDir } from './helpers.ts';
import {
  paymentEvent,
  postEvents,
  sinkRecords,
  startServer,
  waitForLog,
  writeServiceConfig,
  type Server,
  killRunning,
} from './serve-helpers.ts';
import { haveServices } from './services.ts';

const KEY = 'sk_sink_retry';

/** `n` distinct large payments (≥ 10,000 USD: the payments example's `large` sink takes them). */
function largePayments(from: number, n: number): { ids: string[]; body: string } {
  const ids = Array.from({ length: n }, (_, i) => `evt_SNK${String(from + i).padStart(23, '0')}`);
  const body = ids
    .map((id) => JSON.stringify(paymentEvent({ id, amount: '20000.00', currency: 'USD' })) + '\n')
    .join('');
  return { ids, body };
}

async function sinkErrors(server: Server, sink: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const re = new RegExp(`^sluice_sink_errors_total\\{[^}]*sink="${sink}"[^}]*\\} (\\d+)$`, 'm');
  return Number(re.exec(text)?.[1] ?? 0);
}

/** The ids in an NDJSON file, once it holds `count` lines (within 20 s). */
async function idsOnceThere(file: string, count: number): Promise<string[]> {
  const records = await sinkRecords<{ id: string }>(file, (rs) => rs.length >= count, 20_000);
  return records.map((r) => r.id);
}

/**
 * Posts large payments while the sink's target cannot be opened, checks that the failures are
 * counted and logged, clears the way and checks that every record arrives exactly once.
 */
async function failThenRecover(server: Server, key: string, target: string, sink: string): Promise<void> {
  const pipeline = 'payments';
  const first = largePayments(0, 30);
  const r1 = await postEvents(server, pipeline, key, first.body);
  assert.equal(r1.status, 202, JSON.stringify(r1.body));
  await waitForLog(server, new RegExp(`"sink":"${sink}".*"msg":"sink delivery failed; will retry"`), 2);
  assert.ok((await sinkErrors(server, sink)) >= 2, 'sluice_sink_errors_total counts the failures');
  // Still accepting while the sink is down: its records wait in the outbox.
  const second = largePayments(30, 20);
  const r2 = await postEvents(server, pipeline, key, second.body);
  assert.equal(r2.status, 202, JSON.stringify(r2.body));

  rmSync(target, { recursive: true });
  const errorsAtRecovery = await sinkErrors(server, sink);
  const expected = [...first.ids, ...second.ids];
  const got = await idsOnceThere(target, expected.length);
  assert.deepEqual([...got].sort(), [...expected].sort(), 'every record once, after the retries');

  // And on from there as usual.
  const third = largePayments(50, 5);
  assert.equal((await postEvents(server, pipeline, key, third.body)).status, 202);
  const all = await idsOnceThere(target, expected.length + 5);
  assert.deepEqual([...all].sort(), [...expected, ...third.ids].sort());
  assert.ok(
    (await sinkErrors(server, sink)) <= errorsAtRecovery + 1,
    'no failures once the target could be opened (one may have been under way)',
  );
}

describe('a failing sink is retried until it takes its records', () => {
  const servers: Server[] = [];
  let cluster: FreshCluster | undefined;
  after(async () => {
    await killRunning(servers);
    await cluster?.clear();
  });

  it(
    'embedded: each record once, without a new request to trigger delivery',
    { timeout: 60_000 },
    async () => {
      const dir = tempDir('sluice-sink-retry-');
      const config = writeServiceConfig(dir, { acme: { keys: [KEY] } }, { sinks: { interval: '100ms' } });
      const target = join(dir, 'store', 'outputs', 'acme', 'payments', 'large.ndjson');
      mkdirSync(target, { recursive: true });
      writeFileSync(join(target, 'in-the-way'), '');
      const server = await startServer(config);
      servers.push(server);
      await failThenRecover(server, KEY, target, 'large');
      assert.deepEqual(await server.stop(), { code: 0, signal: null }, server.output().slice(-3000));
    },
  );

  it('embedded: a graceful stop delivers every committed record first', { timeout: 90_000 }, async () => {
    // Deliveries every 5 ms, and one kept busy by a large body when the small request after it
    // commits and the stop comes: that delivery read the outbox before the last commit, and the
    // stop must deliver again after it. Before the fix one of the first two stops left the small
    // request's record out (4 runs of 4).
    const dir = tempDir('sluice-sink-stop-');
    const config = writeServiceConfig(dir, { acme: { keys: [KEY] } }, { sinks: { interval: '5ms' } });
    const target = join(dir, 'store', 'outputs', 'acme', 'payments', 'large.ndjson');
    const expected: string[] = [];
    for (let round = 0; round < 3; round++) {
      const server = await startServer(config);
      servers.push(server);
      // A large body keeps a delivery busy (thousands of records to write and sync) while the
      // small one after it commits, just before the stop.
      for (const n of [3000, 1]) {
        const { ids, body } = largePayments(round * 10_000 + expected.length, n);
        const r = await postEvents(server, 'payments', KEY, body);
        assert.equal(r.status, 202, JSON.stringify(r.body));
        expected.push(...ids);
      }
      assert.deepEqual(await server.stop(), { code: 0, signal: null }, server.output().slice(-3000));
      const got = (await sinkRecords<{ id: string }>(target)).map((r) => r.id);
      assert.deepEqual(got.sort(), [...expected].sort(), `after stop ${round + 1}: every record, once`);
    }
  });

  // The cluster's payments pipeline sends large payments to PostgreSQL and to the file sink
  // `large_file`, fed from the outbox.
  it('cluster: each record once, retried while the owner keeps its epoch', { timeout: 90_000 }, async (t) => {
    if (!(await haveServices(t, 'postgres', 'nats'))) return;
    const fresh = await freshCluster('sinkretry', { instances: 1 });
    cluster = fresh;
    const target = join(fresh.dir, 'data', 'outputs', 'acme', 'payments', 'large.ndjson');
    mkdirSync(target, { recursive: true });
    writeFileSync(join(target, 'in-the-way'), '');
    const server = await startServer(fresh.configs[0]!);
    servers.push(server);
    await failThenRecover(server, WORKLOAD_KEY, target, 'large_file');
    assert.deepEqual(await server.stop(), { code: 0, signal: null }, server.output().slice(-3000));
  });
});
