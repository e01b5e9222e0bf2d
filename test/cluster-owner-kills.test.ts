/**
 * Durability of the cluster runtime under SIGKILLs of the owner (issue 11): two `sluice serve`
 * instances on the local NATS JetStream and PostgreSQL take two producers' load at once, one of
 * them posting a payments sample in bodies of every type the API takes (NDJSON, JSON arrays,
 * single objects, gzip), the other one event per request, each request to the next instance in
 * turn with a stable Idempotency-Key, retried on connection errors and 5xx until it gets a 202.
 * Meanwhile the instance that owns the first pipeline is SIGKILLed 6 times at seeded random
 * moments and started again: each time the other instance takes the pipeline over and rebuilds
 * its state from the last checkpoint and the stream.
 *
 * Each producer has a pipeline of its own, posted in order (concurrent requests to one pipeline
 * would change which events count as duplicates or late). At the end what PostgreSQL holds for
 * each pipeline (windows, dead letters, large payments, and the file sink fed from the outbox)
 * equals `sluice run` of its input exactly: nothing acknowledged was lost or counted twice.
 * bench/crash.ts --mode cluster runs the same with more kills.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { prng } from '../dist/cli/demo.js';
import {
  clusterHoldings,
  freshCluster,
  ownerNow,
  WORKLOAD_KEY,
  type FreshCluster,
} from './cluster-helpers.ts';
import { assertSameResults, batchResults, sampleInput } from './helpers.ts';
import {
  ingestUnderKills,
  planBatches,
  readLines,
  singleEventRequests,
  startServer,
  type Producer,
  type Server,
  killRunning,
} from './serve-helpers.ts';
import { haveServices } from './services.ts';

const SEED = 20261125;
/** Planned kills: every one comes while the load runs. */
const KILLS = 6;
/** The pipeline whose owner is killed, with its input; and the single-event one. */
const BATCHED = { name: 'payments', input: () => sampleInput(30_000, 41) };
const SINGLES = { name: 'singles', input: () => sampleInput(1_000, 42) };

describe('the cluster runtime under SIGKILLs of the owner (2 instances)', () => {
  const started: Server[] = [];
  let cluster: FreshCluster | undefined;
  let closed = false;

  after(async () => {
    closed = true;
    await killRunning(started);
    await cluster?.clear();
  });

  it(
    'counts every acknowledged event exactly once across at least 5 kills of the owner',
    { timeout: 230_000 },
    async (t) => {
      if (!(await haveServices(t, 'postgres', 'nats'))) return;
      const random = prng(SEED);
      const producers: Producer[] = [
        {
          name: BATCHED.name,
          pipeline: BATCHED.name,
          batches: planBatches(readLines(BATCHED.input()), random),
        },
        {
          name: SINGLES.name,
          pipeline: SINGLES.name,
          batches: singleEventRequests(readLines(SINGLES.input())),
        },
      ];
      const references = await Promise.all([batchResults(BATCHED.input()), batchResults(SINGLES.input())]);
      // Compared with `sluice run` exactly: one watermark for the stream, as a killed instance's
      // own watermark would hold windows open (and count events sluice run calls late) meanwhile.
      const fresh = await freshCluster('ownerkills', {
        instances: 2,
        pipelines: producers.map((p) => p.pipeline),
        oneWatermark: true,
      });
      cluster = fresh;
      try {
        const run = await ingestUnderKills({
          slots: 2,
          start: async (slot) => {
            const s = await startServer(fresh.configs[slot]!);
            started.push(s);
            // A restart that ends after the test timed out must not outlive it.
            if (closed) await s.kill();
            return s;
          },
          key: WORKLOAD_KEY,
          producers,
          kills: KILLS,
          random,
          run: `${process.pid}-${Date.now()}`,
          victim: (servers) => ownerNow(servers, `acme/${BATCHED.name}`),
          signal: t.signal,
        });
        const takeoversNow = (): RegExpMatchArray[] => [
          ...started
            .map((s) => s.output())
            .join('\n')
            .matchAll(/"pipeline":"acme\/payments","epoch":(\d+),"msg":"owning the pipeline"/g),
        ];
        let takeovers = takeoversNow();
        t.diagnostic(
          `${run.kills.length} kills of the owner (slots ${run.kills.map((k) => k.slot).join(' ')}, ` +
            `${run.kills.filter((k) => k.inFlight > 0).length} with requests in flight, down ` +
            `${run.kills.map((k) => (k.downMs / 1000).toFixed(1)).join(' ')} s) in ${(run.wallMs / 1000).toFixed(1)} s; ` +
            `${run.requests} requests, ${run.replays} idempotent replays, failed attempts: ` +
            `${JSON.stringify(Object.fromEntries(run.failures))}; payments owned at epochs ` +
            takeovers.map((m) => m[1]).join(' '),
        );
        assert.deepEqual(run.exitedAlone, [], 'an instance exited without being killed');
        assert.ok(run.kills.length >= 5, `only ${run.kills.length} kills`);
        for (const [i, p] of producers.entries())
          for (const [b, batch] of p.batches.entries())
            assert.deepEqual(run.answers[i]![b], { queued: batch.count }, `${p.name} batch ${b}`);

        const held = await clusterHoldings(fresh, run.servers, producers);
        // Every kill but the last must have moved the pipeline (the first owner, then one more per
        // kill). The last may not have yet: the answers can all be in, and even everything be
        // processed, before the lease lapses and the survivor takes over; the full suite once read
        // the logs in between (Node 24: 6 kills, epochs 1-6).
        takeovers = takeoversNow();
        assert.ok(
          takeovers.length >= run.kills.length,
          `the pipeline was owned only ${takeovers.length} times for ${run.kills.length} kills`,
        );
        for (const [i, p] of producers.entries())
          assertSameResults(references[i]!, held[i]!, `what PostgreSQL holds for ${p.name}`);
      } catch (err) {
        // SLUICE_TEST_DEBUG=1 prints the instances' logs with a failure, to see what they did.
        if (process.env.SLUICE_TEST_DEBUG) for (const s of started) console.error(s.output().slice(-4000));
        throw err;
      }
    },
  );
});
