/**
 * The embedded runtime with several pipeline threads (src/runtime/pool.ts): each tenant on a thread
 * of its own, both writing one SQLite store. Two tenants, two producers each (single events and
 * NDJSON batches), every request with a stable Idempotency-Key and retried until it gets a 202,
 * while the server is SIGKILLed at seeded random moments and started again on the same store: each
 * pipeline's results equal `sluice run` of its input exactly, and the store keeps exactly one answer
 * per acknowledged request, the one its producer got. The two threads take log positions of their
 * own (seq modulo 2), so neither's commits can collide with the other's, before or after a restart.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { prng } from '../dist/cli/demo.js';
import { batchResults, PAYMENTS, sampleInput, tempDir } from './helpers.ts';
import {
  allWindows,
  assertKillRunExact,
  ingestUnderKills,
  killRunResults,
  ndjsonBatches,
  readLines,
  singleEventRequests,
  startServer,
  waitForLog,
  writeServiceConfig,
  type Producer,
  type Server,
  killRunning,
} from './serve-helpers.ts';

const KEYS = { acme: 'sk_threads_test_acme', globex: 'sk_threads_test_globex' } as const;
type Tenant = keyof typeof KEYS;
const SEED = 20261206;
const KILLS = 8;
/** Each producer: [name, tenant, events, seed of the sample generator]. */
const INPUTS = [
  ['single-a', 'acme', 600, 41],
  ['ndjson-a', 'acme', 6_000, 42],
  ['single-b', 'globex', 600, 43],
  ['ndjson-b', 'globex', 6_000, 44],
] as const;

describe('sluice serve with a pipeline thread per tenant', () => {
  const dir = tempDir('sluice-serve-threads-');
  const started: Server[] = [];
  let closed = false;

  after(async () => {
    closed = true;
    await killRunning(started);
  });

  it(
    'puts each tenant on a thread of its own and counts every acknowledged event exactly once across kills',
    { timeout: 240_000 },
    async (t) => {
      const random = prng(SEED);
      const inputs = INPUTS.map(([name, tenant, events, seed]) => ({
        name,
        tenant,
        input: sampleInput(events, seed),
      }));
      const producers: (Producer & { tenant: Tenant })[] = inputs.map(({ name, tenant, input }) => {
        const lines = readLines(input);
        return {
          name,
          tenant,
          key: KEYS[tenant],
          pipeline: name,
          batches: name.startsWith('single') ? singleEventRequests(lines) : ndjsonBatches(lines, random),
        };
      });
      const references = await Promise.all(inputs.map(({ input }) => batchResults(input)));
      const pipelinesOf = (tenant: Tenant): Record<string, string> =>
        Object.fromEntries(INPUTS.filter(([, t]) => t === tenant).map(([name]) => [name, PAYMENTS]));
      const config = writeServiceConfig(
        dir,
        {
          acme: { keys: [KEYS.acme], pipelines: pipelinesOf('acme') },
          globex: { keys: [KEYS.globex], pipelines: pipelinesOf('globex') },
        },
        {
          runtime: { pipeline_threads: 2 },
          checkpoint: { interval: '300ms' },
          sinks: { interval: '50ms' },
        },
      );
      const runId = `${process.pid}-${Date.now()}`;
      const run = await ingestUnderKills({
        slots: 1,
        start: async () => {
          const s = await startServer(config);
          started.push(s);
          if (closed) await s.kill();
          return s;
        },
        key: KEYS.acme,
        producers,
        kills: KILLS,
        random,
        run: runId,
        signal: t.signal,
      });
      t.diagnostic(
        `${run.kills.length} kills in ${(run.wallMs / 1000).toFixed(1)} s; ${run.requests} requests, ` +
          `${run.replays} idempotent replays, failed attempts: ${JSON.stringify(Object.fromEntries(run.failures))}`,
      );
      assert.deepEqual(run.exitedAlone, [], 'a server exited without being killed');
      assert.ok(run.kills.length >= KILLS, `only ${run.kills.length} kills`);

      const server = run.servers[0]!;
      const line = server
        .output()
        .split('\n')
        .find((l) => l.includes('"msg":"pipeline threads started"'));
      assert.ok(line, 'the server logs its pipeline threads');
      const { threads, tenants } = JSON.parse(line) as { threads: number; tenants: Record<string, number> };
      assert.equal(threads, 2);
      assert.notEqual(tenants.acme, tenants.globex, 'each tenant on a thread of its own');

      // Each thread writes log positions of its own residue of seq (the log and the checkpoints'
      // positions, read while the server runs: killRunResults stops it).
      const db = new Database(join(dir, 'store', 'sluice.db'), { readonly: true });
      const seqs = db
        .prepare('SELECT pipeline, seq FROM log UNION ALL SELECT pipeline, seq FROM checkpoints')
        .all() as { pipeline: string; seq: number }[];
      db.close();
      const residues = new Map<string, Set<number>>();
      for (const { pipeline, seq } of seqs) {
        const tenant = pipeline.slice(0, pipeline.indexOf('/'));
        if (!residues.has(tenant)) residues.set(tenant, new Set());
        residues.get(tenant)!.add(seq % 2);
      }
      assert.equal(residues.size, 2, 'both tenants have log positions');
      for (const [tenant, r] of residues)
        assert.deepEqual([...r], [tenants[tenant]], `${tenant}'s log positions are its thread's`);

      const results = await killRunResults({
        dir,
        server,
        tenant: 'acme',
        key: KEYS.acme,
        producers,
        answers: run.answers,
      });
      assertKillRunExact(producers, run.answers, results, references, runId);
    },
  );
  it('keeps a tenant on its thread when reloads remove it and add it back, with its state', async () => {
    const hupDir = tempDir('sluice-serve-threads-hup-');
    const keys = {
      acme: 'sk_threads_hup_acme',
      globex: 'sk_threads_hup_globex',
      hooli: 'sk_threads_hup_hooli',
      initech: 'sk_threads_hup_initech',
    };
    const tenant = (id: keyof typeof keys) => ({
      [id]: { keys: [keys[id]], pipelines: { payments: PAYMENTS } },
    });
    const extra = { runtime: { pipeline_threads: 2 }, checkpoint: { interval: '200ms' } };
    const config = writeServiceConfig(hupDir, { ...tenant('acme'), ...tenant('globex') }, extra);
    const server = await startServer(config);
    started.push(server);
    const post = async (id: keyof typeof keys, seed: number): Promise<number> => {
      const res = await fetch(`${server.url}/v1/pipelines/payments/events`, {
        method: 'POST',
        headers: { authorization: `Bearer ${keys[id]}`, 'content-type': 'application/x-ndjson' },
        body: readFileSync(sampleInput(300, seed)),
      });
      assert.equal(res.status, 202, await res.clone().text());
      return ((await res.json()) as { accepted: number }).accepted;
    };
    const start = JSON.parse((await waitForLog(server, /"msg":"pipeline threads started"/, 1))[0]!) as {
      tenants: Record<string, number>;
    };
    const globexThread = start.tenants.globex!;
    let accepted = await post('globex', 51);
    // Without globex, two new tenants: one on each thread. Then globex back, beside hooli only:
    // by count it would go to the other thread; it must come back to its own.
    writeServiceConfig(hupDir, { ...tenant('acme'), ...tenant('hooli'), ...tenant('initech') }, extra);
    server.proc.kill('SIGHUP');
    await waitForLog(server, /"msg":"config reloaded"/, 1, /reload refused/);
    await post('hooli', 52);
    writeServiceConfig(hupDir, { ...tenant('hooli'), ...tenant('globex') }, extra);
    server.proc.kill('SIGHUP');
    await waitForLog(server, /"msg":"config reloaded"/, 2, /reload refused/);
    accepted += await post('globex', 53);

    const windows = await allWindows(server, 'payments', keys.globex);
    const counted = windows.reduce((n, w) => n + (w.count as number), 0);
    assert.equal(counted, accepted, "globex's windows hold the events of both its lives");
    const db = new Database(join(hupDir, 'store', 'sluice.db'), { readonly: true });
    const seqs = db
      .prepare(
        "SELECT seq FROM log WHERE pipeline = 'globex/payments' UNION ALL SELECT seq FROM checkpoints WHERE pipeline = 'globex/payments'",
      )
      .all() as { seq: number }[];
    db.close();
    assert.ok(seqs.length > 0, 'globex has log or checkpoint positions');
    assert.deepEqual(
      [...new Set(seqs.map((r) => r.seq % 2))],
      [globexThread],
      "every log position of globex is its first thread's",
    );
  });
});
