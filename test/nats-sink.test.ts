/**
 * The `nats` sink against the machine's real NATS JetStream: `sluice run` publishes every record of
 * an output once, with its id as Nats-Msg-Id, so a second run within the duplicate window adds
 * nothing; a NATS without JetStream, or none at all, is a clear SLUICE_ERR_CONNECT, not a crash.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { paymentsCopy, sampleInput, sluice, tempDir } from './helpers.ts';
import { freePort, haveBinary, NATS_URL, reachable, untilListening } from './services.ts';

const RUN = `${process.pid}_${Date.now().toString(36)}`;
const STREAM = `SLUICE_TEST_SINK_${RUN}`;
const SUBJECT = `sluice.test.sink.${RUN}`;

/** The payments example with one more sink: its large payments on a JetStream subject. */
const pipelineWithNats = (dir: string, url: string): string =>
  paymentsCopy(dir, (yaml) =>
    yaml.replace(
      /^sinks:\n/m,
      `sinks:\n  large_nats:\n    type: nats\n    input: large\n    url: ${url}\n    subject: ${SUBJECT}\n    stream: ${STREAM}\n`,
    ),
  );

const spawned: ChildProcess[] = [];
after(async () => {
  for (const p of spawned) p.kill('SIGKILL');
  try {
    const nc = await connect({ servers: NATS_URL, timeout: 1000 });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(STREAM).catch(() => {});
    await nc.close();
  } catch {
    // NATS is not there: nothing was created.
  }
});

async function streamMessages(): Promise<{ id: string | undefined; record: Record<string, unknown> }[]> {
  const nc = await connect({ servers: NATS_URL });
  try {
    const js = jetstream(nc);
    const info = await (await jetstreamManager(nc)).streams.info(STREAM);
    const consumer = await js.consumers.get(STREAM);
    const out: { id: string | undefined; record: Record<string, unknown> }[] = [];
    if (info.state.messages === 0) return out;
    const messages = await consumer.consume();
    for await (const m of messages) {
      out.push({ id: m.headers?.get('Nats-Msg-Id'), record: m.json() });
      if (m.seq === info.state.last_seq) break;
    }
    return out;
  } finally {
    await nc.close();
  }
}

describe('sink nats', () => {
  it('publishes each large payment once, with its id as Nats-Msg-Id; a rerun adds nothing', async (t) => {
    if (!(await reachable(t, 'NATS', NATS_URL, 4222))) return;
    const dir = tempDir('sluice-nats-sink-');
    const pipeline = pipelineWithNats(dir, NATS_URL);
    const input = sampleInput(100_000);
    const first = await sluice(['run', pipeline, '--input', input, '--out', join(dir, 'out')]);
    assert.equal(first.code, 0, first.stderr);
    const fileLarge = readFileSync(join(dir, 'out', 'large.ndjson'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(fileLarge.length > 100, `only ${fileLarge.length} large payments`);
    const published = await streamMessages();
    assert.deepEqual(
      published.map((m) => m.record),
      fileLarge,
      'the stream holds the large payments, in order',
    );
    assert.deepEqual(
      published.map((m) => m.id),
      fileLarge.map((r) => r.id),
    );

    const second = await sluice(['run', pipeline, '--input', input, '--out', join(dir, 'out2')]);
    assert.equal(second.code, 0, second.stderr);
    assert.equal((await streamMessages()).length, fileLarge.length, 'the rerun published duplicates');
  });

  it('a NATS without JetStream is SLUICE_ERR_CONNECT saying so', async (t) => {
    if (!haveBinary(t, 'nats-server')) return;
    const port = await freePort();
    const server = spawn('nats-server', ['-a', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
    spawned.push(server);
    await untilListening(port);
    const dir = tempDir('sluice-nats-nojs-');
    const pipeline = pipelineWithNats(dir, `nats://127.0.0.1:${port}`);
    const run = await sluice(['run', pipeline, '--input', sampleInput(100_000), '--out', join(dir, 'out')]);
    server.kill('SIGKILL');
    assert.equal(run.code, 1, run.stderr);
    assert.match(
      run.stderr,
      /error\[SLUICE_ERR_CONNECT\]: NATS at nats:\/\/127\.0\.0\.1:\d+\/? has no JetStream/,
    );
    assert.match(run.stderr, /help: Start nats-server with JetStream enabled/);
  });

  it('no NATS at all is SLUICE_ERR_CONNECT naming the URL', async () => {
    const port = await freePort();
    const dir = tempDir('sluice-nats-none-');
    const pipeline = pipelineWithNats(dir, `nats://127.0.0.1:${port}`);
    const run = await sluice(['run', pipeline, '--input', sampleInput(100_000), '--out', join(dir, 'out')]);
    assert.equal(run.code, 1, run.stderr);
    assert.match(
      run.stderr,
      new RegExp(`error\\[SLUICE_ERR_CONNECT\\]: cannot connect to NATS at nats://127.0.0.1:${port}`),
    );
  });
});
