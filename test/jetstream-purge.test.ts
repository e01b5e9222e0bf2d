/**
 * The cluster owner drops a pipeline's stream messages once a checkpoint covers them, through
 * `purgeBefore` (src/helpers/jetstream.ts). JetStream's purge reads a `seq` of 1 as "no sequence"
 * and drops every message of the subject; an owner that checkpointed at position 0 (handed over or
 * stopped before its first message) purged with `seq: 1` and deleted acknowledged requests nobody
 * had processed yet (cluster-owner-kills, 2026-12-07). Against the local NATS server.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { purgeBefore } from '../dist/helpers/jetstream.js';
import { haveServices, NATS_URL } from './services.ts';

describe('purgeBefore', () => {
  let nc: NatsConnection | undefined;
  let jsm: JetStreamManager | undefined;
  const streams: string[] = [];
  after(async () => {
    for (const s of streams) await jsm?.streams.delete(s).catch(() => {});
    await nc?.close();
  });

  /** A stream with 10 messages, alternately on `<name>.b` (odd sequences) and `<name>.a` (even). */
  async function tenMessages(): Promise<{ name: string; count: (subject: string) => Promise<number[]> }> {
    nc ??= await connect({ servers: NATS_URL });
    jsm ??= await jetstreamManager(nc);
    const name = `T_PURGE_${process.pid}_${Date.now().toString(36)}_${streams.length}`.toUpperCase();
    await jsm.streams.add({ name, subjects: [`${name}.>`] });
    streams.push(name);
    const js = jetstream(nc);
    for (let i = 1; i <= 10; i++) await js.publish(`${name}.${i % 2 ? 'b' : 'a'}`, String(i));
    const count = async (subject: string): Promise<number[]> => {
      const seqs: number[] = [];
      for (let seq = 1; seq <= 10; seq++) {
        const m = await jsm!.streams.getMessage(name, { seq }).catch(() => null);
        if (m && m.subject === `${name}.${subject}`) seqs.push(seq);
      }
      return seqs;
    };
    return { name, count };
  }

  it('drops only what comes before the sequence, and nothing for 0 or 1', async (t) => {
    if (!(await haveServices(t, 'nats'))) return;
    const { name, count } = await tenMessages();
    assert.equal(
      await purgeBefore(jsm!, name, `${name}.a`, 1),
      0,
      'a checkpoint at position 0 covers nothing',
    );
    assert.equal(await purgeBefore(jsm!, name, `${name}.a`, 0), 0);
    assert.deepEqual(await count('a'), [2, 4, 6, 8, 10]);
    assert.equal(await purgeBefore(jsm!, name, `${name}.a`, 7), 3);
    assert.deepEqual(await count('a'), [8, 10]);
    assert.deepEqual(await count('b'), [1, 3, 5, 7, 9], 'other subjects keep theirs');
  });

  it("needs its guard: JetStream's own purge with seq 1 drops the whole subject", async (t) => {
    if (!(await haveServices(t, 'nats'))) return;
    const { name, count } = await tenMessages();
    const r = await jsm!.streams.purge(name, { filter: `${name}.b`, seq: 1 });
    assert.equal(r.purged, 5);
    assert.deepEqual(await count('b'), []);
    assert.deepEqual(await count('a'), [2, 4, 6, 8, 10]);
  });
});
