import { relative } from 'node:path';
import { loadPipeline } from '../core/config.ts';
import { prepare } from '../core/engine.ts';
import { Processor } from '../core/processor.ts';
import { SluiceError } from '../errors.ts';

/**
 * Validates without running: the config against its schema, then what only building reveals
 * (schemas compile, modules compile and export their functions, tables load, columns exist).
 */
export async function checkCommand(pipelineFile: string): Promise<number> {
  const pipeline = loadPipeline(pipelineFile);
  const prepared = await prepare(pipeline);
  let failure: unknown;
  const processor = new Processor((m) => {
    if (m.t === 'failed') failure = m.error;
  });
  await processor.handle({ t: 'init', pipeline, bundles: prepared.bundles, tables: prepared.tables });
  if (failure) {
    const e = failure as { code?: string; message: string; hint?: string; location?: never };
    throw e.code?.startsWith('SLUICE_ERR_')
      ? new SluiceError(e.code as never, e.message, { hint: e.hint, location: e.location })
      : new SluiceError('SLUICE_ERR_CONFIG_INVALID', e.message, { location: { file: pipelineFile } });
  }
  const out = [
    `${relative(process.cwd(), pipeline.file) || pipeline.file}: ok`,
    `  pipeline ${pipeline.name}: source ${pipeline.source.type}, ${pipeline.steps.length} steps (${pipeline.steps.map((s) => s.id).join(' → ')})`,
    `  tables: ${prepared.tables.map((t) => `${t.name} (${t.rows} rows)`).join(', ') || 'none'}`,
    `  sinks: ${pipeline.sinks.map((s) => `${s.id} ← ${s.input} (${s.type})`).join(', ')}`,
  ];
  process.stdout.write(out.join('\n') + '\n');
  return 0;
}
