/**
 * `transform`: a user TypeScript function per record. It may return a record, several, nothing,
 * or a rejection; if it throws, that record becomes an `error` dead letter and the batch goes on.
 */
import { describeThrown } from '../../core/resume.ts';
import {
  FANOUT_COUNTER,
  type Batch,
  type MapStep,
  type Rec,
  type StepContext,
  type TransformSpec,
} from '../../core/types.ts';
import { isRejection, type Transform, type TransformContext } from './api.ts';

export interface TransformConfig {
  type: 'transform';
  module: string;
  export?: string;
}

class TransformStep implements MapStep {
  readonly kind = 'map';
  readonly #fn: Transform;
  readonly #context: TransformContext;
  readonly #dropCounter: string;

  constructor(fn: Transform, context: TransformContext) {
    this.#fn = fn;
    this.#context = context;
    this.#dropCounter = `dropped.${context.stepId}`;
  }

  run(input: Batch, ctx: StepContext): Batch {
    const out: Batch = { records: [], pos: [] };
    // Not a try/catch per record: on a throw, dead-letter that record and resume after it.
    let from = 0;
    while (from < input.records.length) from = this.#runFrom(input, from, out, ctx);
    return out;
  }

  #runFrom(input: Batch, from: number, out: Batch, ctx: StepContext): number {
    const fn = this.#fn;
    const context = this.#context;
    let i = from;
    try {
      for (; i < input.records.length; i++) {
        const pos = input.pos[i]!;
        const result = fn(input.records[i]!, context);
        if (result === undefined || result === null) {
          ctx.count(this.#dropCounter);
        } else if (Array.isArray(result)) {
          // One unit for every count: a record that becomes n records adds n - 1 (see `fanout`),
          // and one that becomes none is a drop, like returning nothing.
          if (result.length === 0) ctx.count(this.#dropCounter);
          else if (result.length > 1) ctx.count(FANOUT_COUNTER, result.length - 1);
          for (const r of result as Rec[]) {
            out.records.push(r);
            out.pos.push(pos);
          }
        } else if (isRejection(result)) {
          ctx.dead(
            pos,
            result.reason,
            result.detail,
            result.pointer === undefined ? undefined : { pointer: result.pointer },
          );
        } else {
          out.records.push(result as Rec);
          out.pos.push(pos);
        }
      }
      return i;
    } catch (err) {
      ctx.dead(input.pos[i]!, 'error', describeThrown(err));
      return i + 1;
    }
  }
}

export const transformTransform: TransformSpec<TransformConfig> & { paths: string[] } = {
  type: 'transform',
  description:
    'Runs a TypeScript function per record: return a record, an array (fan-out), nothing (drop) or reject(reason, detail).',
  paths: ['module'],
  schema: {
    type: 'object',
    required: ['module'],
    properties: {
      module: {
        type: 'string',
        description: 'TypeScript or JavaScript module, relative to the pipeline file.',
      },
      export: { type: 'string', default: 'default', description: 'Name of the exported function.' },
    },
  },
  modules: (config) => [{ path: config.module, export: config.export ?? 'default' }],
  create: (config, env) => {
    const fn = env.fn({ path: config.module, export: config.export ?? 'default' }) as unknown as Transform;
    return new TransformStep(fn, { tables: env.tables, stepId: env.stepId });
  },
};
