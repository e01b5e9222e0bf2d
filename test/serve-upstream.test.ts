/**
 * `upstream:` in front of an existing service (issue 14): a real `sluice serve` passes every
 * request to a route it does not serve to a real node:http server on 127.0.0.1, unchanged, and
 * keeps its own routes.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { sluice, tempDir } from './helpers.ts';
import { paymentEvent, postEvents, startServer, writeServiceConfig, type Server } from './serve-helpers.ts';

const KEY = 'sk_upstream_tenant_0123456789ab';

interface Seen {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  bytes: number;
  sha256: string;
}

/** The legacy service: records what it received and answers 207 with a header and a body of its own. */
function legacyService(seen: Seen[]): Promise<HttpServer> {
  const server = createServer((req, res) => {
    const hash = createHash('sha256');
    let bytes = 0;
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      hash.update(chunk);
    });
    req.on('end', () => {
      const entry = {
        method: req.method!,
        url: req.url!,
        headers: req.headers,
        bytes,
        sha256: hash.digest('hex'),
      };
      seen.push(entry);
      res.writeHead(207, { 'content-type': 'application/json', 'x-legacy': 'yes' });
      res.end(JSON.stringify({ legacy: true, method: entry.method, url: entry.url, bytes }));
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

describe('sluice serve: upstream pass-through', { timeout: 60_000 }, () => {
  const seen: Seen[] = [];
  let legacy: HttpServer;
  let server: Server;

  before(async () => {
    legacy = await legacyService(seen);
    const { port } = legacy.address() as AddressInfo;
    const dir = tempDir('sluice-upstream-');
    server = await startServer(
      writeServiceConfig(dir, { t1: { keys: [KEY] } }, { upstream: { url: `http://127.0.0.1:${port}` } }),
    );
  });
  after(async () => {
    await server?.stop();
    await new Promise((r) => legacy?.close(r));
  });

  it('passes a request sluice does not serve through unchanged: method, path, query, headers, answer', async () => {
    const res = await fetch(`${server.url}/orders/42?expand=items&x=%20y`, {
      method: 'PATCH',
      headers: {
        'content-type': 'application/json',
        'x-custom': 'kept',
        authorization: 'Bearer legacy-token',
      },
      body: JSON.stringify({ status: 'shipped' }),
    });
    assert.equal(res.status, 207);
    assert.equal(res.headers.get('x-legacy'), 'yes');
    assert.deepEqual(await res.json(), {
      legacy: true,
      method: 'PATCH',
      url: '/orders/42?expand=items&x=%20y',
      bytes: 20,
    });
    const got = seen.at(-1)!;
    assert.equal(got.headers['x-custom'], 'kept');
    // The legacy service's own credentials reach it: sluice does not authenticate what it passes on.
    assert.equal(got.headers.authorization, 'Bearer legacy-token');
    assert.equal(got.headers['content-type'], 'application/json');
  });

  it('streams a large body through byte for byte, whatever its media type and above limits.body_bytes', async () => {
    const body = randomBytes(12 * 1024 * 1024);
    const res = await fetch(`${server.url}/uploads`, {
      method: 'POST',
      headers: { 'content-type': 'application/octet-stream' },
      body,
    });
    assert.equal(res.status, 207);
    await res.arrayBuffer();
    const got = seen.at(-1)!;
    assert.equal(got.bytes, body.length);
    assert.equal(got.sha256, createHash('sha256').update(body).digest('hex'));
  });

  it('keeps its own routes: ingest, health, the API document and the dashboard never reach the upstream', async () => {
    const before = seen.length;
    const ingest = await postEvents(server, 'payments', KEY, JSON.stringify(paymentEvent()) + '\n');
    assert.equal(ingest.status, 202, JSON.stringify(ingest.body));
    const health = await fetch(`${server.url}/healthz`);
    assert.deepEqual(await health.json(), { status: 'ok' });
    // An unknown pipeline is sluice's 404, not the upstream's: /v1/pipelines/:pipeline is a route.
    const unknown = await postEvents(server, 'nope', KEY, JSON.stringify(paymentEvent()) + '\n');
    assert.equal(unknown.status, 404);
    const dashboard = await fetch(`${server.url}/ui`);
    assert.equal(dashboard.status, 200);
    assert.match(await dashboard.text(), /<title>sluice<\/title>/);
    const doc = (await (await fetch(`${server.url}/openapi.json`)).json()) as {
      paths: Record<string, unknown>;
    };
    assert.equal(seen.length, before, 'a request for sluice reached the upstream');
    // The pass-through is not part of sluice's API.
    assert.deepEqual(
      Object.keys(doc.paths).filter(
        (p) =>
          !p.startsWith('/v1/') && !['/healthz', '/readyz', '/metrics', '/openapi.json', '/ui'].includes(p),
      ),
      [],
    );
  });

  it('answers 502 SLUICE_ERR_UPSTREAM when the upstream is down, and its own routes still work', async () => {
    await new Promise((r) => legacy.close(r));
    legacy.closeAllConnections();
    const res = await fetch(`${server.url}/orders/1`);
    assert.equal(res.status, 502);
    const problem = (await res.json()) as { code: string };
    assert.equal(problem.code, 'SLUICE_ERR_UPSTREAM');
    const health = await fetch(`${server.url}/healthz`);
    assert.equal(health.status, 200);
  });
});

describe('upstream.url in the service config', () => {
  for (const url of [
    'ftp://127.0.0.1:21',
    'http://127.0.0.1:3000/api',
    'http://user:secret@127.0.0.1:3000',
    'not a url',
  ]) {
    it(`refuses ${JSON.stringify(url)} at start with SLUICE_ERR_CONFIG_INVALID and a hint`, async () => {
      const dir = tempDir('sluice-upstream-bad-');
      const config = writeServiceConfig(dir, { t1: { keys: [KEY] } }, { upstream: { url } });
      const ran = await sluice(['serve', config], { killAfterMs: 30_000 });
      assert.equal(ran.code, 2, ran.stderr + ran.stdout);
      assert.match(ran.stderr + ran.stdout, /SLUICE_ERR_CONFIG_INVALID/);
      assert.match(ran.stderr + ran.stdout, /upstream\.url/);
    });
  }
});
