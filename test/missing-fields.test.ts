/**
 * A field a step reads that no record has (issue 13, finding 10: a dedupe key naming a field that
 * never exists passed `sluice check`, and each record became a dead letter "dedupe key device, at,
 * metrc is missing or null" without saying which). The dead letter names the missing field, and
 * `sluice check` warns (exit 0) wherever a validate step's schema says which fields there are and
 * nothing in between can add others; where it cannot tell, it says nothing.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { PAYMENTS, sluice, tempDir } from './helpers.ts';

const SCHEMA = {
  type: 'object',
  required: ['device', 'at'],
  properties: {
    device: { type: 'string' },
    at: { type: 'integer' },
    metric: { type: 'string' },
    value: { type: 'number' },
    site: { type: 'object', properties: { id: { type: 'string' } } },
    labels: { type: 'object' },
  },
};

/** A pipeline directory with the schema, a module adding a field, a table, and `steps`. */
function pipeline(steps: string, schema: object = SCHEMA): string {
  const dir = tempDir('sluice-missing-fields-');
  writeFileSync(join(dir, 'schema.json'), JSON.stringify(schema));
  writeFileSync(
    join(dir, 'add.ts'),
    'export default (r: Record<string, unknown>) => ({ ...r, metrc: 1 });\n',
  );
  writeFileSync(join(dir, 'sites.csv'), 'id,region\ns1,eu\n');
  const file = join(dir, 'pipeline.yaml');
  writeFileSync(
    file,
    [
      'name: readings',
      'source: { type: file, format: ndjson }',
      'tables:',
      '  sites: { path: sites.csv, key: id }',
      'steps:',
      steps.trimEnd(),
      'sinks:',
      '  out: { type: file, input: out, path: out.ndjson }',
      '',
    ].join('\n'),
  );
  return file;
}

const VALIDATE = '  - type: validate\n    schema: schema.json';

/** `sluice run` of a pipeline over NDJSON lines; its dead letters and output lines. */
async function run(
  file: string,
  lines: string,
): Promise<{ dead: { line: number; reason: string; detail: string; step: string }[]; out: string[] }> {
  const dir = join(file, '..');
  writeFileSync(join(dir, 'in.ndjson'), lines);
  const r = await sluice([
    'run',
    file,
    '--input',
    join(dir, 'in.ndjson'),
    '--out',
    join(dir, 'out'),
    '--workers',
    '1',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const read = (name: string): string[] =>
    readFileSync(join(dir, 'out', name), 'utf8')
      .split('\n')
      .filter((l) => l !== '');
  return {
    dead: read('dead-letters.ndjson').map(
      (l) => JSON.parse(l) as { line: number; reason: string; detail: string; step: string },
    ),
    out: read('out.ndjson'),
  };
}

describe('a dedupe key field that is missing', () => {
  it('the dead letter names the missing field(s), not the whole key', async () => {
    const { dead, out } = await run(
      pipeline('  - type: dedupe\n    key: [device, at, metric]'),
      [
        { device: 'd1', at: 1000 },
        { device: 'd1', metric: 't' },
        { device: 'd1', at: 1000, metric: 't' },
      ]
        .map((r) => JSON.stringify(r) + '\n')
        .join(''),
    );
    assert.deepEqual(
      dead.map((d) => [d.line, d.reason, d.step, d.detail]),
      [
        [1, 'invalid', 'dedupe', 'dedupe key field metric is missing or null (key: device, at, metric)'],
        [2, 'invalid', 'dedupe', 'dedupe key field at is missing or null (key: device, at, metric)'],
      ],
    );
    assert.equal(out.length, 1);
  });

  it('names every missing field of the key', async () => {
    const { dead } = await run(
      pipeline('  - type: dedupe\n    key: [device, at, metrc]'),
      '{"device":"d1"}\n',
    );
    assert.deepEqual(
      dead.map((d) => d.detail),
      ['dedupe key fields at, metrc are missing or null (key: device, at, metrc)'],
    );
  });
});

describe('sluice check: fields no record has', () => {
  it('warns, with position and a suggestion, about a dedupe key and window fields the schema does not declare', async () => {
    const file = pipeline(
      `${VALIDATE}
  - type: dedupe
    key: [device, at, metrc]
  - type: window
    time_field: att
    size: 60s
    group_by: [device, site.idd]
    metrics:
      count: { op: count }
      total: { op: sum, field: value }`,
    );
    const r = await sluice(['check', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /pipeline\.yaml: ok\n/);
    assert.match(r.stdout, /3 warnings \(on standard error\)/);
    const warnings = r.stderr.split(/\n(?=warning: )/);
    assert.equal(warnings.length, 3, r.stderr);
    assert.match(
      warnings[0]!,
      /^warning: step "dedupe" reads field "metrc", which no record has here: the schema of step "validate" does not declare it/,
    );
    assert.match(warnings[0]!, /\n {2}--> .*pipeline\.yaml:9:23\n {2}at: steps\[1\]\.key\[2\]\n/);
    assert.match(
      warnings[0]!,
      /help: A record without it becomes an `invalid` dead letter at this step\. Did you mean "metric"\?/,
    );
    assert.match(
      warnings[1]!,
      /field "att".*\n.*pipeline\.yaml:11:17\n {2}at: steps\[2\]\.time_field\n.*Did you mean "at"\?/,
    );
    assert.match(
      warnings[2]!,
      /field "site\.idd".*\n.*\n {2}at: steps\[2\]\.group_by\[1\]\n.*Did you mean "site\.id"\?/,
    );
    assert.doesNotMatch(r.stderr, /SLUICE_ERR/);
  });

  it('warns for every pipeline file of a service config, once per file', async () => {
    const file = pipeline(`${VALIDATE}\n  - type: dedupe\n    key: metrc`);
    const config = join(file, '..', 'sluice.yaml');
    writeFileSync(
      config,
      [
        'listen: { host: 127.0.0.1, port: 0 }',
        'store: { path: store/sluice.db }',
        'tenants:',
        ...['a', 'b'].flatMap((t) => [
          `  ${t}:`,
          `    api_keys: [{ sha256: "${'0'.repeat(63)}${t === 'a' ? '1' : '2'}" }]`,
          `    pipelines: { readings: ${file} }`,
        ]),
        '',
      ].join('\n'),
    );
    const r = await sluice(['check', config]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /1 warning \(on standard error\)/);
    assert.equal(r.stderr.match(/^warning: /gm)?.length, 1, r.stderr);
    assert.match(r.stderr, /field "metrc"/);
  });

  it('says nothing where it cannot tell which fields there are', async () => {
    const dedupe = '  - type: dedupe\n    key: [device, metrc]';
    for (const [what, file] of [
      ['no validate step before', pipeline(dedupe)],
      ['a transform in between', pipeline(`${VALIDATE}\n  - type: transform\n    module: add.ts\n${dedupe}`)],
      [
        'a filter with a module condition in between',
        pipeline(`${VALIDATE}\n  - type: filter\n    condition: { module: add.ts }\n${dedupe}`),
      ],
      ['a schema without properties', pipeline(`${VALIDATE}\n${dedupe}`, { type: 'object' })],
      [
        'a schema allowing other fields in so many words',
        pipeline(`${VALIDATE}\n${dedupe}`, { ...SCHEMA, additionalProperties: true }),
      ],
      [
        'a schema combining others',
        pipeline(`${VALIDATE}\n${dedupe}`, {
          ...SCHEMA,
          allOf: [{ type: 'object', properties: { extra: { type: 'string' } } }],
        }),
      ],
    ] as const) {
      const r = await sluice(['check', file]);
      assert.equal(r.code, 0, `${what}: ${r.stderr}`);
      assert.equal(r.stderr, '', `${what}: warned`);
      assert.doesNotMatch(r.stdout, /warning/, what);
    }
  });

  it('knows the fields a lookup adds and those inside a declared object', async () => {
    const file = pipeline(
      `${VALIDATE}
  - type: lookup
    table: sites
    key: site.id
    fields: { region: region }
  - type: dedupe
    key: [region, site.id, labels.any.thing]
  - type: window
    time_field: at
    size: 60s
    group_by: [region]
    metrics: { count: { op: count } }`,
    );
    const r = await sluice(['check', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
  });

  it('has nothing to say about the payments example', async () => {
    const r = await sluice(['check', PAYMENTS]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
  });
});
