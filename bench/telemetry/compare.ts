/**
 * Cross-check of a telemetry run against the plain script's output (bench/telemetry/plain.ts) on
 * the same input: the same window rows (start, region, sensor), the same counters and the same
 * dead letters by reason, and per row:
 *
 * - `readings`, `min_value`, `max_value`: exactly equal. A number written as a decimal string
 *   (`"21.5"`) is read as the number it spells, so exact-decimal and double outputs both compare.
 * - `avg_value`: within 1e-9 relative (the order of the additions differs).
 * - `p90_value`: within DDSketch's relative accuracy α = 0.005 (plus 1e-9 for floating-point
 *   rounding at a bucket's edge) of the exact value at rank ⌊0.9·(n−1)⌋ or at one of the two ranks
 *   beside it: rank definitions differ by one between implementations (nearest rank ⌈q·n⌉−1,
 *   ⌊q·(n−1)⌋, q·(n−1) in floating point), and a neighbour can be further than α away.
 * - `devices`: exactly equal while the exact count is at most 2048 (HyperLogLog is exact there at
 *   the default precision), else within 3%.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const P90_RELATIVE_ACCURACY = 0.005;
const AVG_RELATIVE = 1e-9;
const EXACT_DISTINCT_MAX = 2048;
const DISTINCT_RELATIVE = 0.03;
const SUMMARY_COUNTERS = ['lines', 'readings', 'accepted', 'invalid', 'duplicates', 'late'] as const;

type Row = Record<string, unknown>;

const readNdjson = (file: string): Row[] =>
  existsSync(file)
    ? readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Row)
    : [];

const keyOf = (r: Row): string => `${String(r.window_start)} ${String(r.region)} ${String(r.sensor)}`;

/** A metric as a number, whether written as a JSON number or as a decimal string; NaN otherwise. */
function num(v: unknown): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && v.trim() !== '') return Number(v);
  return NaN;
}

function deadByReason(dir: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const d of readNdjson(join(dir, 'dead.ndjson'))) {
    const reason = String(d.reason);
    counts.set(reason, (counts.get(reason) ?? 0) + 1);
  }
  return counts;
}

const relativeGap = (a: number, b: number): number => Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b));

/** What differs in one row, or undefined when it passes. */
function compareRow(got: Row, want: Row, p90Ranks: number[] | undefined): string | undefined {
  const problems: string[] = [];
  for (const field of ['readings', 'min_value', 'max_value']) {
    if (num(got[field]) !== num(want[field]))
      problems.push(`${field} ${JSON.stringify(got[field])} ≠ ${JSON.stringify(want[field])}`);
  }
  const avg = num(got.avg_value);
  const wantAvg = num(want.avg_value);
  if (!(avg === wantAvg || relativeGap(avg, wantAvg) <= AVG_RELATIVE))
    problems.push(
      `avg_value ${avg} vs ${wantAvg} (relative gap ${relativeGap(avg, wantAvg).toExponential(2)})`,
    );
  const p90 = num(got.p90_value);
  const candidates = p90Ranks ?? [num(want.p90_value)];
  const allowed = P90_RELATIVE_ACCURACY * (1 + 1e-9);
  if (!candidates.some((x) => Math.abs(p90 - x) <= allowed * Math.abs(x)))
    problems.push(
      `p90_value ${p90} is not within ${P90_RELATIVE_ACCURACY} of any of ${candidates.join(', ')}`,
    );
  const devices = num(got.devices);
  const wantDevices = num(want.devices);
  const devicesOk =
    wantDevices <= EXACT_DISTINCT_MAX
      ? devices === wantDevices
      : Math.abs(devices - wantDevices) <= DISTINCT_RELATIVE * wantDevices;
  if (!devicesOk) problems.push(`devices ${devices} vs exact ${wantDevices}`);
  return problems.length ? problems.join('; ') : undefined;
}

/**
 * Compares a run's outputs in `outDir` with the plain script's in `referenceDir`. `report` lists
 * what differs (at most 20 rows in detail), and says how many rows were compared.
 */
export function compareTelemetry(referenceDir: string, outDir: string): { ok: boolean; report: string } {
  const problems: string[] = [];
  const wantRows = readNdjson(join(referenceDir, 'windows.ndjson'));
  const gotRows = readNdjson(join(outDir, 'windows.ndjson'));
  const ranks = new Map(
    readNdjson(join(referenceDir, 'p90-ranks.ndjson')).map((r) => [keyOf(r), r.p90_ranks as number[]]),
  );
  const want = new Map(wantRows.map((r) => [keyOf(r), r]));
  const got = new Map(gotRows.map((r) => [keyOf(r), r]));
  if (got.size !== gotRows.length) problems.push(`${gotRows.length - got.size} window rows repeat a key`);
  let rowProblems = 0;
  const note = (msg: string): void => {
    if (++rowProblems <= 20) problems.push(msg);
  };
  for (const [key, w] of want) {
    const g = got.get(key);
    if (!g) note(`missing row ${key}`);
    else {
      const diff = compareRow(g, w, ranks.get(key));
      if (diff) note(`row ${key}: ${diff}`);
    }
  }
  for (const key of got.keys()) if (!want.has(key)) note(`extra row ${key}`);
  if (rowProblems > 20) problems.push(`… and ${rowProblems - 20} more rows differ`);

  const wantSummary = JSON.parse(readFileSync(join(referenceDir, 'summary.json'), 'utf8')) as Row;
  const gotSummary = JSON.parse(readFileSync(join(outDir, 'summary.json'), 'utf8')) as Row;
  for (const c of SUMMARY_COUNTERS)
    if (gotSummary[c] !== wantSummary[c])
      problems.push(`summary ${c}: ${String(gotSummary[c])} vs ${String(wantSummary[c])}`);

  const wantDead = deadByReason(referenceDir);
  const gotDead = deadByReason(outDir);
  for (const reason of new Set([...wantDead.keys(), ...gotDead.keys()]))
    if (wantDead.get(reason) !== gotDead.get(reason))
      problems.push(`dead letters "${reason}": ${gotDead.get(reason) ?? 0} vs ${wantDead.get(reason) ?? 0}`);

  const compared = `${want.size} window rows, ${[...wantDead.values()].reduce((a, b) => a + b, 0)} dead letters`;
  return {
    ok: problems.length === 0,
    report: problems.length ? `${problems.join('\n')}\n(${compared})` : `same results (${compared})`,
  };
}
