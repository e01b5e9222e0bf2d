/**
 * `sluice top`: live rates of a running `sluice serve`, from its /metrics (no key needed), in the
 * terminal, like `vector top`. Every interval it reads /metrics again and shows, per tenant and
 * pipeline, records received, accepted, duplicate and dead per second, the ingest → durable
 * latency of the interval, and the dead letters' reasons; above them, each thread's busy share,
 * requests in flight and refusals by code. Rates are differences of counters between two reads, so
 * the first frame comes one interval after the start.
 */
import { SluiceError } from '../errors.ts';
import { parseMetrics, type Series } from '../helpers/prometheus-text.ts';
import { parseDuration } from '../helpers/time.ts';

export interface TopFlags {
  url: string;
  interval: string;
  iterations?: number;
}

type Sample = { at: number; metrics: Map<string, Series> };

async function read(url: string): Promise<Sample> {
  let text: string;
  try {
    const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5000) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    text = await res.text();
  } catch (err) {
    throw new SluiceError(
      'SLUICE_ERR_SERVICE_UNREACHABLE',
      `cannot read ${url}/metrics: ${(err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message}`,
    );
  }
  return { at: performance.now(), metrics: parseMetrics(text) };
}

/** Sum of a family's series whose labels match, grouped by `key`. */
function sums(
  s: Sample,
  name: string,
  key: (labels: Record<string, string>) => string | undefined,
): Map<string, number> {
  const out = new Map<string, number>();
  for (const { labels, value } of s.metrics.get(name) ?? []) {
    const k = key(labels);
    if (k !== undefined) out.set(k, (out.get(k) ?? 0) + value);
  }
  return out;
}

const byPipeline = (l: Record<string, string>): string | undefined =>
  l.tenant !== undefined && l.pipeline !== undefined ? `${l.tenant}/${l.pipeline}` : undefined;

/** The upper bound of the bucket holding quantile `q` of what the histogram saw between two reads. */
function quantile(
  before: Sample,
  now: Sample,
  name: string,
  pipeline: string,
  q: number,
): number | undefined {
  const buckets = (s: Sample): Map<number, number> => {
    const out = new Map<number, number>();
    for (const { labels, value } of s.metrics.get(`${name}_bucket`) ?? [])
      if (byPipeline(labels) === pipeline) {
        const le = labels.le === '+Inf' ? Infinity : Number(labels.le);
        out.set(le, (out.get(le) ?? 0) + value);
      }
    return out;
  };
  const was = buckets(before);
  const cumulative = [...buckets(now)]
    .map(([le, n]): [number, number] => [le, n - (was.get(le) ?? 0)])
    .sort((a, b) => a[0] - b[0]);
  const total = cumulative.at(-1)?.[1] ?? 0;
  if (total <= 0) return undefined;
  return cumulative.find(([, n]) => n >= q * total)?.[0];
}

const ms = (s: number | undefined): string =>
  s === undefined
    ? '-'
    : s === Infinity
      ? '> max'
      : `≤ ${s * 1000 < 10 ? (s * 1000).toFixed(1) : Math.round(s * 1000)} ms`;
const rate = (n: number): string => (n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString('en-US'));

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '))
    .join('\n');
}

/** One screen: what changed between two reads. */
export function frame(url: string, before: Sample, now: Sample): string {
  const dt = (now.at - before.at) / 1000;
  const per = (name: string, key = byPipeline): Map<string, number> => {
    const was = sums(before, name, key);
    const out = new Map<string, number>();
    for (const [k, v] of sums(now, name, key)) out.set(k, (v - (was.get(k) ?? 0)) / dt);
    return out;
  };
  const received = per('sluice_events_received_total');
  const accepted = per('sluice_events_accepted_total');
  const duplicates = per('sluice_events_duplicate_total');
  const dead = per('sluice_events_dead_total');
  const reasons = sums(now, 'sluice_events_dead_total', (l) =>
    byPipeline(l) ? `${byPipeline(l)}\t${l.reason}` : undefined,
  );
  const busy = per('sluice_thread_busy_seconds_total', (l) => l.thread);
  const refused = per('sluice_http_rejected_total', (l) => l.code);
  const gauge = (name: string): number => (now.metrics.get(name) ?? []).reduce((a, s) => a + s.value, 0);

  const lines = [
    `sluice top  ${url}  every ${dt.toFixed(1)} s  ${new Date().toISOString()}`,
    `threads busy: ${[...busy].map(([t, s]) => `${t} ${Math.round(s * 100)}%`).join(', ') || '-'}` +
      `   requests in flight: ${gauge('sluice_in_flight_requests')}` +
      `   refused/s: ${
        [...refused]
          .filter(([, n]) => n > 0)
          .map(([c, n]) => `${c} ${rate(n)}`)
          .join(', ') || '0'
      }`,
    '',
  ];
  const pipelines = [...sums(now, 'sluice_events_received_total', byPipeline).keys()].sort();
  const rows = [
    ['pipeline', 'received/s', 'accepted/s', 'duplicate/s', 'dead/s', 'durable p50', 'durable p99'],
  ];
  for (const p of pipelines)
    rows.push([
      p,
      rate(received.get(p) ?? 0),
      rate(accepted.get(p) ?? 0),
      rate(duplicates.get(p) ?? 0),
      rate(dead.get(p) ?? 0),
      ms(quantile(before, now, 'sluice_ingest_to_durable_seconds', p, 0.5)),
      ms(quantile(before, now, 'sluice_ingest_to_durable_seconds', p, 0.99)),
    ]);
  lines.push(pipelines.length ? table(rows) : 'no pipeline has received a request yet');
  const deadRows = [...reasons].filter(([, n]) => n > 0).sort((a, b) => b[1] - a[1]);
  if (deadRows.length) {
    lines.push('', 'dead letters since start, by reason:');
    lines.push(
      table([
        ['pipeline', 'reason', 'records'],
        ...deadRows.slice(0, 10).map(([k, n]) => [...k.split('\t'), n.toLocaleString('en-US')]),
      ]),
    );
  }
  return lines.join('\n');
}

export async function topCommand(flags: TopFlags): Promise<number> {
  const url = flags.url.replace(/\/$/, '');
  const intervalMs = parseDuration(flags.interval);
  if (!(intervalMs >= 100))
    throw new SluiceError(
      'SLUICE_ERR_USAGE',
      `--interval ${flags.interval} is not a duration of at least 100ms`,
    );
  const tty = process.stdout.isTTY === true;
  let before = await read(url);
  for (let i = 0; flags.iterations === undefined || i < flags.iterations; i++) {
    await new Promise((r) => setTimeout(r, intervalMs));
    const now = await read(url);
    // On a terminal, the screen is redrawn; piped, frames follow one another.
    process.stdout.write((tty ? '\x1b[H\x1b[2J' : i > 0 ? '\n' : '') + frame(url, before, now) + '\n');
    before = now;
  }
  return 0;
}
