/**
 * `route`: copies each record to every named output whose condition it meets; the record also
 * goes on down the pipeline. Sinks subscribe to route names with `input:`.
 */
import type { ComponentExtras } from '../../core/registry.ts';
import { describeThrown, eachResuming } from '../../core/resume.ts';
import type { Batch, MapStep, StepContext, TransformSpec } from '../../core/types.ts';
import {
  compileCondition,
  conditionDefinitions,
  conditionModules,
  conditionRef,
  resolveConditionPaths,
  type Condition,
  type Test,
} from './condition.ts';

export interface RouteConfig {
  type: 'route';
  routes: Record<string, Condition>;
}

class RouteStep implements MapStep {
  readonly kind = 'map';
  readonly #names: string[];
  readonly #tests: Test[];

  constructor(names: string[], tests: Test[]) {
    this.#names = names;
    this.#tests = tests;
  }

  run(input: Batch, ctx: StepContext): Batch {
    const names = this.#names;
    const tests = this.#tests;
    const { records, pos } = input;
    const failed = new Set<number>();
    // A module predicate that throws turns its record into an `error` dead letter.
    eachResuming(
      records.length,
      (i) => {
        const r = records[i]!;
        for (let t = 0; t < tests.length; t++) if (tests[t]!(r)) ctx.emit(names[t]!, r, pos[i]!);
      },
      (i, err) => {
        failed.add(i);
        ctx.dead(pos[i]!, 'error', describeThrown(err));
      },
    );
    if (failed.size === 0) return input;
    return { records: records.filter((_, i) => !failed.has(i)), pos: pos.filter((_, i) => !failed.has(i)) };
  }
}

export const routeTransform: TransformSpec<RouteConfig> & ComponentExtras<RouteConfig> = {
  type: 'route',
  description:
    'Copies records that meet a condition to named outputs; every record also continues down the pipeline.',
  schema: {
    type: 'object',
    required: ['routes'],
    properties: {
      routes: {
        type: 'object',
        minProperties: 1,
        propertyNames: { pattern: '^[A-Za-z_][A-Za-z0-9_-]*$' },
        additionalProperties: conditionRef,
        description: 'Output name → condition.',
      },
    },
  },
  definitions: conditionDefinitions,
  resolvePaths: (config, resolve) => ({
    ...config,
    routes: Object.fromEntries(
      Object.entries(config.routes).map(([k, c]) => [k, resolveConditionPaths(c, resolve)]),
    ),
  }),
  modules: (config) => Object.values(config.routes).flatMap((c) => conditionModules(c)),
  outputs: (config) => Object.keys(config.routes),
  knownFields: (_config, before) => before,
  create: (config, env) => {
    const names = Object.keys(config.routes);
    return new RouteStep(
      names,
      names.map((n) => compileCondition(config.routes[n]!, env)),
    );
  },
};
