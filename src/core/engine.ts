/**
 * The main-thread half of the engine. Reads the source in chunks of whole records, hands each to
 * the least busy processor, decides ordered steps in input order, and writes every chunk's outputs
 * in input order, so the results are identical with one worker or many. Memory is bounded by the
 * number of chunks in flight: reading waits while every slot is taken.
 */
import { SluiceError } from '../errors.ts';
import { MAIN_OUTPUT, type ResolvedPipeline, type ResolvedSink } from './config.ts';
import { compileModules, type ModuleBundles } from './modules.ts';
import { hasSequencer, planOf, type Plan } from './plan.ts';
import { defaultWorkers, stopUnusedWorkers, takeWorker } from './prestart.ts';
import { Processor, encodeFor } from './processor.ts';
import { deserializeError, type EncodedOutput, type FromProcessor, type ToProcessor } from './protocol.ts';
import { registry } from './registry.ts';
import { loadTable, type SharedTableData } from './tables.ts';
import type { Chunk, Encoder, Rec, Sequencer, SinkWriter, SourceReader } from './types.ts';
import { writeSummary } from './summary.ts';

export interface RunOptions {
  /** Input path, or `-` for standard input. */
  input: string;
  /** Directory relative sink paths resolve against. */
  outDir: string;
  /**
   * Worker threads; 0 runs everything on the main thread. Default: the main thread for an input
   * file smaller than 32 MiB, else one per core.
   */
  workers?: number;
  /** Target chunk size in bytes (default {@link DEFAULT_CHUNK_BYTES}). */
  chunkBytes?: number;
  /** Chunks in flight per worker (default 4). */
  inFlightPerWorker?: number;

  signal?: AbortSignal;
  onProgress?(progress: Progress): void;
  /** Replaces a sink's writer (sluice test captures outputs this way). */
  writerFor?(sink: ResolvedSink): SinkWriter | undefined;
}

export interface Progress {
  bytesRead: number;
  totalBytes: number | undefined;
  records: number;
  elapsedMs: number;
}

export interface RunResult {
  counters: Record<string, number>;
  elapsedMs: number;
  bytesRead: number;
  /** Worker threads used; 0 when the run was on the main thread. */
  workers: number;
  /** Peak resident set size of the whole process (all threads), bytes. */
  peakRssBytes: number;
  sinks: { id: string; input: string; target: string }[];
}

/**
 * Input per chunk. A chunk's records live in its worker until the main thread's verdicts come
 * back, so they survive young-generation collections and are promoted when chunks are large.
 * Measured on this machine (2 cores, 2 workers): the telemetry workload (200,000 lines) took
 * 3.34–3.43 s, 5.0 CPU s and 379–405 MiB with 512 KiB chunks, 2.96–3.01 s, 4.3 CPU s and
 * 299–304 MiB with 128 KiB; payments (1M events) the same time either way (9.3–9.8 s), 407–414
 * instead of 428–430 MiB. 64 KiB gained nothing more.
 */
export const DEFAULT_CHUNK_BYTES = 128 * 1024;

/** Everything prepared once on the main thread before processors start. */
export interface Prepared {
  pipeline: ResolvedPipeline;
  bundles: ModuleBundles;
  tables: SharedTableData[];
}

export async function prepare(pipeline: ResolvedPipeline): Promise<Prepared> {
  const bundles = await compileModules(pipeline.modules);
  const tables = Object.entries(pipeline.tables).map(([name, config]) => loadTable(name, config));
  return { pipeline, bundles, tables };
}

interface Channel {
  post(msg: ToProcessor, transfer?: ArrayBuffer[]): void;
  terminate(): Promise<void>;
  inFlight: number;
}

function threadChannel(onMessage: (m: FromProcessor) => void, onError: (e: SluiceError) => void): Channel {
  const worker = takeWorker();
  let terminating = false;
  worker.on('message', onMessage);
  worker.on('error', (err) =>
    onError(deserializeError({ name: err.name, message: err.message, stack: err.stack })),
  );
  worker.on('exit', (code) => {
    if (!terminating)
      onError(
        new SluiceError('SLUICE_ERR_WORKER_FAILED', `a worker thread exited unexpectedly (code ${code})`),
      );
  });
  return {
    inFlight: 0,
    post: (msg, transfer) => worker.postMessage(msg, transfer ?? []),
    terminate: async () => {
      terminating = true;
      await worker.terminate();
    },
  };
}

function inlineChannel(onMessage: (m: FromProcessor) => void): Channel {
  // Same protocol as a thread; replies are delivered asynchronously, as from a real worker.
  const processor = new Processor((m) => setImmediate(() => onMessage(m)));
  let queue = Promise.resolve();
  return {
    inFlight: 0,
    post: (msg) => {
      queue = queue.then(() => processor.handle(msg));
    },
    terminate: async () => {},
  };
}

class Deferred<T = void> {
  resolve!: (v: T) => void;
  reject!: (e: unknown) => void;
  readonly promise = new Promise<T>((res, rej) => {
    this.resolve = res;
    this.reject = rej;
  });
}

/** Runs a pipeline over one input to completion. */
export async function runPipeline(prepared: Prepared, options: RunOptions): Promise<RunResult> {
  try {
    return await new Run(prepared, options).execute();
  } finally {
    await stopUnusedWorkers();
  }
}

interface Gather {
  step: number;
  message: unknown;
  replies: unknown[];
  remaining: number;
}

class Run {
  readonly #pipeline: ResolvedPipeline;
  readonly #prepared: Prepared;
  readonly #options: RunOptions;
  readonly #started = performance.now();
  readonly #plan: Plan;
  readonly #sequencers: (Sequencer | undefined)[];
  readonly #counters = new Map<string, number>();
  #channels: Channel[] = [];
  #inline = false;
  #writers = new Map<string, SinkWriter>();
  readonly #mainEncoders = new Map<string, { sinkId: string; encode: Encoder }[]>();

  // Ordering state.
  readonly #owner = new Map<number, Channel>();
  readonly #waiting: Map<number, Extract<FromProcessor, { t: 'payload' }>>[];
  readonly #nextDecide: number[];
  #nextLine = 1;
  #nextIndex = 0;
  readonly #done = new Map<number, Extract<FromProcessor, { t: 'done' }>>();
  #nextWrite = 0;
  #writing = Promise.resolve();
  #gatherId = 0;
  readonly #gathers = new Map<number, Gather>();
  #gathersDone: Deferred | undefined;

  #dispatched = 0;
  #written = 0;
  #slotFreed: Deferred | undefined;
  #allWritten: Deferred | undefined;
  #failure: unknown;
  readonly #failed = new Deferred<never>();
  #readyCount = 0;
  readonly #ready = new Deferred();

  constructor(prepared: Prepared, options: RunOptions) {
    this.#prepared = prepared;
    this.#pipeline = prepared.pipeline;
    this.#options = options;
    this.#plan = planOf(this.#pipeline, (i) => hasSequencer(this.#pipeline, i));
    this.#sequencers = this.#pipeline.steps.map((s) =>
      registry.transforms.get(s.type)!.sequencer?.(s.config, s.id),
    );
    this.#waiting = this.#plan.groups.map(() => new Map());
    this.#nextDecide = this.#plan.groups.map(() => 0);
    this.#failed.promise.catch(() => {});
  }

  #fail(err: unknown): void {
    if (this.#failure !== undefined) return;
    this.#failure = err;
    this.#failed.reject(err);
  }

  #count(name: string, n: number): void {
    this.#counters.set(name, (this.#counters.get(name) ?? 0) + n);
  }

  async execute(): Promise<RunResult> {
    const { signal } = this.#options;
    const onAbort = (): void =>
      this.#fail(new SluiceError('SLUICE_ERR_INTERRUPTED', 'interrupted; no output was written'));
    signal?.addEventListener('abort', onAbort, { once: true });
    const rss = { peak: process.memoryUsage.rss() };
    const sampler = setInterval(() => (rss.peak = Math.max(rss.peak, process.memoryUsage.rss())), 50);
    try {
      if (signal?.aborted) onAbort();
      // The source first: a missing input must not leave empty outputs behind.
      const reader = await this.#race(
        registry.sources.get(this.#pipeline.source.type)!.open(this.#pipeline.source, this.#options.input, {
          chunkBytes: this.#options.chunkBytes ?? DEFAULT_CHUNK_BYTES,
        }),
      );
      try {
        await this.#race(this.#openSinks());
        await this.#race(
          this.#startProcessors(
            this.#options.workers ?? defaultWorkers(reader.totalBytes, reader.compressed ?? false),
          ),
        );
        await this.#race(this.#readAll(reader));
        await this.#race(this.#finishSequencers());
        await this.#race(this.#writing);
        for (const w of this.#writers.values()) await this.#race(w.commit());
        await this.#race(reader.acknowledge?.() ?? Promise.resolve());
      } finally {
        await reader.close();
      }
      const counters = Object.fromEntries([...this.#counters].sort(([a], [b]) => a.localeCompare(b)));
      if (this.#pipeline.summary) await writeSummary(this.#pipeline.summary, counters, this.#options.outDir);
      rss.peak = Math.max(rss.peak, process.memoryUsage.rss(), process.resourceUsage().maxRSS * 1024);
      return {
        counters,
        elapsedMs: performance.now() - this.#started,
        bytesRead: reader.bytesRead,
        workers: this.#inline ? 0 : this.#channels.length,
        peakRssBytes: rss.peak,
        sinks: this.#pipeline.sinks.map((s) => ({
          id: s.id,
          input: s.input,
          target:
            registry.sinks
              .get(s.type)!
              .describe?.(s.config, { outDir: this.#options.outDir, sinkId: s.id }) ?? s.type,
        })),
      };
    } catch (err) {
      this.#fail(err);
      await Promise.allSettled([...this.#writers.values()].map((w) => w.abort()));
      throw this.#failure;
    } finally {
      clearInterval(sampler);
      signal?.removeEventListener('abort', onAbort);
      await Promise.allSettled(this.#channels.map((c) => c.terminate()));
    }
  }

  /** Awaits `p`, but gives up as soon as the run fails anywhere. */
  #race<T>(p: Promise<T>): Promise<T> {
    return Promise.race([p, this.#failed.promise]);
  }

  async #openSinks(): Promise<void> {
    for (const sink of this.#pipeline.sinks) {
      const spec = registry.sinks.get(sink.type)!;
      const writer =
        this.#options.writerFor?.(sink) ??
        (await spec.open(sink.config, { outDir: this.#options.outDir, sinkId: sink.id }));
      this.#writers.set(sink.id, writer);
      let list = this.#mainEncoders.get(sink.input);
      if (!list) this.#mainEncoders.set(sink.input, (list = []));
      list.push({ sinkId: sink.id, encode: spec.encoder(sink.config) });
    }
  }

  async #startProcessors(requested: number): Promise<void> {
    const onMessage = (channel: Channel) => (m: FromProcessor) => this.#onMessage(channel, m);
    const onError = (e: SluiceError): void => this.#fail(e);
    if (requested <= 0) {
      const holder: { c?: Channel } = {};
      holder.c = inlineChannel((m) => this.#onMessage(holder.c!, m));
      this.#channels = [holder.c];
      this.#inline = true;
    } else {
      for (let i = 0; i < requested; i++) {
        const holder: { c?: Channel } = {};
        holder.c = threadChannel((m) => onMessage(holder.c!)(m), onError);
        this.#channels.push(holder.c);
      }
    }
    // Workers started early for a run that turned out to need fewer.
    void stopUnusedWorkers();
    const { pipeline, bundles, tables } = this.#prepared;
    for (const c of this.#channels) c.post({ t: 'init', pipeline, bundles, tables });
    await this.#ready.promise;
  }

  #onMessage(channel: Channel, m: FromProcessor): void {
    try {
      switch (m.t) {
        case 'ready':
          if (++this.#readyCount === this.#channels.length) this.#ready.resolve();
          return;
        case 'failed':
          this.#fail(deserializeError(m.error));
          return;
        case 'payload':
          this.#waiting[m.group]!.set(m.seq, m);
          this.#decide(m.group);
          return;
        case 'done':
          channel.inFlight--;
          this.#owner.delete(m.seq);
          this.#done.set(m.seq, m);
          this.#writeReady();
          return;
        case 'reply':
          this.#onReply(m.id, m.reply);
          return;
      }
    } catch (err) {
      this.#fail(err);
    }
  }

  async #readAll(reader: SourceReader): Promise<void> {
    const perWorker = this.#options.inFlightPerWorker ?? 4;
    const limit = Math.max(2, perWorker * this.#channels.length);
    const progress = this.#options.onProgress;
    let lastProgress = 0;
    for await (const chunk of reader.chunks()) {
      while (this.#dispatched - this.#written >= limit) {
        this.#slotFreed = new Deferred();
        await this.#race(this.#slotFreed.promise);
      }
      if (this.#failure !== undefined) throw this.#failure;
      this.#dispatch(chunk);
      if (progress) {
        const now = performance.now();
        if (now - lastProgress > 100) {
          lastProgress = now;
          progress({
            bytesRead: reader.bytesRead,
            totalBytes: reader.totalBytes,
            records: this.#counters.get('input.records') ?? 0,
            elapsedMs: now - this.#started,
          });
        }
      }
    }
    if (this.#written < this.#dispatched) {
      this.#allWritten = new Deferred();
      await this.#race(this.#allWritten.promise);
    }
    progress?.({
      bytesRead: reader.bytesRead,
      totalBytes: reader.totalBytes,
      records: this.#counters.get('input.records') ?? 0,
      elapsedMs: performance.now() - this.#started,
    });
  }

  #dispatch(chunk: Chunk): void {
    let channel = this.#channels[0]!;
    for (const c of this.#channels) if (c.inFlight < channel.inFlight) channel = c;
    const seq = this.#dispatched++;
    channel.inFlight++;
    this.#owner.set(seq, channel);
    const transfer: ArrayBuffer[] = [];
    const { buffer } = chunk.bytes;
    if (buffer instanceof ArrayBuffer && (chunk.owned || buffer.byteLength === chunk.bytes.byteLength))
      transfer.push(buffer);
    channel.post({ t: 'chunk', seq, chunk }, transfer);
  }

  /** Decides every batch of `group` that is next in input order. */
  #decide(group: number): void {
    const waiting = this.#waiting[group]!;
    const g = this.#plan.groups[group]!;
    for (;;) {
      const seq = this.#nextDecide[group]!;
      const m = waiting.get(seq);
      if (!m) return;
      waiting.delete(seq);
      this.#nextDecide[group] = seq + 1;
      let firstLine = 0;
      let firstIndex = 0;
      if (group === 0) {
        firstLine = this.#nextLine;
        firstIndex = this.#nextIndex;
        this.#nextLine += m.lineCount;
        this.#nextIndex += m.recordCount;
      }
      const verdicts = g.ordered.length > 0 ? new Uint16Array(m.count) : null;
      const infos = g.ordered.map((stepIndex, slot) =>
        this.#sequencers[stepIndex]!.decide(m.payloads[slot], verdicts!, slot),
      );
      this.#owner
        .get(seq)!
        .post(
          { t: 'verdict', seq, group, firstLine, firstIndex, verdicts, infos },
          verdicts ? [verdicts.buffer as ArrayBuffer] : [],
        );
      for (const stepIndex of g.ordered) {
        const message = this.#sequencers[stepIndex]!.pollBroadcast?.();
        if (message !== undefined) this.#broadcast(stepIndex, message);
      }
    }
  }

  #broadcast(step: number, message: unknown): void {
    const id = this.#gatherId++;
    this.#gathers.set(id, { step, message, replies: [], remaining: this.#channels.length });
    for (const c of this.#channels) c.post({ t: 'command', id, step, message });
  }

  #onReply(id: number, reply: unknown): void {
    const g = this.#gathers.get(id)!;
    g.replies.push(reply);
    if (--g.remaining > 0) return;
    this.#gathers.delete(id);
    const records = this.#sequencers[g.step]!.gather?.(g.message, g.replies) ?? [];
    const stepConfig = this.#pipeline.steps[g.step]!;
    const output =
      registry.transforms.get(stepConfig.type)!.outputs?.(stepConfig.config, stepConfig.id)[0] ?? MAIN_OUTPUT;
    this.#emitFromMain(output, records);
    if (this.#gathers.size === 0) this.#gathersDone?.resolve();
  }

  #emitFromMain(output: string, records: Rec[]): void {
    this.#count(`output.${output}`, records.length);
    if (records.length === 0) return;
    const encoded = encodeFor(this.#mainEncoders.get(output) ?? [], records);
    this.#writing = this.#writing.then(() => this.#writeOutput(encoded)).catch((err) => this.#fail(err));
  }

  async #writeOutput(encoded: EncodedOutput): Promise<void> {
    for (const [sinkId, text] of Object.entries(encoded.bySink))
      await this.#writers.get(sinkId)!.write(text, encoded.count);
  }

  #writeReady(): void {
    for (;;) {
      const m = this.#done.get(this.#nextWrite);
      if (!m) return;
      this.#done.delete(this.#nextWrite);
      this.#nextWrite++;
      for (const [name, n] of Object.entries(m.counters)) this.#count(name, n);
      this.#writing = this.#writing
        .then(async () => {
          for (const out of Object.values(m.outputs)) await this.#writeOutput(out);
          this.#written++;
          this.#slotFreed?.resolve();
          if (this.#written === this.#dispatched) this.#allWritten?.resolve();
        })
        .catch((err) => this.#fail(err));
    }
  }

  async #finishSequencers(): Promise<void> {
    this.#pipeline.steps.forEach((_, i) => {
      const message = this.#sequencers[i]?.finish?.();
      if (message !== undefined) this.#broadcast(i, message);
    });
    if (this.#gathers.size > 0) {
      this.#gathersDone = new Deferred();
      await this.#gathersDone.promise;
    }
  }
}
