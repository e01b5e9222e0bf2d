/**
 * The cluster runtime on the payments reference workload: three `sluice serve` processes on the
 * local NATS JetStream and PostgreSQL take the seed-1 100k input over HTTP, in input order, each
 * request to the next instance in turn. What PostgreSQL holds at the end (windows, dead letters,
 * large payments) equals shared/workload/expected/seed1-100k, and the HTTP API of any instance
 * serves the same. Then the same with the pipeline's owner SIGKILLed mid-stream and restarted.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { prng } from '../dist/cli/demo.js';
import { ownerOf, runWorkload, WORKLOAD_PIPELINE } from './cluster-helpers.ts';
import { workloadInput } from './helpers.ts';
import { planBatches, readLines, type Batch } from './serve-helpers.ts';
import { haveServices } from './services.ts';

let batches: Batch[] = [];

before(() => {
  batches = planBatches(readLines(workloadInput(100_000)), prng(20261122));
});

describe('the cluster runtime on the payments workload (seed-1 100k over HTTP, 3 instances)', () => {
  it('holds exactly expected/seed1-100k in PostgreSQL', { timeout: 240_000 }, async (t) => {
    if (!(await haveServices(t, 'postgres', 'nats'))) return;
    const { ctx } = await runWorkload({ label: 'plain', batches });
    assert.equal(ctx.unavailable.size, 0, `503 answers: ${JSON.stringify([...ctx.unavailable])}`);
  });

  it('stays exact when the owner is SIGKILLed mid-stream and restarted', { timeout: 240_000 }, async (t) => {
    if (!(await haveServices(t, 'postgres', 'nats'))) return;
    const { servers } = await runWorkload({
      label: 'kill',
      batches,
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
    const epochs = [...logs.matchAll(/"epoch":(\d+),"msg":"owning the pipeline"/g)].map((m) => Number(m[1]));
    assert.ok(epochs.includes(2), `no instance took the pipeline over: epochs ${epochs.join(', ')}`);
    assert.match(logs, /"replayed":[1-9]\d*,"msg":"pipeline state restored from the stream"/);
  });
});
