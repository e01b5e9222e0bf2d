/**
 * `sluice top` against a real `sluice serve` taking events: its screens show the pipeline's rates,
 * its dead letters by reason and the threads; an address with no service is a clear error.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sluice, tempDir } from './helpers.ts';
import { paymentEvent, postEvents, startServer, writeServiceConfig, type Server } from './serve-helpers.ts';

const KEY = 'sk_top_tenant_0123456789abcdef';
/** A valid event id (Crockford base 32, 26 characters) of its own for each `n`. */
const uniqueId = (n: number): string =>
  `evt_01HZX3K4M5N6P7${n.toString(32).toUpperCase().padStart(12, '0')}`.replace(/[ILOU]/g, 'Z');

describe('sluice top', { timeout: 60_000 }, () => {
  let server: Server;

  before(async () => {
    server = await startServer(writeServiceConfig(tempDir('sluice-top-'), { shop: { keys: [KEY] } }));
  });
  after(async () => {
    await server?.stop();
  });

  it('shows records/s, dead letters by reason and busy threads of a pipeline taking events', async () => {
    let sending = true;
    let sent = 0;
    const load = (async () => {
      for (let i = 0; sending; i++) {
        // Ten good events and one that fails validation per request.
        const lines = Array.from({ length: 10 }, (_, j) =>
          JSON.stringify(paymentEvent({ id: uniqueId(i * 10 + j) })),
        );
        lines.push(JSON.stringify({ not: 'a payment' }));
        const res = await postEvents(server, 'payments', KEY, lines.join('\n') + '\n');
        assert.equal(res.status, 202, JSON.stringify(res.body));
        sent += 11;
      }
    })();
    const ran = await sluice(['top', '--url', server.url, '--interval', '700ms', '--iterations', '2'], {
      killAfterMs: 30_000,
    });
    sending = false;
    await load;
    assert.equal(ran.code, 0, ran.stderr);
    assert.ok(sent > 0);
    const screens = ran.stdout.split(/\n(?=sluice top )/);
    assert.equal(screens.length, 2, ran.stdout);
    const last = screens[1]!;
    const row = /^shop\/payments\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+≤/m.exec(last);
    assert.ok(row, `no row for shop/payments in:\n${last}`);
    const received = Number(row[1]!.replace(/,/g, ''));
    const dead = Number(row[4]!.replace(/,/g, ''));
    assert.ok(received > 0, `received/s ${row[1]}`);
    assert.ok(dead > 0 && dead < received, `dead/s ${row[4]} of ${row[1]}:\n${last}`);
    assert.match(last, /threads busy: .*http \d+%.*pipeline \d+%/);
    assert.match(last, /dead letters since start, by reason:\n.*\nshop\/payments\s+invalid\s+[\d,]+/);
  });

  it('fails with SLUICE_ERR_SERVICE_UNREACHABLE where no service listens', async () => {
    const ran = await sluice(['top', '--url', 'http://127.0.0.1:9', '--iterations', '1'], {
      killAfterMs: 30_000,
    });
    assert.equal(ran.code, 1, ran.stdout + ran.stderr);
    assert.match(ran.stderr, /SLUICE_ERR_SERVICE_UNREACHABLE/);
    assert.match(ran.stderr, /127\.0\.0\.1:9\/metrics/);
  });
});
