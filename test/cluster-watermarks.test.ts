/**
 * Scale-out does not change results (issue 15): the same concurrent load, two clients each sending
 * its own requests in event-time order, gives the same windows and no late events through one
 * instance and through two, also when one of the two instances stalls (SIGSTOP) with a request in
 * hand while the other goes on far ahead in event time. With one watermark for the whole stream,
 * the stalled instance's request, stored after the other's, would be `late`; with a watermark per
 * ingest path it is not.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { caughtUp, dropStream, lastSeq, streamName, writeClusterConfig } from './cluster-helpers.ts';
import { tempDir } from './helpers.ts';
import { postEvents, startServer, type Server } from './serve-helpers.ts';
import { freshSchema, haveServices, pgIn } from './services.ts';

const KEY = 'sk_cluster_watermarks';
const T0 = Date.UTC(2026, 11, 6, 10, 0, 0);
/** 100 events per second of event time, 50 per request: a request spans half a second. */
const STEP_MS = 10;
const PER_REQUEST = 50;
const REQUESTS = 240;

const PIPELINE = `name: ticks
source: { type: file, format: ndjson }
steps:
  - type: window
    id: per_second
    time_field: ts_ms
    size: 1s
    allowed_lateness: 5s
    group_by: [k]
    output: counts
    metrics:
      n: { op: count }
sinks:
  counts: { type: file, input: counts, path: counts.ndjson }
`;

function body(request: number): Buffer {
  let text = '';
  for (let i = request * PER_REQUEST; i < (request + 1) * PER_REQUEST; i++)
    text += JSON.stringify({ k: `k${i % 3}`, ts_ms: T0 + i * STEP_MS }) + '\n';
  return Buffer.from(text);
}

/** Window start → key → count, as the events are. */
function expectedCounts(): Map<string, number> {
  const out = new Map<string, number>();
  for (let i = 0; i < REQUESTS * PER_REQUEST; i++) {
    const start = Math.floor((T0 + i * STEP_MS) / 1000) * 1000;
    const key = `${new Date(start).toISOString()} k${i % 3}`;
    out.set(key, (out.get(key) ?? 0) + 1);
  }
  return out;
}

interface Outcome {
  counts: Map<string, number>;
  dead: Record<string, number>;
  /** The ingest paths the owner's /metrics shows, with the pipeline's watermark (epoch ms). */
  paths: string[];
  watermarkMs: number | undefined;
}

/**
 * Runs the load on `instances` instances: client c sends requests c, c + 2, c + 4, … one after
 * the other, to instance c % instances. `stall` is called by client 1 before its request at
 * REQUESTS / 2 is sent, and resumes it when it returns.
 */
async function run(
  label: string,
  instances: number,
  stall?: (server: Server, send: () => Promise<void>) => Promise<void>,
): Promise<Outcome> {
  const dir = tempDir(`sluice-cluster-wm-${label}-`);
  writeFileSync(join(dir, 'ticks.yaml'), PIPELINE);
  const stream = streamName(`wm${label}`);
  const db = await freshSchema(`wm${label}`);
  const sql = pgIn(db.schema);
  const servers: Server[] = [];
  try {
    for (const name of ['a', 'b'].slice(0, instances)) {
      const config = writeClusterConfig(dir, name, {
        stream,
        schema: db.schema,
        tenants: { acme: { keys: [KEY], pipelines: { ticks: join(dir, 'ticks.yaml') } } },
      });
      servers.push(await startServer(config));
    }
    const client = async (c: number): Promise<void> => {
      const server = servers[c % servers.length]!;
      for (let r = c; r < REQUESTS; r += 2) {
        const send = async (): Promise<void> => {
          const res = await postEvents(server, 'ticks', KEY, body(r), {
            'content-type': 'application/x-ndjson',
          });
          assert.equal(res.status, 202, JSON.stringify(res.body));
        };
        if (stall && c === 1 && r === REQUESTS / 2 + 1) await stall(server, send);
        else await send();
      }
    };
    await Promise.all([client(0), client(1)]);
    await caughtUp(sql, 'acme/ticks', await lastSeq(stream));
    const rows = await sql<{ row: string }[]>`
      SELECT row::text AS row FROM sluice_windows WHERE pipeline = 'acme/ticks'`;
    const counts = new Map<string, number>();
    for (const { row } of rows) {
      const r = JSON.parse(row) as { window_start: string; k: string; n: number };
      counts.set(`${r.window_start} ${r.k}`, r.n);
    }
    const letters = await sql<{ reason: string; n: string }[]>`
      SELECT reason, count(*)::text AS n FROM sluice_dead_letters WHERE pipeline = 'acme/ticks' GROUP BY reason`;
    const metrics = (
      await Promise.all(servers.map(async (s) => (await fetch(`${s.url}/metrics`)).text()))
    ).join('\n');
    const paths = [
      ...metrics.matchAll(/^sluice_path_watermark_seconds\{[^}]*step="per_second",path="(\w+)"\} \S+$/gm),
    ].map((m) => m[1]!);
    const watermark = /^sluice_watermark_seconds\{[^}]*step="per_second"\} (\S+)$/m.exec(metrics)?.[1];
    for (const s of servers) assert.deepEqual(await s.stop(), { code: 0, signal: null }, s.output());
    return {
      counts,
      dead: Object.fromEntries(letters.map((l) => [l.reason, Number(l.n)])),
      paths: paths.sort(),
      watermarkMs: watermark === undefined ? undefined : Number(watermark) * 1000,
    };
  } finally {
    for (const s of servers)
      if (s.proc.exitCode === null && s.proc.signalCode === null) {
        s.proc.kill('SIGCONT');
        await s.kill();
      }
    await sql.end();
    await db.drop();
    await dropStream(stream);
  }
}

describe('watermarks per ingest path in the cluster runtime', () => {
  it(
    'the same concurrent load gives the same windows and no late events through 1 and 2 instances, also when one instance stalls',
    { timeout: 180_000 },
    async (t) => {
      if (!(await haveServices(t, 'postgres', 'nats'))) return;
      const expected = expectedCounts();
      const one = await run('one', 1);
      assert.deepEqual(one.dead, {}, 'dead letters through 1 instance');
      assert.deepEqual(one.counts, expected, 'windows through 1 instance');
      const lastMs = T0 + (REQUESTS * PER_REQUEST - 1) * STEP_MS;
      assert.deepEqual([one.paths, one.watermarkMs], [['a'], lastMs], 'metrics through 1 instance');

      const two = await run('two', 2);
      assert.deepEqual(two.dead, {}, 'dead letters through 2 instances');
      assert.deepEqual(two.counts, one.counts, 'windows through 2 instances');
      // The owner reports both paths; the watermark is the least of their largest event times.
      assert.deepEqual(two.paths, ['a', 'b'], 'paths on /metrics');
      assert.ok(
        two.watermarkMs !== undefined && two.watermarkMs <= lastMs && two.watermarkMs >= lastMs - 1000,
      );

      // Instance b stops with client 1's request in hand; a goes on alone for 2.5 s (about
      // REQUESTS / 2 requests, a minute of event time), then b stores its request.
      let aheadBy = 0;
      const stalled = await run('stall', 2, async (server, send) => {
        server.proc.kill('SIGSTOP');
        const sending = send();
        const before = Date.now();
        await sleep(2500);
        server.proc.kill('SIGCONT');
        await sending;
        aheadBy = Date.now() - before;
      });
      assert.ok(aheadBy >= 2500);
      assert.deepEqual(stalled.dead, {}, 'dead letters through 2 instances, one stalled');
      assert.deepEqual(stalled.counts, one.counts, 'windows through 2 instances, one stalled');
    },
  );
});
