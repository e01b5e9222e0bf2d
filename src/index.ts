/**
 * sluice's public API: the types and helpers user transform modules import, and the engine for
 * programmatic runs.
 *
 * @example
 * import { defineTransform, reject, rfc3339ToEpochMs } from 'sluice';
 */
import './components.ts';

export { defineTransform, reject, isRejection } from './transforms/transform/api.ts';
export type { Transform, TransformContext, Rejection, Predicate } from './transforms/transform/api.ts';
export type { Rec as JsonRecord } from './core/types.ts';
export type { Table, TableSet } from './core/tables.ts';

export { rfc3339ToEpochMs, epochMsToIso, parseDuration } from './helpers/time.ts';
export {
  toMinorUnits,
  mulDivHalfEven,
  parseExactDecimal,
  formatExactDecimal,
  type ExactInt,
} from './helpers/decimal.ts';
export { trimLower, trimUpper, mask, type MaskOptions } from './helpers/text.ts';
export { classifier, type ClassRule, type ClassifierOptions } from './helpers/classify.ts';

export { loadPipeline, type ResolvedPipeline } from './core/config.ts';
export { prepare, runPipeline, type RunOptions, type RunResult, type Progress } from './core/engine.ts';
export { SluiceError, ERRORS, DEAD_LETTER_REASONS, type ErrorCode } from './errors.ts';
