/** `filter`: keeps the records that meet a condition; the others are dropped and counted. */
import type { Batch, MapStep, Rec, StepContext, TransformSpec } from '../../core/types.ts';
import type { ComponentExtras } from '../../core/registry.ts';
import { describeThrown, eachResuming } from '../../core/resume.ts';
import {
  compileCondition,
  conditionDefinitions,
  conditionModules,
  conditionRef,
  resolveConditionPaths,
  type Condition,
  type Test,
} from '../route/condition.ts';

export interface FilterConfig {
  type: 'filter';
  condition: Condition;
  /** Send dropped records to this output instead of discarding them. */
  rejected_output?: string;
}

class FilterStep implements MapStep {
  readonly kind = 'map';

  constructor(
    private readonly test: Test,
    private readonly counter: string,
    private readonly rejected: string | undefined,
  ) {}

  run(input: Batch, ctx: StepContext): Batch {
    const records: Rec[] = [];
    const pos: number[] = [];
    eachResuming(
      input.records.length,
      (i) => {
        const r = input.records[i]!;
        if (this.test(r)) {
          records.push(r);
          pos.push(input.pos[i]!);
        } else if (this.rejected) {
          ctx.emit(this.rejected, r, input.pos[i]!);
        } else {
          ctx.count(this.counter);
        }
      },
      (i, err) => ctx.dead(input.pos[i]!, 'error', describeThrown(err)),
    );
    return { records, pos };
  }
}

export const filterTransform: TransformSpec<FilterConfig> & ComponentExtras<FilterConfig> = {
  type: 'filter',
  description:
    'Keeps records that meet a condition; the rest are dropped (counted) or sent to `rejected_output`.',
  schema: {
    type: 'object',
    required: ['condition'],
    properties: {
      condition: conditionRef,
      rejected_output: { type: 'string', description: 'Output for records that fail the condition.' },
    },
  },
  definitions: conditionDefinitions,
  resolvePaths: (config, resolve) => ({
    ...config,
    condition: resolveConditionPaths(config.condition, resolve),
  }),
  modules: (config) => conditionModules(config.condition),
  outputs: (config) => (config.rejected_output ? [config.rejected_output] : []),
  knownFields: (_config, before) => before,
  create: (config, env) =>
    new FilterStep(compileCondition(config.condition, env), `dropped.${env.stepId}`, config.rejected_output),
};
