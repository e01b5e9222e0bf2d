/**
 * Crash safety of `sluice serve`: a producer POSTs the payments sample 100k input in order, one
 * batch at a time, each batch with a stable Idempotency-Key and X-Request-Id, retrying it on
 * connection errors and 5xx until it gets a 202, while the server is SIGKILLed at seeded random
 * moments (every 200 to 800 ms of posting, at most 10 times) and restarted on the same store.
 * The end result still equals `sluice run` of the same input exactly, with the dead letters taken
 * from the 202 answers and again from GET dead-letters: every acknowledged event is counted once,
 * and nothing else is. (serve-workload.test.ts cross-checks serve with ../shared's expected results.)
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { prng } from '../dist/cli/demo.js';
import { assertSameResults, batchResults, SAMPLE_100K, tempDir } from './helpers.ts';
import {
  allDeadLetters,
  allWindows,
  deadFromAnswers,
  deadFromLetters,
  planBatches,
  readLines,
  startServer,
  writeServiceConfig,
  type Answer,
  type Server,
  workloadResults,
  rejectedRecords,
  killRunning,
} from './serve-helpers.ts';

/** Kills per run: enough to land in every phase, few enough to keep the run short. */
const MAX_KILLS = 10;
const KEY = 'sk_crash_test';
const PIPELINE = 'payments';
const SEED = 1121;
/** A request the server does not answer in this time is a hang, not a crash. */
const ANSWER_TIMEOUT_MS = 30_000;

/** Why an attempt got no answer: the `code` of fetch's cause (ECONNREFUSED, UND_ERR_SOCKET, ...). */
function failureCode(err: unknown): string {
  const cause = (err as { cause?: { code?: string } }).cause;
  return cause?.code ?? (err as Error).name;
}

/** The service's log line on what a start restored (for the test's diagnostics only). */
function restoredOf(output: string): { replayed: number; checkpoint: boolean }[] {
  return output
    .split('\n')
    .filter((l) => l.includes('"msg":"pipeline state restored from the store"'))
    .map((l) => {
      const m = JSON.parse(l) as { replayed: number; checkpointSeq: number | null };
      return { replayed: m.replayed, checkpoint: m.checkpointSeq !== null };
    });
}

const requestId = (b: number): string => `crash-batch-${b}`;

describe(`sluice serve under SIGKILL while ingesting (${SAMPLE_100K.name})`, () => {
  const dir = tempDir('sluice-serve-crash-');
  const largeSink = join(dir, 'store', 'outputs', 'acme', PIPELINE, 'large.ndjson');
  // Short intervals so kills land before and after checkpoints, and during sink deliveries.
  const config = writeServiceConfig(
    dir,
    { acme: { keys: [KEY] } },
    { checkpoint: { interval: '300ms' }, sinks: { interval: '50ms' } },
  );
  let server: Server | undefined;
  let finished = false;
  let killer: Promise<void> | undefined;

  after(async () => {
    finished = true;
    // A restart in progress finishes within seconds; a hung one must not hang the run.
    await Promise.race([killer?.catch(() => {}), sleep(15_000)]);
    await killRunning([server]);
  });

  it(
    'counts every acknowledged event exactly once across at least 5 kills',
    { timeout: 300_000 },
    async (t) => {
      const random = prng(SEED);
      const batches = planBatches(readLines(SAMPLE_100K.input()), random);
      const runId = `${process.pid}-${Date.now()}`;
      const answers: Answer[] = [];
      const kills: { inFlight: boolean; batch: number }[] = [];
      const failures = new Map<string, number>();
      let replayed = 0;
      /** What each restart restored: log bodies replayed, and whether from a checkpoint. */
      const recoveries: { replayed: number; checkpoint: boolean }[] = [];
      /** Output of servers that exited without being killed. */
      const exitedAlone: string[] = [];
      let inFlight = false;
      let current = 0;

      server = await startServer(config);
      let up: Promise<Server> = Promise.resolve(server);

      killer = (async () => {
        // At most MAX_KILLS: each restart costs 1–2 s (more on a loaded machine), and the
        // exactness argument needs several kills, not dozens.
        while (!finished && kills.length < MAX_KILLS) {
          await sleep(200 + Math.floor(random() * 600));
          if (finished) break;
          recoveries.push(...restoredOf(server!.output()));
          if (server!.proc.exitCode !== null || server!.proc.signalCode !== null)
            exitedAlone.push(server!.output().slice(-2000));
          const kill = { inFlight, batch: current };
          let ready!: (s: Server) => void;
          let broken!: (e: unknown) => void;
          up = new Promise<Server>((resolve, reject) => {
            ready = resolve;
            broken = reject;
          });
          up.catch(() => {});
          await server!.kill();
          kills.push(kill);
          try {
            server = await startServer(config);
          } catch (err) {
            broken(err);
            throw err;
          }
          ready(server);
        }
      })();
      // Awaited below; a failed restart also fails the producer, through `up`.
      killer.catch(() => {});

      for (const [b, batch] of batches.entries()) {
        current = b;
        for (let attempt = 1; ; attempt++) {
          const target = await up;
          let res: Response | undefined;
          let text = '';
          inFlight = true;
          try {
            res = await fetch(`${target.url}/v1/pipelines/${PIPELINE}/events`, {
              method: 'POST',
              headers: {
                ...batch.headers,
                authorization: `Bearer ${KEY}`,
                'idempotency-key': `crash-${runId}-${b}`,
                'x-request-id': requestId(b),
              },
              body: batch.body,
              signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS),
            });
            text = await res.text();
          } catch (err) {
            if ((err as Error).name === 'TimeoutError')
              assert.fail(`batch ${b} attempt ${attempt}: no answer in ${ANSWER_TIMEOUT_MS} ms`);
            res = undefined;
            const code = failureCode(err);
            failures.set(code, (failures.get(code) ?? 0) + 1);
          } finally {
            inFlight = false;
          }
          if (res?.status === 202) {
            if (res.headers.get('idempotent-replayed') === 'true') {
              assert.ok(attempt > 1, `batch ${b}: a first attempt was answered as a replay`);
              replayed++;
            }
            const answer = JSON.parse(text) as Answer;
            assert.equal(
              answer.accepted + answer.duplicates + rejectedRecords(answer),
              batch.count,
              `batch ${b}: ${text}`,
            );
            answers.push(answer);
            break;
          }
          if (res) {
            assert.ok(res.status >= 500, `batch ${b} attempt ${attempt}: ${res.status} ${text}`);
            failures.set(`HTTP ${res.status}`, (failures.get(`HTTP ${res.status}`) ?? 0) + 1);
          }
          assert.ok(attempt < 500, `batch ${b}: no 202 after ${attempt} attempts`);
          await sleep(10);
        }
      }
      finished = true;
      await killer;

      t.diagnostic(
        `${batches.length} batches, ${kills.length} kills (${kills.filter((k) => k.inFlight).length} with a request in flight), ` +
          `${replayed} idempotent replays, failed attempts: ${JSON.stringify(Object.fromEntries(failures))}, ` +
          `kills at batches ${kills.map((k) => k.batch).join(' ')}; restarts restored ` +
          `${recoveries.filter((r) => r.checkpoint).length} checkpoints and replayed ` +
          `${recoveries.map((r) => r.replayed).join(' ')} logged bodies`,
      );
      assert.deepEqual(exitedAlone, [], 'a server exited without being killed');
      assert.ok(kills.length >= 5, `only ${kills.length} kills`);
      assert.ok(
        kills.some((k) => k.inFlight),
        'no kill happened while a request was in flight',
      );
      assert.ok(
        [...failures.keys()].some((code) => code !== 'ECONNREFUSED' && !code.startsWith('HTTP')),
        'no request was cut off by a kill',
      );

      const live = server!;
      const windows = await allWindows(live, PIPELINE, KEY);
      const letters = await allDeadLetters(live, PIPELINE, KEY);
      const stopped = await live.stop();
      assert.deepEqual(stopped, { code: 0, signal: null }, live.output());

      const dead = deadFromAnswers(batches, answers);
      const deadFromApi = deadFromLetters(batches, letters, requestId);

      // The same windows, large and summary as the batch run, with either list of dead letters.
      const reference = await batchResults(SAMPLE_100K.input());
      for (const [name, deadList] of [
        ['answers', dead],
        ['api', deadFromApi],
      ] as const) {
        const actual = workloadResults(join(dir, `actual-${name}`), {
          batches,
          answers,
          windows,
          dead: deadList,
          largeSink,
        });
        assertSameResults(reference, actual, `results with the dead letters from the ${name}`);
      }
    },
  );
});
