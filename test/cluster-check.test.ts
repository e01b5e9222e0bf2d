/** `sluice check` on a cluster service config: it reaches every server the config names, or says which not. */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { clusterPayments, writeClusterConfig } from './cluster-helpers.ts';
import { sluice, tempDir } from './helpers.ts';
import { freePort, haveServices, REDIS_URL } from './services.ts';

describe('sluice check on a cluster config', () => {
  it('reports NATS, PostgreSQL and Redis when they answer', { timeout: 30_000 }, async (t) => {
    if (!(await haveServices(t, 'postgres', 'nats', 'redis'))) return;
    const dir = tempDir('sluice-cluster-check-');
    const config = writeClusterConfig(dir, 'a', {
      stream: 'SLUICE_CHECK',
      schema: 'public',
      redis: { url: REDIS_URL },
      tenants: { acme: { keys: ['k'], pipelines: { payments: clusterPayments(dir) } } },
    });
    const r = await sluice(['check', config]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /runtime cluster \(instance a\)/);
    assert.match(r.stdout, /nats nats:\/\/127\.0\.0\.1:\d+: ok \(JetStream; stream SLUICE_CHECK/);
    assert.match(r.stdout, /postgres postgres:\/\/.*: ok \(PostgreSQL \d+/);
    assert.match(r.stdout, /redis redis:\/\/.*: ok/);
  });

  it(
    'fails with SLUICE_ERR_CONNECT naming the server that does not answer',
    { timeout: 30_000 },
    async () => {
      const dir = tempDir('sluice-cluster-check-');
      const port = await freePort();
      const config = writeClusterConfig(dir, 'a', {
        stream: 'SLUICE_CHECK',
        schema: 'public',
        natsUrl: `nats://127.0.0.1:${port}`,
        tenants: { acme: { keys: ['k'], pipelines: { payments: clusterPayments(dir) } } },
      });
      const r = await sluice(['check', config]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /SLUICE_ERR_CONNECT/);
      assert.match(r.stderr, new RegExp(`cannot connect to NATS at nats://127\\.0\\.0\\.1:${port}`));
    },
  );

  it(
    'refuses a postgres sink that names another database than the cluster',
    { timeout: 30_000 },
    async () => {
      const dir = tempDir('sluice-cluster-check-');
      const pipeline = clusterPayments(dir);
      const config = writeClusterConfig(dir, 'a', {
        stream: 'SLUICE_CHECK',
        schema: 'public',
        tenants: { acme: { keys: ['k'], pipelines: { payments: pipeline } } },
      });
      writeFileSync(
        pipeline,
        readFileSync(pipeline, 'utf8').replace(
          'table: large_payments',
          'table: large_payments\n    url: postgres://elsewhere/db',
        ),
      );
      const r = await sluice(['check', config]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /SLUICE_ERR_CONFIG_INVALID/);
      assert.match(
        r.stderr,
        /sink large: in the cluster runtime a postgres sink writes into runtime\.postgres/,
      );
    },
  );
});
