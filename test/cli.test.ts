/** The CLI commands besides `run`: test, check, schema, demo. */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { describe, it } from 'node:test';
import { format, resolveConfig } from 'prettier';
import { CROSS_CHECK, PAYMENTS, ROOT, sampleInput, sluice, tempDir, WORKLOAD } from './helpers.ts';

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

describe('sluice run threads', () => {
  // A small file runs on the main thread unless --workers says otherwise; a gzip file (whose size
  // says little about its content) or standard input on workers. The outputs are the same bytes.
  it('runs a small file on the main thread by default, and on workers when asked or gzip', async () => {
    const dir = tempDir();
    const input = join(dir, 'in.ndjson');
    copyFileSync(sampleInput(5000), input);
    writeFileSync(`${input}.gz`, gzipSync(readFileSync(input)));
    const ran: Record<string, { workers: number; out: string }> = {};
    for (const [name, args] of [
      ['default', ['-i', input]],
      ['two workers', ['-i', input, '--workers', '2']],
      ['gzip', ['-i', `${input}.gz`]],
      ['stdin', ['-i', '-']],
    ] as const) {
      const out = join(dir, name);
      // Chunks of 64 KiB, so that the workers share the input.
      const r = await sluice(['run', PAYMENTS, ...args, '-o', out, '--json', '--chunk-size', '64k'], {
        input: name === 'stdin' ? readFileSync(input, 'utf8') : undefined,
      });
      assert.equal(r.code, 0, r.stderr);
      ran[name] = { workers: (JSON.parse(r.stdout) as { workers: number }).workers, out };
    }
    assert.ok(readFileSync(join(ran.default!.out, 'windows.ndjson'), 'utf8').split('\n').length > 10);
    assert.equal(ran.default!.workers, 0);
    assert.equal(ran['two workers']!.workers, 2);
    assert.equal(ran.gzip!.workers, availableParallelism());
    assert.equal(ran.stdin!.workers, availableParallelism());
    for (const name of ['two workers', 'gzip', 'stdin'])
      for (const f of ['windows.ndjson', 'dead.ndjson', 'large.ndjson', 'summary.json'])
        assert.equal(
          readFileSync(join(ran[name]!.out, f), 'utf8'),
          readFileSync(join(ran.default!.out, f), 'utf8'),
          `${name}: ${f}`,
        );
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
