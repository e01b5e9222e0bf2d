/**
 * The telemetry workload (examples/telemetry/pipeline.yaml) written the way a Node team would first
 * write it: one thread, a line at a time, JSON.parse, Ajv, plain objects, a Map of open windows, a
 * Set of dedupe keys, a sorted array per window for the exact p90 and a Set per window for the
 * exact count of distinct devices. It is the baseline `bench/batch.ts` compares sluice with, so
 * it is meant to be honest: neither deliberately slow nor tuned.
 *
 * The rules, the same as the pipeline's: validate each report against the JSON Schema; reject a
 * `ts` that is not a real date and time; one record per reading; region from the sites table
 * (`unknown` when the site is not in it); drop a reading whose (device, sensor, seq) was accepted
 * before, remembering keys for at least an hour of event time; hopping windows of 5 minutes every
 * minute with 30 s of allowed lateness, grouped by region and sensor.
 *
 * Besides the outputs sluice writes (windows, dead letters, summary) it writes p90-ranks.ndjson:
 * each row's values at the ranks around its p90, for the cross-check in bench/telemetry/compare.ts.
 *
 * Usage: node --import tsx bench/telemetry/plain.ts --input FILE --out DIR --sites CSV --schema JSON
 */
import { createReadStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Ajv2020 } from 'ajv/dist/2020.js';

interface Reading {
  sensor: string;
  value: number;
  seq: number;
}

interface DeviceReport {
  device: string;
  site: string;
  ts: string;
  fw?: string;
  readings: Reading[];
}

interface Window {
  start: number;
  region: string;
  sensor: string;
  count: number;
  min: number;
  max: number;
  sum: number;
  values: number[];
  devices: Set<string>;
}

const { values: args } = parseArgs({
  options: {
    input: { type: 'string' },
    out: { type: 'string' },
    sites: { type: 'string' },
    schema: { type: 'string' },
  },
});
if (!args.input || !args.out || !args.sites || !args.schema) {
  console.error('usage: plain.ts --input FILE --out DIR --sites CSV --schema JSON');
  process.exit(2);
}

// ---- the sites table: a small CSV without quoting, so a split is enough
const regions = new Map<string, string>();
for (const line of readFileSync(args.sites, 'utf8').split('\n').slice(1)) {
  const [site, region] = line.replace(/\r$/, '').split(',');
  if (site) regions.set(site, region!);
}

const ajv = new Ajv2020({ allErrors: false });
const validate = ajv.compile<DeviceReport>(JSON.parse(readFileSync(args.schema, 'utf8')));

const TS = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:Z|([+-])(\d{2}):(\d{2}))$/;
const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
// The Gregorian calendar repeats every 400 years (146097 days): used to move years 0-99 out of
// the range that Date.UTC reads as 1900-1999.
const FOUR_CENTURIES_MS = 146097 * 86_400_000;

/** Epoch milliseconds of a schema-valid `ts`, or undefined when it is not a real date and time. */
function tsToMs(ts: string): number | undefined {
  const m = TS.exec(ts)!;
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  const hour = Number(m[4]);
  const minute = Number(m[5]);
  const second = Number(m[6]);
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  if (month < 1 || month > 12 || day < 1) return undefined;
  if (day > (month === 2 && leap ? 29 : DAYS_IN_MONTH[month - 1]!)) return undefined;
  if (hour > 23 || minute > 59 || second > 59) return undefined;
  let offsetMs = 0;
  if (m[8] !== undefined) {
    const oh = Number(m[9]);
    const om = Number(m[10]);
    if (oh > 23 || om > 59) return undefined;
    offsetMs = (m[8] === '-' ? -1 : 1) * (oh * 60 + om) * 60_000;
  }
  const ms = m[7] === undefined ? 0 : Number(m[7].slice(0, 3).padEnd(3, '0'));
  const shift = year < 100 ? 400 : 0;
  const utc = Date.UTC(year + shift, month - 1, day, hour, minute, second, ms);
  return utc - (shift ? FOUR_CENTURIES_MS : 0) - offsetMs;
}

// ---- state
const SIZE_MS = 300_000;
const HOP_MS = 60_000;
const LATENESS_MS = 30_000;
const DEDUPE_WITHIN_MS = 3_600_000;
const P90_PERCENT = 90;
/** Open windows by start, then by region and sensor. */
const open = new Map<number, Map<string, Window>>();
const rows: string[] = [];
const ranks: string[] = [];
const dead: string[] = [];
const summary = { lines: 0, readings: 0, accepted: 0, invalid: 0, duplicates: 0, late: 0 };
let watermark = -Infinity;
let nextClose = Infinity;
// Dedupe keys in generations of an hour of event time: the current one and the one before.
let keys = new Set<string>();
let olderKeys = new Set<string>();
let generation = -Infinity;

function deadLetter(line: number, reason: 'parse' | 'invalid' | 'late', detail: string): void {
  if (reason !== 'late') summary.invalid++;
  dead.push(JSON.stringify({ line, reason, detail }));
}

function isDuplicate(key: string, tsMs: number): boolean {
  const g = Math.floor(tsMs / DEDUPE_WITHIN_MS);
  if (g > generation) {
    olderKeys = g === generation + 1 ? keys : new Set();
    keys = new Set();
    generation = g;
  }
  if (keys.has(key) || olderKeys.has(key)) return true;
  keys.add(key);
  return false;
}

function closeWindows(): void {
  nextClose = Infinity;
  for (const [start, groups] of open) {
    const close = start + SIZE_MS + LATENESS_MS;
    if (close > watermark) {
      if (close < nextClose) nextClose = close;
      continue;
    }
    for (const w of groups.values()) writeRow(w);
    open.delete(start);
  }
}

function writeRow(w: Window): void {
  const sorted = w.values.sort((a, b) => a - b);
  // Rank floor(q × (n − 1)) in integers (q in percent), so no float rounding picks a neighbour.
  const rank = Math.floor((P90_PERCENT * (w.count - 1)) / 100);
  const windowStart = new Date(w.start).toISOString();
  rows.push(
    JSON.stringify({
      window_start: windowStart,
      region: w.region,
      sensor: w.sensor,
      readings: w.count,
      min_value: w.min,
      max_value: w.max,
      avg_value: w.sum / w.count,
      p90_value: sorted[rank],
      devices: w.devices.size,
    }),
  );
  ranks.push(
    JSON.stringify({
      window_start: windowStart,
      region: w.region,
      sensor: w.sensor,
      p90_ranks: sorted.slice(Math.max(0, rank - 1), rank + 2),
    }),
  );
}

function addToWindow(start: number, region: string, r: Reading, device: string): void {
  let groups = open.get(start);
  if (groups === undefined) {
    groups = new Map();
    open.set(start, groups);
    const close = start + SIZE_MS + LATENESS_MS;
    if (close < nextClose) nextClose = close;
  }
  const key = `${region}|${r.sensor}`;
  let w = groups.get(key);
  if (w === undefined) {
    w = {
      start,
      region,
      sensor: r.sensor,
      count: 0,
      min: r.value,
      max: r.value,
      sum: 0,
      values: [],
      devices: new Set(),
    };
    groups.set(key, w);
  }
  w.count++;
  if (r.value < w.min) w.min = r.value;
  if (r.value > w.max) w.max = r.value;
  w.sum += r.value;
  w.values.push(r.value);
  w.devices.add(device);
}

function processLine(text: string, line: number): void {
  let report: unknown;
  try {
    report = JSON.parse(text);
  } catch (err) {
    deadLetter(line, 'parse', (err as Error).message);
    return;
  }
  if (!validate(report)) {
    const e = validate.errors![0]!;
    deadLetter(line, 'invalid', `${e.instancePath || '/'} ${e.message ?? e.keyword}`);
    return;
  }
  const tsMs = tsToMs(report.ts);
  if (tsMs === undefined) return deadLetter(line, 'invalid', `/ts ${report.ts} is not a real date and time`);
  summary.readings += report.readings.length;
  const region = regions.get(report.site) ?? 'unknown';

  for (const r of report.readings) {
    if (isDuplicate(`${report.device}|${r.sensor}|${r.seq}`, tsMs)) {
      summary.duplicates++;
      continue;
    }
    const last = Math.floor(tsMs / HOP_MS) * HOP_MS;
    if (last + SIZE_MS + LATENESS_MS <= watermark) {
      summary.late++;
      deadLetter(line, 'late', `window ${new Date(last).toISOString()} already closed`);
      continue;
    }
    summary.accepted++;
    // Every window that holds tsMs and is still open, newest first: older ones close sooner.
    for (let start = last; start > tsMs - SIZE_MS; start -= HOP_MS) {
      if (start + SIZE_MS + LATENESS_MS <= watermark) break;
      addToWindow(start, region, r, report.device);
    }
    if (tsMs > watermark) {
      watermark = tsMs;
      if (nextClose <= watermark) closeWindows();
    }
  }
}

// ---- input: lines end at `\n` only (readline would also end one at a lone `\r`).
const input = createReadStream(args.input);
input.setEncoding('utf8');
let rest = '';
for await (const chunk of input as AsyncIterable<string>) {
  const lines = (rest + chunk).split('\n');
  rest = lines.pop()!;
  for (const l of lines) processLine(l.endsWith('\r') ? l.slice(0, -1) : l, ++summary.lines);
}
if (rest !== '') processLine(rest.endsWith('\r') ? rest.slice(0, -1) : rest, ++summary.lines);
watermark = Infinity;
closeWindows();

// ---- output
const ndjson = (lines: string[]): string => (lines.length ? lines.join('\n') + '\n' : '');
mkdirSync(args.out, { recursive: true });
writeFileSync(join(args.out, 'windows.ndjson'), ndjson(rows));
writeFileSync(join(args.out, 'p90-ranks.ndjson'), ndjson(ranks));
writeFileSync(join(args.out, 'dead.ndjson'), ndjson(dead));
writeFileSync(join(args.out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
