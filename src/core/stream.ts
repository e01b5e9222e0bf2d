/**
 * A pipeline run in place, one chunk at a time, for a long-running service. Everything happens
 * synchronously on the calling thread: the chunk is decoded, its ordered steps are decided against
 * the state kept between chunks, and the results are back before `process` returns. So a service
 * has a simple contract: state changes only inside `process`, and a snapshot taken between two
 * calls reflects exactly the chunks processed so far.
 *
 * It drives the same {@link Processor} as the batch engine, with replies delivered synchronously,
 * so a request is processed exactly as a chunk of a file would be.
 */
import { MAIN_OUTPUT, type ResolvedPipeline } from './config.ts';
import type { Prepared } from './engine.ts';
import { hasSequencer, planOf, type Plan } from './plan.ts';
import { Processor } from './processor.ts';
import { deserializeError, type FromProcessor } from './protocol.ts';
import { registry } from './registry.ts';
import { FANOUT_COUNTER, type Chunk, type Origin, type Rec, type Sequencer } from './types.ts';

export interface ChunkResult {
  /** Input records in the chunk, including the ones that failed. */
  records: number;
  counters: Record<string, number>;
  /** Records per output: what sinks read, rows of windows that closed, and `dead`. */
  outputs: Map<string, Rec[]>;
  /** Copies of the first records each tapped step passed on (see `tap`). */
  taps?: Record<string, Rec[]>;
}

/** What a chunk's records became, in records (see FANOUT_COUNTER). */
export function recordCounts(result: ChunkResult): {
  records: number;
  accepted: number;
  duplicates: number;
  dead: number;
} {
  const records = result.records + (result.counters[FANOUT_COUNTER] ?? 0);
  const duplicates = result.counters['dropped.duplicate'] ?? 0;
  let dead = 0;
  // Per request, twice: no entries array, and a cheap test first (`d`).
  for (const name in result.counters)
    if (name.charCodeAt(0) === 100 && name.startsWith('dead.')) dead += result.counters[name]!;
  return { records, accepted: records - duplicates - dead, duplicates, dead };
}

/** The state a service checkpoints, structured-cloneable. */
export interface StreamSnapshot {
  sequencers: unknown[];
  steps: unknown[];
}

export class StreamPipeline {
  readonly pipeline: ResolvedPipeline;
  readonly #processor: Processor;
  readonly #plan: Plan;
  readonly #sequencers: (Sequencer | undefined)[];
  readonly #stepOutputs: string[];
  #seq = 0;
  #current: ChunkResult | undefined;
  #done = false;
  #failure: Error | undefined;
  /** The current chunk's ingest path. */
  #origin: Origin | undefined;
  /** Where gathered records go: the current chunk's outputs, or a preview. */
  #gatherInto: Map<string, Rec[]> | undefined;

  private constructor(pipeline: ResolvedPipeline) {
    this.pipeline = pipeline;
    this.#plan = planOf(pipeline, (i) => hasSequencer(pipeline, i));
    this.#sequencers = pipeline.steps.map((s) =>
      registry.transforms.get(s.type)!.sequencer?.(s.config, s.id),
    );
    this.#stepOutputs = pipeline.steps.map(
      (s) => registry.transforms.get(s.type)!.outputs?.(s.config, s.id)[0] ?? MAIN_OUTPUT,
    );
    this.#processor = new Processor((m) => this.#onMessage(m), { capture: true });
  }

  static async create(prepared: Prepared): Promise<StreamPipeline> {
    const stream = new StreamPipeline(prepared.pipeline);
    const { pipeline, bundles, tables } = prepared;
    await stream.#processor.handle({ t: 'init', pipeline, bundles, tables });
    stream.#throwIfFailed();
    return stream;
  }

  /**
   * Processes one chunk of whole records; record indices in dead letters start at 0 per chunk.
   * `origin` names the ingest path the chunk came by, where there are several (the cluster).
   */
  process(chunk: Chunk, origin?: Origin): ChunkResult {
    this.#origin = origin;
    this.#current = { records: 0, counters: {}, outputs: new Map() };
    this.#gatherInto = this.#current.outputs;
    this.#done = false;
    // Synchronous: every reply is handled before `handle` returns (see #onMessage).
    void this.#processor.handle({ t: 'chunk', seq: this.#seq++, chunk });
    this.#throwIfFailed();
    if (!this.#done) throw new Error('internal: a chunk did not finish synchronously');
    const result = this.#current;
    this.#current = undefined;
    this.#gatherInto = undefined;
    return result;
  }

  /** Records of what is still open (e.g. window rows so far), per output; changes nothing. */
  preview(): Map<string, Rec[]> {
    const into = new Map<string, Rec[]>();
    this.#gatherInto = into;
    this.#sequencers.forEach((seq, step) => {
      const message = seq?.preview?.();
      if (message !== undefined) this.#command(step, message);
    });
    this.#gatherInto = undefined;
    this.#throwIfFailed();
    return into;
  }

  /**
   * From the next chunk on, results carry copies of the first records (processor.ts TAP_SAMPLE)
   * that each of these steps passes on; [] stops. Costs nothing while no step is tapped.
   */
  tap(steps: string[]): void {
    void this.#processor.handle({ t: 'tap', steps });
  }

  /** Watermarks of the steps that keep one (windows), by step id. */
  watermarks(): { step: string; watermark: number; paths: Map<string, number> }[] {
    const out: { step: string; watermark: number; paths: Map<string, number> }[] = [];
    this.#sequencers.forEach((seq, i) => {
      const w = seq?.watermarks?.();
      if (w) out.push({ step: this.pipeline.steps[i]!.id, ...w });
    });
    return out;
  }

  snapshot(): StreamSnapshot {
    return {
      sequencers: this.#sequencers.map((s) => s?.snapshot?.()),
      steps: this.#processor.snapshot(),
    };
  }

  restore(snapshot: StreamSnapshot): void {
    this.#sequencers.forEach((s, i) => {
      if (snapshot.sequencers[i] !== undefined) s?.restore?.(snapshot.sequencers[i]);
    });
    this.#processor.restore(snapshot.steps);
  }

  #throwIfFailed(): void {
    if (this.#failure) throw this.#failure;
  }

  #pendingCommand: { step: number; message: unknown } | undefined;

  #command(step: number, message: unknown): void {
    this.#pendingCommand = { step, message };
    void this.#processor.handle({ t: 'command', id: 0, step, message });
  }

  #onMessage(m: FromProcessor): void {
    switch (m.t) {
      case 'ready':
        return;
      case 'failed':
        this.#failure ??= deserializeError(m.error);
        return;
      case 'payload':
        this.#decide(m);
        return;
      case 'done':
        this.#onDone(m);
        return;
      case 'reply':
        this.#onReply(m.reply);
        return;
    }
  }

  #decide(m: Extract<FromProcessor, { t: 'payload' }>): void {
    const g = this.#plan.groups[m.group]!;
    if (m.group === 0) this.#current!.records = m.recordCount;
    const verdicts = g.ordered.length > 0 ? new Uint16Array(m.count) : null;
    const infos = g.ordered.map((stepIndex, slot) =>
      this.#sequencers[stepIndex]!.decide(m.payloads[slot], verdicts!, slot, this.#origin),
    );
    void this.#processor.handle({
      t: 'verdict',
      seq: m.seq,
      group: m.group,
      firstLine: 1,
      firstIndex: 0,
      verdicts,
      infos,
    });
    for (const stepIndex of g.ordered) {
      const message = this.#sequencers[stepIndex]!.pollBroadcast?.();
      if (message !== undefined) this.#command(stepIndex, message);
    }
  }

  #onDone(m: Extract<FromProcessor, { t: 'done' }>): void {
    const current = this.#current!;
    // The processor's own object: adopted, not copied, when nothing was counted before it.
    let empty = true;
    for (const _ in current.counters) empty = false;
    if (empty) current.counters = m.counters;
    else
      for (const [name, n] of Object.entries(m.counters))
        current.counters[name] = (current.counters[name] ?? 0) + n;
    for (const [output, records] of Object.entries(m.records ?? {}))
      this.#add(current.outputs, output, records);
    if (m.taps) current.taps = m.taps;
    this.#done = true;
  }

  #onReply(reply: unknown): void {
    const { step, message } = this.#pendingCommand!;
    this.#pendingCommand = undefined;
    const records = this.#sequencers[step]!.gather?.(message, [reply]) ?? [];
    const output = this.#stepOutputs[step]!;
    if (this.#current && this.#gatherInto === this.#current.outputs)
      this.#current.counters[`output.${output}`] =
        (this.#current.counters[`output.${output}`] ?? 0) + records.length;
    if (this.#gatherInto) this.#add(this.#gatherInto, output, records);
  }

  #add(into: Map<string, Rec[]>, output: string, records: Rec[]): void {
    if (records.length === 0) return;
    const list = into.get(output);
    if (list) for (const r of records) list.push(r);
    else into.set(output, records);
  }
}
