/** Shared test helpers: run the real `sluice` binary, and the payments workload from ../shared. */
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
export const BIN = join(ROOT, 'bin', 'sluice.js');
export const SHARED = resolve(process.env.SLUICE_SHARED ?? join(ROOT, '..', 'shared'));
export const WORKLOAD = join(SHARED, 'workload');
export const PAYMENTS = join(ROOT, 'examples', 'payments', 'pipeline.yaml');

export interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `sluice ...args` as a real process. */
export function sluice(
  args: string[],
  options: { cwd?: string; input?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<Ran> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: options.cwd ?? ROOT,
      env: { ...process.env, ...options.env },
    });
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

/** The workload's events for a seed and count, generated once per machine and reused. */
export function workloadInput(count: number, seed = 1): string {
  const dir = join(tmpdir(), 'sluice-test-workload');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `seed${seed}-${count}.ndjson`);
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

/** Runs the workload's compare.mjs; returns its exit code and report. */
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
