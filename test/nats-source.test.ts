/**
 * The `nats` source against the machine's real NATS JetStream: the sample workload published one
 * event a message and run from the stream gives exactly what `sluice run` gives on the file;
 * messages are acknowledged only after the sinks committed, so a run killed with SIGKILL
 * acknowledges nothing and the next run reads everything again at once. Where ../shared is present,
 * its seed-1 100k input run from a stream must also equal its independent expected results.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import {
  assertSameResults,
  batchResults,
  BIN,
  compareWithExpected,
  PAYMENTS,
  paymentsCopy,
  ROOT,
  SAMPLE_100K,
  SEED1_100K,
  sluice,
  tempDir,
} from './helpers.ts';
import { NATS_URL, reachable } from './services.ts';

const RUN = `${process.pid}_${Date.now().toString(36)}`;
const STREAM = `SLUICE_TEST_SOURCE_${RUN}`;
const SUBJECT = `sluice.test.source.${RUN}`;
/** The stream of the cross-check with ../shared's reference input. */
const REF_STREAM = `SLUICE_TEST_SOURCE_REF_${RUN}`;
const REF_SUBJECT = `sluice.test.source.ref.${RUN}`;

/** The payments example reading `stream` instead of a file. */
const pipelineFromNats = (dir: string, consumer: string, stream = STREAM): string =>
  paymentsCopy(dir, (yaml) =>
    yaml.replace(
      /^source:\n(?: {2}.*\n)+/m,
      `source:\n  type: nats\n  url: ${NATS_URL}\n  stream: ${stream}\n  consumer: ${consumer}\n`,
    ),
  );

after(async () => {
  try {
    const nc = await connect({ servers: NATS_URL, timeout: 1000 });
    const jsm = await jetstreamManager(nc);
    for (const stream of [STREAM, REF_STREAM]) await jsm.streams.delete(stream).catch(() => {});
    await nc.close();
  } catch {
    // NATS is not there: nothing was created.
  }
});

/**
 * The sample input without its empty lines, as a file. In a file an empty line is a record (a parse
 * dead letter); the nats source reads a message as NDJSON, so an empty message holds no record, and
 * the runs over the stream and over the file would differ on them.
 */
let sampleLines: string | undefined;
function sampleMessages(): string {
  if (!sampleLines) {
    const lines = readFileSync(SAMPLE_100K.input(), 'utf8')
      .split('\n')
      .filter((l) => l !== '');
    sampleLines = join(tempDir('sluice-nats-source-input-'), 'events.ndjson');
    writeFileSync(sampleLines, lines.join('\n') + '\n');
  }
  return sampleLines;
}

/** Publishes every line of `input` as its own message on a new stream; returns how many. */
async function publishWorkload(input: string, stream = STREAM, subject = SUBJECT): Promise<number> {
  const nc = await connect({ servers: NATS_URL });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: stream, subjects: [subject] });
    const js = jetstream(nc);
    const lines = readFileSync(input, 'utf8').split('\n');
    if (lines[lines.length - 1] === '') lines.pop();
    for (let i = 0; i < lines.length; i += 1000)
      await Promise.all(lines.slice(i, i + 1000).map((l) => js.publish(subject, l)));
    return lines.length;
  } finally {
    await nc.close();
  }
}

async function consumerState(
  name: string,
  stream = STREAM,
): Promise<{ ackFloor: number; delivered: number; ackPending: number }> {
  const nc = await connect({ servers: NATS_URL });
  try {
    const info = await (await jetstreamManager(nc)).consumers.info(stream, name);
    return {
      ackFloor: info.ack_floor.stream_seq,
      delivered: info.delivered.stream_seq,
      ackPending: info.num_ack_pending,
    };
  } finally {
    await nc.close();
  }
}

describe('source nats', { timeout: 240_000 }, () => {
  let published = 0;

  const title = `a run over the stream gives what a run over the file gives (${SAMPLE_100K.name})`;
  it(`${title}, then acknowledges every message`, async (t) => {
    if (!(await reachable(t, 'NATS', NATS_URL, 4222))) return;
    published = await publishWorkload(sampleMessages());
    const dir = tempDir('sluice-nats-source-');
    const pipeline = pipelineFromNats(dir, 'whole');
    const run = await sluice(['run', pipeline, '--out', join(dir, 'out')]);
    assert.equal(run.code, 0, run.stderr);
    assertSameResults(await batchResults(sampleMessages()), join(dir, 'out'), 'the run from NATS');
    assert.deepEqual(await consumerState('whole'), {
      ackFloor: published,
      delivered: published,
      ackPending: 0,
    });

    // Nothing new: a second run reads nothing and writes empty outputs.
    const again = await sluice(['run', pipeline, '--out', join(dir, 'again'), '--json']);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(
      (JSON.parse(again.stdout) as { counters: Record<string, number> }).counters['input.records'] ?? 0,
      0,
    );
  });

  it('a run killed before its commit acknowledges nothing; the next run reads it all again', async (t) => {
    if (!(await reachable(t, 'NATS', NATS_URL, 4222))) return;
    assert.ok(published > 0, 'the first test published the workload');
    const dir = tempDir('sluice-nats-killed-');
    const pipeline = pipelineFromNats(dir, 'killed');
    const child = spawn(process.execPath, [BIN, 'run', pipeline, '--out', join(dir, 'dead-run')], {
      cwd: ROOT,
      stdio: 'ignore',
    });
    const exited = new Promise((r) => child.once('exit', r));
    // Kill it once it has read part of the stream.
    for (let i = 0; i < 400; i++) {
      const s = await consumerState('killed').catch(() => undefined);
      if (s && s.delivered > 0 && s.delivered < published) break;
      await sleep(25);
    }
    child.kill('SIGKILL');
    await exited;
    const killed = await consumerState('killed');
    assert.equal(killed.ackFloor, 0, 'a killed run acknowledged messages');
    assert.ok(killed.delivered > 0, 'the run was killed before it read anything');

    const rerun = await sluice(['run', pipeline, '--out', join(dir, 'out')]);
    assert.equal(rerun.code, 0, rerun.stderr);
    assertSameResults(await batchResults(sampleMessages()), join(dir, 'out'), 'the run from NATS');
    assert.deepEqual(await consumerState('killed'), {
      ackFloor: published,
      delivered: published,
      ackPending: 0,
    });
  });

  it(
    `a run over the stream equals ../shared/workload/expected/${SEED1_100K.expected} (${SEED1_100K.name})`,
    SEED1_100K.options,
    async (t) => {
      if (!(await reachable(t, 'NATS', NATS_URL, 4222))) return;
      const count = await publishWorkload(SEED1_100K.input(), REF_STREAM, REF_SUBJECT);
      const dir = tempDir('sluice-nats-source-ref-');
      const run = await sluice([
        'run',
        pipelineFromNats(dir, 'whole', REF_STREAM),
        '--out',
        join(dir, 'out'),
      ]);
      assert.equal(run.code, 0, run.stderr);
      const cmp = compareWithExpected(SEED1_100K.expected!, join(dir, 'out'));
      assert.equal(cmp.code, 0, cmp.report);
      assert.deepEqual(await consumerState('whole', REF_STREAM), {
        ackFloor: count,
        delivered: count,
        ackPending: 0,
      });
    },
  );

  it('a missing stream is SLUICE_ERR_CONNECT naming it', async (t) => {
    if (!(await reachable(t, 'NATS', NATS_URL, 4222))) return;
    const dir = tempDir('sluice-nats-nostream-');
    const pipeline = pipelineFromNats(dir, 'x');
    writeFileSync(
      pipeline,
      readFileSync(pipeline, 'utf8').replace(`stream: ${STREAM}`, 'stream: SLUICE_NO_SUCH_STREAM'),
    );
    const run = await sluice(['run', pipeline, '--out', join(dir, 'out')]);
    assert.equal(run.code, 1, run.stderr);
    assert.match(
      run.stderr,
      /error\[SLUICE_ERR_CONNECT\]: no JetStream stream SLUICE_NO_SUCH_STREAM at nats:/,
    );
  });

  it('a file source without --input is a usage error', async () => {
    const run = await sluice(['run', PAYMENTS, '--out', join(tempDir('sluice-noinput-'), 'out')]);
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, /error\[SLUICE_ERR_USAGE\]: a file source reads --input/);
  });
});
