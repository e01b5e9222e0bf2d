/**
 * Shared test helpers: run the real `sluice` binary; the payments workloads, made by the project's
 * own generator (`sluice demo`'s) and checked against a `sluice run` of the same input; and the
 * independent reference workload in ../shared/workload, for cross-checks where it is present.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  renameSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { sampleEvents } from '../dist/cli/demo.js';

export const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
export const BIN = join(ROOT, 'bin', 'sluice.js');
export const SHARED = resolve(process.env.SLUICE_SHARED ?? join(ROOT, '..', 'shared'));
export const WORKLOAD = join(SHARED, 'workload');
export const PAYMENTS = join(ROOT, 'examples', 'payments', 'pipeline.yaml');

/**
 * Whether the independent reference workload (../shared/workload: its generator, tables and
 * expected results) is here. A clone of this repository alone does not have it.
 */
export const HAS_SHARED = ['generate.mjs', 'compare.mjs', 'expected', 'tables'].every((f) =>
  existsSync(join(WORKLOAD, f)),
);

/**
 * node:test options for a cross-check against ../shared/workload: it runs where the reference
 * workload is present and is skipped, by name, where it is not. A missing ../shared is not a
 * missing service, so this is a skip under CI=true too.
 */
export const CROSS_CHECK: { skip?: string } = HAS_SHARED
  ? {}
  : {
      skip:
        'cross-check skipped: the reference workload ../shared/workload is not here ' +
        `(looked in ${WORKLOAD}; SLUICE_SHARED names the directory that holds workload/)`,
    };

export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `sluice ...args` as a real process. */
export function sluice(
  args: string[],
  options: { cwd?: string; input?: string; env?: NodeJS.ProcessEnv; killAfterMs?: number } = {},
): Promise<Ran> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: options.cwd ?? ROOT,
      env: { ...process.env, ...options.env },
    });
    // A command that hangs ends as signal SIGKILL, which the test then reports, instead of the test
    // waiting for ever.
    if (options.killAfterMs !== undefined) {
      const timer = setTimeout(() => child.kill('SIGKILL'), options.killAfterMs);
      child.on('close', () => clearTimeout(timer));
    }
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolvePromise({ code, signal, stdout, stderr }));
    if (options.input !== undefined) child.stdin.end(options.input);
    else child.stdin.end();
  });
}

export function tempDir(prefix = 'sluice-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Where generated inputs are kept between test processes (each file is written once, atomically). */
function inputCache(): string {
  const dir = join(tmpdir(), 'sluice-test-workload');
  mkdirSync(dir, { recursive: true });
  return dir;
}

/**
 * `count` payments events from the project's own generator (`sluice demo`'s `sampleEvents`, with
 * its dirt: malformed lines, an empty line now and then, redeliveries, late arrivals), as an
 * NDJSON file. Kept between runs under a name that changes with the generator's code.
 */
export function sampleInput(count: number, seed = 7): string {
  const generator = createHash('sha256')
    .update(readFileSync(join(ROOT, 'dist', 'cli', 'demo.js')))
    .digest('hex')
    .slice(0, 12);
  const file = join(inputCache(), `sample-${generator}-seed${seed}-${count}.ndjson`);
  if (!existsSync(file)) {
    const tmp = `${file}.${process.pid}.tmp`;
    const fd = openSync(tmp, 'w');
    try {
      let chunk = '';
      for (const line of sampleEvents(count, seed)) {
        chunk += line + '\n';
        if (chunk.length > 1 << 20) {
          writeSync(fd, chunk);
          chunk = '';
        }
      }
      writeSync(fd, chunk);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  }
  return file;
}

/**
 * The reference workload's events for a seed and count (../shared/workload/generate.mjs), generated
 * once per machine and reused. Only for cross-checks: it throws where ../shared is missing.
 */
export function workloadInput(count: number, seed = 1): string {
  // Not even from the cache: a test that needs ../shared must not pass where it is missing.
  if (!HAS_SHARED) throw new Error(`the reference workload is not at ${WORKLOAD}`);
  const file = join(inputCache(), `seed${seed}-${count}.ndjson`);
  if (!existsSync(file)) {
    const tmp = `${file}.${process.pid}.tmp`;
    const r = spawnSync(process.execPath, [
      join(WORKLOAD, 'generate.mjs'),
      '--seed',
      String(seed),
      '--count',
      String(count),
      '--out',
      tmp,
    ]);
    if (r.status !== 0) throw new Error(`generate.mjs failed: ${r.stderr}`);
    renameSync(tmp, file);
  }
  return file;
}

/** Runs the reference workload's compare.mjs on its expected results; returns its exit code and report. */
export function compareWithExpected(
  expectedName: string,
  actualDir: string,
): { code: number | null; report: string } {
  const r = spawnSync(
    process.execPath,
    [join(WORKLOAD, 'compare.mjs'), join(WORKLOAD, 'expected', expectedName), actualDir],
    { encoding: 'utf8' },
  );
  return { code: r.status, report: r.stdout + r.stderr };
}

/** A payments input the scenario tests run on, and what its results must equal. */
export interface Workload {
  /** Its name in test titles. */
  name: string;
  /** The input file (made on first use). */
  input(): string;
  /** The independent expected results (../shared/workload/expected/<name>), for the reference workload. */
  expected?: string;
  /** node:test options: the reference workload is a cross-check, skipped by name without ../shared. */
  options: { skip?: string };
}

/** 100,000 events of the project's own generator: what the suite runs on, everywhere. */
export const SAMPLE_100K: Workload = {
  name: 'sample 100k',
  input: () => sampleInput(100_000),
  options: {},
};

/** The reference workload's seed-1 100k input with its expected results: a cross-check. */
export const SEED1_100K: Workload = {
  name: 'cross-check with ../shared/workload seed-1 100k',
  input: () => workloadInput(100_000),
  expected: 'seed1-100k',
  options: CROSS_CHECK,
};

const batchRuns = new Map<string, Promise<string>>();

/**
 * The results of `sluice run` of the payments example over `input` (one worker), the in-project
 * reference the other ways of running the pipeline (over HTTP, in a cluster, from NATS, through
 * crashes) must equal. Run once per test process and input; returns the result directory.
 */
export function batchResults(input: string): Promise<string> {
  let results = batchRuns.get(input);
  if (!results) {
    results = (async () => {
      const out = join(tempDir('sluice-batch-reference-'), 'out');
      const r = await sluice(['run', PAYMENTS, '--input', input, '--out', out, '--workers', '1']);
      assert.equal(r.code, 0, `sluice run of ${input}: ${r.stderr}`);
      // Equal to an empty or partial run would prove nothing: it read every line and kept most.
      const text = readFileSync(input);
      let lines = 0;
      for (let nl = text.indexOf(10); nl >= 0; nl = text.indexOf(10, nl + 1)) lines++;
      if (text.length > 0 && text[text.length - 1] !== 10) lines++;
      const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as Record<string, number>;
      assert.equal(summary.lines, lines, `sluice run of ${input} read ${summary.lines} of ${lines} lines`);
      assert.ok(summary.accepted! > lines / 2, `sluice run of ${input}: ${JSON.stringify(summary)}`);
      return out;
    })();
    batchRuns.set(input, results);
  }
  return results;
}

type Row = Record<string, unknown>;

function ndjsonRows(dir: string, name: string): Row[] {
  return readFileSync(join(dir, name), 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Row);
}

/**
 * The differences between two payments result directories (summary.json, dead.ndjson,
 * large.ndjson, windows.ndjson), exactly: the same summary; the same dead letters by line and
 * reason; the same large records; the same window rows with every metric equal (`closed`, which
 * only the service's API reports, aside). Row order is free. At most `max` differences.
 */
export function resultDifferences(expectedDir: string, actualDir: string, max = 10): string[] {
  const diffs: string[] = [];
  const note = (d: string): void => void (diffs.length < max && diffs.push(d));
  const show = (v: unknown): string => JSON.stringify(v)?.slice(0, 400) ?? 'undefined';
  const isRow = (v: unknown): v is Row => typeof v === 'object' && v !== null && !Array.isArray(v);
  /** For two rows, only the fields that differ. */
  const difference = (e: unknown, a: unknown): string => {
    if (!isRow(e) || !isRow(a)) return `expected ${show(e)}, got ${show(a)}`;
    return [...new Set([...Object.keys(e), ...Object.keys(a)])]
      .filter((f) => !isDeepStrictEqual(e[f], a[f]))
      .map((f) => `${f}: expected ${show(e[f])}, got ${show(a[f])}`)
      .join('; ');
  };
  const compareBy = (file: string, key: (r: Row) => string, project: (r: Row) => unknown): void => {
    const expected = new Map(ndjsonRows(expectedDir, file).map((r) => [key(r), project(r)]));
    const actual = new Map<string, unknown>();
    for (const r of ndjsonRows(actualDir, file)) {
      if (actual.has(key(r))) note(`${file}: ${key(r)} listed more than once`);
      actual.set(key(r), project(r));
    }
    for (const [k, e] of expected) {
      if (!actual.has(k)) note(`${file}: ${k} missing; expected ${show(e)}`);
      else if (!isDeepStrictEqual(actual.get(k), e)) note(`${file}: ${k}: ${difference(e, actual.get(k))}`);
    }
    for (const k of actual.keys())
      if (!expected.has(k)) note(`${file}: ${k} unexpected: ${show(actual.get(k))}`);
  };

  const summary = (dir: string): unknown => JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8'));
  if (!isDeepStrictEqual(summary(actualDir), summary(expectedDir)))
    note(`summary.json: ${difference(summary(expectedDir), summary(actualDir))}`);
  compareBy(
    'dead.ndjson',
    (r) => `line ${String(r.line)}`,
    (r) => r.reason,
  );
  compareBy(
    'large.ndjson',
    (r) => `id ${String(r.id)}`,
    (r) => r,
  );
  compareBy(
    'windows.ndjson',
    (r) => `window ${[r.window_start, r.type, r.region, r.currency].join('|')}`,
    ({ closed: _closed, ...r }) => r,
  );
  return diffs;
}

/** Fails, listing the first differences, unless `actualDir` holds exactly the results in `expectedDir`. */
export function assertSameResults(expectedDir: string, actualDir: string, what = 'results'): void {
  const diffs = resultDifferences(expectedDir, actualDir);
  assert.deepEqual(diffs, [], `${what} differ from ${expectedDir}:\n${diffs.join('\n')}`);
}

/**
 * Reference formatting for exact decimals in tests: `x / 10^scale` as the canonical text the
 * aggregates print (no exponent, no trailing fraction zeros).
 */
export function formatScaled(x: bigint, scale: number): string {
  const negative = x < 0n;
  const text = (negative ? -x : x).toString().padStart(scale + 1, '0');
  const frac = text.slice(-scale).replace(/0+$/, '');
  return (negative ? '-' : '') + text.slice(0, -scale) + (frac === '' ? '' : `.${frac}`);
}

/** A copy of the payments example in `dir` (its tables and modules beside it), with its pipeline file edited. */
export function paymentsCopy(dir: string, edit: (yaml: string) => string): string {
  const copy = join(dir, 'payments');
  cpSync(dirname(PAYMENTS), copy, { recursive: true });
  const file = join(copy, 'pipeline.yaml');
  writeFileSync(file, edit(readFileSync(file, 'utf8')));
  return file;
}
