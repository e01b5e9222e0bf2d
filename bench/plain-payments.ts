/**
 * The payments reference workload (shared/workload/README.md) written the way a Node team would
 * first write it: one thread, a line at a time, JSON.parse, Ajv, plain objects, a Map of windows,
 * a Set for dedupe, BigInt for exact money, a sorted array per window for exact quantiles and a Set
 * per window for exact distinct counts. It is the baseline `bench/batch.ts` compares sluice with,
 * so it is meant to be honest: neither deliberately slow nor tuned.
 *
 * Usage: node --import tsx bench/plain-payments.ts --input FILE[.gz] --out DIR --tables DIR
 */
import { createReadStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createGunzip } from 'node:zlib';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';

// ajv-formats is CommonJS; under NodeNext its default import is the module object.
const addFormats = addFormatsModule as unknown as typeof addFormatsModule.default;

interface PaymentEvent {
  id: string;
  type: string;
  ts: string;
  user: { id: string; country: string; email?: string };
  amount: string;
  currency: string;
  card?: { bin: string; last4: string; brand?: string };
  ua?: string;
}

interface Payment {
  id: string;
  type: string;
  ts_ms: number;
  user_id: string;
  email: string | null;
  country: string;
  region: string;
  tier: string;
  amount_minor: string;
  currency: string;
  amount_usd_micros: string;
  browser: string;
  card_masked: string | null;
}

interface Window {
  windowStart: number;
  type: string;
  region: string;
  currency: string;
  count: number;
  sumMinor: bigint;
  sumUsdMicros: bigint;
  minMinor: bigint;
  maxMinor: bigint;
  users: Set<string>;
  usdMicros: bigint[];
}

interface Fx {
  exponent: number;
  rateMicros: bigint;
}

const { values: args } = parseArgs({
  options: { input: { type: 'string' }, out: { type: 'string' }, tables: { type: 'string' } },
});
if (!args.input || !args.out || !args.tables) {
  console.error('usage: plain-payments.ts --input FILE[.gz] --out DIR --tables DIR');
  process.exit(2);
}

// ---- tables: small CSVs without quoting, so a split is enough
function readCsv(file: string): string[][] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .slice(1)
    .filter((l) => l.trim() !== '')
    .map((l) => l.replace(/\r$/, '').split(','));
}

const tiers = new Map(readCsv(join(args.tables, 'users.csv')).map(([id, tier]) => [id!, tier!]));
const regions = new Map(readCsv(join(args.tables, 'regions.csv')).map(([c, region]) => [c!, region!]));
const fx = new Map<string, Fx>();
for (const [currency, exponent, usdRate] of readCsv(join(args.tables, 'fx.csv'))) {
  // usd_rate always has exactly 6 decimals, so as micros it is an exact integer.
  fx.set(currency!, { exponent: Number(exponent), rateMicros: BigInt(usdRate!.replace('.', '')) });
}

// ---- validation (README step 2); what JSON Schema cannot say (calendar, decimals per currency) is below
const schema = {
  type: 'object',
  additionalProperties: false,
  required: ['id', 'type', 'ts', 'user', 'amount', 'currency'],
  properties: {
    id: { type: 'string', pattern: '^evt_[0-9A-HJKMNP-TV-Z]{26}$' },
    type: {
      enum: [
        'payment.captured',
        'payment.refunded',
        'payment.failed',
        'invoice.paid',
        'subscription.renewed',
      ],
    },
    ts: {
      type: 'string',
      pattern: '^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?(Z|[+-]\\d{2}:\\d{2})$',
    },
    user: {
      type: 'object',
      required: ['id', 'country'],
      properties: {
        id: { type: 'string', pattern: '^usr_[0-9]{6}$' },
        country: { type: 'string', pattern: '^[A-Za-z]{2}$' },
        email: { type: 'string', pattern: '^\\s*[^@\\s]+@[^@\\s]+\\.[^@\\s]+\\s*$' },
      },
    },
    amount: { type: 'string', pattern: '^-?\\d{1,12}(\\.\\d{1,3})?$' },
    currency: { enum: [...fx.keys()] },
    card: {
      type: 'object',
      required: ['bin', 'last4'],
      properties: {
        bin: { type: 'string', pattern: '^\\d{6}$' },
        last4: { type: 'string', pattern: '^\\d{4}$' },
        brand: { type: 'string' },
      },
    },
    ip: { type: 'string', format: 'ipv4' },
    ua: { type: 'string' },
    tags: { type: 'array', maxItems: 10, items: { type: 'string' } },
    meta: { type: 'object' },
  },
};
const ajv = new Ajv2020({ allErrors: false });
addFormats(ajv, { mode: 'fast' });
const validate = ajv.compile<PaymentEvent>(schema);

const TS = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:Z|([+-])(\d{2}):(\d{2}))$/;
const AMOUNT = /^(-?)(\d{1,12})(?:\.(\d{1,3}))?$/;
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

/** a × b ÷ c rounded half to even, in integers. */
function mulDivHalfEven(a: bigint, b: bigint, c: bigint): bigint {
  const n = a * b;
  const q = n / c;
  const r = n % c;
  const twice = (r < 0n ? -r : r) * 2n;
  if (twice > c || (twice === c && q % 2n !== 0n)) return n < 0n ? q - 1n : q + 1n;
  return q;
}

function browserOf(ua: string | undefined): string {
  if (ua === undefined) return 'unknown';
  if (ua.includes('Edg/')) return 'edge';
  if (ua.includes('OPR/') || ua.includes('Opera')) return 'opera';
  if (/Firefox\/\d/.test(ua)) return 'firefox';
  if (/Chrome\/\d/.test(ua)) return 'chrome';
  if (/Safari\/\d/.test(ua) && /Version\/\d/.test(ua)) return 'safari';
  if (/bot|crawler|spider/i.test(ua)) return 'bot';
  return 'other';
}

// ---- state
const WINDOW_MS = 60_000;
const ALLOWED_LATENESS_MS = 60_000;
const LARGE_USD_MICROS = 10_000_000_000n;
const seen = new Set<string>();
const windows = new Map<string, Window>();
const dead: string[] = [];
const large: string[] = [];
const summary = { lines: 0, accepted: 0, invalid: 0, duplicates: 0, late: 0, large: 0 };
let watermark = -Infinity;

function deadLetter(line: number, reason: 'parse' | 'invalid' | 'late', detail: string): void {
  if (reason !== 'late') summary.invalid++;
  dead.push(JSON.stringify({ line, reason, detail }));
}

function processLine(text: string, line: number): void {
  let event: unknown;
  try {
    event = JSON.parse(text);
  } catch (err) {
    deadLetter(line, 'parse', (err as Error).message);
    return;
  }
  if (!validate(event)) {
    const e = validate.errors![0]!;
    deadLetter(line, 'invalid', `${e.instancePath || '/'} ${e.message ?? e.keyword}`);
    return;
  }

  const tsMs = tsToMs(event.ts);
  if (tsMs === undefined) return deadLetter(line, 'invalid', `/ts ${event.ts} is not a real date and time`);
  const { exponent, rateMicros } = fx.get(event.currency)!;
  const amount = AMOUNT.exec(event.amount)!;
  const fraction = amount[3] ?? '';
  if (fraction.length > exponent)
    return deadLetter(line, 'invalid', `/amount has more decimals than ${event.currency} allows`);
  const minor = BigInt(amount[1]! + amount[2]! + fraction.padEnd(exponent, '0'));
  const usdMicros = mulDivHalfEven(minor, rateMicros, 10n ** BigInt(exponent));
  const country = event.user.country.toUpperCase();
  const card = event.card;
  const p: Payment = {
    id: event.id,
    type: event.type,
    ts_ms: tsMs,
    user_id: event.user.id,
    email: event.user.email === undefined ? null : event.user.email.trim().toLowerCase(),
    country,
    region: regions.get(country) ?? 'UNKNOWN',
    tier: tiers.get(event.user.id) ?? 'none',
    amount_minor: String(minor),
    currency: event.currency,
    amount_usd_micros: String(usdMicros),
    browser: browserOf(event.ua),
    card_masked: card === undefined ? null : `${card.bin}******${card.last4}`,
  };

  if (seen.has(p.id)) {
    summary.duplicates++;
    return;
  }
  seen.add(p.id);

  if (p.ts_ms > watermark) watermark = p.ts_ms;
  const windowStart = Math.floor(p.ts_ms / WINDOW_MS) * WINDOW_MS;
  if (windowStart + WINDOW_MS + ALLOWED_LATENESS_MS <= watermark) {
    summary.late++;
    return deadLetter(line, 'late', `window ${new Date(windowStart).toISOString()} already closed`);
  }

  summary.accepted++;
  const key = `${windowStart}|${p.type}|${p.region}|${p.currency}`;
  let w = windows.get(key);
  if (w === undefined) {
    w = {
      windowStart,
      type: p.type,
      region: p.region,
      currency: p.currency,
      count: 0,
      sumMinor: 0n,
      sumUsdMicros: 0n,
      minMinor: minor,
      maxMinor: minor,
      users: new Set(),
      usdMicros: [],
    };
    windows.set(key, w);
  }
  w.count++;
  w.sumMinor += minor;
  w.sumUsdMicros += usdMicros;
  if (minor < w.minMinor) w.minMinor = minor;
  if (minor > w.maxMinor) w.maxMinor = minor;
  w.users.add(p.user_id);
  w.usdMicros.push(usdMicros);

  if (usdMicros >= LARGE_USD_MICROS) {
    summary.large++;
    large.push(JSON.stringify(p));
  }
}

// ---- input: readline would also end a line at a lone `\r`, which the workload forbids (lines end
// at `\n` only), so the split is done here. setEncoding decodes invalid UTF-8 as U+FFFD.
const file = createReadStream(args.input);
const input = args.input.endsWith('.gz') ? file.pipe(createGunzip()) : file;
input.setEncoding('utf8');
let rest = '';
for await (const chunk of input as AsyncIterable<string>) {
  const lines = (rest + chunk).split('\n');
  rest = lines.pop()!;
  for (const l of lines) processLine(l.endsWith('\r') ? l.slice(0, -1) : l, ++summary.lines);
}
if (rest !== '') processLine(rest.endsWith('\r') ? rest.slice(0, -1) : rest, ++summary.lines);

// ---- output
const byBigInt = (a: bigint, b: bigint): number => (a < b ? -1 : a > b ? 1 : 0);
const rows: string[] = [];
for (const w of windows.values()) {
  const sorted = w.usdMicros.sort(byBigInt);
  // Rank floor(q × (n − 1)) in integers (q in percent), so no float rounding picks a neighbour.
  const at = (percent: number): string => String(sorted[Math.floor((percent * (w.count - 1)) / 100)]);
  rows.push(
    JSON.stringify({
      window_start: new Date(w.windowStart).toISOString(),
      type: w.type,
      region: w.region,
      currency: w.currency,
      count: w.count,
      sum_minor: String(w.sumMinor),
      sum_usd_micros: String(w.sumUsdMicros),
      min_minor: String(w.minMinor),
      max_minor: String(w.maxMinor),
      distinct_users: w.users.size,
      p50_usd_micros: at(50),
      p95_usd_micros: at(95),
      p99_usd_micros: at(99),
    }),
  );
}

const ndjson = (lines: string[]): string => (lines.length ? lines.join('\n') + '\n' : '');
mkdirSync(args.out, { recursive: true });
writeFileSync(join(args.out, 'windows.ndjson'), ndjson(rows));
writeFileSync(join(args.out, 'large.ndjson'), ndjson(large));
writeFileSync(join(args.out, 'dead.ndjson'), ndjson(dead));
writeFileSync(join(args.out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
