/** What `sluice check` does for each pipeline, of a pipeline file or of a service config. */
import { relative } from 'node:path';
import { readConfigFile, type ResolvedPipeline } from '../core/config.ts';
import { fieldWarnings } from '../core/field-check.ts';
import { prepare, type Prepared } from '../core/engine.ts';
import { Processor } from '../core/processor.ts';
import { deserializeError, type SerializedError } from '../core/protocol.ts';

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
