/**
 * Deterministic generator for the telemetry workload of `bench/batch.ts`: NDJSON device reports,
 * each with a nested array of sensor readings (1 to 5, 3 on average), and the sites table that
 * maps a site to its region. The same seed and line count always give the same bytes.
 *
 * What a real fleet sends, in fixed shares of the lines:
 * - order: a report's `ts` is when the device measured, a few seconds before it was sent, so lines
 *   are out of order by up to 3 s; 0.2% of reports are delayed 200 to 600 s (a device that was
 *   offline): with the pipeline's 5-minute windows and 30 s of lateness, about 70% of them are
 *   `late` dead letters, the rest count only in the windows still open;
 * - duplicates: 2% of reports are sent again verbatim up to 2,000 lines later (a retry), and 0.5%
 *   carry one reading of the device's previous report again (same sensor, seq and value);
 * - invalid: 0.1% of lines are broken: cut short (`parse`), a value sent as a string, an unknown
 *   sensor, no readings (`invalid` by the JSON Schema), or an hour 24 (`invalid` from the
 *   transform's calendar check);
 * - a site that is not in the table yet (`s-41`, 20 devices), whose readings get region `unknown`.
 *
 * Values are JSON numbers: temperatures, humidity, pressure and battery voltage with 1 to 3
 * decimals, CO₂ in whole ppm.
 *
 * Usage: node --import tsx bench/telemetry/generate.ts [--seed N] [--lines N] --out FILE [--sites FILE]
 *        node --import tsx bench/telemetry/generate.ts --tables DIR   (writes DIR/sites.csv only)
 */
import { closeSync, mkdirSync, openSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
// The demo's deterministic PRNG (mulberry32), the same on every platform.
import { prng } from '../../dist/cli/demo.js';

/** The reference sites: fixed, whatever the seed; `examples/telemetry/tables/sites.csv` is a copy. */
export const SITES: readonly (readonly [site: string, region: string])[] = Array.from(
  { length: 40 },
  (_, i) =>
    [`s-${i + 1}`, i < 16 ? 'eu-west' : i < 28 ? 'us-east' : i < 36 ? 'ap-south' : 'sa-east'] as const,
);
/** A site whose devices report although it is not in the table yet. */
const UNREGISTERED_SITE = 's-41';
const DEVICES = 6000;
const UNREGISTERED_DEVICES = 20;
const START_MS = Date.UTC(2026, 0, 1);
/** Event time advances 10 ms per line: 100 reports a second, each device about once a minute. */
const LINE_MS = 10;
const MAX_JITTER_MS = 3000;
const DELAYED = 0.002;
const RESENT = 0.02;
const REPEATED_READING = 0.005;
const BROKEN = 0.001;
const SENSORS = ['temp', 'humidity', 'pressure', 'co2', 'battery'] as const;

export function sitesCsv(): string {
  return 'site,region\n' + SITES.map(([site, region]) => `${site},${region}\n`).join('');
}

interface Device {
  id: string;
  site: string;
  fw: string;
  /** Each sensor's baseline and next sequence number, in SENSORS order. */
  base: number[];
  seq: number[];
  /** The last reading sent, as JSON, to repeat in a later report. */
  last: string | undefined;
}

const round = (x: number, decimals: number): number => {
  const f = 10 ** decimals;
  return Math.round(x * f) / f;
};

function makeDevices(rnd: () => number): Device[] {
  const devices: Device[] = [];
  const firmware = ['2.3.9', '2.4.0', '2.4.1', '3.0.0-rc.2'];
  for (let i = 0; i < DEVICES + UNREGISTERED_DEVICES; i++) {
    devices.push({
      id: `d-${String(i + 1).padStart(5, '0')}`,
      site: i < DEVICES ? SITES[Math.floor(rnd() * SITES.length)]![0] : UNREGISTERED_SITE,
      fw: firmware[Math.floor(rnd() * firmware.length)]!,
      base: [18 + rnd() * 8, 25 + rnd() * 45, 990 + rnd() * 40, 450 + rnd() * 900, 3.6 + rnd() * 0.5],
      seq: SENSORS.map(() => Math.floor(rnd() * 100_000)),
      last: undefined,
    });
  }
  return devices;
}

function reading(d: Device, s: number, rnd: () => number): string {
  const noise = rnd() * 2 - 1;
  const b = d.base[s]!;
  let value: number;
  switch (SENSORS[s]) {
    case 'temp':
      value = round(b + noise * 1.5, 2);
      break;
    case 'humidity':
      value = round(b + noise * 4, 1);
      break;
    case 'pressure':
      value = round(b + noise * 2, 2);
      break;
    case 'co2':
      value = Math.round(b + noise * 150);
      break;
    default:
      value = round(b + noise * 0.05, 3);
  }
  return `{"sensor":"${SENSORS[s]}","value":${value},"seq":${d.seq[s]!++}}`;
}

/** One of the broken variants of a valid line. */
function broken(line: string, rnd: () => number): string {
  const x = rnd();
  if (x < 0.25) return line.slice(0, Math.floor(line.length * (0.2 + rnd() * 0.6)));
  if (x < 0.5) return line.replace(/"value":(-?[\d.]+)/, '"value":"$1"');
  if (x < 0.65) return line.replace(/"sensor":"\w+"/, '"sensor":"tmp"');
  if (x < 0.8) return line.replace(/"readings":\[.*\]/, '"readings":[]');
  return line.replace(/T\d\d:/, 'T24:');
}

export interface GenerateOptions {
  seed: number;
  lines: number;
  out: string;
}

/** Writes `lines` NDJSON lines to `out`, through a temporary file renamed only when complete. */
export function generateTelemetry({ seed, lines, out }: GenerateOptions): void {
  const rnd = prng(seed);
  const devices = makeDevices(rnd);
  /** Retries waiting for their line: line number → lines to send before it. */
  const resends = new Map<number, string[]>();
  const tmp = `${out}.${process.pid}.tmp`;
  mkdirSync(dirname(out), { recursive: true });
  const fd = openSync(tmp, 'w');
  let buffer = '';
  let written = 0;
  const emit = (line: string): void => {
    buffer += line + '\n';
    written++;
    if (buffer.length > 1 << 20) {
      writeSync(fd, buffer);
      buffer = '';
    }
  };
  for (let i = 0; written < lines; i++) {
    const due = resends.get(i);
    if (due) {
      resends.delete(i);
      for (const line of due) if (written < lines) emit(line);
      if (written >= lines) break;
    }
    const d = devices[Math.floor(rnd() * devices.length)]!;
    let t = START_MS + MAX_JITTER_MS + i * LINE_MS - Math.floor(rnd() * MAX_JITTER_MS);
    if (rnd() < DELAYED) t -= 200_000 + Math.floor(rnd() * 400_000);
    // k distinct sensors out of 5, k uniform in 1..5: 3 readings a line on average.
    const k = 1 + Math.floor(rnd() * SENSORS.length);
    const order = [0, 1, 2, 3, 4];
    for (let j = 0; j < k; j++) {
      const r = j + Math.floor(rnd() * (order.length - j));
      [order[j], order[r]] = [order[r]!, order[j]!];
    }
    const readings = order.slice(0, k).map((s) => reading(d, s, rnd));
    if (d.last !== undefined && rnd() < REPEATED_READING) readings.push(d.last);
    d.last = readings[0];
    let line = `{"device":"${d.id}","site":"${d.site}","ts":"${new Date(t).toISOString()}","fw":"${d.fw}","readings":[${readings.join(',')}]}`;
    if (rnd() < BROKEN) line = broken(line, rnd);
    else if (rnd() < RESENT) {
      const at = i + 1 + Math.floor(rnd() * 2000);
      const list = resends.get(at);
      if (list) list.push(line);
      else resends.set(at, [line]);
    }
    emit(line);
  }
  writeSync(fd, buffer);
  closeSync(fd);
  renameSync(tmp, out);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      seed: { type: 'string', default: '1' },
      lines: { type: 'string', default: '100000' },
      out: { type: 'string' },
      sites: { type: 'string' },
      tables: { type: 'string' },
    },
  });
  if (values.tables) {
    mkdirSync(values.tables, { recursive: true });
    writeFileSync(join(values.tables, 'sites.csv'), sitesCsv());
  } else if (values.out) {
    generateTelemetry({ seed: Number(values.seed), lines: Number(values.lines), out: values.out });
    if (values.sites) writeFileSync(values.sites, sitesCsv());
  } else {
    console.error('usage: generate.ts [--seed N] [--lines N] --out FILE [--sites FILE] | --tables DIR');
    process.exit(2);
  }
}
