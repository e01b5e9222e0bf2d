/**
 * Normalizes a validated payment event into the record the rest of the pipeline aggregates
 * (shared/workload/README.md, step 3). `region` and `tier` are left null here and filled by the
 * pipeline's lookup steps.
 */
import {
  classifier,
  defineTransform,
  mulDivHalfEven,
  reject,
  rfc3339ToEpochMs,
  toMinorUnits,
  trimLower,
  type Table,
} from 'sluice';

export interface PaymentEvent {
  id: string;
  type: string;
  ts: string;
  user: { id: string; country: string; email?: string };
  amount: string;
  currency: string;
  card?: { bin: string; last4: string; brand?: string };
  ip?: string;
  ua?: string;
  tags?: string[];
  meta?: Record<string, unknown>;
}

export interface Payment {
  id: string;
  type: string;
  ts_ms: number;
  user_id: string;
  email: string | null;
  country: string;
  region: string | null;
  tier: string | null;
  amount_minor: string;
  currency: string;
  amount_usd_micros: string;
  browser: string;
  card_masked: string | null;
}

const browserOf = classifier(
  [
    { match: /Edg\//, label: 'edge' },
    { match: /OPR\/|Opera/, label: 'opera' },
    { match: /Firefox\/\d/, label: 'firefox' },
    { match: /Chrome\/\d/, label: 'chrome' },
    { match: [/Safari\/\d/, /Version\/\d/], label: 'safari' },
    { match: /bot|crawler|spider/i, label: 'bot' },
  ],
  { otherwise: 'other' },
);

/** Per-worker view of fx.csv: exponent and the USD rate in micros, per currency row. */
let fx: { table: Table; exponent: number[]; rateMicros: (number | bigint)[] } | undefined;

function fxRow(table: Table, currency: string): number {
  if (fx === undefined || fx.table !== table) fx = { table, exponent: [], rateMicros: [] };
  const row = table.find(currency);
  if (row >= 0 && fx.exponent[row] === undefined) {
    fx.exponent[row] = table.value(row, table.column('exponent')) as number;
    // usd_rate always has 6 decimals: as micros it is an exact integer.
    fx.rateMicros[row] = toMinorUnits(table.value(row, table.column('usd_rate')) as string, 6)!;
  }
  return row;
}

export default defineTransform<PaymentEvent, Payment>((e, ctx) => {
  const tsMs = rfc3339ToEpochMs(e.ts);
  if (Number.isNaN(tsMs))
    return reject('invalid', `ts ${JSON.stringify(e.ts)} is not a real date and time`, '/ts');

  const row = fxRow(ctx.tables.fx!, e.currency);
  if (row < 0)
    return reject('invalid', `currency ${JSON.stringify(e.currency)} is not in fx.csv`, '/currency');
  const exponent = fx!.exponent[row]!;
  const minor = toMinorUnits(e.amount, exponent);
  if (minor === undefined)
    return reject(
      'invalid',
      `amount ${e.amount} has more decimals than ${e.currency} allows (${exponent})`,
      '/amount',
    );
  const usdMicros = mulDivHalfEven(minor, fx!.rateMicros[row]!, 10 ** exponent);

  const card = e.card;
  return {
    id: e.id,
    type: e.type,
    ts_ms: tsMs,
    user_id: e.user.id,
    email: e.user.email === undefined ? null : trimLower(e.user.email),
    country: e.user.country.toUpperCase(),
    region: null,
    tier: null,
    amount_minor: String(minor),
    currency: e.currency,
    amount_usd_micros: String(usdMicros),
    browser: e.ua === undefined ? 'unknown' : browserOf(e.ua),
    card_masked: card === undefined ? null : `${card.bin}******${card.last4}`,
  };
});
