/**
 * Fan-out (a transform returning an array) counted in one unit (issue 13, findings 4 and 5).
 * At 3dd00e6 a request whose duplicate or late records outnumbered its lines got 500 "It is not
 * possible to decrease a counter" (accepted was lines - dead - duplicates, mixing lines and
 * records), although the request had been stored, and its retry got 500 again. Now the answer and
 * the metrics count records, `accepted + duplicates + rejected records = records` always, the
 * lines are counted apart, and `dead_letters_per: line` gives one dead letter per line.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sluice, tempDir } from './helpers.ts';
import { getJson, postEvents, startServer, writeServiceConfig, type Server } from './serve-helpers.ts';

const KEY = 'sk_fanout_test';
const FANOUT = 3;

/** A pipeline whose transform makes FANOUT readings of each line, deduplicated and windowed. */
function pipeline(dir: string, name: string, extra = ''): string {
  writeFileSync(
    join(dir, 'fan.ts'),
    [
      'export default (r: { device: string; at: number; values: number[] }) =>',
      '  r.values.map((value, i) => ({ id: `${r.device}-${r.at}-${i}`, device: r.device, at: r.at, value }));',
      '',
    ].join('\n'),
  );
  const file = join(dir, `${name}.yaml`);
  writeFileSync(
    file,
    [
      `name: ${name}`,
      'source: { type: file, format: ndjson }',
      'steps:',
      '  - type: transform',
      '    id: fan',
      '    module: fan.ts',
      '  - type: dedupe',
      '    key: id',
      '  - type: window',
      '    id: per_minute',
      '    time_field: at',
      '    size: 60s',
      '    group_by: [device]',
      '    metrics: { n: { op: count }, total: { op: sum, field: value } }',
      extra,
      '',
    ].join('\n'),
  );
  return file;
}

const line = (device: string, at: number): string =>
  JSON.stringify({ device, at, values: Array.from({ length: FANOUT }, (_, i) => i + 1) });

interface Answer {
  records: number;
  accepted: number;
  duplicates: number;
  rejected: { index: number; reason: string; records?: number }[];
}

/** The invariant every 202 keeps, whatever the steps do. */
function assertAddsUp(a: Answer): void {
  const rejected = a.rejected.reduce((n, r) => n + (r.records ?? 1), 0);
  assert.equal(a.accepted + a.duplicates + rejected, a.records, JSON.stringify(a));
}

/** One sample's value from Prometheus text, by metric name and pipeline label. */
function metric(text: string, name: string, pipelineName: string, more = ''): number {
  const line = text
    .split('\n')
    .find((l) => l.startsWith(`${name}{`) && l.includes(`pipeline="${pipelineName}"`) && l.includes(more));
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('fan-out in sluice serve', () => {
  const dir = tempDir('sluice-serve-fanout-');
  let server: Server;

  before(async () => {
    const config = writeServiceConfig(dir, {
      acme: {
        keys: [KEY],
        pipelines: {
          records: pipeline(dir, 'records'),
          lines: pipeline(dir, 'lines', 'dead_letters_per: line'),
        },
      },
    });
    server = await startServer(config);
  });
  after(() => server?.stop());

  it('answers a retry whose duplicates outnumber its lines with 202, in records', async () => {
    const body = [line('d1', 1_000), line('d2', 1_000)].join('\n');
    const first = await postEvents(server, 'records', KEY, body);
    assert.equal(first.status, 202, JSON.stringify(first.body));
    assert.deepEqual(first.body, { records: 6, accepted: 6, duplicates: 0, rejected: [] });

    // Every record of the retry is a duplicate: 6 duplicates from 2 lines.
    const retry = await postEvents(server, 'records', KEY, body);
    assert.equal(retry.status, 202, JSON.stringify(retry.body));
    assert.deepEqual(retry.body, { records: 6, accepted: 0, duplicates: 6, rejected: [] });

    const text = (await fetch(`${server.url}/metrics`).then((r) => r.text())) as string;
    assert.equal(metric(text, 'sluice_lines_received_total', 'records'), 4);
    assert.equal(metric(text, 'sluice_events_received_total', 'records'), 12);
    assert.equal(metric(text, 'sluice_events_accepted_total', 'records'), 6);
    assert.equal(metric(text, 'sluice_events_duplicate_total', 'records'), 6);
  });

  it('gives one dead letter per late record by default', async () => {
    // A record at 10 minutes closes the first minute's window; then a line of that minute is late.
    const opened = await postEvents(server, 'records', KEY, line('d3', 600_000));
    assert.equal(opened.status, 202, JSON.stringify(opened.body));
    const late = await postEvents(
      server,
      'records',
      KEY,
      [line('d4', 2_000), line('d4', 600_001)].join('\n'),
    );
    assert.equal(late.status, 202, JSON.stringify(late.body));
    const a = late.body as Answer;
    assertAddsUp(a);
    assert.equal(a.records, 6);
    assert.equal(a.accepted, 3);
    assert.deepEqual(
      a.rejected.map((r) => [r.index, r.reason, r.records]),
      [
        [0, 'late', undefined],
        [0, 'late', undefined],
        [0, 'late', undefined],
      ],
    );
  });

  it('gives one dead letter per line with dead_letters_per: line', async () => {
    const opened = await postEvents(server, 'lines', KEY, line('d3', 600_000));
    assert.equal(opened.status, 202, JSON.stringify(opened.body));
    const body = [line('d4', 2_000), line('d4', 600_001), line('d5', 3_000)].join('\n');
    const late = await postEvents(server, 'lines', KEY, body);
    assert.equal(late.status, 202, JSON.stringify(late.body));
    const a = late.body as Answer;
    assertAddsUp(a);
    assert.equal(a.records, 9);
    assert.equal(a.accepted, 3);
    assert.deepEqual(
      a.rejected.map((r) => [r.index, r.reason, r.records]),
      [
        [0, 'late', 3],
        [2, 'late', 3],
      ],
    );
    // Stored as answered: one letter per line, with the count.
    const dead = await getJson(server, '/v1/pipelines/lines/dead-letters', KEY);
    assert.equal(dead.status, 200, JSON.stringify(dead.body));
    const letters = (dead.body as { items: { line: number; records: number }[] }).items;
    assert.deepEqual(
      letters.map((l) => [l.line, l.records]),
      [
        [1, 3],
        [3, 3],
      ],
    );
    // The metrics still count records: 6 of them failed.
    const text = (await fetch(`${server.url}/metrics`).then((r) => r.text())) as string;
    assert.equal(metric(text, 'sluice_events_dead_total', 'lines', 'reason="late"'), 6);
  });
});

describe('fan-out in sluice run', () => {
  it('writes one dead letter per line with dead_letters_per: line, and counts the fan-out', async () => {
    const dir = tempDir('sluice-run-fanout-');
    const file = pipeline(dir, 'lines', 'dead_letters_per: line');
    writeFileSync(
      join(dir, 'in.ndjson'),
      [line('a', 600_000), line('b', 1_000), '{"device":"c","at":2000,"values":7}', ''].join('\n'),
    );
    const r = await sluice([
      'run',
      file,
      '--input',
      join(dir, 'in.ndjson'),
      '--out',
      join(dir, 'out'),
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const summary = JSON.parse(r.stdout) as { counters: Record<string, number> };
    assert.equal(summary.counters['input.records'], 3);
    // Two lines made 3 records each; the third threw (values is not an array) and made none.
    assert.equal(summary.counters.fanout, 4);
    assert.equal(summary.counters['dead.late'], 3);
    assert.equal(summary.counters['dead.error'], 1);
  });
});
