/** `sluice check` of a service config: its schema, every pipeline it names, and its servers. */
import { relative } from 'node:path';
import { newerSchema, SCHEMA_VERSION, schemaVersion } from '../cluster/migrations.ts';
import { checkSinks } from '../cluster/service.ts';
import type { ResolvedPipeline } from '../core/config.ts';
import { SluiceError } from '../errors.ts';
import { connectJetStream } from '../helpers/jetstream.ts';
import { openPg } from '../helpers/postgres.ts';
import { redact } from '../helpers/url.ts';
import { loadServiceConfig, type ClusterRuntimeConfig } from '../service/config.ts';
import { SharedLimiter } from '../service/shared-limits.ts';
import { build, warn } from './check-pipeline.ts';

/** A service config: its own schema, then every pipeline it names, built as the service builds it. */
export async function checkService(file: string): Promise<number> {
  const config = loadServiceConfig(file);
  const lines = [`${relative(process.cwd(), file) || file}: ok (service config)`];
  const { runtime } = config;
  lines.push(
    runtime.type === 'cluster'
      ? `  listen ${config.listen.host}:${config.listen.port}, runtime cluster (instance ${runtime.instance})`
      : `  listen ${config.listen.host}:${config.listen.port}, store ${config.store.path}`,
  );
  const pipelines: ResolvedPipeline[] = [];
  for (const t of config.tenants) {
    for (const [name, pipeline] of t.pipelines) {
      if (runtime.type === 'cluster') checkSinks(pipeline.sinks, runtime, `${t.id}/${name}`);
      await build(pipeline);
      pipelines.push(pipeline);
      lines.push(`  tenant ${t.id}: pipeline ${name} (${pipeline.steps.map((s) => s.id).join(' → ')})`);
    }
  }
  if (runtime.type === 'cluster') lines.push(...(await checkConnections(runtime)));
  const warnings = warn(pipelines);
  if (warnings > 0) lines.push(`  ${warnings} warning${warnings > 1 ? 's' : ''} (on standard error)`);
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

/**
 * The cluster's servers, as an instance would find them at start (without changing anything):
 * NATS with JetStream, PostgreSQL and its sluice schema version, Redis when configured.
 */
async function checkConnections(runtime: ClusterRuntimeConfig): Promise<string[]> {
  const lines: string[] = [];
  const { nc, jsm } = await connectJetStream(runtime.nats.url, 'sluice check');
  try {
    const info = await jsm.streams.info(runtime.nats.stream).catch(() => undefined);
    lines.push(
      `  nats ${redact(runtime.nats.url)}: ok (JetStream; stream ${runtime.nats.stream} ${info ? `holds ${info.state.messages} messages` : 'will be created'})`,
    );
  } finally {
    await nc.close();
  }
  const sql = openPg(runtime.postgres.url, { max: 1 });
  try {
    const [v] = await sql<{ version: string }[]>`SELECT current_setting('server_version') AS version`;
    const at = await schemaVersion(sql);
    lines.push(
      `  postgres ${redact(runtime.postgres.url)}: ok (PostgreSQL ${v?.version}; sluice schema version ${at} of ${SCHEMA_VERSION}${at < SCHEMA_VERSION ? ', migrated at start' : ''})`,
    );
    if (at > SCHEMA_VERSION) throw newerSchema(at);
  } catch (err) {
    if (err instanceof SluiceError) throw err;
    throw new SluiceError(
      'SLUICE_ERR_CONNECT',
      `cannot use PostgreSQL at ${redact(runtime.postgres.url)}: ${(err as Error).message}`,
      { cause: err },
    );
  } finally {
    await sql.end({ timeout: 1 });
  }
  if (runtime.redis) {
    const limiter = await SharedLimiter.connect({
      url: runtime.redis.url,
      onError: 'reject',
      timeoutMs: 1000,
    });
    await limiter.close();
    lines.push(
      `  redis ${redact(runtime.redis.url)}: ok (shared rate limits, on_error ${runtime.redis.onError})`,
    );
  } else lines.push('  redis: not configured (rate limits per instance)');
  return lines;
}
