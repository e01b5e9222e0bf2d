/**
 * What the benchmarks measure processes and the machine with (from /proc), and how they print it:
 * shared by the benchmarks in bench/.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';

export const log = (msg: string): void => void process.stderr.write(`${msg}\n`);

/** CPU seconds the machine spent busy (steal included) since boot; undefined off Linux. */
export function busyCpuS(): number | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
    return (user! + nice! + system! + irq! + softirq! + (steal ?? 0)) / 100;
  } catch {
    return undefined;
  }
}

/** User + system CPU seconds of a process (all its threads). */
export function processCpuS(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may hold spaces: utime is the 12th.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return undefined;
  }
}

export function rssMiB(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Waits (at most `maxS` seconds) until other work takes less than `share` of the machine over a
 * second: the machine is shared, and a phase that starts while a test suite runs measures both.
 */
export async function waitQuiet(what: string, share = 0.15, maxS = 60): Promise<void> {
  const deadline = performance.now() + maxS * 1000;
  for (let said = false; ;) {
    const before = busyCpuS();
    await sleep(1000);
    const after = busyCpuS();
    if (before === undefined || after === undefined) return;
    const busy = (after - before) / availableParallelism();
    if (busy < share) return;
    if (performance.now() > deadline) {
      log(`${what}: other work still takes ${Math.round(busy * 100)}% of the machine; measuring anyway`);
      return;
    }
    if (!said) log(`${what}: other work takes ${Math.round(busy * 100)}% of the machine; waiting`);
    said = true;
  }
}

/** The `p` quantile (0 to 1) of sorted values; NaN for none. */
export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
}

export const int = (x: number): string =>
  Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a';
export const ms = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : x === Infinity ? '∞' : 'n/a');
export const pct = (x: number): string => (Number.isFinite(x) ? `${Math.round(x)}%` : 'n/a');
export const row = (cells: string[]): string => `| ${cells.join(' | ')} |`;

/** The commit measured, and whether src/ differs from it. */
export function gitCommit(root: string): string {
  const r = spawnSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: root, encoding: 'utf8' });
  const dirty = spawnSync('git', ['status', '--porcelain', '--', 'src'], { cwd: root, encoding: 'utf8' });
  return (r.stdout.trim() || 'unknown') + (dirty.stdout.trim() ? ' (src/ modified)' : '');
}

/** A server a benchmark started: its address and process, and how to stop it. */
export interface RunningServer {
  url: string;
  pid: number;
  /** Stops the server; resolves with its exit status and how long it took. */
  stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }>;
  /** The server's last output lines, for a crash report. */
  tail(): string;
}

/**
 * Starts `node ...args`, a baseline server that prints `{"url": ...}` on its first line of stdout
 * once listening and stops on SIGTERM (bench/bare-fastify.ts, bench/floor-server.ts).
 */
export async function startBare(args: string[], what: string, cwd: string): Promise<RunningServer> {
  const proc = spawn(process.execPath, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stderr.setEncoding('utf8').on('data', (d: string) => (out = (out + d).slice(-4000)));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    proc.on('exit', (code, signal) => r({ code, signal })),
  );
  const lines = createInterface({ input: proc.stdout });
  const url = await new Promise<string>((done, fail) => {
    lines.once('line', (l) => done((JSON.parse(l) as { url: string }).url));
    void exited.then(({ code, signal }) => fail(new Error(`${what} exited (${code ?? signal}): ${out}`)));
  });
  return {
    url,
    pid: proc.pid!,
    tail: () => out,
    stop: async () => {
      const started = performance.now();
      proc.kill('SIGTERM');
      return { ...(await exited), ms: performance.now() - started };
    },
  };
}
