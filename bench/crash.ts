/**
 * Durability of `sluice serve` under many SIGKILLs (issue 11), the long run of
 * test/serve-kill-mixed.test.ts and test/cluster-owner-kills.test.ts:
 *
 * - embedded (default): one server on a SQLite store in a temporary directory; four producers
 *   post at once, two of them one payments event per request (application/json), two of them
 *   NDJSON batches of 1 to 500 lines, each to a pipeline of its own, while the server is
 *   SIGKILLed --kills times (default 100) and started again on the same store;
 * - cluster: two instances on the local NATS JetStream and PostgreSQL, a fresh stream and schema;
 *   two producers, one posting bodies of every type the API takes, one posting single events,
 *   while the instance that owns the first one's pipeline is SIGKILLed --kills times (default 20)
 *   and started again.
 *
 * Every request has a stable Idempotency-Key and is retried on connection errors and 5xx until it
 * gets a 202; the kills come at seeded random moments spread over the load (test/serve-helpers.ts
 * ingestUnderKills). Each producer posts its own sample input (the project's generator) in order,
 * so its pipeline must end up holding exactly what `sluice run` gives on that input: the baseline,
 * together with the same load run once without kills (--skip-baseline leaves that out).
 *
 * Columns: requests sent (retries included); acknowledged events: the events of requests answered
 * 202, each counted once; accepted: the events the embedded runtime's answers say it accepted (the
 * cluster's 202 only says the request is queued), and the events counted in the store's windows;
 * in store: the events the store accounts for, counted in its windows or held as dead letters (the
 * rest of the acknowledged events were duplicates, which it drops); expected: the same for `sluice
 * run`; lost and doubled: events the store holds fewer or more of than `sluice run`, by window
 * (its count) and by dead letter (its input line); exact: every result (windows with all their
 * metrics, dead letters, large payments, summary; embedded also the answers kept for each
 * Idempotency-Key) equals the baseline. Wall: from the first server's start to the last 202. Down:
 * mean time from a kill until the restarted server listens.
 *
 * Prints a markdown table on stdout, progress on stderr. The exit code is non-zero when a run is
 * not exact or fails.
 *
 * Usage: npm run bench:crash -- [--mode embedded|cluster] [--kills N] [--single-events N]
 *          [--batch-events N] [--seed N] [--skip-baseline]
 */
import { readFileSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { isDeepStrictEqual, parseArgs } from 'node:util';
import { prng } from '../dist/cli/demo.js';
import { clusterHoldings, freshCluster, ownerNow, WORKLOAD_KEY } from '../test/cluster-helpers.ts';
import { batchResults, PAYMENTS, resultDifferences, ROOT, sampleInput, tempDir } from '../test/helpers.ts';
import {
  ingestUnderKills,
  killRunResults,
  ndjsonBatches,
  planBatches,
  producerIdempotencyKey,
  readLines,
  singleEventRequests,
  startServer,
  writeServiceConfig,
  type Answer,
  type KillRun,
  type Producer,
  type Server,
} from '../test/serve-helpers.ts';
import { NATS_URL, PG_URL } from '../test/services.ts';
import { gitCommit, int, log, row } from './measure.ts';

const KEY = 'sk_bench_crash_4e1b7a90';

const { values: flags } = parseArgs({
  options: {
    mode: { type: 'string', default: 'embedded' },
    kills: { type: 'string' },
    'single-events': { type: 'string' },
    'batch-events': { type: 'string' },
    seed: { type: 'string', default: '1121' },
    'skip-baseline': { type: 'boolean', default: false },
  },
});
const MODE = flags.mode;
const CLUSTER = MODE === 'cluster';
const KILLS = Number(flags.kills ?? (CLUSTER ? 20 : 100));
const SINGLE_EVENTS = Number(flags['single-events'] ?? (CLUSTER ? 2_000 : 3_000));
const BATCH_EVENTS = Number(flags['batch-events'] ?? (CLUSTER ? 60_000 : 40_000));
const SEED = Number(flags.seed);
const count = (x: number): boolean => Number.isInteger(x) && x >= 1;
if (
  !['embedded', 'cluster'].includes(MODE) ||
  !Number.isInteger(KILLS) ||
  KILLS < 0 ||
  ![SINGLE_EVENTS, BATCH_EVENTS, SEED].every(count)
) {
  console.error(
    'usage: bench/crash.ts [--mode embedded|cluster] [--kills N] [--single-events N] [--batch-events N] [--seed N] [--skip-baseline]',
  );
  process.exit(2);
}

/** Each producer's input: [name, events, seed of the sample generator, how it posts]. */
const INPUTS: [string, number, number, 'single' | 'ndjson' | 'mixed'][] = CLUSTER
  ? [
      ['payments', BATCH_EVENTS, SEED + 1, 'mixed'],
      ['singles', SINGLE_EVENTS, SEED + 2, 'single'],
    ]
  : [
      ['single-a', SINGLE_EVENTS, SEED + 1, 'single'],
      ['single-b', SINGLE_EVENTS, SEED + 2, 'single'],
      ['ndjson-a', BATCH_EVENTS, SEED + 3, 'ndjson'],
      ['ndjson-b', BATCH_EVENTS, SEED + 4, 'ndjson'],
    ];

function producersOf(random: () => number): Producer[] {
  return INPUTS.map(([name, events, seed, how]) => {
    const lines = readLines(sampleInput(events, seed));
    const batches =
      how === 'single'
        ? singleEventRequests(lines)
        : how === 'ndjson'
          ? ndjsonBatches(lines, random)
          : planBatches(lines, random);
    return { name, pipeline: name, batches };
  });
}

// ---- counting events in result directories

type Rec = Record<string, unknown>;
const ndjson = (dir: string, file: string): Rec[] =>
  readFileSync(join(dir, file), 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Rec);

/** Events a result directory accounts for: counted in a window (by window) or a dead letter (by line). */
function eventsOf(dir: string): Map<string, number> {
  const events = new Map<string, number>();
  const add = (key: string, n: number): void => void events.set(key, (events.get(key) ?? 0) + n);
  for (const w of ndjson(dir, 'windows.ndjson'))
    add(`window ${[w.window_start, w.type, w.region, w.currency].join('|')}`, Number(w.count));
  for (const d of ndjson(dir, 'dead.ndjson')) add(`line ${String(d.line)}`, 1);
  return events;
}

interface Tally {
  /** Events counted in the windows. */
  accepted: number;
  store: number;
  expected: number;
  lost: number;
  doubled: number;
}

function tally(referenceDir: string, actualDir: string): Tally {
  const expected = eventsOf(referenceDir);
  const actual = eventsOf(actualDir);
  const t: Tally = { accepted: 0, store: 0, expected: 0, lost: 0, doubled: 0 };
  for (const [key, n] of actual) {
    t.store += n;
    if (key.startsWith('window ')) t.accepted += n;
  }
  for (const [key, n] of expected) {
    t.expected += n;
    const d = (actual.get(key) ?? 0) - n;
    if (d < 0) t.lost -= d;
    else t.doubled += d;
  }
  for (const [key, n] of actual) if (!expected.has(key)) t.doubled += n;
  return t;
}

// ---- one run

interface Outcome {
  kills: number;
  run?: KillRun;
  acknowledged: number;
  /** Events accepted according to the 202 answers (embedded only). */
  accepted?: number;
  tally: Tally;
  differences: string[];
  failed?: string;
  wallS: number;
}

const exact = (o: Outcome): boolean => !o.failed && o.differences.length === 0;

async function once(kills: number, references: string[]): Promise<Outcome> {
  const random = prng(SEED);
  const producers = producersOf(random);
  const acknowledged = producers.reduce((n, p) => n + p.batches.reduce((m, b) => m + b.count, 0), 0);
  const started: Server[] = [];
  const start = async (config: string): Promise<Server> => {
    const s = await startServer(config);
    started.push(s);
    return s;
  };
  const t0 = performance.now();
  const onKill = (k: KillRun['kills'][number], n: number): void => {
    if (n % 10 === 0 || n === kills)
      log(
        `  kill ${n}/${kills} at ${Math.round(k.progress * 100)}% of the load (down ${(k.downMs / 1000).toFixed(1)} s)`,
      );
  };
  const common = { producers, kills, random, run: `${process.pid}-${Date.now()}`, onKill };
  const outcome: Outcome = {
    kills,
    acknowledged,
    tally: { accepted: NaN, store: NaN, expected: NaN, lost: NaN, doubled: NaN },
    differences: [],
    wallS: NaN,
  };
  const held: string[] = [];
  const cluster = CLUSTER
    ? // Compared with sluice run exactly, so one watermark (see freshCluster).
      await freshCluster('benchcrash', {
        instances: 2,
        pipelines: producers.map((p) => p.pipeline),
        oneWatermark: true,
      })
    : undefined;
  const dir = cluster?.dir ?? tempDir('sluice-bench-crash-');
  try {
    if (cluster) {
      const run = await ingestUnderKills({
        ...common,
        key: WORKLOAD_KEY,
        slots: 2,
        start: (slot) => start(cluster.configs[slot]!),
        victim: (servers) => ownerNow(servers, `acme/${producers[0]!.pipeline}`),
      });
      outcome.run = run;
      for (const [i, p] of producers.entries())
        for (const [b, batch] of p.batches.entries())
          if (!isDeepStrictEqual(run.answers[i]![b], { queued: batch.count }))
            outcome.differences.push(`${p.name} batch ${b}: answered ${JSON.stringify(run.answers[i]![b])}`);
      held.push(...(await clusterHoldings(cluster, run.servers, producers)));
    } else {
      const config = writeServiceConfig(
        dir,
        {
          acme: { keys: [KEY], pipelines: Object.fromEntries(producers.map((p) => [p.pipeline, PAYMENTS])) },
        },
        { checkpoint: { interval: '300ms' }, sinks: { interval: '50ms' } },
      );
      const run = await ingestUnderKills({ ...common, key: KEY, slots: 1, start: () => start(config) });
      outcome.run = run;
      const results = await killRunResults({
        dir,
        server: run.servers[0]!,
        tenant: 'acme',
        key: KEY,
        producers,
        answers: run.answers,
      });
      outcome.accepted = 0;
      for (const [i, p] of producers.entries()) {
        const answers = run.answers[i] as Answer[];
        outcome.accepted += answers.reduce((n, a) => n + a.accepted, 0);
        const kept = new Map(
          answers.map((a, b) => [producerIdempotencyKey(common.run, p.name, b), a as unknown]),
        );
        if (!isDeepStrictEqual(results[i]!.stored, kept))
          outcome.differences.push(`${p.name}: the store keeps other answers than the producer got`);
        outcome.differences.push(
          ...resultDifferences(references[i]!, results[i]!.fromAnswers).map(
            (d) => `${p.name} (dead letters from the answers): ${d}`,
          ),
        );
        held.push(results[i]!.fromLetters);
      }
    }
    outcome.tally = { accepted: 0, store: 0, expected: 0, lost: 0, doubled: 0 };
    for (const [i, p] of producers.entries()) {
      const t = tally(references[i]!, held[i]!);
      for (const k of ['accepted', 'store', 'expected', 'lost', 'doubled'] as const) outcome.tally[k] += t[k];
      outcome.differences.push(...resultDifferences(references[i]!, held[i]!).map((d) => `${p.name}: ${d}`));
    }
  } catch (err) {
    outcome.failed = (err as Error).message.split('\n')[0]!;
    log(`  failed: ${(err as Error).stack ?? String(err)}`);
    for (const s of started.slice(-2)) log(s.output().slice(-2000));
  } finally {
    for (const s of started) if (s.proc.exitCode === null && s.proc.signalCode === null) await s.kill();
    await cluster?.clear();
  }
  // What a run that was not exact left is kept, to look into.
  if (exact(outcome)) rmSync(dir, { recursive: true, force: true });
  else log(`  kept ${dir}`);
  outcome.wallS = (outcome.run?.wallMs ?? performance.now() - t0) / 1000;
  return outcome;
}

// ---- the runs

const benchStart = performance.now();
const loadBefore = loadavg()[0]!;
log(`bench:crash, ${MODE}: making the inputs and the sluice run baseline`);
const references = await Promise.all(
  INPUTS.map(([, events, seed]) => batchResults(sampleInput(events, seed))),
);
const outcomes: Outcome[] = [];
for (const kills of flags['skip-baseline'] ? [KILLS] : [0, KILLS]) {
  log(`${MODE}: the load with ${kills} kills`);
  outcomes.push(await once(kills, references));
}
const loadAfter = loadavg()[0]!;

const out: string[] = [];
const s1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
out.push(
  CLUSTER
    ? `sluice serve, cluster runtime, 2 instances on NATS JetStream at ${NATS_URL} and PostgreSQL at ${PG_URL.replace(/\/\/[^@/]*@/, '//')}; the owner of acme/${INPUTS[0]![0]} SIGKILLed and started again.`
    : `sluice serve, embedded runtime, SQLite store in ${tmpdir()} (checkpoints every 300 ms, sinks every 50 ms); the server SIGKILLed and started again on the same store.`,
  `Machine: ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown CPU'}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}; ${new Date().toISOString().slice(0, 10)}; commit ${gitCommit(ROOT)}; 1-min load average ${loadBefore.toFixed(2)} before, ${loadAfter.toFixed(2)} after.`,
  `Load (seed ${SEED}): ${INPUTS.map(([name, events, , how]) => `${name}: ${int(events)} events, ${how === 'single' ? 'one per request' : how === 'ndjson' ? 'NDJSON batches of 1 to 500' : 'bodies of every type'}`).join('; ')}; each producer to a pipeline of its own, at once, one request at a time, each with an Idempotency-Key.`,
  '',
  row([
    'kills',
    'requests',
    'retries',
    'replays',
    'acknowledged events',
    'accepted: 202 / store',
    'in store',
    'expected',
    'lost',
    'doubled',
    'exact',
    'wall s',
    'down s (mean)',
  ]),
  '|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|',
);
for (const o of outcomes) {
  const r = o.run;
  const downs = r?.kills.map((k) => k.downMs / 1000) ?? [];
  out.push(
    row([
      r ? String(r.kills.length) : 'failed',
      r ? int(r.requests) : 'n/a',
      r ? int(r.retries) : 'n/a',
      r ? int(r.replays) : 'n/a',
      int(o.acknowledged),
      `${o.accepted === undefined ? 'n/a' : int(o.accepted)} / ${int(o.tally.accepted)}`,
      int(o.tally.store),
      int(o.tally.expected),
      int(o.tally.lost),
      int(o.tally.doubled),
      o.failed ? 'failed' : exact(o) ? 'yes' : '**no**',
      s1(o.wallS),
      downs.length ? s1(downs.reduce((a, b) => a + b, 0) / downs.length) : '',
    ]),
  );
}
out.push('');
for (const o of outcomes) {
  const notes: string[] = [];
  if (o.failed) notes.push(`**failed**: ${o.failed}`);
  if (o.run) {
    notes.push(
      `failed attempts ${JSON.stringify(Object.fromEntries(o.run.failures))}`,
      `${o.run.kills.filter((k) => k.inFlight > 0).length} kills with requests in flight`,
    );
    if (o.run.exitedAlone.length) notes.push(`**${o.run.exitedAlone.length} servers exited without a kill**`);
  }
  if (o.differences.length) notes.push(`differences: ${o.differences.slice(0, 5).join('; ')}`);
  out.push(`- ${o.kills} kills: ${notes.join('; ')}.`);
}
out.push('', `Benchmark took ${((performance.now() - benchStart) / 60_000).toFixed(1)} min.`);
process.stdout.write(out.join('\n') + '\n');
process.exitCode = outcomes.every((o) => exact(o) && (o.run?.exitedAlone.length ?? 0) === 0) ? 0 : 1;
