/**
 * Durability of `sluice serve` under SIGKILL with a mixed load (issue 11): four producers post at
 * once, two of them one event per request (application/json), two of them NDJSON batches of 1 to
 * 500 lines, every request with a stable Idempotency-Key and retried on connection errors and 5xx
 * until it gets a 202, while the server is SIGKILLed 20 times at seeded random moments and started
 * again on the same store.
 *
 * Each producer posts a payments sample of its own, in order, to a pipeline of its own: requests
 * to one pipeline from concurrent producers would reach it in any order, which changes which
 * events count as duplicates or late, and each pipeline's results must equal `sluice run` of its
 * input exactly (windows, dead letters both from the 202 answers and from GET dead-letters, the
 * large payments sink, the summary). The store also keeps, for each pipeline, exactly one answer
 * per acknowledged request, the one its producer got: the events accepted in the 202 answers are
 * the events in the windows, and nothing acknowledged is lost or counted twice.
 * bench/crash.ts runs the same with many more kills.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { prng } from '../dist/cli/demo.js';
import { batchResults, PAYMENTS, sampleInput, tempDir } from './helpers.ts';
import {
  assertKillRunExact,
  ingestUnderKills,
  killRunResults,
  ndjsonBatches,
  readLines,
  singleEventRequests,
  startServer,
  writeServiceConfig,
  type Producer,
  type Server,
  killRunning,
} from './serve-helpers.ts';

const KEY = 'sk_kill_mixed_test';
const SEED = 20261124;
/** Kills: ingestUnderKills makes every one while the load runs (the producers wait for a late one). */
const KILLS = 20;
/** Each producer's input: [name, events, seed of the sample generator]. */
const INPUTS = [
  ['single-a', 1_000, 31],
  ['single-b', 1_000, 32],
  ['ndjson-a', 10_000, 33],
  ['ndjson-b', 10_000, 34],
] as const;

describe('sluice serve under SIGKILL with concurrent single-event and NDJSON producers', () => {
  const dir = tempDir('sluice-serve-kill-mixed-');
  const started: Server[] = [];
  let closed = false;

  after(async () => {
    closed = true;
    await killRunning(started);
  });

  it(
    'counts every acknowledged event exactly once across at least 20 kills',
    // 130 s on a quiet machine; a clone's suite beside other work took longer than 170 s.
    { timeout: 300_000 },
    async (t) => {
      const random = prng(SEED);
      const inputs = INPUTS.map(([name, events, seed]) => ({ name, input: sampleInput(events, seed) }));
      const producers: Producer[] = inputs.map(({ name, input }) => {
        const lines = readLines(input);
        return {
          name,
          pipeline: name,
          batches: name.startsWith('single') ? singleEventRequests(lines) : ndjsonBatches(lines, random),
        };
      });
      const references = await Promise.all(inputs.map(({ input }) => batchResults(input)));
      // Short intervals, so that kills land before and after checkpoints and during sink deliveries.
      const config = writeServiceConfig(
        dir,
        { acme: { keys: [KEY], pipelines: Object.fromEntries(INPUTS.map(([name]) => [name, PAYMENTS])) } },
        { checkpoint: { interval: '300ms' }, sinks: { interval: '50ms' } },
      );
      const runId = `${process.pid}-${Date.now()}`;
      const run = await ingestUnderKills({
        slots: 1,
        start: async () => {
          const s = await startServer(config);
          started.push(s);
          // A restart that ends after the test timed out must not outlive it.
          if (closed) await s.kill();
          return s;
        },
        key: KEY,
        producers,
        kills: KILLS,
        random,
        run: runId,
        signal: t.signal,
      });
      const killed = run.kills.filter((k) => k.inFlight > 0).length;
      t.diagnostic(
        `${run.kills.length} kills (${killed} with requests in flight, down ` +
          `${(run.kills.reduce((n, k) => n + k.downMs, 0) / run.kills.length / 1000).toFixed(1)} s each on average) ` +
          `in ${(run.wallMs / 1000).toFixed(1)} s; ` +
          `${run.requests} requests for ${producers.reduce((n, p) => n + p.batches.length, 0)} batches, ` +
          `${run.replays} idempotent replays, failed attempts: ${JSON.stringify(Object.fromEntries(run.failures))}; ` +
          `kills at ${run.kills.map((k) => `${Math.round(k.progress * 100)}%`).join(' ')} of the load`,
      );
      assert.deepEqual(run.exitedAlone, [], 'a server exited without being killed');
      assert.ok(run.kills.length >= 20, `only ${run.kills.length} kills`);
      assert.ok(killed > 0, 'no kill came while a request was in flight');
      assert.ok(
        [...run.failures.keys()].some((code) => code !== 'ECONNREFUSED' && !code.startsWith('HTTP')),
        'no request was cut off by a kill',
      );
      assert.ok(
        run.replays > 0,
        'no retry was answered from the store: no kill fell between commit and answer',
      );

      const results = await killRunResults({
        dir,
        server: run.servers[0]!,
        tenant: 'acme',
        key: KEY,
        producers,
        answers: run.answers,
      });
      assertKillRunExact(producers, run.answers, results, references, runId);
    },
  );
});
