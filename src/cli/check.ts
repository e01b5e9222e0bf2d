import '../components.ts';
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { loadPipeline, readConfigFile, type ResolvedPipeline } from '../core/config.ts';
import { fieldWarnings } from '../core/field-check.ts';
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
  // A service config's check loads the service and cluster modules and their clients; a pipeline's
  // does not need them.
  if (isServiceConfig(file)) return (await import('./check-service.ts')).checkService(file);
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
export function warn(pipelines: ResolvedPipeline[]): number {
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

/** What only building reveals: schemas compile, modules load and export, tables load. */
export async function build(pipeline: ResolvedPipeline): Promise<Prepared> {
  const prepared = await prepare(pipeline);
  let failure: SerializedError | undefined;
  const processor = new Processor((m) => {
    if (m.t === 'failed') failure = m.error;
  });
  await processor.handle({ t: 'init', pipeline, bundles: prepared.bundles, tables: prepared.tables });
  if (failure) throw deserializeError(failure);
  return prepared;
}
