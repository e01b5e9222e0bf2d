/** The types and helpers user transform modules import from `sluice`. */
import type { TableSet } from '../../core/tables.ts';
import type { Rec } from '../../core/types.ts';

const REJECTION = Symbol.for('sluice.rejection');

/** A record refused by a transform: it becomes a dead letter with this reason and detail. */
export interface Rejection {
  readonly [REJECTION]: true;
  readonly reason: string;
  readonly detail: string;
  /** JSON pointer to the offending field, if any. */
  readonly pointer?: string;
}

/**
 * Refuses the current record. Return it from a transform.
 *
 * @example
 * if (Number.isNaN(ts)) return reject('invalid', 'ts is not a real date', '/ts');
 */
export function reject(reason: string, detail: string, pointer?: string): Rejection {
  return { [REJECTION]: true, reason, detail, pointer };
}

export function isRejection(value: unknown): value is Rejection {
  return (
    typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[REJECTION] === true
  );
}

/** What a transform function gets besides the record. One object per step and worker. */
export interface TransformContext {
  /** Lookup tables declared under `tables:`, shared by all workers. */
  readonly tables: TableSet;
  /** The id of the step running the function. */
  readonly stepId: string;
}

/**
 * A per-record function: return a record, several (fan-out), nothing (drop), or {@link reject}.
 * Throwing is allowed too: that record becomes an `error` dead letter and the run goes on.
 */
export type Transform<In extends object = Rec, Out extends object = Rec> = (
  record: In,
  ctx: TransformContext,
) => Out | readonly Out[] | Rejection | undefined | null | void;

/**
 * Identity helper that gives a transform its types.
 *
 * @example
 * export default defineTransform<RawEvent, Payment>((e, ctx) => ({ id: e.id, amount: e.amount }));
 */
export function defineTransform<In extends object = Rec, Out extends object = Rec>(
  fn: Transform<In, Out>,
): Transform<In, Out> {
  return fn;
}

/** A predicate for `route` and `filter` steps given as a module function. */
export type Predicate<In extends object = Rec> = (record: In, ctx: TransformContext) => boolean;
