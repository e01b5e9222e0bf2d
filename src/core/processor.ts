/**
 * The worker half of the engine: decodes chunks, runs map steps, pauses at each ordered group for
 * the main thread's verdicts, and finally encodes every output and dead letter of the chunk for
 * its sinks. Runs inside a worker thread, or inline on the main thread for `sluice test`.
 */
import { DEAD_OUTPUT, MAIN_OUTPUT, type ResolvedPipeline } from './config.ts';
import { exportedFunction, importModules, type LoadedModules } from './modules.ts';
import { planOf, type Plan } from './plan.ts';
import type { EncodedOutput, FromProcessor, ToProcessor } from './protocol.ts';
import { serializeError } from './protocol.ts';
import { registry } from './registry.ts';
import { attachTables } from './tables.ts';
import { SluiceError } from '../errors.ts';
import type {
  Batch,
  DeadLetterExtra,
  DecodedChunk,
  Encoder,
  MapStep,
  OrderedStep,
  Rec,
  SourceDecoder,
  Step,
  StepContext,
} from './types.ts';

/** Raw text kept in a dead letter is cut here; the dead letter says so. */
const MAX_RAW_CHARS = 1 << 20;

export type Reply = (message: FromProcessor, transfer?: ArrayBuffer[]) => void;

/** Dead letters and emitted records of one chunk, kept until its line numbers are known. */
class ChunkState implements StepContext {
  step = '';
  readonly deadPos: number[] = [];
  readonly deadInfo: { reason: string; detail: string; extra: DeadLetterExtra | undefined; step: string }[] =
    [];
  readonly emitted = new Map<string, Rec[]>();
  /**
   * A plain object, not a Map: it goes out as is in `done` (Object.fromEntries of a Map was the
   * costliest line of a single-event chunk, ~2 µs of ~30, measured with bench/chunk-cost.ts).
   */
  readonly counters: Record<string, number> = Object.create(null) as Record<string, number>;
  batch: Batch = { records: [], pos: [] };
  decoded: DecodedChunk | undefined;
  firstLine = 1;
  firstIndex = 0;
  /** The current group's extract payloads, kept for the steps' `apply`. */
  payloads: unknown[] = [];
  /** Copies of the records leaving tapped steps (`sluice tap`). */
  taps: Record<string, Rec[]> | undefined;

  constructor(readonly subscribed: ReadonlySet<string>) {}

  dead(pos: number, reason: string, detail: string, extra?: DeadLetterExtra): void {
    this.deadPos.push(pos);
    this.deadInfo.push({ reason, detail, extra, step: this.step });
    this.count(counterName('dead.', reason));
  }

  emit(output: string, record: Rec): void {
    this.count(counterName('output.', output));
    if (!this.subscribed.has(output)) return;
    let list = this.emitted.get(output);
    if (!list) this.emitted.set(output, (list = []));
    list.push(record);
  }

  count(name: string, n = 1): void {
    this.counters[name] = (this.counters[name] ?? 0) + n;
  }

  /** Copies (later steps may change the records) of the first records leaving a tapped step. */
  tap(step: string, records: readonly Rec[]): void {
    const taps = (this.taps ??= {});
    const list = (taps[step] ??= []);
    for (let i = 0; i < records.length && list.length < TAP_SAMPLE; i++)
      list.push(structuredClone(records[i]!));
  }
}

/** Records a tapped step shows per chunk at most: a sample for a person to read, not a copy of the stream. */
export const TAP_SAMPLE = 20;

export interface ProcessorOptions {
  /**
   * Keep the records of every output a sink reads, and every dead letter (each with its `index`),
   * instead of encoding them: a service stores them itself. They arrive in `done`'s `records`.
   */
  capture?: boolean;
}

export class Processor {
  #pipeline!: ResolvedPipeline;
  #steps: Step[] = [];
  #plan!: Plan;
  #decoder!: SourceDecoder;
  #indexed = false;
  #encoders = new Map<string, { sinkId: string; encode: Encoder }[]>();
  #subscribed = new Set<string>();
  /** Steps whose records `sluice tap` is watching. */
  #tapped: ReadonlySet<string> = new Set();
  /**
   * Chunks waiting for verdicts, by seq: a few at most, so a list searched from the end. (A Map
   * with a set and a delete per chunk cost ~0.4 µs a chunk in rehashing, bench/chunk-cost.ts.)
   */
  #chunks: { seq: number; state: ChunkState }[] = [];

  constructor(
    private readonly reply: Reply,
    private readonly options: ProcessorOptions = {},
  ) {}

  /** Every step's state that must survive a restart, by step index (see OrderedStep.snapshot). */
  snapshot(): unknown[] {
    return this.#steps.map((s) => (s.kind === 'ordered' ? s.snapshot?.() : undefined));
  }

  restore(states: readonly unknown[]): void {
    this.#steps.forEach((s, i) => {
      if (s.kind === 'ordered' && states[i] !== undefined) s.restore?.(states[i]);
    });
  }

  async handle(msg: ToProcessor): Promise<void> {
    try {
      switch (msg.t) {
        case 'init':
          await this.#init(msg.pipeline, msg.bundles, msg.tables);
          this.reply({ t: 'ready' });
          return;
        case 'chunk':
          this.#onChunk(msg.seq, msg.chunk);
          return;
        case 'verdict':
          this.#onVerdict(msg);
          return;
        case 'tap':
          this.#tapped = new Set(msg.steps);
          return;
        case 'command': {
          const step = this.#steps[msg.step] as OrderedStep;
          this.reply({ t: 'reply', id: msg.id, reply: step.command?.(msg.message) });
          return;
        }
      }
    } catch (err) {
      this.reply({ t: 'failed', error: serializeError(err) });
    }
  }

  async #init(
    pipeline: ResolvedPipeline,
    bundles: Record<string, string>,
    tables: Parameters<typeof attachTables>[0],
  ): Promise<void> {
    this.#pipeline = pipeline;
    const modules: LoadedModules = await importModules(bundles);
    const tableSet = attachTables(tables);
    this.#steps = pipeline.steps.map((s, i) => {
      try {
        return registry.transforms
          .get(s.type)!
          .create(s.config, { stepId: s.id, tables: tableSet, fn: (ref) => exportedFunction(modules, ref) });
      } catch (err) {
        if (err instanceof SluiceError) throw err;
        // A component refusing its options is a config error, whatever it threw.
        throw new SluiceError('SLUICE_ERR_CONFIG_INVALID', `step "${s.id}": ${(err as Error).message}`, {
          location: { file: pipeline.file, path: `steps[${i}]` },
          cause: err,
        });
      }
    });
    this.#plan = planOf(pipeline, (i) => this.#steps[i]!.kind === 'ordered');
    const source = registry.sources.get(pipeline.source.type)!;
    this.#decoder = source.decoder(pipeline.source);
    this.#indexed = this.options.capture === true || (source.indexed?.(pipeline.source) ?? false);
    if (this.options.capture) {
      for (const sink of pipeline.sinks) this.#subscribed.add(sink.input);
      this.#subscribed.add(DEAD_OUTPUT);
      return;
    }
    for (const sink of pipeline.sinks) {
      const encode = registry.sinks.get(sink.type)!.encoder(sink.config);
      let list = this.#encoders.get(sink.input);
      if (!list) this.#encoders.set(sink.input, (list = []));
      list.push({ sinkId: sink.id, encode });
      this.#subscribed.add(sink.input);
    }
  }

  #runMaps(state: ChunkState, indices: readonly number[]): void {
    const tapped = this.#tapped;
    for (const i of indices) {
      state.step = this.#pipeline.steps[i]!.id;
      state.batch = (this.#steps[i] as MapStep).run(state.batch, state);
      state.count(stepOut(state.step), state.batch.records.length);
      if (tapped.size > 0 && tapped.has(state.step)) state.tap(state.step, state.batch.records);
    }
  }

  /** Runs map steps up to the next group and sends its payload, or finishes the chunk. */
  #advance(seq: number, state: ChunkState, group: number): void {
    const plan = this.#plan;
    if (group >= plan.groups.length) {
      this.#runMaps(state, plan.after);
      this.#finish(seq, state);
      return;
    }
    const g = plan.groups[group]!;
    this.#runMaps(state, g.before);
    const payloads = g.ordered.map((i) => (this.#steps[i] as OrderedStep).extract(state.batch));
    state.payloads = payloads;
    const decoded = state.decoded!;
    this.reply({
      t: 'payload',
      seq,
      group,
      count: state.batch.records.length,
      recordCount: decoded.recordCount,
      lineCount: decoded.lineCount,
      payloads,
    });
  }

  #onChunk(seq: number, chunk: Parameters<SourceDecoder['decode']>[0]): void {
    const state = new ChunkState(this.#subscribed);
    state.step = 'source';
    state.decoded = this.#decoder.decode(chunk, state);
    state.batch = state.decoded.batch;
    state.count('input.records', state.decoded.recordCount);
    this.#chunks.push({ seq, state });
    this.#advance(seq, state, 0);
  }

  #onVerdict(msg: Extract<ToProcessor, { t: 'verdict' }>): void {
    const state = this.#chunkOf(msg.seq);
    if (msg.group === 0) {
      state.firstLine = msg.firstLine;
      state.firstIndex = msg.firstIndex;
    }
    const group = this.#plan.groups[msg.group]!;
    let { records, pos } = state.batch;
    let verdicts = msg.verdicts;
    let indices = new Int32Array(records.length);
    for (let i = 0; i < indices.length; i++) indices[i] = i;
    group.ordered.forEach((stepIndex, slot) => {
      const step = this.#steps[stepIndex] as OrderedStep;
      state.step = this.#pipeline.steps[stepIndex]!.id;
      if (verdicts && decidedAt(verdicts, slot)) {
        const keepRecords: Rec[] = [];
        const keepPos: number[] = [];
        const keepVerdicts = new Uint16Array(records.length);
        const keepIndices = new Int32Array(records.length);
        let kept = 0;
        for (let i = 0; i < records.length; i++) {
          const v = verdicts[i]!;
          if (v === 0 || v >> 8 > slot) {
            keepRecords.push(records[i]!);
            keepPos.push(pos[i]!);
            keepIndices[kept] = indices[i]!;
            keepVerdicts[kept++] = v;
            continue;
          }
          const outcome = (v & 0xff) - 1;
          const o = step.outcomes[outcome]!;
          if (o.kind === 'drop') state.count(counterName('dropped.', o.reason));
          else state.dead(pos[i]!, o.reason, step.describe(outcome, records[i]!, msg.infos[slot]));
        }
        records = keepRecords;
        pos = keepPos;
        verdicts = keepVerdicts.subarray(0, kept);
        indices = keepIndices.subarray(0, kept);
      }
      step.apply?.({ records, pos }, state, {
        info: msg.infos[slot],
        payload: state.payloads[slot],
        indices,
      });
      state.count(stepOut(state.step), records.length);
      if (this.#tapped.size > 0 && this.#tapped.has(state.step)) state.tap(state.step, records);
    });
    state.batch = { records, pos };
    state.payloads = [];
    this.#advance(msg.seq, state, msg.group + 1);
  }

  #chunkOf(seq: number): ChunkState {
    const chunks = this.#chunks;
    for (let i = chunks.length - 1; i >= 0; i--) if (chunks[i]!.seq === seq) return chunks[i]!.state;
    throw new Error(`internal: no chunk ${seq} waits for a verdict`);
  }

  #finish(seq: number, state: ChunkState): void {
    const chunks = this.#chunks;
    for (let i = chunks.length - 1; i >= 0; i--)
      if (chunks[i]!.seq === seq) {
        chunks[i] = chunks[chunks.length - 1]!;
        chunks.pop();
        break;
      }
    const { records } = state.batch;
    state.step = MAIN_OUTPUT;
    for (let i = 0; i < records.length; i++) state.emit(MAIN_OUTPUT, records[i]!);
    const decoded = state.decoded!;
    if (state.deadPos.length > 0) {
      const dead: Rec[] = [];
      // Steps add dead letters step by step; write them in input order.
      let order = state.deadPos
        .map((_, i) => i)
        .sort((a, b) => state.deadPos[a]! - state.deadPos[b]! || a - b);
      // Per line: the first failure of each line stands for all its failed records.
      const perLine = this.#pipeline.deadLettersPer === 'line';
      const failedOfLine = new Map<number, number>();
      if (perLine) {
        for (const p of state.deadPos) failedOfLine.set(p, (failedOfLine.get(p) ?? 0) + 1);
        order = order.filter((i, k) => k === 0 || state.deadPos[order[k - 1]!] !== state.deadPos[i]);
      }
      for (const i of order) {
        const p = state.deadPos[i]!;
        const info = state.deadInfo[i]!;
        let raw = decoded.raw(p);
        const letter: Rec = { line: state.firstLine + decoded.lineOf(p) };
        if (this.#indexed) letter.index = state.firstIndex + p;
        letter.reason = info.reason;
        letter.detail = info.detail;
        if (info.extra?.pointer !== undefined) letter.pointer = info.extra.pointer;
        if (info.extra?.keyword !== undefined) letter.keyword = info.extra.keyword;
        letter.step = info.step;
        if (perLine) letter.records = failedOfLine.get(p)!;
        if (raw.length > MAX_RAW_CHARS) {
          raw = raw.slice(0, MAX_RAW_CHARS);
          letter.raw_truncated = true;
        }
        letter.raw = raw;
        dead.push(letter);
      }
      if (this.#subscribed.has(DEAD_OUTPUT)) state.emitted.set(DEAD_OUTPUT, dead);
    }
    const counters = state.counters;
    const taps = state.taps;
    if (this.options.capture) {
      const records = Object.fromEntries(state.emitted);
      this.reply({ t: 'done', seq, outputs: {}, records, counters, ...(taps && { taps }) });
      return;
    }
    const outputs: Record<string, EncodedOutput> = {};
    for (const [output, list] of state.emitted)
      outputs[output] = encodeFor(this.#encoders.get(output) ?? [], list);
    this.reply({ t: 'done', seq, outputs, counters, ...(taps && { taps }) });
  }
}

const counterNames = new Map<string, Map<string, string>>();

/**
 * `prefix + name`, made once: a counter is named per record or per step of every chunk, and a
 * string built each time must be hashed again each time it is used as a key.
 */
function counterName(prefix: string, name: string): string {
  let names = counterNames.get(prefix);
  if (!names) counterNames.set(prefix, (names = new Map()));
  let full = names.get(name);
  if (full === undefined) names.set(name, (full = prefix + name));
  return full;
}

const stepOutNames = new Map<string, string>();

/** `step.<id>.out`, made once per step id. */
function stepOut(id: string): string {
  let full = stepOutNames.get(id);
  if (full === undefined) stepOutNames.set(id, (full = `step.${id}.out`));
  return full;
}
/**
 * Whether any record's verdict is this slot's (it drops or refuses the record): most chunks have
 * none, and then nothing needs copying (typed-array subarrays cost ~1 µs each).
 */
function decidedAt(verdicts: Uint16Array, slot: number): boolean {
  for (let i = 0; i < verdicts.length; i++) {
    const v = verdicts[i]!;
    if (v !== 0 && v >> 8 <= slot) return true;
  }
  return false;
}

/** Encodes records once per subscribed sink. */
export function encodeFor(
  encoders: readonly { sinkId: string; encode: Encoder }[],
  records: Rec[],
): EncodedOutput {
  const bySink: Record<string, string> = {};
  for (const e of encoders) bySink[e.sinkId] = e.encode(records);
  return { count: records.length, bySink };
}
