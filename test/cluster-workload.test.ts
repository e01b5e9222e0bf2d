/**
 * The cluster runtime on the payments workload: three `sluice serve` processes on the local NATS
 * JetStream and PostgreSQL take 100k events over HTTP, in input order, each request to the next
 * instance in turn. What PostgreSQL holds at the end (windows, dead letters, large payments) equals
 * what `sluice run` gives on the same input, and the HTTP API of any instance serves the same.
 * Then the same with the pipeline's owner SIGKILLed mid-stream and restarted. The input is the
 * project's own sample; where ../shared is present, the plain run is repeated on its seed-1 100k
 * input and must also equal its independent expected results.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { prng } from '../dist/cli/demo.js';
import { ownerOf, runWorkload, WORKLOAD_PIPELINE } from './cluster-helpers.ts';
import { batchResults, SAMPLE_100K, SEED1_100K, type Workload } from './helpers.ts';
import { planBatches, readLines, type Batch } from './serve-helpers.ts';
import { haveServices } from './services.ts';

const batchesOf = (w: Workload): Batch[] => planBatches(readLines(w.input()), prng(20261122));

describe('the cluster runtime on the payments workload (over HTTP, 3 instances)', () => {
  for (const [label, w] of [
    ['plain', SAMPLE_100K],
    ['plainref', SEED1_100K],
  ] as const) {
    const also = w.expected ? ` and ../shared/workload/expected/${w.expected}` : '';
    it(
      `holds exactly what sluice run gives${also} in PostgreSQL (${w.name})`,
      { ...w.options, timeout: 240_000 },
      async (t) => {
        if (!(await haveServices(t, 'postgres', 'nats'))) return;
        const { ctx } = await runWorkload({
          label,
          batches: batchesOf(w),
          reference: await batchResults(w.input()),
          expected: w.expected,
        });
        assert.equal(ctx.unavailable.size, 0, `503 answers: ${JSON.stringify([...ctx.unavailable])}`);
      },
    );
  }

  it(
    `stays exact when the owner is SIGKILLed mid-stream and restarted (${SAMPLE_100K.name})`,
    { timeout: 240_000 },
    async (t) => {
      if (!(await haveServices(t, 'postgres', 'nats'))) return;
      const { servers } = await runWorkload({
        label: 'kill',
        batches: batchesOf(SAMPLE_100K),
        reference: await batchResults(SAMPLE_100K.input()),
        // Checkpoints far apart: the new owner must rebuild the state by reading the stream again.
        extra: { checkpoint: { interval: '1h' } },
        during: async ({ servers, restart }) => {
          const owner = await ownerOf(servers, `acme/${WORKLOAD_PIPELINE}`);
          assert.ok(owner >= 0, 'no instance owns the pipeline');
          await servers[owner]!.kill();
          await restart(owner);
        },
      });
      const logs = servers.map((s) => s.output()).join('\n');
      const epochs = [...logs.matchAll(/"epoch":(\d+),"msg":"owning the pipeline"/g)].map((m) =>
        Number(m[1]),
      );
      assert.ok(epochs.includes(2), `no instance took the pipeline over: epochs ${epochs.join(', ')}`);
      assert.match(logs, /"replayed":[1-9]\d*,"msg":"pipeline state restored from the stream"/);
    },
  );
});
