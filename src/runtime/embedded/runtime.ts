/**
 * The embedded runtime: every pipeline of every tenant, the SQLite store (through the writer
 * thread), checkpoints, recovery, delivery to sinks and reloads. It runs in the pipeline thread
 * (pipeline-thread.ts), never on the event loop that answers HTTP: at 3,500 single-event requests/s
 * the pipeline, the commit messages and the checkpoints' serialization kept that loop ~70% busy and
 * its p99 at 36–151 ms (docs/benchmarks.md).
 */
import Database from 'better-sqlite3';
import type { Logger } from 'pino';
import { prepare } from '../../core/engine.ts';
import type { Rec } from '../../core/types.ts';
import { SluiceError } from '../../errors.ts';
import type { DeadLetterQuery, IngestMeta, Page, ReplayFilter, WindowQuery } from '../../service/api.ts';
import { fingerprintOf } from '../../service/config.ts';
import type { Metrics } from '../../service/metrics.ts';
import type { PipelineSpec } from '../pipeline.ts';
import type { RuntimeConfig, RuntimeState, Shard, WireBody } from '../protocol.ts';
import { Committer } from './committer.ts';
import { PipelineRuntime, type RuntimeContext } from './pipeline.ts';
import { openDatabase } from './store.ts';

/** Log a checkpoint early when this much log has built up since the last one. */
const CHECKPOINT_LOG_BYTES = 64 * 1024 * 1024;

type Pipelines = Map<string, PipelineRuntime>;

export interface RuntimeEvents {
  state(state: RuntimeState): void;
  /** The state could not be rebuilt from the store: nothing more can be accepted. */
  fatal(err: unknown): void;
  /** Copies of records leaving tapped steps (`sluice tap`). */
  tapped?(pipeline: string, taps: Record<string, Rec[]>): void;
}

const NO_STEPS: readonly string[] = [];

export class EmbeddedRuntime {
  readonly log: Logger;
  readonly metrics: Metrics;
  #config: RuntimeConfig;
  #committer!: Committer;
  #db!: Database.Database;
  #ctx!: RuntimeContext;
  /** By `tenant/pipeline`. */
  #pipelines: Pipelines = new Map();
  #seq = 0;
  #timers: NodeJS.Timeout[] = [];
  #state: RuntimeState | 'stopped' = 'ready';
  #logBytes = new Map<string, number>();
  /** Tapped steps by pipeline; applied to whichever PipelineRuntime serves it (reloads replace them). */
  #tapped = new Map<string, readonly string[]>();

  private constructor(
    config: RuntimeConfig,
    log: Logger,
    metrics: Metrics,
    private readonly events: RuntimeEvents,
    private readonly shard: Shard,
  ) {
    this.#config = config;
    this.log = log;
    this.metrics = metrics;
  }

  static async start(
    config: RuntimeConfig,
    log: Logger,
    metrics: Metrics,
    events: RuntimeEvents,
    shard: Shard = { index: 0, count: 1 },
  ): Promise<EmbeddedRuntime> {
    const runtime = new EmbeddedRuntime(config, log, metrics, events, shard);
    await runtime.#start();
    return runtime;
  }

  async #start(): Promise<void> {
    const config = this.#config;
    try {
      this.#committer = await Committer.start(
        config.store.path,
        {
          onCommit: (ms, requests) => {
            this.metrics.commits.observe(ms / 1000);
            this.metrics.commitRequests.inc(requests);
          },
        },
        this.shard.index === 0,
        this.shard.turns,
      );
    } catch (err) {
      if (err instanceof SluiceError && err.code === 'SLUICE_ERR_STORE_LOCKED') throw err;
      throw new SluiceError(
        'SLUICE_ERR_SERVICE_START',
        `cannot open the store ${config.store.path}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    this.#committer.onFailure((err) => void this.#recoverAll(err));
    // Reads have a connection of their own, although the writer's is in this thread too: recovery
    // iterates the log across awaits (gzip bodies are inflated on the thread pool), and a commit on
    // the same connection meanwhile would fail with "This database connection is busy".
    this.#db = openDatabase(Database, config.store.path, true);
    const max = this.#db
      .prepare(
        'SELECT MAX(s) AS s FROM (SELECT MAX(seq) AS s FROM log UNION ALL SELECT MAX(seq) FROM checkpoints)',
      )
      .get() as { s: number | null };
    this.#seq = max.s ?? 0;
    this.#ctx = {
      committer: this.#committer,
      db: this.#db,
      metrics: this.metrics,
      log: this.log,
      outputsDir: config.outputsDir,
      nextSeq: () => {
        // The next position of this thread's residue (see Shard): one more with one thread.
        const { index, count } = this.shard;
        const next = this.#seq + 1;
        this.#seq = next + ((((index - next) % count) + count) % count);
        return this.#seq;
      },
      maxBodyBytes: config.limits.bodyBytes,
      broken: (runtime, err) =>
        void this.#recoverAll(
          new SluiceError('SLUICE_ERR_INTERNAL', `pipeline ${runtime.key} failed: ${String(err)}`, {
            cause: err,
          }),
        ),
      tapped: (pipeline, taps) => this.events.tapped?.(pipeline, taps),
    };
    try {
      this.#pipelines = await this.#open(config, undefined);
    } catch (err) {
      await this.#committer.close();
      this.#db.close();
      throw err;
    }
    this.#timers.push(
      setInterval(() => void this.checkpoint(), config.checkpointIntervalMs).unref(),
      setInterval(() => this.#deliverAll(), config.deliveryIntervalMs).unref(),
      setInterval(() => this.metrics.queueDepth.set(this.#committer.waiting), 1000).unref(),
    );
  }

  /** Prepares every pipeline (compiles modules, loads tables); nothing is installed yet. */
  async #open(config: RuntimeConfig, previous: Pipelines | undefined): Promise<Pipelines> {
    const pipelines: Pipelines = new Map();
    for (const t of config.tenants)
      for (const [name, pipeline] of t.pipelines) {
        const key = `${t.id}/${name}`;
        const fingerprint = fingerprintOf(pipeline);
        const old = previous?.get(key);
        if (old && old.spec.fingerprint === fingerprint) {
          pipelines.set(key, old);
          continue;
        }
        const spec: PipelineSpec = { tenant: t.id, name, prepared: await prepare(pipeline), fingerprint };
        const runtime = await PipelineRuntime.prepare(this.#ctx, spec);
        // A new pipeline (or the first start) continues from the store; a changed one, on reload,
        // takes over the running state at the moment of the swap.
        if (!old) await runtime.recover();
        pipelines.set(key, runtime);
      }
    return pipelines;
  }

  #pipeline(key: string): PipelineRuntime {
    const runtime = this.#pipelines.get(key);
    // A reload may have retired it after the HTTP thread routed the request.
    if (!runtime)
      throw new SluiceError('SLUICE_ERR_NOT_FOUND', `no pipeline ${JSON.stringify(key.split('/')[1])}`);
    return runtime;
  }

  #accepting(): void {
    if (this.#state === 'recovering')
      throw new SluiceError(
        'SLUICE_ERR_OVERLOADED',
        'the service is restoring pipeline state after a store error',
      );
    if (this.#state === 'stopped')
      throw new SluiceError('SLUICE_ERR_SHUTTING_DOWN', 'the service is shutting down');
  }

  /** Watches these steps of a pipeline for `sluice tap` ([] stops); unknown steps are refused. */
  tap(key: string, steps: string[]): void {
    const runtime = this.#pipeline(key);
    const known = new Set(runtime.spec.prepared.pipeline.steps.map((s) => s.id));
    const unknown = steps.find((s) => !known.has(s));
    if (unknown !== undefined)
      throw new SluiceError(
        'SLUICE_ERR_NOT_FOUND',
        `pipeline ${JSON.stringify(runtime.spec.name)} has no step ${JSON.stringify(unknown)}`,
      );
    if (steps.length === 0) this.#tapped.delete(key);
    else this.#tapped.set(key, [...steps]);
  }

  /** Processes a body; resolves with its answer once everything it produced is durable. */
  async ingest(key: string, wire: WireBody, meta: IngestMeta): Promise<object> {
    this.#accepting();
    const runtime = this.#pipeline(key);
    runtime.tap(this.#tapped.get(key) ?? NO_STEPS);
    const body = Buffer.from(wire.body.buffer, wire.body.byteOffset, wire.body.byteLength);
    const raw = wire.raw ? Buffer.from(wire.raw.buffer, wire.raw.byteOffset, wire.raw.byteLength) : body;
    const { answer, durable } = runtime.ingest({ raw, gzip: wire.gzip, body, bounds: wire.bounds }, meta);
    this.#noteLogged(runtime, raw.length);
    await durable;
    return answer;
  }

  /** Checkpoints early when much log built up. */
  #noteLogged(runtime: PipelineRuntime, bytes: number): void {
    const total = (this.#logBytes.get(runtime.key) ?? 0) + bytes;
    if (total < CHECKPOINT_LOG_BYTES) {
      this.#logBytes.set(runtime.key, total);
      return;
    }
    this.#logBytes.set(runtime.key, 0);
    void runtime.checkpoint().catch(() => {});
  }

  windows(key: string, q: WindowQuery): Page<[number, string]> {
    return this.#pipeline(key).windows(q);
  }

  deadLetters(key: string, q: DeadLetterQuery): Page<number> {
    return this.#pipeline(key).deadLetters(q);
  }

  async replay(
    key: string,
    filter: ReplayFilter,
    meta: IngestMeta,
  ): Promise<{ answer: object; skipped: { id: number; reason: string }[] }> {
    this.#accepting();
    const { answer, skipped, durable } = this.#pipeline(key).replay(filter, meta);
    await durable;
    return { answer, skipped };
  }

  /**
   * Checkpoints every pipeline and, in the first pipeline thread, applies the store's retention:
   * it deletes by age across all pipelines, so one thread doing it is enough.
   */
  async checkpoint(): Promise<void> {
    if (this.#state !== 'ready') return;
    const now = Date.now();
    const { retentionMs } = this.#config.store;
    const pending: Promise<void>[] = [];
    if (this.shard.index === 0)
      pending.push(
        this.#committer.commit((ops) => {
          ops.trimRequestsBefore = now - this.#config.idempotencyRetentionMs;
          if (retentionMs !== undefined) ops.trimStoreBefore = now - retentionMs;
        }),
      );
    for (const r of this.#pipelines.values()) {
      this.#logBytes.set(r.key, 0);
      pending.push(r.checkpoint());
    }
    try {
      await Promise.all(pending);
    } catch (err) {
      this.log.error({ err }, 'checkpoint failed');
    }
  }

  #deliverAll(): void {
    if (this.#state !== 'ready') return;
    for (const r of this.#pipelines.values()) void r.deliver();
  }

  /**
   * Swaps in a new config. Pipelines whose files did not change keep running untouched; changed
   * ones take over the running state in one synchronous step, so no request sees a half-swapped
   * runtime. Throws (and changes nothing) when the new pipelines cannot be prepared or cannot take
   * over the running state.
   */
  async reload(config: RuntimeConfig): Promise<{ replaced: string[]; retired: string[] }> {
    if (this.#state !== 'ready')
      throw new SluiceError('SLUICE_ERR_OVERLOADED', `the runtime is ${this.#state}; reload ignored`);
    const pipelines = await this.#open(config, this.#pipelines);
    const replaced: PipelineRuntime[] = [];
    const retired: PipelineRuntime[] = [];
    for (const [key, old] of this.#pipelines) {
      const now = pipelines.get(key);
      if (!now) retired.push(old);
      else if (now !== old) replaced.push(old);
    }
    await Promise.all([...replaced, ...retired].map((r) => r.close()));
    // From here to the swap nothing awaits: requests see the old pipelines or the new ones.
    try {
      for (const [key, runtime] of pipelines) {
        const old = this.#pipelines.get(key);
        if (old && old !== runtime) runtime.takeOver(old);
      }
    } catch (err) {
      for (const r of [...replaced, ...retired]) r.resume();
      throw err;
    }
    this.#config = config;
    this.#pipelines = pipelines;
    for (const r of pipelines.values()) if (r.dirty) void r.checkpoint().catch(() => {});
    for (const r of retired) void r.checkpoint().catch(() => {});
    return { replaced: replaced.map((r) => r.key), retired: retired.map((r) => r.key) };
  }

  /**
   * After a failed commit or a pipeline bug: every pipeline is rebuilt from what the store holds
   * (requests meanwhile get 503).
   */
  async #recoverAll(err: SluiceError): Promise<void> {
    if (this.#state !== 'ready') return;
    this.#state = 'recovering';
    this.events.state('recovering');
    this.log.error({ err: err.message, code: err.code }, 'rebuilding pipeline state from the store');
    try {
      for (const [key, old] of this.#pipelines) {
        await old.close();
        const runtime = await PipelineRuntime.prepare(this.#ctx, old.spec);
        await runtime.recover();
        this.#pipelines.set(key, runtime);
      }
      this.#state = 'ready';
      this.events.state('ready');
      this.log.info('pipeline state rebuilt from the store');
    } catch (e) {
      this.log.fatal({ err: e }, 'cannot rebuild pipeline state; stopping');
      this.events.fatal(e);
    }
  }

  /** Checkpoints every pipeline, delivers to sinks and closes the store. */
  async shutdown(): Promise<void> {
    if (this.#state === 'stopped') return;
    for (const t of this.#timers) clearInterval(t);
    if (this.#state === 'ready') await this.checkpoint();
    this.#state = 'stopped';
    for (const r of this.#pipelines.values()) await r.close();
    await this.#committer.close();
    this.#db.close();
  }
}
