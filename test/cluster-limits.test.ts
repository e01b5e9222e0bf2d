/**
 * A tenant's rate limit holds for the whole cluster: three instances sharing their token buckets
 * through the local Redis admit, together, what one bucket allows (the burst plus the rate over the
 * time), and each of them refuses the rest with 429 and Retry-After.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clusterPayments, dropStream, lastSeq, streamName, writeClusterConfig } from './cluster-helpers.ts';
import { sampleInput, tempDir } from './helpers.ts';
import { postEvents, readLines, startServer, type Server } from './serve-helpers.ts';
import { freshSchema, haveBinary, haveServices, REDIS_URL, throwawayNats } from './services.ts';

const KEY = 'sk_cluster_limits';
const RATE = 200;
const PER_REQUEST = 20;
const SECONDS = 3;

describe('rate limits in the cluster runtime', () => {
  it('hold across instances when they share Redis', { timeout: 60_000 }, async (t) => {
    if (!(await haveServices(t, 'postgres', 'nats', 'redis'))) return;
    const dir = tempDir('sluice-cluster-limits-');
    const stream = streamName('limits');
    const db = await freshSchema('limits');
    const pipeline = clusterPayments(dir);
    const servers: Server[] = [];
    try {
      for (const name of ['a', 'b', 'c'])
        servers.push(
          await startServer(
            writeClusterConfig(dir, name, {
              stream,
              schema: db.schema,
              // A loaded CI machine can stall an instance's event loop past the default timeout,
              // and each stall would fall back to per-instance buckets (redis-limits.test.ts).
              redis: { url: REDIS_URL, prefix: `sluice:test:${stream}:`, timeout: '1s' },
              tenants: {
                acme: {
                  keys: [KEY],
                  pipelines: { payments: pipeline },
                  limits: { events_per_second: RATE, burst: '1s' },
                },
              },
            }),
          ),
        );
      const body = Buffer.concat(
        readLines(sampleInput(100_000))
          .slice(0, PER_REQUEST)
          .flatMap((l) => [l, Buffer.from('\n')]),
      );
      const accepted = new Map<number, number>();
      const refused = new Map<number, number>();
      const started = Date.now();
      const deadline = started + SECONDS * 1000;
      // Six producers, each sending to the instances in turn, as fast as they are answered.
      await Promise.all(
        Array.from({ length: 6 }, async (_, p) => {
          for (let n = p; Date.now() < deadline; n++) {
            const i = n % servers.length;
            const r = await postEvents(servers[i]!, 'payments', KEY, body);
            if (r.status === 202) accepted.set(i, (accepted.get(i) ?? 0) + PER_REQUEST);
            else {
              assert.equal(r.status, 429, JSON.stringify(r.body));
              assert.ok(Number(r.headers.get('retry-after')) >= 1);
              refused.set(i, (refused.get(i) ?? 0) + 1);
            }
          }
        }),
      );
      const elapsed = (Date.now() - started) / 1000;
      const total = [...accepted.values()].reduce((a, b) => a + b, 0);
      // One bucket: full at the start (the burst), then refilled at the rate; one request of slack.
      const allowed = RATE * 1 + RATE * elapsed + PER_REQUEST;
      const fallbacks = servers.flatMap((s) =>
        s
          .output()
          .split('\n')
          .filter((l) => l.includes('Redis is unreachable')),
      );
      assert.ok(
        total <= allowed,
        `the cluster admitted ${total} events in ${elapsed} s; one bucket allows ${allowed}; ` +
          `fallbacks to per-instance buckets: ${fallbacks.join('\n') || 'none'}`,
      );
      assert.ok(total >= RATE * SECONDS * 0.6, `the cluster admitted only ${total} events in ${elapsed} s`);
      for (const i of servers.keys()) assert.ok((refused.get(i) ?? 0) > 0, `instance ${i} refused nothing`);
    } finally {
      for (const s of servers) await s.stop();
      await db.drop();
      await dropStream(stream);
    }
  });
});

describe('request size in the cluster runtime', () => {
  it(
    'answers 413 for a body larger than the NATS server takes in one message',
    { timeout: 60_000 },
    async (t) => {
      if (!haveBinary(t, 'nats-server') || !(await haveServices(t, 'postgres'))) return;
      const nats = await throwawayNats({ maxPayload: 256 * 1024 });
      const dir = tempDir('sluice-cluster-payload-');
      const db = await freshSchema('payload');
      let server: Server | undefined;
      try {
        server = await startServer(
          writeClusterConfig(dir, 'a', {
            stream: streamName('payload'),
            schema: db.schema,
            natsUrl: nats.url,
            tenants: { acme: { keys: [KEY], pipelines: { payments: clusterPayments(dir) } } },
          }),
        );
        assert.match(server.output(), /limits.body_bytes is above what the NATS server takes in one message/);
        const lines = readLines(sampleInput(100_000));
        const body = (n: number): Buffer =>
          Buffer.concat(lines.slice(0, n).flatMap((l) => [l, Buffer.from('\n')]));
        const big = await postEvents(server, 'payments', KEY, body(2000));
        assert.equal(big.status, 413, JSON.stringify(big.body));
        assert.equal((big.body as { code: string }).code, 'SLUICE_ERR_BODY_TOO_LARGE');
        assert.match((big.body as { detail: string }).detail, /max_payload 262144/);
        const small = await postEvents(server, 'payments', KEY, body(100));
        assert.equal(small.status, 202, JSON.stringify(small.body));
      } finally {
        await server?.stop();
        await db.drop();
        await nats.destroy();
      }
    },
  );

  it(
    'answers 503 once the stream is full (runtime.nats.max_bytes), and keeps what it acknowledged',
    { timeout: 60_000 },
    async (t) => {
      if (!(await haveServices(t, 'postgres', 'nats'))) return;
      const dir = tempDir('sluice-cluster-full-');
      const stream = streamName('full');
      const db = await freshSchema('full');
      let server: Server | undefined;
      try {
        server = await startServer(
          writeClusterConfig(dir, 'a', {
            stream,
            schema: db.schema,
            nats: { max_bytes: 1024 * 1024 },
            // No checkpoint, so nothing is purged: the stream only fills.
            extra: { checkpoint: { interval: '1h' } },
            tenants: { acme: { keys: [KEY], pipelines: { payments: clusterPayments(dir) } } },
          }),
        );
        const lines = readLines(sampleInput(100_000));
        let accepted = 0;
        let refused: { status: number; body: unknown } | undefined;
        for (let i = 0; i < 100 && !refused; i++) {
          const body = Buffer.concat(
            lines.slice(i * 200, i * 200 + 200).flatMap((l) => [l, Buffer.from('\n')]),
          );
          const r = await postEvents(server, 'payments', KEY, body);
          if (r.status === 202) accepted++;
          else refused = r;
        }
        assert.ok(refused, 'the stream never filled');
        assert.equal(refused.status, 503, JSON.stringify(refused.body));
        assert.equal((refused.body as { code: string }).code, 'SLUICE_ERR_UNAVAILABLE');
        assert.ok(accepted > 0, 'nothing was accepted before the stream filled');
        // Every acknowledged request is in the stream.
        assert.equal(await lastSeq(stream), accepted);
      } finally {
        await server?.stop();
        await db.drop();
        await dropStream(stream);
      }
    },
  );
});
