/** The CLI commands besides `run`: test, check, schema, demo. */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { format, resolveConfig } from 'prettier';
import { CROSS_CHECK, PAYMENTS, ROOT, sluice, tempDir, WORKLOAD } from './helpers.ts';

describe('sluice test', () => {
  it('passes the payments example fixture cases', async () => {
    const r = await sluice(['test', PAYMENTS]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /4 passed, 0 failed/);
  });

  it('prints a diff and exits 1 when a case fails', async () => {
    const dir = tempDir();
    const cases = join(dir, 'cases.yaml');
    writeFileSync(
      cases,
      [
        'cases:',
        '  - name: wrong expectation',
        '    input: ["[1]", "not json"]',
        '    expect:',
        '      dead_letters:',
        '        - { line: 1, reason: invalid }',
        '        - { line: 2, reason: invalid }',
        '',
      ].join('\n'),
    );
    const r = await sluice(['test', PAYMENTS, '--cases', cases]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /✗ wrong expectation/);
    assert.match(r.stdout, /- \{"line":2,"reason":"invalid"\}/);
    assert.match(r.stdout, /\+ \{"line":2,"reason":"parse"\}/);
    assert.match(r.stderr, /SLUICE_ERR_TEST_FAILED/);
  });

  it('rejects a malformed fixture file with a config error', async () => {
    const dir = tempDir();
    const cases = join(dir, 'cases.yaml');
    writeFileSync(cases, 'cases:\n  - name: no input\n    expect: {}\n');
    const r = await sluice(['test', PAYMENTS, '--cases', cases]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /SLUICE_ERR_TEST_FIXTURE/);
  });
});

describe('sluice schema', () => {
  it('matches the published schema/pipeline.schema.json', async () => {
    const r = await sluice(['schema']);
    assert.equal(r.code, 0);
    const published = readFileSync(join(ROOT, 'schema', 'pipeline.schema.json'), 'utf8');
    assert.equal(
      await format(r.stdout, {
        ...(await resolveConfig(join(ROOT, 'schema', 'pipeline.schema.json'))),
        filepath: join(ROOT, 'schema', 'pipeline.schema.json'),
      }),
      published,
      'run `node bin/sluice.js schema > schema/pipeline.schema.json && npx prettier --write schema`',
    );
  });
});

describe('sluice demo', () => {
  it('generates a sample and writes the payments results', async () => {
    const out = tempDir();
    const r = await sluice(['demo', '--events', '5000', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    for (const f of ['windows.ndjson', 'large.ndjson', 'dead.ndjson', 'summary.json', 'payments.db'])
      assert.ok(existsSync(join(out, 'results', f)), f);
    const summary = JSON.parse(readFileSync(join(out, 'results', 'summary.json'), 'utf8')) as Record<
      string,
      number
    >;
    assert.equal(summary.lines, 5000);
    assert.ok(
      summary.invalid! > 0 && summary.duplicates! > 0 && summary.accepted! > 4000,
      JSON.stringify(summary),
    );
    assert.match(r.stdout, /Results are in/);
  });
});

describe('example tables', () => {
  it('are byte-identical to the tables of ../shared/workload', CROSS_CHECK, () => {
    for (const t of ['users.csv', 'regions.csv', 'fx.csv']) {
      const ours = readFileSync(join(ROOT, 'examples', 'payments', 'tables', t));
      const shared = readFileSync(join(WORKLOAD, 'tables', t));
      assert.ok(ours.equals(shared), t);
    }
  });
});
