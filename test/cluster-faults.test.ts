/**
 * The cluster runtime when the servers it depends on fail, on servers of the test's own (never the
 * machine's shared ones): the payments sample 100k input goes in over HTTP while
 * - NATS (a nats-server of the test's) is restarted: ingest answers 503 SLUICE_ERR_UNAVAILABLE while
 *   it is down, producers retry, and nothing acknowledged is lost or doubled;
 * - PostgreSQL (a cluster of the test's, made with initdb) is unreachable for 10 s: ingest goes on,
 *   processing pauses and then resumes;
 * and in both cases PostgreSQL ends up holding exactly what `sluice run` gives on the same input.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { before, describe, it } from 'node:test';
import { prng } from '../dist/cli/demo.js';
import { runWorkload, WORKLOAD_KEY, WORKLOAD_PIPELINE } from './cluster-helpers.ts';
import { batchResults, SAMPLE_100K } from './helpers.ts';
import { getJson, planBatches, postEvents, readLines, type Batch } from './serve-helpers.ts';
import { haveBinary, haveServices, throwawayNats, throwawayPostgres } from './services.ts';

let batches: Batch[] = [];
let reference = '';

before(async () => {
  batches = planBatches(readLines(SAMPLE_100K.input()), prng(20261123));
  reference = await batchResults(SAMPLE_100K.input());
});

describe(`the cluster runtime through server failures (${SAMPLE_100K.name} over HTTP)`, () => {
  it(
    'answers 503 while NATS is down, and loses nothing acknowledged across its restart',
    { timeout: 240_000 },
    async (t) => {
      if (!haveBinary(t, 'nats-server') || !(await haveServices(t, 'postgres'))) return;
      const nats = await throwawayNats();
      try {
        const { ctx } = await runWorkload({
          label: 'natsdown',
          batches,
          reference,
          instances: 2,
          natsUrl: nats.url,
          during: async ({ servers }) => {
            await nats.stop();
            // Every instance refuses at once, without storing anything, and says why.
            for (const s of servers) {
              const r = await postEvents(
                s,
                WORKLOAD_PIPELINE,
                WORKLOAD_KEY,
                batches[0]!.body,
                batches[0]!.headers,
              );
              assert.equal(r.status, 503, JSON.stringify(r.body));
              assert.equal((r.body as { code: string }).code, 'SLUICE_ERR_UNAVAILABLE');
              assert.equal(r.headers.get('retry-after'), '1');
              const ready = await getJson(s, '/readyz');
              assert.equal(ready.status, 503);
              assert.equal((ready.body as { nats: string }).nats, 'down');
            }
            // Restarted while producers keep retrying.
            setTimeout(() => void nats.start(), 1500);
          },
        });
        assert.ok(
          (ctx.unavailable.get('SLUICE_ERR_UNAVAILABLE') ?? 0) > 0,
          'no request met the outage: the restart happened between requests',
        );
      } finally {
        await nats.destroy();
      }
    },
  );

  it(
    'pauses processing while PostgreSQL is unreachable for 10 s, then resumes, exactly',
    { timeout: 240_000 },
    async (t) => {
      if (!haveBinary(t, 'initdb') || !(await haveServices(t, 'nats'))) return;
      const pg = await throwawayPostgres();
      try {
        let restarted: Promise<void> | undefined;
        const { servers } = await runWorkload({
          label: 'pgdown',
          batches,
          reference,
          instances: 2,
          pgUrl: pg.url,
          during: async ({ servers }) => {
            await pg.stop();
            // Queries say PostgreSQL is unreachable; the instances still take requests.
            const windows = await getJson(
              servers[0]!,
              `/v1/pipelines/${WORKLOAD_PIPELINE}/windows`,
              WORKLOAD_KEY,
            );
            assert.equal(windows.status, 503, JSON.stringify(windows.body));
            assert.equal((windows.body as { code: string }).code, 'SLUICE_ERR_UNAVAILABLE');
            const ready = await getJson(servers[1]!, '/readyz');
            assert.equal(ready.status, 200, JSON.stringify(ready.body));
            assert.equal((ready.body as { postgres: string }).postgres, 'down');
            // The rest of the input is posted meanwhile (it takes less than 10 s).
            restarted = sleep(10_000).then(() => pg.start());
          },
        });
        await restarted;
        const logs = servers.map((s) => s.output()).join('\n');
        const at = (msg: string): number[] =>
          logs
            .split('\n')
            .filter((l) => l.includes(`"msg":"${msg}"`))
            .map((l) => (JSON.parse(l) as { time: number }).time);
        const [stopped] = at(
          'pipeline processing stopped; its state will be rebuilt from PostgreSQL and the stream',
        );
        const [resumed] = at('pipeline processing resumed');
        assert.ok(stopped && resumed, `processing did not stop and resume:\n${logs.slice(-3000)}`);
        assert.ok(resumed - stopped >= 9000, `processing resumed ${resumed - stopped} ms after it stopped`);
      } finally {
        await pg.destroy();
      }
    },
  );
});
