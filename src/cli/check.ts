import '../components.ts';
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { loadPipeline } from '../core/config.ts';
import { build, warn } from './check-pipeline.ts';

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

/** A service config names tenants; a pipeline never does. */
function isServiceConfig(file: string): boolean {
  try {
    const text = readFileSync(file, 'utf8');
    return /^tenants\s*:/m.test(text) || /"tenants"\s*:/.test(text);
  } catch {
    return false;
  }
}
