import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { loadPipeline, readConfigFile, type ResolvedPipeline } from '../core/config.ts';
import { fieldWarnings } from '../core/field-check.ts';
import { newerSchema, SCHEMA_VERSION, schemaVersion } from '../cluster/migrations.ts';
import { checkSinks } from '../cluster/service.ts';
import { SluiceError } from '../errors.ts';
import { connectJetStream } from '../helpers/jetstream.ts';
import { openPg } from '../helpers/postgres.ts';
import { redact } from '../helpers/url.ts';
import { loadServiceConfig, type ClusterRuntimeConfig } from '../service/config.ts';
import { SharedLimiter } from '../service/shared-limits.ts';
import { prepare, type Prepared } from '../core/engine.ts';
import { Processor } from '../core/processor.ts';
import { deserializeError, type SerializedError } from '../core/protocol.ts';

/**
 * Validates without running: the config against its schema, then what only building reveals
 * (schemas compile, modules compile and export their functions, tables load, columns exist).
 * Fields that steps read but no record can have are warnings, on standard error; the exit code
 * stays 0.
 */
export async function checkCommand(file: string): Promise<number> {
  if (isServiceConfig(file)) return checkService(file);
  const pipeline = loadPipeline(file);
  const prepared = await build(pipeline);
  const out = [
    `${relative(process.cwd(), pipeline.file) || pipeline.file}: ok`,
    `  pipeline ${pipeline.name}: source ${pipeline.source.type}, ${pipeline.steps.length} steps (${pipeline.steps.map((s) => s.id).join(' → ')})`,
    `  tables: ${prepared.tables.map((t) => `${t.name} (${t.rows} rows)`).join(', ') || 'none'}`,
    `  sinks: ${pipeline.sinks.map((s) => `${s.id} ← ${s.input} (${s.type})`).join(', ')}`,
  ];
  const warnings = warn([pipeline]);
  if (warnings > 0) out.push(`  ${warnings} warning${warnings > 1 ? 's' : ''} (on standard error)`);
  process.stdout.write(out.join('\n') + '\n');
  return 0;
}

/** Writes the pipelines' field warnings to standard error, each file once; returns how many. */
function warn(pipelines: ResolvedPipeline[]): number {
  const files = new Set<string>();
  let count = 0;
  for (const pipeline of pipelines) {
    if (files.has(pipeline.file)) continue;
    files.add(pipeline.file);
    const warnings = fieldWarnings(pipeline);
    if (warnings.length === 0) continue;
    const shown = relative(process.cwd(), pipeline.file) || pipeline.file;
    const { locate } = readConfigFile(shown, { what: 'pipeline file', shape: 'a mapping' });
    for (const w of warnings) {
      const loc = locate.at(w.at);
      const lines = [`warning: ${w.message}`];
      lines.push(`  --> ${loc.file}${loc.line === undefined ? '' : `:${loc.line}:${loc.column ?? 1}`}`);
      if (loc.path) lines.push(`  at: ${loc.path}`);
      lines.push(`  help: ${w.hint}`);
      process.stderr.write(lines.join('\n') + '\n');
      count++;
    }
  }
  return count;
}

/** A service config names tenants; a pipeline never does. */
function isServiceConfig(file: string): boolean {
  try {
    const text = readFileSync(file, 'utf8');
    return /^tenants\s*:/m.test(text) || /"tenants"\s*:/.test(text);
  } catch {
    return false;
  }
}

/** A service config: its own schema, then every pipeline it names, built as the service builds it. */
async function checkService(file: string): Promise<number> {
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

/** What only building reveals: schemas compile, modules load and export, tables load. */
async function build(pipeline: ResolvedPipeline): Promise<Prepared> {
  const prepared = await prepare(pipeline);
  let failure: SerializedError | undefined;
  const processor = new Processor((m) => {
    if (m.t === 'failed') failure = m.error;
  });
  await processor.handle({ t: 'init', pipeline, bundles: prepared.bundles, tables: prepared.tables });
  if (failure) throw deserializeError(failure);
  return prepared;
}
