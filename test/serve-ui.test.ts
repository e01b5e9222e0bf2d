/**
 * The dashboard at /ui in a real browser (Debian's chromium, driven by playwright-core) against a
 * real `sluice serve` taking events, in front of an upstream (so /ui and its API are sluice's own):
 * with a key it shows only that tenant's pipeline, its events and events/s, latency percentiles,
 * dead letters by reason with a sample, and a chart point once a window closes; the key stays out
 * of every URL; a wrong key shows the refusal.
 *
 * Without a browser the test is skipped with what to install; under CI=true that is a failure
 * (.ci/run installs chromium). SLUICE_CHROMIUM names another Chromium executable.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it, type TestContext } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { PAYMENTS, tempDir } from './helpers.ts';
import { paymentEvent, postEvents, startServer, writeServiceConfig, type Server } from './serve-helpers.ts';

const CHROMIUM = process.env.SLUICE_CHROMIUM ?? '/usr/bin/chromium';
const KEY = 'sk_ui_tenant_0123456789abcdef01';
const OTHER_KEY = 'sk_ui_other_0123456789abcdef012';
const T0 = Date.parse('2026-11-21T10:00:00Z');

/** A valid event id (Crockford base 32, 26 characters) of its own for each `n`. */
const uniqueId = (n: number): string =>
  `evt_01HZX3K4M5N6P7${n.toString(32).toUpperCase().padStart(12, '0')}`.replace(/[ILOU]/g, 'Z');
let seq = 0;
const event = (tsMs: number): string =>
  JSON.stringify(paymentEvent({ id: uniqueId(++seq), ts: new Date(tsMs).toISOString() }));

/** True when the browser is there; otherwise a failure under CI, a skip elsewhere. */
function haveBrowser(t: TestContext): boolean {
  if (existsSync(CHROMIUM)) return true;
  const message = `no browser at ${CHROMIUM}: install Debian's chromium package (apt-get install -y chromium) or set SLUICE_CHROMIUM`;
  if (process.env.CI === 'true') throw new Error(message);
  t.skip(message);
  return false;
}

/** A page of a fresh browser context, recording what would mean a broken page. */
async function openPage(
  browser: Browser,
): Promise<{ page: Page; requests: string[]; errors: string[]; close(): Promise<void> }> {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(20_000);
  const requests: string[] = [];
  const errors: string[] = [];
  page.on('request', (r) => void requests.push(r.url()));
  page.on('pageerror', (err) => void errors.push(`page error: ${err.message}`));
  page.on('console', (m) => {
    if (/Content.Security.Policy/i.test(m.text())) errors.push(`CSP: ${m.text()}`);
  });
  return { page, requests, errors, close: () => context.close() };
}

const textOf = (page: Page, selector: string): Promise<string> => page.locator(selector).innerText();

describe('sluice serve: the dashboard at /ui, in a browser', { timeout: 120_000 }, () => {
  let legacy: HttpServer;
  let server: Server;
  let browser: Browser | undefined;

  before(async () => {
    if (!existsSync(CHROMIUM)) return;
    legacy = createServer((_req, res) => res.writeHead(207, { 'content-type': 'text/plain' }).end('legacy'));
    await new Promise<void>((r) => legacy.listen(0, '127.0.0.1', r));
    const { port } = legacy.address() as AddressInfo;
    server = await startServer(
      writeServiceConfig(
        tempDir('sluice-ui-'),
        { shop: { keys: [KEY] }, other: { keys: [OTHER_KEY], pipelines: { orders: PAYMENTS } } },
        { upstream: { url: `http://127.0.0.1:${port}` } },
      ),
    );
    browser = await chromium.launch({ executablePath: CHROMIUM, timeout: 30_000 });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    if (legacy) await new Promise((r) => legacy.close(r));
  });

  it("shows the tenant's pipeline: events, events/s, latency, dead letters with a sample, a chart of closed windows", async (t) => {
    if (!haveBrowser(t)) return;
    const good = Array.from({ length: 10 }, (_, i) => event(T0 + i * 1000));
    const sent = await postEvents(
      server,
      'payments',
      KEY,
      [...good, '{"not":"a payment"}'].join('\n') + '\n',
    );
    assert.equal(sent.status, 202, JSON.stringify(sent.body));

    const { page, requests, errors, close } = await openPage(browser!);
    try {
      const res = await page.goto(`${server.url}/ui`);
      assert.equal(res?.status(), 200);
      assert.match(res!.headers()['content-security-policy'] ?? '', /script-src 'sha256-/);
      await page.fill('#key', KEY);
      await page.click('button[type=submit]');

      const payments = 'section[data-pipeline="payments"]';
      await page.locator(payments).waitFor();
      // Evaluated in the page (the test's own types have no DOM).
      await page.waitForFunction(
        `document.querySelector('${payments} [data-stat="received"] dd')?.textContent === '11'`,
      );
      assert.equal(await textOf(page, `${payments} [data-stat="dead"] dd`), '1');
      assert.match(await textOf(page, '#status'), /Tenant shop: 1 pipeline/);
      assert.equal(await page.locator('section.pipeline').count(), 1, "another tenant's pipeline is shown");

      const sample = `${payments} tr[data-reason="invalid"] li.sample`;
      await page.locator(sample).waitFor();
      assert.match(await textOf(page, `${sample} code.raw`), /"not":"a payment"/);
      assert.match(await textOf(page, `${sample} .detail`), /required/);
      assert.match(await textOf(page, `${payments} [data-stat="p50"] dd`), /^≤ [\d.]+ ms$/);

      // The open window of T0 is drawn hollow; an event 3 minutes later closes it (size 60 s,
      // allowed lateness 60 s), and its point turns closed.
      await page.locator(`${payments} svg.chart circle`).first().waitFor();
      assert.equal(await page.locator(`${payments} svg.chart circle.closed`).count(), 0);
      const closing = await postEvents(server, 'payments', KEY, event(T0 + 180_000) + '\n');
      assert.equal(closing.status, 202, JSON.stringify(closing.body));
      await page.locator(`${payments} svg.chart circle.closed`).first().waitFor();
      assert.equal(
        await page.locator(`${payments} svg.chart circle.closed`).first().getAttribute('data-value'),
        '10',
      );

      // Events/s: differences between two polls while events keep arriving.
      let rate = 0;
      for (const deadline = Date.now() + 20_000; rate <= 0 && Date.now() < deadline;) {
        const more = await postEvents(server, 'payments', KEY, event(T0 + 181_000) + '\n');
        assert.equal(more.status, 202);
        rate = Number(await textOf(page, `${payments} [data-stat="events-per-second"] dd`));
        await page.waitForTimeout(200);
      }
      assert.ok(rate > 0, `events/s stayed ${rate}`);

      // The key is kept for the tab only, and sent as a header, never in a URL.
      assert.equal(await page.evaluate("sessionStorage.getItem('sluice.apiKey')"), KEY);
      assert.ok(requests.some((u) => u.includes('/v1/pipelines/payments/windows')));
      assert.deepEqual(
        requests.filter((u) => u.includes(KEY)),
        [],
      );
      // A reload connects again with the kept key.
      await page.reload();
      await page.locator(payments).waitFor();
      assert.deepEqual(errors, []);
    } finally {
      await close();
    }
    // Paths sluice does not serve still reach the upstream.
    const passed = await fetch(`${server.url}/uix`);
    assert.equal(passed.status, 207);
    assert.equal(await passed.text(), 'legacy');
  });

  it('shows the refusal of a wrong key, and nothing else', async (t) => {
    if (!haveBrowser(t)) return;
    const { page, errors, close } = await openPage(browser!);
    try {
      await page.goto(`${server.url}/ui`);
      await page.fill('#key', 'sk_not_a_key_of_this_service');
      await page.click('button[type=submit]');
      await page.locator('#error').waitFor();
      const shown = await textOf(page, '#error');
      assert.match(shown, /The key was refused: the API key is not valid \(SLUICE_ERR_UNAUTHORIZED\)/);
      assert.equal(await page.locator('section.pipeline').count(), 0);
      assert.equal(await page.evaluate("sessionStorage.getItem('sluice.apiKey')"), null);
      assert.deepEqual(errors, []);
    } finally {
      await close();
    }
  });
});
