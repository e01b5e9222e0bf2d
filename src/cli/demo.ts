/**
 * `sluice demo` (what `npm start` runs): writes a sample of payment events, with the usual dirt
 * (malformed lines, wrong types, redeliveries, late arrivals), and runs examples/payments over it.
 */
import '../components.ts';
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadPipeline } from '../core/config.ts';
import { prepare, runPipeline } from '../core/engine.ts';
import { formatSummary } from './run.ts';
import { makeDirectory } from '../core/paths.ts';

const EXAMPLE = fileURLToPath(new URL('../../examples/payments/pipeline.yaml', import.meta.url));

const CURRENCIES: [string, number][] = [
  ['USD', 2],
  ['EUR', 2],
  ['GBP', 2],
  ['JPY', 0],
  ['CHF', 2],
  ['INR', 2],
  ['KWD', 3],
];
const COUNTRIES = ['US', 'de', 'FR', 'gb', 'JP', 'IN', 'BR', 'ZA', 'AU', 'XX'];
const TYPES = [
  'payment.captured',
  'payment.captured',
  'payment.refunded',
  'payment.failed',
  'invoice.paid',
  'subscription.renewed',
];
const AGENTS = [
  'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
  'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15',
  'Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0',
  'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)',
];
const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** Deterministic PRNG (mulberry32), so every demo run shows the same numbers (tests use it too). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function* sampleEvents(count: number, seed = 7): Generator<string> {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const start = Date.UTC(2026, 10, 21);
  const span = 10 * 60_000;
  let previous = '';
  for (let i = 0; i < count; i++) {
    const x = rnd();
    if (x < 0.01 && previous) {
      yield previous; // a redelivery
      continue;
    }
    if (x < 0.02) {
      yield pick(['{"id": "evt_01', '[1,2,3]', '', '{"id":"evt_short","type":"payment.captured"}']);
      continue;
    }
    const [currency, exponent] = pick(CURRENCIES);
    let ts = start + Math.floor((i / count) * span) + Math.floor((rnd() - 0.5) * 20_000);
    if (rnd() < 0.005) ts -= 180_000; // arrives three minutes late
    const minor = Math.max(1, Math.round(Math.exp(rnd() * 12) * (exponent === 0 ? 100 : 1)));
    const digits = String(minor).padStart(exponent + 1, '0');
    const user = `usr_${String(Math.floor(50_000 * rnd() ** 2)).padStart(6, '0')}`;
    const event: Record<string, unknown> = {
      id: `evt_${Array.from({ length: 26 }, () => CROCKFORD[Math.floor(rnd() * 32)]).join('')}`,
      type: pick(TYPES),
      ts: new Date(ts).toISOString(),
      user: { id: user, country: pick(COUNTRIES), email: ` ${user.slice(4)}@Example.com` },
      amount: exponent === 0 ? digits : `${digits.slice(0, -exponent)}.${digits.slice(-exponent)}`,
      currency,
    };
    if (rnd() < 0.7)
      event.card = {
        bin: String(400000 + Math.floor(rnd() * 99999)),
        last4: String(Math.floor(rnd() * 10000)).padStart(4, '0'),
      };
    if (rnd() < 0.8) event.ua = pick(AGENTS);
    previous = JSON.stringify(event);
    yield previous;
  }
}

export async function demoCommand(flags: { events: number; out: string }): Promise<number> {
  const out = resolve(flags.out);
  const results = join(out, 'results');
  makeDirectory(results, '--out');
  const input = join(out, 'events.ndjson');
  const file = createWriteStream(input);
  for (const line of sampleEvents(flags.events)) if (!file.write(line + '\n')) await once(file, 'drain');
  file.end();
  await once(file, 'close');

  const rel = (p: string): string => relative(process.cwd(), p) || '.';
  process.stderr.write(
    `sluice demo: wrote ${flags.events.toLocaleString('en-US')} sample payment events to ${rel(input)}\n`,
  );
  const pipeline = loadPipeline(EXAMPLE);
  const result = await runPipeline(await prepare(pipeline), { input, outDir: results });
  process.stderr.write(formatSummary(result) + '\n\n');
  process.stdout.write(
    [
      `Results are in ${rel(results)}/:`,
      `  windows.ndjson   per-minute totals by type, region and currency (also in payments.db)`,
      `  large.ndjson     payments of 10,000 USD and more`,
      `  dead.ndjson      every rejected line, with its reason and the raw input`,
      `  summary.json     counts per outcome`,
      `Try:  sqlite3 ${rel(join(results, 'payments.db'))} "select window_start, region, sum(count) from windows group by 1, 2 limit 10"`,
      `Run it yourself:  npx sluice run ${rel(EXAMPLE)} --input ${rel(input)} --out ${rel(results)}`,
      '',
    ].join('\n'),
  );
  return 0;
}
