/**
 * `sluice tap` against a real `sluice serve`: records leaving a map step and an ordered step show
 * up live, as they left the step, and the stream ends by itself at its limit; the CLI prints them
 * as JSON lines; a wrong key, an unknown step and unknown parameters are clear errors, and a tenant
 * sees only its own pipeline's records.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sluice, tempDir } from './helpers.ts';
import { paymentEvent, postEvents, startServer, writeServiceConfig, type Server } from './serve-helpers.ts';

const KEY = 'sk_tap_tenant_0123456789abcdef';
const OTHER = 'sk_tap_other_0123456789abcdef';
const uniqueId = (n: number): string =>
  `evt_01HZX3K4M5N6P7${n.toString(32).toUpperCase().padStart(12, '0')}`.replace(/[ILOU]/g, 'Z');

type Line = {
  tap?: { pipeline: string; step: string; limit: number; seconds: number };
  step?: string;
  record?: Record<string, unknown>;
};

/** Opens a tap and reads its lines until the service ends the stream. */
async function tap(
  server: Server,
  query: string,
  key = KEY,
): Promise<{ status: number; lines: Promise<Line[]>; body?: unknown }> {
  const res = await fetch(`${server.url}/v1/pipelines/payments/tap?${query}`, {
    headers: { authorization: `Bearer ${key}` },
    signal: AbortSignal.timeout(30_000),
  });
  if (!res.ok) return { status: res.status, lines: Promise.resolve([]), body: await res.json() };
  return {
    status: res.status,
    lines: res.text().then((text) =>
      text
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Line),
    ),
  };
}

describe('sluice tap', { timeout: 90_000 }, () => {
  let server: Server;
  let next = 0;
  /** Posts `n` good events, and one that fails validation. */
  const post = async (n: number, patch: Record<string, unknown> = {}): Promise<void> => {
    const lines = Array.from({ length: n }, () =>
      JSON.stringify(paymentEvent({ id: uniqueId(next++), ...patch })),
    );
    lines.push(JSON.stringify({ not: 'a payment' }));
    const res = await postEvents(server, 'payments', KEY, lines.join('\n') + '\n');
    assert.equal(res.status, 202, JSON.stringify(res.body));
  };

  before(async () => {
    server = await startServer(
      writeServiceConfig(tempDir('sluice-tap-'), { shop: { keys: [KEY] }, other: { keys: [OTHER] } }),
    );
  });
  after(async () => {
    await server?.stop();
  });

  it('streams records as they leave a map step, and ends at its limit', async () => {
    const t = await tap(server, 'step=normalize&limit=5&seconds=20');
    assert.equal(t.status, 200);
    await post(3);
    await post(3);
    const lines = await t.lines;
    assert.deepEqual(lines[0], { tap: { pipeline: 'payments', step: 'normalize', limit: 5, seconds: 20 } });
    const records = lines.slice(1);
    assert.equal(records.length, 5, JSON.stringify(lines));
    for (const r of records) {
      assert.equal(r.step, 'normalize');
      // What normalize writes (amounts in minor units as text), not the event as posted, and not
      // yet what later steps add (the tier lookup).
      assert.match(String(r.record?.amount_minor), /^-?\d+$/);
      assert.equal(r.record?.tier, null);
    }
  });

  it('shows only what an ordered step lets through (dedupe drops a repeat), by default the last step', async () => {
    const t = await tap(server, 'step=dedupe&limit=100&seconds=3');
    const id = uniqueId(next++);
    const body = [paymentEvent({ id }), paymentEvent({ id })].map((e) => JSON.stringify(e)).join('\n') + '\n';
    assert.equal((await postEvents(server, 'payments', KEY, body)).status, 202);
    const lines = await t.lines;
    assert.deepEqual(
      lines.slice(1).map((l) => l.record?.id),
      [id],
    );
    const last = await tap(server, 'limit=1&seconds=20');
    await post(1);
    assert.equal((await last.lines)[0]?.tap?.step, 'route');
  });

  it('the CLI prints the records as JSON lines', async () => {
    const ran = sluice(
      [
        'tap',
        'payments',
        '--url',
        server.url,
        '--key',
        KEY,
        '--step',
        'region',
        '--limit',
        '2',
        '--seconds',
        '20s',
      ],
      {
        killAfterMs: 30_000,
      },
    );
    // Until the tap is open, posts are not seen: post until the CLI has its two records.
    let done = false;
    void ran.then(() => (done = true));
    while (!done) {
      await post(1);
      await new Promise((r) => setTimeout(r, 200));
    }
    const r = await ran;
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /tapping payments after step region: up to 2 records or 20 s/);
    const records = r.stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(records.length, 2);
    for (const rec of records) assert.equal(typeof rec.region, 'string');
  });

  it("refuses a wrong key, an unknown step or parameter; another tenant's tap sees nothing of this one", async () => {
    const unknownStep = await tap(server, 'step=nope');
    assert.equal(unknownStep.status, 404);
    const problem = unknownStep.body as { code: string; detail: string };
    assert.deepEqual(
      [problem.code, problem.detail],
      ['SLUICE_ERR_NOT_FOUND', 'pipeline "payments" has no step "nope"'],
    );
    assert.equal((await tap(server, 'step=normalize&colour=red')).status, 400);
    assert.equal((await tap(server, 'seconds=0')).status, 400);
    assert.equal((await tap(server, '', 'sk_nobody_0123456789abcdef')).status, 401);
    // Tenant other has a payments pipeline of its own: tapping it shows nothing of shop's.
    const others = await tap(server, 'limit=1&seconds=2', OTHER);
    assert.equal(others.status, 200);
    await post(2);
    assert.deepEqual(
      (await others.lines).map((l) => l.step ?? 'header'),
      ['header'],
    );
    const cli = await sluice(
      ['tap', 'payments', '--url', server.url, '--key', 'sk_nobody_0123456789abcdef'],
      {
        killAfterMs: 20_000,
      },
    );
    assert.equal(cli.code, 1);
    assert.match(cli.stderr, /SLUICE_ERR_TAP_REFUSED/);
    assert.match(cli.stderr, /401 SLUICE_ERR_UNAUTHORIZED/);
    const noKey = await sluice(['tap', 'payments', '--url', server.url], {
      killAfterMs: 20_000,
      env: { SLUICE_API_KEY: '' },
    });
    assert.equal(noKey.code, 2);
    assert.match(noKey.stderr, /no API key/);
  });
});
