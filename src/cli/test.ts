/**
 * `sluice test <pipeline>`: runs fixture cases kept beside a pipeline (input events → expected
 * records per output, dead letters, counters) on the main thread, and prints a line diff of every
 * mismatch. Like `vector test`, but the expectations are the data itself.
 */
import '../components.ts';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, extname, join, relative, resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse as parseYaml } from 'yaml';
import { loadPipeline, type ResolvedPipeline, type ResolvedSink } from '../core/config.ts';
import { prepare, runPipeline, type Prepared } from '../core/engine.ts';
import type { Rec, SinkWriter } from '../core/types.ts';
import { SluiceError } from '../errors.ts';

interface TestCase {
  name: string;
  input: (string | Rec)[];
  expect: {
    outputs?: Record<string, Rec[]>;
    dead_letters?: Rec[];
    counters?: Record<string, number>;
  };
}

const caseSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['cases'],
  properties: {
    cases: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'input', 'expect'],
        properties: {
          name: { type: 'string' },
          input: { type: 'array', items: { anyOf: [{ type: 'string' }, { type: 'object' }] } },
          expect: {
            type: 'object',
            additionalProperties: false,
            properties: {
              outputs: { type: 'object', additionalProperties: { type: 'array', items: { type: 'object' } } },
              dead_letters: { type: 'array', items: { type: 'object' } },
              counters: { type: 'object', additionalProperties: { type: 'integer' } },
            },
          },
        },
      },
    },
  },
};

/** `<pipeline>.tests.yaml` beside the pipeline, and every YAML file in `tests/` beside it. */
export function findCaseFiles(pipelineFile: string): string[] {
  const dir = dirname(resolve(pipelineFile));
  const stem = basename(pipelineFile, extname(pipelineFile));
  const files: string[] = [];
  for (const ext of ['.tests.yaml', '.tests.yml']) {
    const f = join(dir, stem + ext);
    if (existsSync(f)) files.push(f);
  }
  const testsDir = join(dir, 'tests');
  if (existsSync(testsDir)) {
    for (const f of readdirSync(testsDir).sort()) if (/\.ya?ml$/.test(f)) files.push(join(testsDir, f));
  }
  return files;
}

function readCases(file: string): TestCase[] {
  let data: unknown;
  try {
    data = parseYaml(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new SluiceError('SLUICE_ERR_TEST_FIXTURE', `${file}: ${(err as Error).message}`, {
      location: { file },
    });
  }
  const validate = new Ajv2020({ allErrors: false, strict: false }).compile(caseSchema);
  if (!validate(data)) {
    const e = validate.errors![0]!;
    throw new SluiceError(
      'SLUICE_ERR_TEST_FIXTURE',
      `${file}: ${e.instancePath || '(top level)'} ${e.message}`,
      { location: { file, path: e.instancePath } },
    );
  }
  return (data as { cases: TestCase[] }).cases;
}

/** A writer that keeps NDJSON text in memory. */
class Capture implements SinkWriter {
  text = '';
  write(encoded: string): void {
    this.text += encoded;
  }
  async commit(): Promise<void> {}
  async abort(): Promise<void> {}
  records(): Rec[] {
    return this.text
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Rec);
  }
}

export interface CaseResult {
  name: string;
  diffs: string[];
}

/** The pipeline with every output captured as NDJSON instead of its configured sinks. */
function capturing(pipeline: ResolvedPipeline): ResolvedPipeline {
  const sinks: ResolvedSink[] = pipeline.outputs.map((output) => ({
    id: `capture:${output}`,
    type: 'stdout',
    input: output,
    config: { type: 'stdout' },
  }));
  return { ...pipeline, sinks, summary: undefined };
}

/** Line diff (LCS) of two lists of lines: ` ` same, `-` expected only, `+` actual only. */
export function diffLines(expected: string[], actual: string[]): string[] {
  const n = expected.length;
  const m = actual.length;
  const lcs = Array.from({ length: n + 1 }, () => new Array<number>(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      lcs[i]![j] =
        expected[i] === actual[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
  const out: string[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && expected[i] === actual[j]) {
      out.push(`  ${expected[i]}`);
      i++;
      j++;
    } else if (j < m && (i === n || lcs[i]![j + 1]! >= lcs[i + 1]![j]!)) out.push(`+ ${actual[j++]}`);
    else out.push(`- ${expected[i++]}`);
  }
  return out;
}

const line = (r: unknown): string => JSON.stringify(r);

/** Dead letters compare on the fields the expectation gives (details and raw text are verbose). */
function project(actual: Rec, expected: Rec | undefined): Rec {
  if (!expected) return { line: actual.line, reason: actual.reason };
  const out: Rec = {};
  for (const k of Object.keys(expected)) out[k] = actual[k];
  return out;
}

export async function runCase(prepared: Prepared, c: TestCase): Promise<CaseResult> {
  const pipeline = prepared.pipeline;
  const dir = mkdtempSync(join(tmpdir(), 'sluice-test-case-'));
  try {
    const input = join(dir, 'input.ndjson');
    writeFileSync(
      input,
      c.input.map((x) => (typeof x === 'string' ? x : JSON.stringify(x))).join('\n') +
        (c.input.length ? '\n' : ''),
    );
    const captures = new Map<string, Capture>();
    const result = await runPipeline(prepared, {
      input,
      outDir: dir,
      workers: 0,
      writerFor: (sink) => {
        const capture = new Capture();
        captures.set(sink.input, capture);
        return capture;
      },
    });
    const diffs: string[] = [];
    for (const [output, expected] of Object.entries(c.expect.outputs ?? {})) {
      const capture = captures.get(output);
      if (!capture) {
        diffs.push(
          `output "${output}" does not exist; outputs of this pipeline: ${pipeline.outputs.join(', ')}`,
        );
        continue;
      }
      const actual = capture.records();
      if (!isDeepStrictEqual(actual, expected))
        diffs.push(`output ${output}:`, ...diffLines(expected.map(line), actual.map(line)));
    }
    if (c.expect.dead_letters) {
      const expected = c.expect.dead_letters;
      const actual = captures.get('dead')!.records();
      const projected = actual.map((a, i) => project(a, expected[i]));
      if (!isDeepStrictEqual(projected, expected))
        diffs.push('dead letters:', ...diffLines(expected.map(line), projected.map(line)));
    }
    for (const [name, want] of Object.entries(c.expect.counters ?? {})) {
      const got = result.counters[name] ?? 0;
      if (got !== want) diffs.push(`counter ${name}: expected ${want}, got ${got}`);
    }
    return { name: c.name, diffs };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function testCommand(pipelineFile: string, flags: { cases?: string }): Promise<number> {
  const pipeline = loadPipeline(pipelineFile);
  const files = flags.cases ? [resolve(flags.cases)] : findCaseFiles(pipelineFile);
  if (files.length === 0) {
    throw new SluiceError('SLUICE_ERR_TEST_FIXTURE', `no test cases found for ${pipelineFile}`, {
      hint: `Write ${basename(pipelineFile, extname(pipelineFile))}.tests.yaml beside the pipeline, or pass --cases FILE.`,
    });
  }
  const prepared = await prepare(capturing(pipeline));
  let failed = 0;
  let passed = 0;
  for (const file of files) {
    process.stdout.write(`${relative(process.cwd(), file) || file}\n`);
    for (const c of readCases(file)) {
      const r = await runCase(prepared, c);
      if (r.diffs.length === 0) {
        passed++;
        process.stdout.write(`  ✓ ${r.name}\n`);
      } else {
        failed++;
        process.stdout.write(`  ✗ ${r.name}\n${r.diffs.map((d) => `      ${d}`).join('\n')}\n`);
      }
    }
  }
  process.stdout.write(`${passed} passed, ${failed} failed\n`);
  if (failed > 0) {
    process.stderr.write(
      new SluiceError('SLUICE_ERR_TEST_FAILED', `${failed} of ${passed + failed} cases failed`).format() +
        '\n',
    );
    return 1;
  }
  return 0;
}
