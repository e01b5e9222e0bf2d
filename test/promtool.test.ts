/**
 * `GET /metrics` of a real `sluice serve` passes `promtool check metrics` (Prometheus's own parser
 * and linter) with no problem at all, after requests that make every kind of series exist: counters
 * with labels, dead letters, rejections, latency histograms, a sink delivery.
 *
 * promtool is a tool, not a service: where it is not installed the check is skipped, under CI too,
 * with the package to install. The naming rule it broke first (a gauge ending in `_total`) is also
 * checked here without it.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { tempDir } from './helpers.ts';
import { paymentEvent, postEvents, startServer, writeServiceConfig, type Server } from './serve-helpers.ts';

const PROMTOOL = process.env.PROMTOOL ?? 'promtool';
const promtoolMissing =
  spawnSync(PROMTOOL, ['--version'], { encoding: 'utf8' }).status === 0
    ? false
    : `${PROMTOOL} not found: install Debian's prometheus package (apt-get install -y prometheus) for this check`;

const KEY = `sk_promtool_${randomBytes(16).toString('hex')}`;
let seq = 0;
const event = (patch: Record<string, unknown> = {}): string =>
  JSON.stringify(paymentEvent({ id: `evt_promtool_${++seq}`, ...patch }));

describe('sluice serve: /metrics', () => {
  const dir = tempDir('sluice-promtool-');
  let server: Server;
  let text = '';

  before(async () => {
    server = await startServer(
      writeServiceConfig(dir, { acme: { keys: [KEY] } }, { sinks: { interval: '50ms' } }),
    );
    const first = event();
    // Accepted, duplicate, invalid, unparseable, and a 20,000 USD payment for the `large` sink.
    const body = [
      first,
      first,
      event({ amount: 'lots' }),
      'not json',
      event({ amount: '20000.00', currency: 'USD' }),
    ];
    const accepted = await postEvents(server, 'payments', KEY, body.join('\n') + '\n');
    assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
    const unauthorized = await postEvents(server, 'payments', undefined, event() + '\n');
    assert.equal(unauthorized.status, 401, JSON.stringify(unauthorized.body));
    // Sinks are fed every sinks.interval: scrape once a delivery has been observed.
    const deadline = Date.now() + 10_000;
    do {
      const res = await fetch(`${server.url}/metrics`);
      assert.equal(res.status, 200);
      text = await res.text();
      if (/^sluice_ingest_to_sink_seconds_count\{[^}]*\} [1-9]/m.test(text)) break;
      await sleep(50);
    } while (Date.now() < deadline);
    for (const name of [
      'sluice_events_received_total',
      'sluice_events_dead_total',
      'sluice_http_rejected_total',
      'sluice_ingest_to_durable_seconds_count',
      'sluice_ingest_to_sink_seconds_count',
    ])
      assert.match(text, new RegExp(`^${name}\\{`, 'm'), `/metrics has no ${name} series yet`);
  });

  after(async () => {
    await server?.stop();
  });

  it('passes promtool check metrics with no problems', { skip: promtoolMissing }, () => {
    const check = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    const said = `${check.stdout}${check.stderr}`.trim();
    assert.equal(said, '', `promtool check metrics (exit ${check.status}) says:\n${said}`);
    assert.equal(check.status, 0, `promtool check metrics exit ${check.status}`);
  });

  // prom-client's default gauges nodejs_active_{handles,requests,resources}_total broke it.
  it('names no gauge or histogram with the `_total` that counters end in', () => {
    const wrong = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)]
      .filter(([, name, type]) => type !== 'counter' && name!.endsWith('_total'))
      .map(([line]) => line);
    assert.deepEqual(wrong, []);
  });
});
