/**
 * Config is validated, never trusted (docs/style.md): `sluice check` and `sluice run` on broken
 * pipeline files exit 2 with the error's code, and config errors name the file, line, column and
 * key path, with a suggestion where a name is misspelt. Each broken config is one change to a
 * small valid pipeline written to a temporary directory.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import '../dist/components.js';
import { newPipelineAjv, schemaHash } from '../dist/core/config.js';
import { pipelineSchema } from '../dist/core/schema.js';
import { before, describe, it } from 'node:test';
import { parse as parseYaml } from 'yaml';
import { PAYMENTS, ROOT, sluice, tempDir } from './helpers.ts';
import type { Ran } from './helpers.ts';

const EXAMPLE = join(ROOT, 'examples', 'payments');
const q = (s: string): string => JSON.stringify(s);

/** A valid pipeline; every case below changes one thing in it. */
const BASE = `name: broken
source:
  type: file
  format: ndjson
tables:
  users: { path: ${q(join(EXAMPLE, 'tables', 'users.csv'))}, key: user_id }
steps:
  - type: validate
    schema: ${q(join(EXAMPLE, 'event.schema.json'))}
  - type: lookup
    table: users
    key: user.id
    fields: { tier: tier }
  - type: window
    id: per_minute
    time_field: ts_ms
    size: 60s
    group_by: [type]
    output: windows
    metrics:
      count: { op: count }
sinks:
  windows:
    type: file
    input: windows
    path: windows.ndjson
`;

/** A pipeline whose one step runs `mod.ts` (export `normalize`) beside it. */
const MODULE_PIPELINE = `name: modules
source:
  type: file
steps:
  - type: transform
    module: mod.ts
    export: normalize
sinks:
  out:
    type: file
    input: out
    path: out.ndjson
`;

/** A pipeline validating against `bad.schema.json` beside it. */
const SCHEMA_PIPELINE = `name: schemas
source:
  type: file
steps:
  - type: validate
    schema: bad.schema.json
sinks:
  out:
    type: file
    input: out
    path: out.ndjson
`;

/** `text` with `from` (which must occur exactly once) replaced by `to`. */
function change(text: string, from: string, to: string): string {
  const at = text.indexOf(from);
  assert.ok(at >= 0 && text.indexOf(from, at + 1) < 0, `${JSON.stringify(from)} must occur once`);
  return text.slice(0, at) + to + text.slice(at + from.length);
}

/** 1-based line and column of the first character of `needle` (plus `offset`) in `text`. */
function position(text: string, needle: string, offset = 0): { line: number; column: number } {
  const at = text.indexOf(needle);
  assert.ok(at >= 0, `${JSON.stringify(needle)} not found`);
  const before = text.slice(0, at + offset).split('\n');
  return { line: before.length, column: before.at(-1)!.length + 1 };
}

interface Case {
  name: string;
  /** Files written into a fresh directory; `pipeline.yaml` (or `pipelineFile`) is the pipeline. */
  files: Record<string, string>;
  pipelineFile?: string;
  code: string;
  /** Where the error must point in the pipeline file: `line:column`, or only the line. */
  at?: { line: number; column?: number } | { lines: number[] };
  /** The key path the error names. */
  path?: string;
  /** More text stderr must contain. */
  includes?: (string | RegExp)[];
}

function yamlCase(
  name: string,
  from: string,
  to: string,
  expect: {
    code: string;
    needle?: string;
    offset?: number;
    lineOnly?: boolean;
    path?: string;
    includes?: (string | RegExp)[];
  },
): Case {
  const text = change(BASE, from, to);
  let at: Case['at'];
  if (expect.needle !== undefined) {
    const p = position(text, expect.needle, expect.offset);
    at = expect.lineOnly ? { line: p.line } : p;
  }
  return {
    name,
    files: { 'pipeline.yaml': text },
    code: expect.code,
    at,
    path: expect.path,
    includes: expect.includes,
  };
}

const CASES: Case[] = [
  yamlCase('a misspelt key inside source (fromat)', '  format: ndjson', '  fromat: ndjson', {
    code: 'SLUICE_ERR_CONFIG_UNKNOWN_KEY',
    needle: 'fromat:',
    path: 'source.fromat',
    includes: [/did you mean "format"/],
  }),
  yamlCase(
    'a misspelt key in a sink (sinks.windows.pth)',
    '    path: windows.ndjson',
    '    pth: windows.ndjson',
    {
      code: 'SLUICE_ERR_CONFIG_UNKNOWN_KEY',
      needle: 'pth:',
      path: 'sinks.windows.pth',
      includes: [/did you mean "path"/],
    },
  ),
  yamlCase('an unknown step type (validat)', '  - type: validate', '  - type: validat', {
    code: 'SLUICE_ERR_CONFIG_INVALID',
    needle: 'type: validat',
    offset: 'type: '.length,
    path: 'steps[0].type',
    includes: [/did you mean "validate"/],
  }),
  yamlCase(
    'a missing required key (validate without schema)',
    `    schema: ${q(join(EXAMPLE, 'event.schema.json'))}\n`,
    '',
    {
      code: 'SLUICE_ERR_CONFIG_INVALID',
      needle: 'type: validate',
      path: 'steps[0].schema',
      includes: [/missing|required/i],
    },
  ),
  yamlCase('a wrong type (group_by: a string, not a list)', '    group_by: [type]', '    group_by: type', {
    code: 'SLUICE_ERR_CONFIG_INVALID',
    needle: 'group_by: type',
    offset: 'group_by: '.length,
    path: 'steps[2].group_by',
    includes: [/array/],
  }),
  yamlCase('a YAML syntax error (bad indentation)', '    key: user.id', '   key: user.id', {
    code: 'SLUICE_ERR_CONFIG_SYNTAX',
    needle: '   key: user.id',
    lineOnly: true,
  }),
  yamlCase('a key given twice', '    table: users', '    table: users\n    table: users', {
    code: 'SLUICE_ERR_CONFIG_SYNTAX',
    needle: '    table: users\n    table: users',
    offset: '    table: users\n'.length,
    lineOnly: true,
  }),
  yamlCase('a reference to an undefined table', '    table: users', '    table: userz', {
    code: 'SLUICE_ERR_CONFIG_REFERENCE',
    needle: 'userz',
    path: 'steps[1].table',
    includes: ['userz'],
  }),
  yamlCase('a sink whose input names no output', '    input: windows', '    input: windowz', {
    code: 'SLUICE_ERR_CONFIG_REFERENCE',
    needle: 'windowz',
    path: 'sinks.windows.input',
    includes: ['windowz'],
  }),
  {
    name: 'a transform module that does not compile',
    files: {
      'pipeline.yaml': MODULE_PIPELINE,
      'mod.ts': [
        'export function normalize(e: Record<string, unknown>) {',
        '  return e;',
        '}',
        'const broken = ;',
        '',
      ].join('\n'),
    },
    code: 'SLUICE_ERR_MODULE_LOAD',
    includes: [/mod\.ts:4:\d+/],
  },
  {
    name: 'a module without the named export',
    files: {
      'pipeline.yaml': MODULE_PIPELINE,
      'mod.ts': 'export function normalise(e: Record<string, unknown>) {\n  return e;\n}\n',
    },
    code: 'SLUICE_ERR_MODULE_EXPORT',
    includes: ['mod.ts', '"normalize"', 'normalise'],
  },
  {
    name: 'a JSON Schema that is not valid',
    files: {
      'pipeline.yaml': SCHEMA_PIPELINE,
      'bad.schema.json': '{ "type": "objekt" }\n',
    },
    code: 'SLUICE_ERR_SCHEMA_COMPILE',
    includes: ['bad.schema.json'],
  },
  (() => {
    const data = parseYaml(change(BASE, '  format: ndjson', '  fromat: ndjson')) as unknown;
    const text = JSON.stringify(data, null, 2) + '\n';
    return {
      name: 'a misspelt key in a .json pipeline',
      files: { 'pipeline.json': text },
      pipelineFile: 'pipeline.json',
      code: 'SLUICE_ERR_CONFIG_UNKNOWN_KEY',
      at: position(text, '"fromat"'),
      path: 'source.fromat',
      includes: [/did you mean "format"/],
    };
  })(),
  (() => {
    const text = change(
      JSON.stringify(parseYaml(BASE), null, 2) + '\n',
      '"type": "file",\n    "format"',
      '"type": "file"\n    "format"',
    );
    const { line } = position(text, '"type": "file"\n    "format"');
    return {
      name: 'a JSON syntax error (missing comma) in a .json pipeline',
      files: { 'pipeline.json': text },
      pipelineFile: 'pipeline.json',
      code: 'SLUICE_ERR_CONFIG_SYNTAX',
      // Either the line missing its comma or the next one is a fair place to point at.
      at: { lines: [line, line + 1] },
    };
  })(),
];

/** Asserts stderr has the code and names `file` at the expected place. */
function assertReported(r: Ran, c: Case, file: string): void {
  assert.equal(r.code, 2, `exit code\n${r.stderr}`);
  assert.ok(r.stderr.includes(c.code), `stderr names ${c.code}:\n${r.stderr}`);
  if (c.at !== undefined) {
    let re: RegExp;
    const f = file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    if ('lines' in c.at) re = new RegExp(`${f}:(${c.at.lines.join('|')}):\\d+`);
    else if (c.at.column === undefined) re = new RegExp(`${f}:${c.at.line}:\\d+`);
    else re = new RegExp(`${f}:${c.at.line}:${c.at.column}\\b`);
    assert.match(r.stderr, re, `expected ${re} (file:line:column) in:\n${r.stderr}`);
  }
  if (c.path !== undefined) assert.ok(r.stderr.includes(c.path), `stderr names the key path ${c.path}`);
  for (const s of c.includes ?? []) {
    if (typeof s === 'string') assert.ok(r.stderr.includes(s), `stderr includes ${JSON.stringify(s)}`);
    else assert.match(r.stderr, s);
  }
}

describe('broken pipeline configs', () => {
  let input: string;

  before(() => {
    const dir = tempDir();
    input = join(dir, 'events.ndjson');
    writeFileSync(input, '{"id": "evt_1"}\n');
  });

  it('the unbroken base pipeline passes check', async () => {
    const dir = tempDir();
    const file = join(dir, 'pipeline.yaml');
    writeFileSync(file, BASE);
    const r = await sluice(['check', file]);
    assert.equal(r.code, 0, r.stderr);
  });

  for (const c of CASES) {
    for (const command of ['check', 'run'] as const) {
      it(`${command}: ${c.name} → exit 2, ${c.code}`, async () => {
        const dir = tempDir();
        for (const [name, text] of Object.entries(c.files)) writeFileSync(join(dir, name), text);
        const file = join(dir, c.pipelineFile ?? 'pipeline.yaml');
        const args =
          command === 'check'
            ? ['check', file]
            : ['run', file, '--input', input, '--out', join(dir, 'out'), '--workers', '1'];
        assertReported(await sluice(args), c, file);
      });
    }
  }

  for (const command of ['check', 'run'] as const) {
    it(`${command}: a pipeline file that does not exist → exit 2, SLUICE_ERR_CONFIG_NOT_FOUND`, async () => {
      const dir = tempDir();
      const file = join(dir, 'no-such-pipeline.yaml');
      const args = command === 'check' ? ['check', file] : ['run', file, '--input', input, '--out', dir];
      const r = await sluice(args);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /SLUICE_ERR_CONFIG_NOT_FOUND/);
      assert.ok(r.stderr.includes(file), `stderr names the path:\n${r.stderr}`);
    });

    it(`${command}: an unknown command-line option → exit 2`, async () => {
      const args =
        command === 'check'
          ? ['check', '--bogus', PAYMENTS]
          : ['run', PAYMENTS, '--input', input, '--out', tempDir(), '--bogus'];
      const r = await sluice(args);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /--bogus/);
    });
  }

  it('check on the payments example → exit 0 and prints ok', async () => {
    const r = await sluice(['check', PAYMENTS]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\bok\b/);
  });
});

// The build writes the pipeline schema's validator as standalone code (src/core/validator-build.ts)
// and loading a pipeline uses it only while it matches the schema: a stale one would be ignored
// silently, so this checks that the build's is current and judges as a compiled one does.
describe('the standalone pipeline validator', () => {
  it("is the build's for the schema the registry composes, and reports what a compiled one reports", () => {
    const built = createRequire(import.meta.url)('../dist/core/pipeline-validator.cjs') as ((
      data: unknown,
    ) => boolean) & { errors?: unknown; schemaHash: string };
    const schema = pipelineSchema();
    assert.equal(built.schemaHash, schemaHash(schema), 'dist/core/pipeline-validator.cjs is stale');
    const compiled = newPipelineAjv().compile(schema);
    let compared = 0;
    for (const c of [{ name: 'base', files: { 'pipeline.yaml': BASE } } as Partial<Case>, ...CASES]) {
      let data: unknown;
      try {
        data = parseYaml(c.files![c.pipelineFile ?? 'pipeline.yaml']!);
      } catch {
        continue; // not YAML: never reaches the validator
      }
      assert.equal(built(data), compiled(data), c.name);
      assert.deepEqual(built.errors ?? null, compiled.errors ?? null, c.name);
      compared++;
    }
    assert.ok(compared >= 10, `compared ${compared} configs`);
  });
});
