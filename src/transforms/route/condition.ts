/**
 * Declarative conditions for `route` and `filter`, compiled once into plain functions. Numeric
 * comparisons are exact on decimal strings of any size (`"10000000000"`), so money in minor units
 * compares correctly without floating point.
 */
import type { Rec } from '../../core/types.ts';
import type { StepEnv } from '../../core/types.ts';
import { fieldReader } from '../../core/fields.ts';
import { compareExact, toExact } from '../../helpers/decimal.ts';
import type { TransformContext } from '../transform/api.ts';

export type Condition =
  | { all: Condition[] }
  | { any: Condition[] }
  | { not: Condition }
  | { module: string; export?: string }
  | ({ field: string } & FieldTest);

interface FieldTest {
  eq?: unknown;
  ne?: unknown;
  gt?: string | number;
  gte?: string | number;
  lt?: string | number;
  lte?: string | number;
  in?: unknown[];
  matches?: string;
  exists?: boolean;
}

export type Test = (r: Rec) => boolean;

/** Shared by `route` and `filter` through the pipeline schema's `$defs`. */
export const conditionDefinitions = { condition: {} as Record<string, unknown> };
export const conditionRef = { $ref: '#/$defs/condition' };
conditionDefinitions.condition = {
  type: 'object',
  description: 'all / any / not of conditions, a field test, or a module predicate.',
  minProperties: 1,
  properties: {
    all: { type: 'array', items: conditionRef },
    any: { type: 'array', items: conditionRef },
    not: conditionRef,
    module: { type: 'string', description: 'Module exporting a predicate (record, ctx) => boolean.' },
    export: { type: 'string' },
    field: { type: 'string', description: 'Record field to test (dots reach into objects).' },
    eq: { description: 'Equal (numbers and decimal strings compare exactly as numbers).' },
    ne: {},
    gt: { type: ['string', 'number'] },
    gte: { type: ['string', 'number'] },
    lt: { type: ['string', 'number'] },
    lte: { type: ['string', 'number'] },
    in: { type: 'array' },
    matches: {
      type: 'string',
      description: 'JavaScript regular expression (searches anywhere unless anchored).',
    },
    exists: { type: 'boolean' },
  },
  additionalProperties: false,
};

/** Module predicates referenced anywhere inside a condition. */
export function conditionModules(c: Condition): { path: string; export: string }[] {
  if ('all' in c) return c.all.flatMap(conditionModules);
  if ('any' in c) return c.any.flatMap(conditionModules);
  if ('not' in c) return conditionModules(c.not);
  if ('module' in c) return [{ path: c.module, export: c.export ?? 'default' }];
  return [];
}

/** Makes module paths inside a condition absolute (they are relative to the pipeline file). */
export function resolveConditionPaths(c: Condition, resolve: (path: string) => string): Condition {
  if ('all' in c) return { all: c.all.map((x) => resolveConditionPaths(x, resolve)) };
  if ('any' in c) return { any: c.any.map((x) => resolveConditionPaths(x, resolve)) };
  if ('not' in c) return { not: resolveConditionPaths(c.not, resolve) };
  if ('module' in c) return { ...c, module: resolve(c.module) };
  return c;
}

function equal(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  const x = toExact(a);
  const y = toExact(b);
  if (
    x !== undefined &&
    y !== undefined &&
    (typeof a !== 'string' || typeof b !== 'string' || a.trim() === a)
  )
    return compareExact(x, y) === 0;
  return false;
}

function ordered(read: (r: Rec) => unknown, bound: string | number, accept: (cmp: number) => boolean): Test {
  const b = toExact(bound);
  if (b === undefined) throw new Error(`condition bound ${JSON.stringify(bound)} is not a number`);
  return (r) => {
    const x = toExact(read(r));
    return x !== undefined && accept(compareExact(x, b));
  };
}

export function compileCondition(c: Condition, env: Pick<StepEnv, 'fn' | 'tables' | 'stepId'>): Test {
  if ('all' in c) {
    const tests = c.all.map((x) => compileCondition(x, env));
    return (r) => tests.every((t) => t(r));
  }
  if ('any' in c) {
    const tests = c.any.map((x) => compileCondition(x, env));
    return (r) => tests.some((t) => t(r));
  }
  if ('not' in c) {
    const test = compileCondition(c.not, env);
    return (r) => !test(r);
  }
  if ('module' in c) {
    const fn = env.fn({ path: c.module, export: c.export ?? 'default' }) as unknown as (
      r: Rec,
      ctx: TransformContext,
    ) => unknown;
    const ctx: TransformContext = { tables: env.tables, stepId: env.stepId };
    return (r) => fn(r, ctx) === true;
  }
  const read = fieldReader(c.field);
  const tests: Test[] = [];
  if ('eq' in c) tests.push((r) => equal(read(r), c.eq));
  if ('ne' in c) tests.push((r) => !equal(read(r), c.ne));
  if (c.gt !== undefined) tests.push(ordered(read, c.gt, (x) => x > 0));
  if (c.gte !== undefined) tests.push(ordered(read, c.gte, (x) => x >= 0));
  if (c.lt !== undefined) tests.push(ordered(read, c.lt, (x) => x < 0));
  if (c.lte !== undefined) tests.push(ordered(read, c.lte, (x) => x <= 0));
  if (c.in !== undefined) {
    const set = c.in;
    tests.push((r) => {
      const v = read(r);
      return set.some((x) => equal(v, x));
    });
  }
  if (c.matches !== undefined) {
    const re = new RegExp(c.matches);
    tests.push((r) => {
      const v = read(r);
      return typeof v === 'string' && re.test(v);
    });
  }
  if (c.exists !== undefined) {
    const want = c.exists;
    tests.push((r) => (read(r) !== undefined) === want);
  }
  if (tests.length === 0)
    throw new Error(`condition on ${c.field} has no test (eq, ne, gt, gte, lt, lte, in, matches, exists)`);
  if (tests.length === 1) return tests[0]!;
  return (r) => tests.every((t) => t(r));
}
