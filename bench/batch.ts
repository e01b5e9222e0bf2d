/**
 * Batch benchmark on two workloads, each run three ways in the same run and in turn, so that the
 * machine's drift hits all alike: a plain single-threaded TypeScript script of the same rules,
 * `sluice run --workers 1` and `sluice run` on all cores, each as its own child process.
 *
 * - payments: the reference workload (shared/workload/README.md) through
 *   examples/payments/pipeline.yaml against bench/plain-payments.ts; outputs are compared with the
 *   workload's expected results, plus a 50,000-event batch for the peak RSS of a small batch.
 *   Beside them, the floor (bench/floor-batch.ts): reading, JSON.parse and Ajv alone on all cores,
 *   the least any pipeline built on them spends, reported against the 4× budget.
 * - telemetry: device reports with nested readings (bench/telemetry/generate.ts) through
 *   examples/telemetry/pipeline.yaml (validate, fan-out, lookup, dedupe on three fields, hopping
 *   windows) against bench/telemetry/plain.ts; every output is cross-checked against the plain
 *   script's (bench/telemetry/compare.ts says what is allowed to differ).
 *
 * Prints markdown tables on stdout (progress goes to stderr). Timing never fails anything: the
 * exit code is non-zero only when a process crashes.
 *
 * On a shared machine other work can take a core in the middle of a run, which slows a contender
 * that uses both cores more than one that uses one. A run during which other processes took more
 * than --max-others percent of the machine's CPU is measured again (at most twice more); the table
 * shows that share for every run it kept.
 *
 * Usage: npm run bench:batch -- [--workload payments|telemetry|all] [--runs N] [--events N]
 *        [--telemetry-lines N] [--skip-plain] [--max-others PCT]
 */
import { spawn, spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { transformSync } from 'esbuild';
import { compareTelemetry } from './telemetry/compare.ts';
import { telemetryFiles } from './telemetry/workload.ts';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
const SHARED = resolve(process.env.SLUICE_SHARED ?? join(ROOT, '..', 'shared'));
const WORKLOAD = join(SHARED, 'workload');
const DATA = join(ROOT, 'bench', '.data');
const PIPELINE = join(ROOT, 'examples', 'payments', 'pipeline.yaml');
const SLUICE_BIN = join(ROOT, 'bin', 'sluice.js');
const TIME_BIN = '/usr/bin/time';
const SMALL_BATCH = 50_000;
const TELEMETRY_SEED = 1;

const { values: flags } = parseArgs({
  options: {
    workload: { type: 'string', default: 'all' },
    runs: { type: 'string', default: '3' },
    events: { type: 'string', default: '1000000' },
    // About a minute for the telemetry part (3 contenders, 3 runs) on 2 quiet cores.
    'telemetry-lines': { type: 'string', default: '200000' },
    'skip-plain': { type: 'boolean', default: false },
    'max-others': { type: 'string', default: '10' },
  },
});
const WORKLOAD_NAME = flags.workload;
const RUNS = Number(flags.runs);
const EVENTS = Number(flags.events);
const TELEMETRY_LINES = Number(flags['telemetry-lines']);
const MAX_OTHERS = Number(flags['max-others']) / 100;
const ATTEMPTS = 3;
if (
  !['payments', 'telemetry', 'all'].includes(WORKLOAD_NAME) ||
  !Number.isInteger(RUNS) ||
  RUNS < 1 ||
  !Number.isInteger(EVENTS) ||
  EVENTS < 1 ||
  !Number.isInteger(TELEMETRY_LINES) ||
  TELEMETRY_LINES < 1 ||
  !(MAX_OTHERS >= 0 && MAX_OTHERS <= 1)
) {
  console.error(
    'usage: bench/batch.ts [--workload payments|telemetry|all] [--runs N ≥ 1] [--events N ≥ 1] [--telemetry-lines N ≥ 1] [--skip-plain] [--max-others PCT (0-100, default 10)]',
  );
  process.exit(2);
}
const EXPECTED: Record<number, string> = { 1_000_000: 'seed1-1m', 100_000: 'seed1-100k' };

const log = (msg: string): void => void process.stderr.write(`${msg}\n`);

/** The workload's seed-1 events, generated once into bench/.data and reused by later runs. */
function workloadInput(count: number): string {
  mkdirSync(DATA, { recursive: true });
  const file = join(DATA, `seed1-${count}.ndjson`);
  if (!existsSync(file)) {
    log(`generating ${count.toLocaleString('en-US')} events into ${file} ...`);
    const tmp = `${file}.${process.pid}.tmp`;
    const r = spawnSync(
      process.execPath,
      [join(WORKLOAD, 'generate.mjs'), '--seed', '1', '--count', String(count), '--out', tmp],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
    if (r.status !== 0) throw new Error(`generate.mjs exited with ${r.status ?? r.signal}`);
    // Renamed only when complete, so an interrupted run never leaves a short file to be reused.
    renameSync(tmp, file);
  }
  return file;
}

let plainDir: string | undefined;

/**
 * A baseline transpiled to plain JavaScript once, as sluice runs from dist/: running it through
 * tsx would charge it ~0.2 s of start-up and ~40 MiB of RSS that are the loader, not the code.
 * It goes to a temporary directory (outside what `eslint .` lints) that links the repo's
 * node_modules, so its imports resolve as they do from bench/. A baseline imports nothing else.
 */
function compiledPlain(source: string, name: string): string {
  if (plainDir === undefined) {
    plainDir = mkdtempSync(join(tmpdir(), 'sluice-bench-plain-'));
    symlinkSync(join(ROOT, 'node_modules'), join(plainDir, 'node_modules'), 'dir');
  }
  const script = join(plainDir, `${name}.mjs`);
  const { code } = transformSync(readFileSync(source, 'utf8'), {
    loader: 'ts',
    format: 'esm',
    target: 'node20',
    sourcefile: source,
  });
  writeFileSync(script, code);
  return script;
}

interface Contender {
  name: string;
  args(input: string, outDir: string): string[];
}

interface Sample {
  wallS: number;
  peakRssMiB: number;
  /** User + system CPU seconds (GNU time only): the work done, less inflated by other load than wall. */
  cpuS?: number;
  /** Share of the machine's CPU that other processes (or the hypervisor) took during the run. */
  othersShare?: number;
  compare?: boolean;
  crashed?: string;
}

/**
 * CPU seconds the whole machine has spent busy (steal included) since boot, from /proc/stat, or
 * undefined off Linux. On a shared machine this is how a run that other work slowed down shows.
 */
function busyCpuS(): number | undefined {
  let line: string;
  try {
    line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
  } catch {
    return undefined;
  }
  // cpu user nice system idle iowait irq softirq steal ...; guest time is already in user.
  const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
  // USER_HZ is 100 on every Linux that Node supports.
  return (user! + nice! + system! + irq! + softirq! + (steal ?? 0)) / 100;
}

/** Runs `node ...args` to completion; wall time from spawn to exit, peak RSS of the child. */
async function measure(args: string[]): Promise<Sample> {
  const useTime = existsSync(TIME_BIN);
  const rssFile = join(mkdtempSync(join(tmpdir(), 'sluice-bench-rss-')), 'rss');
  const command = useTime ? TIME_BIN : process.execPath;
  const argv = useTime ? ['-f', '%M %U %S', '-o', rssFile, process.execPath, ...args] : args;
  const busyBefore = busyCpuS();
  const selfBefore = process.cpuUsage();
  const start = performance.now();
  const child = spawn(command, argv, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-4000)));
  // Without GNU time, VmHWM (the kernel's own high-water mark) is sampled until the process goes.
  let hwmKiB = 0;
  let cpuS: number | undefined;
  const poll = useTime
    ? undefined
    : setInterval(() => {
        try {
          const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
          if (m) hwmKiB = Math.max(hwmKiB, Number(m[1]));
        } catch {
          // The process has just exited; the last sample stands.
        }
      }, 20);
  const { code, signal } = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>(
    (done, fail) => {
      child.on('error', fail);
      child.on('close', (c, s) => done({ code: c, signal: s }));
    },
  );
  const wallS = (performance.now() - start) / 1000;
  if (poll) clearInterval(poll);
  if (useTime) {
    // GNU time writes "Command exited with non-zero status N" before its own line on failure.
    const lines = readFileSync(rssFile, 'utf8').trim().split('\n');
    const [maxRss, user, sys] = lines[lines.length - 1]!.split(' ').map(Number);
    hwmKiB = maxRss!;
    cpuS = user! + sys!;
  }
  rmSync(resolve(rssFile, '..'), { recursive: true, force: true });
  const busyAfter = busyCpuS();
  const self = process.cpuUsage(selfBefore);
  const sample: Sample = { wallS, peakRssMiB: hwmKiB / 1024, cpuS };
  if (busyBefore !== undefined && busyAfter !== undefined && cpuS !== undefined) {
    const othersS = busyAfter - busyBefore - cpuS - (self.user + self.system) / 1e6;
    sample.othersShare = Math.max(0, othersS / (wallS * availableParallelism()));
  }
  if (code !== 0)
    sample.crashed = `exit ${code ?? signal}: ${stderr.trim().split('\n').slice(-5).join(' | ')}`;
  return sample;
}

interface Check {
  ok: boolean;
  report: string;
}

/** Checks a contender's outputs; undefined when this run is not compared. */
type Checker = (c: Contender, outDir: string) => Check | undefined;

function compare(expectedName: string, outDir: string): Check {
  const r = spawnSync(
    process.execPath,
    [join(WORKLOAD, 'compare.mjs'), join(WORKLOAD, 'expected', expectedName), outDir],
    { encoding: 'utf8' },
  );
  const ok = r.status === 0;
  return {
    ok,
    report: ok ? r.stdout : `output differs from expected/${expectedName}:\n${r.stdout}${r.stderr}`,
  };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

/** Runs every contender `RUNS` times, round-robin, and checks each output with `check`. */
async function series(
  label: string,
  contenders: Contender[],
  input: string,
  check: Checker | undefined,
): Promise<Map<string, Sample[]>> {
  const samples = new Map<string, Sample[]>(contenders.map((c) => [c.name, []]));
  for (let run = 1; run <= RUNS; run++) {
    for (const c of contenders) {
      const outDir = mkdtempSync(join(tmpdir(), 'sluice-bench-out-'));
      let s = await measure(c.args(input, outDir));
      for (
        let attempt = 2;
        attempt <= ATTEMPTS && !s.crashed && (s.othersShare ?? 0) > MAX_OTHERS;
        attempt++
      ) {
        const share = Math.round(s.othersShare! * 100);
        log(`[${label} ${run}/${RUNS}] ${c.name}: other work took ${share}% of the CPU, measuring again`);
        rmSync(outDir, { recursive: true, force: true });
        mkdirSync(outDir);
        s = await measure(c.args(input, outDir));
      }
      const r = s.crashed ? undefined : check?.(c, outDir);
      if (r) {
        s.compare = r.ok;
        if (!r.ok) log(`${c.name}: ${r.report}`);
      }
      rmSync(outDir, { recursive: true, force: true });
      samples.get(c.name)!.push(s);
      const result = s.crashed
        ? `CRASHED ${s.crashed}`
        : `${s.wallS.toFixed(2)} s, ${s.cpuS?.toFixed(1) ?? '?'} CPU s, ${s.peakRssMiB.toFixed(0)} MiB, others' CPU share ${s.othersShare === undefined ? '?' : Math.round(s.othersShare * 100)}%`;
      const verdict = s.compare === undefined ? '' : s.compare ? ', PASS' : ', FAIL';
      log(`[${label} ${run}/${RUNS}] ${c.name}: ${result}${verdict}`);
    }
  }
  return samples;
}

interface Summary {
  wallS: number;
  eventsPerS: number;
  mbPerS: number;
  peakRssMiB: number;
  cpuS: number;
  /** Each run's wall seconds, with the share of the CPU other work took meanwhile. */
  runs: string[];
  verdict: string;
  crashed: boolean;
}

function describeRun(s: Sample): string {
  if (s.crashed) return 'crashed';
  return s.othersShare === undefined
    ? s.wallS.toFixed(2)
    : `${s.wallS.toFixed(2)} (${Math.round(s.othersShare * 100)}%)`;
}

function summarize(samples: Sample[], events: number, bytes: number): Summary {
  const ok = samples.filter((s) => !s.crashed);
  const crashed = ok.length < samples.length;
  const wallS = ok.length ? median(ok.map((s) => s.wallS)) : NaN;
  const compared = ok.filter((s) => s.compare !== undefined);
  const passed = compared.filter((s) => s.compare).length;
  let verdict = compared.length === 0 ? 'not compared' : passed === compared.length ? 'PASS' : 'FAIL';
  if (compared.length && passed > 0 && passed < compared.length) verdict += ` (${passed}/${compared.length})`;
  if (crashed) verdict = `CRASH (${samples.length - ok.length}/${samples.length})`;
  return {
    wallS,
    eventsPerS: events / wallS,
    mbPerS: bytes / 1e6 / wallS,
    peakRssMiB: ok.length ? median(ok.map((s) => s.peakRssMiB)) : NaN,
    cpuS: ok.length && ok.every((s) => s.cpuS !== undefined) ? median(ok.map((s) => s.cpuS!)) : NaN,
    runs: samples.map(describeRun),
    verdict,
    crashed,
  };
}

const int = (x: number): string => (Number.isFinite(x) ? Math.round(x).toLocaleString('en-US') : 'n/a');
const fixed = (x: number, digits: number): string => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');
const times = (x: number): string => (Number.isFinite(x) ? `${x.toFixed(2)}×` : 'n/a');
const row = (cells: string[]): string => `| ${cells.join(' | ')} |`;

// ---- contenders
const cores = availableParallelism();
const PLAIN = 'plain TypeScript, 1 thread';
const W1 = 'sluice --workers 1';
const ALL = `sluice, all cores (${cores} workers)`;
const FLOOR = `floor: read, JSON.parse and Ajv only, ${cores} threads`;
/** The three contenders of a workload: the plain script (run with `plainArgs`) and sluice twice. */
function contenders(pipeline: string, plainArgs: Contender['args']): [Contender, Contender, Contender] {
  const run = (inp: string, out: string): string[] => [
    SLUICE_BIN,
    'run',
    pipeline,
    '--input',
    inp,
    '--out',
    out,
  ];
  return [
    { name: PLAIN, args: plainArgs },
    { name: W1, args: (inp, out) => [...run(inp, out), '--workers', '1'] },
    { name: ALL, args: run },
  ];
}

const tableHead = (unit: string, check: string): string[] => [
  row([
    'implementation',
    'wall s (median)',
    "wall s, each run (others' CPU share)",
    'CPU s (user+sys)',
    `${unit}/s`,
    'MB/s',
    'peak RSS MiB',
    `${unit}/s vs plain`,
    'peak RSS vs plain',
    check,
  ]),
  '|---|--:|--:|--:|--:|--:|--:|--:|--:|---|',
];

function resultRows(
  summaries: Map<string, Summary>,
  verdictOf = (s: Summary): string => s.verdict,
): string[] {
  const base = summaries.get(PLAIN);
  return [...summaries].map(([name, s]) =>
    row([
      name,
      fixed(s.wallS, 2),
      s.runs.join(', '),
      fixed(s.cpuS, 1),
      int(s.eventsPerS),
      fixed(s.mbPerS, 1),
      int(s.peakRssMiB),
      base ? times(s.eventsPerS / base.eventsPerS) : 'n/a',
      base ? times(s.peakRssMiB / base.peakRssMiB) : 'n/a',
      verdictOf(s),
    ]),
  );
}

// Targets from the issue; a verdict here is information, never an exit code.
function speedTarget(s: Summary, base: Summary | undefined, want: number, unit: string): string {
  if (!base) return 'n/a (plain skipped)';
  const ratio = s.eventsPerS / base.eventsPerS;
  const need = want * base.eventsPerS;
  return ratio >= want
    ? `${times(ratio)}: holds`
    : `${times(ratio)} (${int(s.eventsPerS)} vs ${int(need)} ${unit}/s needed): misses, ${times(need / s.eventsPerS)} short`;
}
/** The floor's wall time as a share of the time `want`× plain allows: over 100%, no pipeline on JSON.parse and Ajv gets there. */
function floorShare(floor: Summary, base: Summary | undefined, want: number): string {
  if (!base) return 'n/a (plain skipped)';
  const budget = base.wallS / want;
  return `${fixed(floor.wallS, 2)} s of the ${fixed(budget, 2)} s that ${want}× plain allows (${Math.round((100 * floor.wallS) / budget)}%), ${times(base.wallS / floor.wallS)} plain`;
}
const rssTarget = (s: Summary, limit: number): string =>
  s.peakRssMiB <= limit
    ? `${int(s.peakRssMiB)} MiB: holds`
    : `${int(s.peakRssMiB)} MiB: misses by ${int(s.peakRssMiB - limit)} MiB (${times(s.peakRssMiB / limit)} the limit)`;

interface Report {
  lines: string[];
  crashed: boolean;
}

const anyCrashed = (...summaries: Map<string, Summary>[]): boolean =>
  summaries.some((m) => [...m.values()].some((s) => s.crashed));

/** The payments reference workload: 1M events (and a 50k batch), outputs compared with expected/. */
async function payments(): Promise<Report> {
  const input = workloadInput(EVENTS);
  const smallInput = workloadInput(SMALL_BATCH);
  const script = flags['skip-plain']
    ? undefined
    : compiledPlain(join(ROOT, 'bench', 'plain-payments.ts'), 'plain-payments');
  const [plain, oneWorker, allCores] = contenders(PIPELINE, (inp, out) => [
    script!,
    '--input',
    inp,
    '--out',
    out,
    '--tables',
    join(WORKLOAD, 'tables'),
  ]);
  const floorScript = compiledPlain(join(ROOT, 'bench', 'floor-batch.ts'), 'floor-batch');
  const floor: Contender = {
    name: FLOOR,
    args: (inp) => [
      floorScript,
      '--input',
      inp,
      '--schema',
      join(ROOT, 'examples', 'payments', 'event.schema.json'),
    ],
  };
  const expected = EXPECTED[EVENTS];
  const bigBytes = statSync(input).size;
  const big = await series(
    `${EVENTS.toLocaleString('en-US')} events`,
    script ? [plain, oneWorker, allCores, floor] : [oneWorker, allCores, floor],
    input,
    // The floor writes nothing to compare.
    expected ? (c, outDir) => (c === floor ? undefined : compare(expected, outDir)) : undefined,
  );
  const small = await series(
    `${SMALL_BATCH.toLocaleString('en-US')} events`,
    script ? [plain, allCores] : [allCores],
    smallInput,
    undefined,
  );

  const bigSummary = new Map([...big].map(([name, s]) => [name, summarize(s, EVENTS, bigBytes)]));
  const smallBytes = statSync(smallInput).size;
  const smallSummary = new Map([...small].map(([name, s]) => [name, summarize(s, SMALL_BATCH, smallBytes)]));
  const base = bigSummary.get(PLAIN);
  const smallBase = smallSummary.get(PLAIN);
  const out: string[] = [
    `Payments workload, seed 1, ${EVENTS.toLocaleString('en-US')} events (${fixed(bigBytes / 1e6, 1)} MB), median of ${RUNS} run${RUNS === 1 ? '' : 's'}.`,
    '',
    ...tableHead('events', 'output vs expected'),
    ...resultRows(bigSummary),
    '',
    `${SMALL_BATCH.toLocaleString('en-US')}-event batch (seed 1, ${fixed(smallBytes / 1e6, 1)} MB), median of ${RUNS}:`,
    '',
    '| implementation | wall s | peak RSS MiB | peak RSS vs plain |',
    '|---|--:|--:|--:|',
  ];
  for (const [name, s] of smallSummary) {
    const vsPlain = smallBase ? times(s.peakRssMiB / smallBase.peakRssMiB) : 'n/a';
    // Without --workers, sluice runs a file this small on the main thread (src/core/engine.ts).
    const shown = name === ALL ? 'sluice, default (main thread: the file is under 32 MiB)' : name;
    out.push(row([shown, fixed(s.wallS, 2), int(s.peakRssMiB), vsPlain]));
  }
  const all = bigSummary.get(ALL)!;
  const w1 = bigSummary.get(W1)!;
  const floorRun = bigSummary.get(FLOOR)!;
  const smallAll = smallSummary.get(ALL)!;
  const events = EVENTS.toLocaleString('en-US');
  out.push(
    '',
    '| target | measured |',
    '|---|---|',
    `| all cores ≥ 4× plain events/s | ${speedTarget(all, base, 4, 'events')} |`,
    `| (the floor against the same 4× budget) | ${floorShare(floorRun, base, 4)} |`,
    `| one worker ≥ 1.5× plain events/s | ${speedTarget(w1, base, 1.5, 'events')} |`,
    `| all cores: peak RSS ≤ 256 MiB over ${events} events | ${rssTarget(all, 256)} |`,
    `| one worker: peak RSS ≤ 256 MiB over ${events} events | ${rssTarget(w1, 256)} |`,
    `| default: peak RSS ≤ 128 MiB for a ${SMALL_BATCH.toLocaleString('en-US')}-event batch | ${rssTarget(smallAll, 128)} |`,
  );
  return { lines: out, crashed: anyCrashed(bigSummary, smallSummary) };
}

/**
 * The telemetry workload: every output is cross-checked against the plain script's. The first
 * plain run's output is the reference (later plain runs are checked against it too); with
 * --skip-plain the script still runs once, unmeasured, to make it.
 */
async function telemetry(): Promise<Report> {
  const files = telemetryFiles(ROOT, DATA, TELEMETRY_SEED, TELEMETRY_LINES, log);
  const script = compiledPlain(join(ROOT, 'bench', 'telemetry', 'plain.ts'), 'plain-telemetry');
  const [plain, oneWorker, allCores] = contenders(files.pipeline, (inp, out) => [
    script,
    '--input',
    inp,
    '--out',
    out,
    '--sites',
    files.sites,
    '--schema',
    files.schema,
  ]);
  const referenceDir = join(mkdtempSync(join(tmpdir(), 'sluice-bench-reference-')), 'plain');
  let reference = false;
  if (flags['skip-plain']) {
    log('telemetry: running the plain script once for the reference output ...');
    const r = spawnSync(process.execPath, plain.args(files.input, referenceDir), {
      cwd: ROOT,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    reference = r.status === 0;
  }
  const check: Checker = (c, outDir) => {
    if (c === plain && !reference) {
      renameSync(outDir, referenceDir);
      reference = true;
      return undefined;
    }
    return reference
      ? compareTelemetry(referenceDir, outDir)
      : { ok: false, report: 'no reference: the plain script has not completed a run' };
  };
  const bytes = statSync(files.input).size;
  const samples = await series(
    `telemetry ${TELEMETRY_LINES.toLocaleString('en-US')} lines`,
    flags['skip-plain'] ? [oneWorker, allCores] : [plain, oneWorker, allCores],
    files.input,
    check,
  );
  rmSync(resolve(referenceDir, '..'), { recursive: true, force: true });

  const summaries = new Map([...samples].map(([name, s]) => [name, summarize(s, TELEMETRY_LINES, bytes)]));
  const base = summaries.get(PLAIN);
  const all = summaries.get(ALL)!;
  const out: string[] = [
    `Telemetry workload, seed ${TELEMETRY_SEED}, ${TELEMETRY_LINES.toLocaleString('en-US')} lines (${fixed(bytes / 1e6, 1)} MB, ~3 readings a line), median of ${RUNS} run${RUNS === 1 ? '' : 's'}.`,
    'Cross-check against the plain script: rows, counters and dead letters by reason equal; count, min, max exact; avg within 1e-9 relative; p90 within 0.005 relative of the exact value at rank ⌊0.9·(n−1)⌋ ± 1; distinct devices exact up to 2048, else within 3%.',
    '',
    ...tableHead('lines', 'cross-check vs plain'),
    ...resultRows(summaries, (s) =>
      s !== base || s.crashed
        ? s.verdict
        : s.verdict === 'not compared'
          ? 'reference'
          : `reference; repeats ${s.verdict}`,
    ),
    '',
    '| target | measured |',
    '|---|---|',
    `| all cores ≥ 2× plain lines/s | ${speedTarget(all, base, 2, 'lines')} |`,
    `| all cores: peak RSS ≤ 256 MiB over ${TELEMETRY_LINES.toLocaleString('en-US')} lines | ${rssTarget(all, 256)} |`,
  ];
  return { lines: out, crashed: anyCrashed(summaries) };
}

// Other work on the machine shows here: the bench itself keeps the load near 1 (plain) to 3.
const loadBefore = loadavg()[0]!;
const started = performance.now();
const reports: Report[] = [];
if (WORKLOAD_NAME !== 'telemetry') reports.push(await payments());
if (WORKLOAD_NAME !== 'payments') reports.push(await telemetry());
const elapsedS = (performance.now() - started) / 1000;
if (plainDir) rmSync(plainDir, { recursive: true, force: true });
const loadAfter = loadavg()[0]!;

const out: string[] = [
  `Node ${process.version}, ${cores} cores (${cpus()[0]?.model ?? 'unknown CPU'}), ${fixed(totalmem() / 2 ** 30, 0)} GiB; peak RSS from ${existsSync(TIME_BIN) ? 'GNU time %M' : '/proc VmHWM sampling'}; 1-min load average ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after.`,
  `A run during which other work took more than ${Math.round(MAX_OTHERS * 100)}% of the CPU was measured again (at most ${ATTEMPTS} attempts); "others' CPU share" is that share for the run kept.`,
];
for (const r of reports) out.push('', ...r.lines);
out.push('', `Benchmark took ${fixed(elapsedS / 60, 1)} min.`);
process.stdout.write(out.join('\n') + '\n');
process.exitCode = reports.some((r) => r.crashed) ? 1 : 0;
