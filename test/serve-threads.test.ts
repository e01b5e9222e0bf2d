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
import { assertSameResults, batchResults, PAYMENTS, sampleInput, tempDir } from './helpers.ts';
import {
  ingestUnderKills,
  killRunResults,
  ndjsonBatches,
  producerIdempotencyKey,
  readLines,
  singleEventRequests,
  startServer,
  writeServiceConfig,
  type Answer,
  type Producer,
  type Server,
  rejectedRecords,
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

const windowCount = (resultDir: string): number =>
  readFileSync(join(resultDir, 'windows.ndjson'), 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .reduce((n, l) => n + (JSON.parse(l) as { count: number }).count, 0);

describe('sluice serve with a pipeline thread per tenant', () => {
  const dir = tempDir('sluice-serve-threads-');
  const started: Server[] = [];
  let closed = false;

  after(async () => {
    closed = true;
    for (const s of started) if (s.proc.exitCode === null && s.proc.signalCode === null) await s.kill();
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
      for (const [i, p] of producers.entries()) {
        const answers = run.answers[i] as Answer[];
        for (const [b, batch] of p.batches.entries()) {
          const a = answers[b]!;
          assert.equal(a.accepted + a.duplicates + rejectedRecords(a), batch.count, `${p.name} batch ${b}`);
        }
        const accepted = answers.reduce((n, a) => n + a.accepted, 0);
        assert.equal(windowCount(results[i]!.fromAnswers), accepted, `${p.name}: events in the windows`);
        assertSameResults(
          references[i]!,
          results[i]!.fromAnswers,
          `${p.name}, dead letters from the answers`,
        );
        assertSameResults(references[i]!, results[i]!.fromLetters, `${p.name}, dead letters from the API`);
        assert.deepEqual(
          results[i]!.stored,
          new Map(answers.map((a, b) => [producerIdempotencyKey(runId, p.name, b), a])),
          `${p.name}: the answers in the store`,
        );
      }
    },
  );
});
