import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { loadPipeline, type ResolvedPipeline } from '../core/config.ts';
import { loadServiceConfig } from '../service/config.ts';
import { prepare, type Prepared } from '../core/engine.ts';
import { Processor } from '../core/processor.ts';
import { deserializeError, type SerializedError } from '../core/protocol.ts';

/**
 * Validates without running: the config against its schema, then what only building reveals
 * (schemas compile, modules compile and export their functions, tables load, columns exist).
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
  process.stdout.write(out.join('\n') + '\n');
  return 0;
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
  lines.push(`  listen ${config.listen.host}:${config.listen.port}, store ${config.store.path}`);
  for (const t of config.tenants) {
    for (const [name, pipeline] of t.pipelines) {
      await build(pipeline);
      lines.push(`  tenant ${t.id}: pipeline ${name} (${pipeline.steps.map((s) => s.id).join(' → ')})`);
    }
  }
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
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
