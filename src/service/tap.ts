/**
 * `sluice tap` on the HTTP side: who is watching which step of which pipeline. The runtime copies
 * the first records leaving each watched step of every body it processes (core/processor.ts
 * TAP_SAMPLE) and hands them here; each watcher gets those of its step. The runtime is told the set
 * of watched steps whenever it changes, so a pipeline nobody taps pays nothing.
 */
import type { Rec } from '../core/types.ts';

export type TapListener = (records: Rec[]) => void;

export class TapHub {
  /** Pipeline key → step → watchers. */
  readonly #watchers = new Map<string, Map<string, Set<TapListener>>>();

  /** `apply` tells the runtime which steps of a pipeline to copy; it refuses unknown steps. */
  constructor(private readonly apply: (pipeline: string, steps: string[]) => Promise<void>) {}

  /** Starts watching; resolves with the function that stops. Rejects (watching nothing) on an unknown step. */
  async watch(pipeline: string, step: string, listener: TapListener): Promise<() => Promise<void>> {
    let steps = this.#watchers.get(pipeline);
    if (!steps) this.#watchers.set(pipeline, (steps = new Map()));
    let set = steps.get(step);
    const added = !set;
    if (!set) steps.set(step, (set = new Set()));
    set.add(listener);
    if (added) {
      try {
        await this.apply(pipeline, [...steps.keys()]);
      } catch (err) {
        await this.#unwatch(pipeline, step, listener);
        throw err;
      }
    }
    return () => this.#unwatch(pipeline, step, listener);
  }

  async #unwatch(pipeline: string, step: string, listener: TapListener): Promise<void> {
    const steps = this.#watchers.get(pipeline);
    const set = steps?.get(step);
    if (!steps || !set?.delete(listener) || set.size > 0) return;
    steps.delete(step);
    if (steps.size === 0) this.#watchers.delete(pipeline);
    await this.apply(pipeline, [...steps.keys()]).catch(() => {});
  }

  /** Records the runtime copied after a body, by step. */
  deliver(pipeline: string, taps: Record<string, Rec[]>): void {
    const steps = this.#watchers.get(pipeline);
    if (!steps) return;
    for (const [step, records] of Object.entries(taps)) for (const l of steps.get(step) ?? []) l(records);
  }
}
