/** Reading the Prometheus text that /metrics writes (for `sluice top` and the dashboard). */

/** One series: its labels and value, for every series of a metric family. */
export type Series = { labels: Record<string, string>; value: number }[];

/**
 * The series of a Prometheus text exposition. Only what /metrics writes: `name{a="b",...} value`
 * lines, label values with `\\`, `\"` and `\n` escapes; comments skipped. Not the tests'
 * parse-prometheus-text-format 1.1.1: it keeps one unlabelled set of buckets per histogram family
 * (two pipelines' `sluice_ingest_to_durable_seconds` came out as one, with no labels), and `top`
 * needs them per pipeline.
 */
export function parseMetrics(text: string): Map<string, Series> {
  const out = new Map<string, Series>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    let series = out.get(m[1]!);
    if (!series) out.set(m[1]!, (series = []));
    series.push({ labels, value: Number(m[3]) });
  }
  return out;
}
