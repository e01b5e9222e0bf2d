import { relative } from 'node:path';
import { loadPipeline } from '../core/config.ts';
import { prepare } from '../core/engine.ts';
import { Processor } from '../core/processor.ts';
import { deserializeError, type SerializedError } from '../core/protocol.ts';

/**
 * Validates without running: the config against its schema, then what only building reveals
 * (schemas compile, modules compile and export their functions, tables load, columns exist).
 */
export async function checkCommand(pipelineFile: string): Promise<number> {
  const pipeline = loadPipeline(pipelineFile);
  const prepared = await prepare(pipeline);
  let failure: SerializedError | undefined;
  const processor = new Processor((m) => {
    if (m.t === 'failed') failure = m.error;
  });
  await processor.handle({ t: 'init', pipeline, bundles: prepared.bundles, tables: prepared.tables });
  if (failure) throw deserializeError(failure);
  const out = [
    `${relative(process.cwd(), pipeline.file) || pipeline.file}: ok`,
    `  pipeline ${pipeline.name}: source ${pipeline.source.type}, ${pipeline.steps.length} steps (${pipeline.steps.map((s) => s.id).join(' → ')})`,
    `  tables: ${prepared.tables.map((t) => `${t.name} (${t.rows} rows)`).join(', ') || 'none'}`,
    `  sinks: ${pipeline.sinks.map((s) => `${s.id} ← ${s.input} (${s.type})`).join(', ')}`,
  ];
  process.stdout.write(out.join('\n') + '\n');
  return 0;
}
