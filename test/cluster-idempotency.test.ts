/**
 * Idempotency-Key in the cluster runtime beyond JetStream's duplicate window: a retry the broker
 * no longer recognises is stored, and the pipeline's owner drops it because the key was processed
 * before; after a SIGKILL the new owner rebuilds the same state (it drops the same retry again).
 * The pipeline counts records per window without a dedupe step, so a retry processed twice would
 * show in the counts.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { caughtUp, dropStream, lastSeq, streamName, writeClusterConfig } from './cluster-helpers.ts';
import { tempDir } from './helpers.ts';
import { postEvents, startServer, type Server, killRunning } from './serve-helpers.ts';
import { freshSchema, haveServices, pgIn } from './services.ts';

const KEY = 'sk_cluster_idempotency';
const T0 = Date.UTC(2026, 11, 3, 10, 0, 0);

/** `n` events in the windows of minutes 0 to 2, keys a and b, the first one at `from`. */
function body(from: number, n: number): Buffer {
  let text = '';
  for (let i = from; i < from + n; i++)
    text += JSON.stringify({ id: `e${i}`, k: i % 2 ? 'a' : 'b', ts_ms: T0 + (i % 180) * 1000 }) + '\n';
  return Buffer.from(text);
}

const PIPELINE = `name: counts
source: { type: file, format: ndjson }
steps:
  - type: window
    id: per_minute
    time_field: ts_ms
    size: 60s
    allowed_lateness: 1h
    group_by: [k]
    output: counts
    metrics:
      n: { op: count }
sinks:
  counts: { type: file, input: counts, path: counts.ndjson }
`;

describe('Idempotency-Key in the cluster runtime', () => {
  it(
    "drops a retry JetStream's duplicate window no longer catches, also when the state is rebuilt",
    { timeout: 120_000 },
    async (t) => {
      if (!(await haveServices(t, 'postgres', 'nats'))) return;
      const dir = tempDir('sluice-cluster-idem-');
      writeFileSync(join(dir, 'counts.yaml'), PIPELINE);
      const stream = streamName('idem');
      const db = await freshSchema('idem');
      const sql = pgIn(db.schema);
      const config = writeClusterConfig(dir, 'a', {
        stream,
        schema: db.schema,
        nats: { duplicate_window: '1s' },
        // No checkpoint until the end: the restarted owner rebuilds from the whole stream.
        extra: { checkpoint: { interval: '1h' } },
        tenants: { acme: { keys: [KEY], pipelines: { counts: join(dir, 'counts.yaml') } } },
      });
      let server: Server | undefined;
      const post = async (b: Buffer, key?: string): Promise<string | null> => {
        const r = await postEvents(server!, 'counts', KEY, b, {
          'content-type': 'application/x-ndjson',
          ...(key ? { 'idempotency-key': key } : {}),
        });
        assert.equal(r.status, 202, JSON.stringify(r.body));
        return r.headers.get('idempotent-replayed');
      };
      /** The records counted in all windows, once the owner has read the whole stream. */
      const counted = async (): Promise<number> => {
        await caughtUp(sql, 'acme/counts', await lastSeq(stream));
        const [row] = await sql<{ n: string | null }[]>`
          SELECT sum((row->>'n')::bigint)::text AS n FROM sluice_windows WHERE pipeline = 'acme/counts'`;
        return Number(row?.n ?? 0);
      };
      try {
        server = await startServer(config);
        assert.equal(await post(body(0, 100), 'first'), null);
        // Within the window the broker drops the retry and the answer says so.
        assert.equal(await post(body(0, 100), 'first'), 'true');
        assert.equal(await counted(), 100);
        // Past the window the retry is stored again: the owner drops it.
        await sleep(1500);
        assert.equal(await post(body(0, 100), 'first'), null);
        assert.equal(await post(body(100, 50), 'second'), null);
        assert.equal(await counted(), 150);
        assert.match(server.output(), /"idempotencyKey":"first".*"msg":"request dropped: a request with its/);
        // Stream sequence 2 is the retry stored past the window: it has no row of its own.
        const keys = await sql<{ key: string; seq: string }[]>`
          SELECT key, seq::text FROM sluice_requests WHERE pipeline = 'acme/counts' ORDER BY seq`;
        assert.deepEqual(
          keys.map((k) => [k.key, k.seq]),
          [
            ['first', '1'],
            ['second', '3'],
          ],
        );

        // A new owner rebuilds the windows' state from the stream: it must drop the retry again,
        // or the next records in the same windows would be counted on top of a doubled state.
        await server.kill();
        server = await startServer(config);
        assert.equal(await post(body(150, 30)), null);
        assert.equal(await counted(), 180);
        assert.deepEqual(await server.stop(), { code: 0, signal: null }, server.output());
      } finally {
        await killRunning([server]);
        await sql.end();
        await db.drop();
        await dropStream(stream);
      }
    },
  );
});
