/**
 * `sluice tap` in the cluster runtime: the pipeline runs on its owner, and a tap opened on the
 * other instance gets the records leaving the step all the same (the owner publishes them on core
 * NATS while the watcher announces itself); an unknown step is a 404 from any instance.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { dropStream, ownerOf, streamName, writeClusterConfig } from './cluster-helpers.ts';
import { sluice, tempDir } from './helpers.ts';
import { postEvents, startServer, type Server, killRunning } from './serve-helpers.ts';
import { freshSchema, haveServices } from './services.ts';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

const KEY = 'sk_cluster_tap_0123456789';
const T0 = Date.UTC(2026, 11, 6, 12, 0, 0);

const PIPELINE = `name: ticks
source: { type: file, format: ndjson }
steps:
  - type: filter
    id: big
    condition: { field: v, gte: 10 }
  - type: window
    id: per_second
    time_field: ts_ms
    size: 1s
    group_by: [k]
    output: counts
    metrics:
      n: { op: count }
sinks:
  counts: { type: file, input: counts, path: counts.ndjson }
`;

describe('sluice tap in the cluster runtime', () => {
  it(
    'a tap on an instance that does not own the pipeline gets what its owner processes',
    { timeout: 90_000 },
    async (t) => {
      if (!(await haveServices(t, 'postgres', 'nats'))) return;
      const dir = tempDir('sluice-cluster-tap-');
      writeFileSync(join(dir, 'ticks.yaml'), PIPELINE);
      const stream = streamName('tap');
      const db = await freshSchema('tap');
      const servers: Server[] = [];
      try {
        for (const name of ['a', 'b'])
          servers.push(
            await startServer(
              writeClusterConfig(dir, name, {
                stream,
                schema: db.schema,
                tenants: { acme: { keys: [KEY], pipelines: { ticks: join(dir, 'ticks.yaml') } } },
              }),
            ),
          );
        let owner = -1;
        for (let i = 0; i < 100 && owner < 0; i++, await sleep(100))
          owner = await ownerOf(servers, 'acme/ticks');
        assert.ok(owner >= 0, 'no instance owns acme/ticks');
        const watcher = servers[1 - owner]!;

        const tapped = sluice(
          [
            'tap',
            'ticks',
            '--url',
            watcher.url,
            '--key',
            KEY,
            '--step',
            'big',
            '--limit',
            '3',
            '--seconds',
            '30s',
          ],
          { killAfterMs: 45_000 },
        );
        let done = false;
        void tapped.then(() => (done = true));
        // Until the owner has heard the tap, records are not copied: post until the CLI has three.
        for (let i = 0; !done; i++) {
          const body =
            [1, 20, 30].map((v, j) => JSON.stringify({ k: 'x', v, ts_ms: T0 + i * 10 + j })).join('\n') +
            '\n';
          const r = await postEvents(servers[i % 2]!, 'ticks', KEY, body, {
            'content-type': 'application/x-ndjson',
          });
          assert.equal(r.status, 202, JSON.stringify(r.body));
          await sleep(150);
        }
        const r = await tapped;
        assert.equal(r.code, 0, r.stderr);
        const records = r.stdout
          .trimEnd()
          .split('\n')
          .map((l) => JSON.parse(l) as { v: number });
        // Only what passed the filter.
        assert.equal(records.length, 3);
        for (const rec of records) assert.ok(rec.v >= 10, JSON.stringify(rec));

        const unknown = await fetch(`${watcher.url}/v1/pipelines/ticks/tap?step=nope`, {
          headers: { authorization: `Bearer ${KEY}` },
        });
        assert.equal(unknown.status, 404);
        for (const s of servers) assert.deepEqual(await s.stop(), { code: 0, signal: null }, s.output());
      } finally {
        await killRunning(servers);
        await db.drop();
        await dropStream(stream);
      }
    },
  );
});
