/**
 * How a pipeline's steps split between parallel work and in-order decisions. Map steps run in any
 * worker; consecutive ordered steps form a group that the main thread decides in input order,
 * with one round trip per group. Group 0 always exists, even without ordered steps: its round trip
 * is where each chunk learns its first line number.
 */
import type { ResolvedPipeline } from './config.ts';
import { registry } from './registry.ts';

export interface Group {
  /** Indices of map steps to run before this group's decisions. */
  before: number[];
  /** Indices of the ordered steps decided together in this group. */
  ordered: number[];
}

export interface Plan {
  groups: Group[];
  /** Map steps after the last group. */
  after: number[];
}

export function planOf(pipeline: ResolvedPipeline, isOrdered: (index: number) => boolean): Plan {
  const groups: Group[] = [];
  let before: number[] = [];
  let ordered: number[] = [];
  pipeline.steps.forEach((_, i) => {
    if (isOrdered(i)) {
      ordered.push(i);
      return;
    }
    if (ordered.length > 0) {
      groups.push({ before, ordered });
      before = [];
      ordered = [];
    }
    before.push(i);
  });
  if (ordered.length > 0) {
    groups.push({ before, ordered });
    before = [];
  }
  if (groups.length === 0) return { groups: [{ before, ordered: [] }], after: [] };
  return { groups, after: before };
}

/** Whether step `index` is ordered, known on the main thread without building steps. */
export function hasSequencer(pipeline: ResolvedPipeline, index: number): boolean {
  return registry.transforms.get(pipeline.steps[index]!.type)?.sequencer !== undefined;
}
