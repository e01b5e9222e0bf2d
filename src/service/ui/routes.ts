/**
 * The dashboard of `sluice serve` (docs/service.md, "The dashboard"): `GET /ui`, one static page
 * (index.html beside this file, its script and style inline) that asks for an API key and polls
 * the API with it, and `GET /v1/pipelines`, the one thing it needs that the API did not answer:
 * the key's tenant, its pipelines and their live counts. The counts are the series of /metrics for
 * that tenant, as numbers, so the page computes events/s and latency percentiles between two
 * polls the way `sluice top` does.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { parseMetrics, type Series } from '../../helpers/prometheus-text.ts';
import type { ServiceHandle, TenantHandle } from '../api.ts';
import { ROUTE_SCHEMAS as schemas } from '../route-schemas.ts';

/** Read beside this module: src/service/ui/ under tsx, dist/service/ui/ once built (npm run build copies it). */
const PAGE = readFileSync(new URL('./index.html', import.meta.url), 'utf8');

const inlineHash = (tag: string): string => {
  const m = new RegExp(`<${tag}[^>]*>([\\s\\S]*?)</${tag}>`).exec(PAGE);
  if (!m) throw new Error(`index.html has no inline <${tag}>`);
  return `'sha256-${createHash('sha256').update(m[1]!, 'utf8').digest('base64')}'`;
};

/**
 * Only the page's own script and style run, and it talks only to this origin: a dead letter's
 * `raw` shown on the page is a producer's text, and no text of it can become code. The key field
 * has no name and forms go nowhere, so a key can never end up in a URL.
 */
const CSP = [
  "default-src 'none'",
  `script-src ${inlineHash('script')}`,
  `style-src ${inlineHash('style')}`,
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** A tenant's pipelines with their counters since the instance started, from /metrics' series. */
function pipelines(tenant: TenantHandle, metrics: Map<string, Series>): object[] {
  const id = tenant.config.id;
  const of = (name: string, pipeline: string): Series =>
    (metrics.get(name) ?? []).filter((s) => s.labels.tenant === id && s.labels.pipeline === pipeline);
  const sum = (series: Series): number => series.reduce((n, s) => n + s.value, 0);
  return [...tenant.pipelines.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, p]) => {
      const dead = new Map<string, number>();
      for (const s of of('sluice_events_dead_total', name))
        dead.set(s.labels.reason!, (dead.get(s.labels.reason!) ?? 0) + s.value);
      const buckets = of('sluice_ingest_to_durable_seconds_bucket', name)
        .map((s) => ({ le: s.labels.le === '+Inf' ? Infinity : Number(s.labels.le), count: s.value }))
        .sort((a, b) => a.le - b.le)
        .map(({ le, count }) => ({ le: le === Infinity ? '+Inf' : le, count }));
      return {
        name,
        windows: p.windowed.map((w) => ({ output: w.output, start_field: w.startField, group_by: w.keys })),
        records: {
          received: sum(of('sluice_events_received_total', name)),
          accepted: sum(of('sluice_events_accepted_total', name)),
          duplicates: sum(of('sluice_events_duplicate_total', name)),
          dead: sum(of('sluice_events_dead_total', name)),
        },
        dead_by_reason: Object.fromEntries(dead),
        ingest_to_durable_seconds: {
          buckets,
          count: sum(of('sluice_ingest_to_durable_seconds_count', name)),
          sum: sum(of('sluice_ingest_to_durable_seconds_sum', name)),
        },
      };
    });
}

/** Adds `GET /ui` and `GET /v1/pipelines`; `tenantOf` authenticates as every /v1 route does. */
export function dashboardRoutes(
  app: FastifyInstance,
  service: ServiceHandle,
  tenantOf: (req: FastifyRequest) => TenantHandle,
): void {
  app.get('/ui', { schema: schemas.getDashboard }, async (_req, reply) =>
    reply
      .type('text/html; charset=utf-8')
      .header('content-security-policy', CSP)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .header('cache-control', 'no-cache')
      .send(PAGE),
  );

  app.get('/v1/pipelines', { schema: schemas.listPipelines }, async (req) => {
    const tenant = tenantOf(req);
    const metrics = parseMetrics(await service.metricsText());
    return { tenant: tenant.config.id, pipelines: pipelines(tenant, metrics) };
  });
}
