/**
 * SIGHUP in the cluster runtime: an instance takes new API keys and rate limits at once, without a
 * restart; a config that changes what every instance must agree on (a pipeline, the runtime
 * section) is refused with the reason, and the running config stays.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { clusterPayments, dropStream, streamName, writeClusterConfig } from './cluster-helpers.ts';
import { sampleInput, tempDir } from './helpers.ts';
import { postEvents, readLines, startServer, waitForLog, type Server, killRunning } from './serve-helpers.ts';
import { freshSchema, haveServices } from './services.ts';

const OLD_KEY = 'sk_reload_old';
const NEW_KEY = 'sk_reload_new';

describe('SIGHUP in the cluster runtime', () => {
  it(
    'swaps API keys and limits in; refuses a changed pipeline or runtime',
    { timeout: 60_000 },
    async (t) => {
      if (!(await haveServices(t, 'postgres', 'nats'))) return;
      const dir = tempDir('sluice-cluster-reload-');
      const stream = streamName('reload');
      const db = await freshSchema('reload');
      const pipeline = clusterPayments(dir);
      const write = (
        key: string,
        extra: { limits?: Record<string, unknown>; pipelines?: Record<string, string> },
      ) =>
        writeClusterConfig(dir, 'a', {
          stream,
          schema: db.schema,
          tenants: {
            acme: { keys: [key], pipelines: extra.pipelines ?? { payments: pipeline }, limits: extra.limits },
          },
        });
      const body = Buffer.concat(
        readLines(sampleInput(100_000))
          .slice(0, 10)
          .flatMap((l) => [l, Buffer.from('\n')]),
      );
      let server: Server | undefined;
      try {
        const config = write(OLD_KEY, {});
        server = await startServer(config);
        assert.equal((await postEvents(server, 'payments', OLD_KEY, body)).status, 202);

        // New key, old one revoked, and a limit below one request's 10 events.
        write(NEW_KEY, { limits: { events_per_second: 5, burst: '1s' } });
        server.proc.kill('SIGHUP');
        await waitForLog(server, /"msg":"config reloaded"/, 1, /reload refused/);
        assert.equal((await postEvents(server, 'payments', OLD_KEY, body)).status, 401);
        const limited = await postEvents(server, 'payments', NEW_KEY, body);
        assert.equal(limited.status, 429, JSON.stringify(limited.body));
        assert.equal((limited.body as { code: string }).code, 'SLUICE_ERR_RATE_LIMITED');

        // A pipeline added: refused, saying which; the running keys and limits stay.
        write(OLD_KEY, { pipelines: { payments: pipeline, more: pipeline } });
        server.proc.kill('SIGHUP');
        const [refused] = await waitForLog(server, /reload refused/, 1);
        assert.match(refused!, /change only on a restart: the pipelines acme\/more/);
        assert.equal((await postEvents(server, 'payments', OLD_KEY, body)).status, 401);

        // The runtime section changed: refused too.
        const raw = JSON.parse(readFileSync(config, 'utf8')) as {
          runtime: { owner: Record<string, unknown> };
        };
        raw.runtime.owner.batch = 10;
        writeFileSync(config, JSON.stringify(raw));
        server.proc.kill('SIGHUP');
        const refusals = await waitForLog(server, /reload refused/, 2);
        assert.match(refusals[1]!, /change only on a restart: runtime, the pipelines acme\/more/);

        assert.deepEqual(await server.stop(), { code: 0, signal: null }, server.output());
      } finally {
        await killRunning([server]);
        await db.drop();
        await dropStream(stream);
      }
    },
  );
});
