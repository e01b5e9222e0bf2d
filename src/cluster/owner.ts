/**
 * The owner of one pipeline in the cluster runtime (docs/architecture.md): the one instance that
 * applies the pipeline to its stream, in stream order, and writes the results to PostgreSQL.
 *
 * Every instance runs one `PipelineOwner` per pipeline; at most one of them owns it at a time:
 * 1. Claim: a session-level advisory lock on a connection of its own, then `epoch + 1` in
 *    `sluice_pipelines`. Every later commit updates the pipeline's row only if the epoch is still
 *    its own, so an owner that lost its lock (connection dropped, instance paused) cannot write
 *    after another took over.
 * 2. Restore the checkpoint (state after stream sequence `seq`), and read the pipeline's subject
 *    from `seq + 1` with an ordered consumer. Messages up to the committed `position` are processed
 *    again with their outputs discarded (they are in PostgreSQL already): the state is then exactly
 *    what it was after the last commit.
 * 3. Batches of messages after the position are processed and committed in one transaction each:
 *    dead letters, window rows, rows of sinks written in the owner's transaction (postgres sinks,
 *    their `inStoreTransaction` capability), records for other sinks (outbox), the new
 *    position, and every `checkpoint.interval` the state. A committed checkpoint lets the stream
 *    drop the messages it covers.
 * 4. Any failure (PostgreSQL or NATS unreachable, the epoch taken over) drops the in-memory state
 *    and starts again at 1: state is only ever rebuilt from what was committed, so a failure at any
 *    point leaves nothing half-done and counts nothing twice.
 */
import { join } from 'node:path';
import { deserialize, serialize } from 'node:v8';
import type { JetStreamClient, JetStreamManager, JsMsg } from '@nats-io/jetstream';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { Logger } from 'pino';
import type { Sql, TransactionSql } from 'postgres';
import { DEAD_OUTPUT, type ComponentConfig, type ResolvedSink } from '../core/config.ts';
import { stringify } from '../core/encode.ts';
import { registry } from '../core/registry.ts';
import { StreamPipeline, type ChunkResult, type StreamSnapshot } from '../core/stream.ts';
import type { InStoreTransaction, Rec, WindowedOutput } from '../core/types.ts';
import { purgeBefore } from '../helpers/jetstream.ts';
import { openPg } from '../helpers/postgres.ts';
import { bodyChunk, inflate, jsonBounds } from '../sources/http/index.ts';
import { SinkDelivery, type OutboxStore, type SinkProgress } from '../runtime/delivery.ts';
import { ingestAnswer, startMs, windowedOutputs, windowKey, type PipelineSpec } from '../runtime/pipeline.ts';
import { countChunk, type Metrics } from '../service/metrics.ts';
import { requestMeta, TAP_LEASE_MS, tapSubjects, type RequestMeta } from './log.ts';

export interface OwnerContext {
  pgUrl: string;
  /** For `sluice tap`: watchers' announcements in, tapped records out (core NATS, not stored). */
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  stream: string;
  instance: string;
  log: Logger;
  metrics: Metrics;
  /** Messages per transaction at most. */
  batch: number;
  claimIntervalMs: number;
  checkpointIntervalMs: number;
  /** How long a processed Idempotency-Key is remembered (`idempotency.retention`). */
  idempotencyRetentionMs: number;
  maxBodyBytes: number;
  /** Whether this instance is below its share of pipelines (and so should take one more). */
  belowShare(): boolean;
  /** Where file sinks write: `<outputsDir>/<tenant>/<pipeline>/`. */
  outputsDir: string;
}

/** Claims a pipeline beyond its share once the pipeline was found without owner this many times. */
const ORPHAN_TRIES = 3;

export type OwnerStatus = 'waiting' | 'owner' | 'retrying' | 'stopped';

/**
 * Any constant unique to sluice: the key of the lock under which sink tables are created, with the
 * schema they are created in as the lock's second key (see #lockKey).
 */
export const SINK_TABLES_LOCK = 0x51_71_ce_02;
/** A failed delivery is tried again after this long. */
const DELIVERY_RETRY_MS = 1000;
/** A batch is committed when it is full or this long after its first message. */
const FLUSH_MS = 50;
/** Messages the consumer buffers ahead of processing. */
const READ_AHEAD = 1024;
/**
 * Messages whose idempotency keys are looked up in one query, among those already read. With one
 * query per keyed message, one instance processed 21% fewer events/s with keys than without; with
 * up to 64 per query, 8% fewer (bench:cluster --idempotency-keys, docs/benchmarks.md).
 */
const LOOKUP_AHEAD = 64;
const WAITING = Symbol('waiting');
/** The owner's loop lets the event loop turn at least this often (ms) while it has messages. */
const YIELD_MS = 10;
/** Resolves after pending I/O callbacks: a message the consumer already holds arrives before. */
const nextTurn = (): Promise<typeof WAITING> =>
  new Promise((resolve) => setImmediate(() => resolve(WAITING)));

class LostOwnership extends Error {}

/** Results of the messages since the last commit. */
class Pending {
  messages = 0;
  lastSeq = 0;
  readonly dead: { ms: string; reason: string; requestId: string | null; letter: string }[] = [];
  /** Window rows by (output, start, key): a later row of the same window replaces an earlier one. */
  readonly windows = new Map<
    string,
    [output: string, start: string, key: string, row: string, closed: string]
  >();
  /** Rows of sinks written in the owner's transaction, by sink id. */
  readonly sinkRows = new Map<string, unknown[]>();
  readonly outbox = new Map<string, string>();
  readonly replayed: number[] = [];
  /** Requests with an Idempotency-Key, by key: their stream sequence, answer and arrival. */
  readonly requests = new Map<string, { seq: number; answer: string; ms: number }>();
}

/** What a request dropped as a retry produces: nothing. */
const NOTHING: ChunkResult = { records: 0, counters: {}, outputs: new Map() };

export class PipelineOwner {
  readonly key: string;
  readonly subject: string;
  #status: OwnerStatus = 'waiting';
  #stopping = false;
  /** Handing the pipeline to another instance (this one has more than its share). */
  #releasing = false;
  /** Times the pipeline was found without owner while this instance had its share. */
  #orphanSeen = 0;
  #wake: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  /** The live consumer's messages, to stop them when the owner stops. */
  #messages: { stop(): void } | undefined;
  #position = 0;
  /** The epoch this instance owns the pipeline at, while it does. */
  #ownedEpoch: number | undefined;
  readonly windowed: WindowedOutput[];
  /** Sinks written in the owner's transaction (their `inStoreTransaction` hooks), by sink id. */
  readonly #inStore = new Map<string, InStoreTransaction<ComponentConfig>>();

  constructor(
    private readonly ctx: OwnerContext,
    readonly spec: PipelineSpec,
    subject: string,
  ) {
    this.key = `${spec.tenant}/${spec.name}`;
    this.subject = subject;
    this.windowed = windowedOutputs(spec.prepared.pipeline);
    this.#tap = tapSubjects(ctx.stream, spec.tenant, spec.name);
    // Every instance listens; only the owner has records to send.
    this.#tapControl = ctx.nc.subscribe(this.#tap.control, {
      callback: (err, msg) => {
        if (err) return;
        const step = (msg.json() as { step?: unknown }).step;
        if (typeof step === 'string') this.#tapLeases.set(step, Date.now() + TAP_LEASE_MS);
      },
    });
    for (const s of spec.prepared.pipeline.sinks) {
      const hooks = registry.sinks.get(s.type)?.capabilities?.inStoreTransaction;
      if (hooks) this.#inStore.set(s.id, hooks);
    }
  }

  get status(): OwnerStatus {
    return this.#status;
  }

  /** The stream sequence the committed results reach, while this instance owns the pipeline. */
  get position(): number {
    return this.#position;
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  /** Commits what is processed, checkpoints and lets go of the pipeline. */
  async stop(): Promise<void> {
    this.#tapControl.unsubscribe();
    this.#stopping = true;
    this.#messages?.stop();
    this.#wake?.();
    await this.#loop;
    this.#status = 'stopped';
  }

  /** Failures since the last commit: the first of an outage is logged, and retries back off. */
  #failures = 0;

  /** Commits, checkpoints and lets go of the pipeline, for another instance to take. */
  release(): void {
    if (this.#status !== 'owner') return;
    this.#releasing = true;
    this.#messages?.stop();
  }

  get #leaving(): boolean {
    return this.#stopping || this.#releasing;
  }

  async #run(): Promise<void> {
    while (!this.#stopping) {
      const sql = openPg(this.ctx.pgUrl, { max: 1 });
      try {
        const claim = await this.#claim(sql);
        if (claim) {
          this.#status = 'owner';
          this.ctx.log.info({ pipeline: this.key, epoch: claim.epoch }, 'owning the pipeline');
          await this.#own(sql, claim.epoch, claim.position);
        }
      } catch (err) {
        const failures = ++this.#failures;
        this.#status = 'retrying';
        const lost = err instanceof LostOwnership;
        // One line per outage, not one per retry.
        if (lost || failures === 1)
          this.ctx.log.warn(
            { pipeline: this.key, err: (err as Error).message },
            lost
              ? 'another instance took the pipeline over; stopped processing it'
              : 'pipeline processing stopped; its state will be rebuilt from PostgreSQL and the stream',
          );
      } finally {
        // After a failure the consumer would go on reading into its buffer: stop it.
        this.#messages?.stop();
        this.#messages = undefined;
        this.#position = 0;
        this.#ownedEpoch = undefined;
        // Only an owner reports how far behind it is.
        this.ctx.metrics.ownerPending.remove({ tenant: this.spec.tenant, pipeline: this.spec.name });
        this.#forgetWatermarks();
        await sql.end({ timeout: 1 }).catch(() => {});
      }
      if (this.#stopping) break;
      if (this.#releasing)
        this.ctx.log.info({ pipeline: this.key }, "pipeline handed over (more than this instance's share)");
      this.#releasing = false;
      if (this.#status === 'owner') this.#status = 'waiting';
      const failures = this.#failures;
      await this.#sleep(
        failures > 0 ? Math.min(250 * failures, this.ctx.claimIntervalMs) : this.ctx.claimIntervalMs,
      );
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  /** Takes the pipeline if nobody holds it: its lock, then a new epoch. */
  async #claim(sql: Sql): Promise<{ epoch: number; position: number } | undefined> {
    const [lock] = await sql<{ ok: boolean }[]>`SELECT pg_try_advisory_lock(${this.#lockKey(sql)}) AS ok`;
    if (!lock?.ok) {
      this.#orphanSeen = 0;
      return undefined;
    }
    // Free, but this instance has its share: leave it to one that has less, unless nobody took it.
    if (!this.ctx.belowShare() && ++this.#orphanSeen < ORPHAN_TRIES) {
      await sql`SELECT pg_advisory_unlock(${this.#lockKey(sql)})`;
      return undefined;
    }
    this.#orphanSeen = 0;
    const [row] = await sql<{ epoch: string; position: string }[]>`
      INSERT INTO sluice_pipelines (pipeline, epoch, owner) VALUES (${this.key}, 1, ${this.ctx.instance})
      ON CONFLICT (pipeline) DO UPDATE
        SET epoch = sluice_pipelines.epoch + 1, owner = EXCLUDED.owner, updated_at = now()
      RETURNING epoch, position`;
    return { epoch: Number(row!.epoch), position: Number(row!.position) };
  }

  async #own(sql: Sql, epoch: number, position: number): Promise<void> {
    const { ctx, spec } = this;
    const pipeline = await StreamPipeline.create(spec.prepared);
    const [cp] = await sql<{ seq: string; state: Buffer }[]>`
      SELECT seq, state FROM sluice_checkpoints WHERE pipeline = ${this.key}`;
    let checkpointSeq = 0;
    if (cp) {
      pipeline.restore(deserialize(cp.state) as StreamSnapshot);
      checkpointSeq = Number(cp.seq);
    }
    const sinks = spec.prepared.pipeline.sinks;
    // Owners of pipelines whose sinks share a table may start together: one creates it at a time.
    await sql.begin(async (tx) => {
      await tx`SELECT pg_advisory_xact_lock(${SINK_TABLES_LOCK}, hashtext(coalesce(current_schema(), '')))`;
      for (const s of sinks) await this.#inStore.get(s.id)?.createTable(tx, s.config);
    });
    this.#position = position;
    let lastCheckpointAt = Date.now();
    let replayed = 0;
    /** The stream sequence the in-memory state reflects. */
    let processed = checkpointSeq;

    const consumer = await ctx.js.consumers.get(ctx.stream, {
      filter_subjects: this.subject,
      opt_start_seq: checkpointSeq + 1,
      deliver_policy: 'by_start_sequence' as never,
    });
    const messages = await consumer.consume({ max_messages: READ_AHEAD, expires: 5000 });
    this.#messages = messages;
    // Asked to stop while the consumer was being made: stop it now, or nothing ever would.
    if (this.#leaving) messages.stop();
    const it = messages[Symbol.asyncIterator]();
    let pending = new Pending();
    /**
     * Idempotency keys looked up in sluice_requests since the last commit: the first sequence of
     * each, or null. Only this owner writes there, so they hold until its next commit.
     */
    const known = new Map<string, number | null>();
    const labels = { tenant: spec.tenant, pipeline: spec.name };
    // Each read is awaited below, unless a failure ends the loop first: then nobody else will.
    const read = (): ReturnType<typeof it.next> => {
      const p = it.next();
      p.catch(() => {});
      return p;
    };
    let next = read();
    let flushAt: Promise<'flush'> | undefined;
    // Sinks outside PostgreSQL are fed from the outbox, one delivery at a time, beside processing.
    const cursors = await sql<{ sink: string; seq: string; position: string | null }[]>`
      SELECT sink, seq, position FROM sluice_sink_cursors WHERE pipeline = ${this.key}`;
    const delivery = new SinkDelivery({
      sinks: this.#outboxSinks,
      progress: new Map(
        cursors.map((c): [string, SinkProgress] => [
          c.sink,
          { seq: Number(c.seq), position: c.position === null ? undefined : Number(c.position) },
        ]),
      ),
      store: this.#outboxStore(sql, epoch),
      outDir: join(ctx.outputsDir, spec.tenant, spec.name),
      metrics: ctx.metrics,
      labels: { tenant: spec.tenant, pipeline: spec.name },
      stop: () => this.#stopping,
      onFailures: (failures) => {
        for (const { sink, err } of failures)
          ctx.log.error(
            { pipeline: this.key, sink, err: (err as Error).message },
            'sink delivery failed; will retry',
          );
        // Retried even if no new records come to trigger it, while this ownership lasts: after
        // it ended (the epoch was taken over, or PostgreSQL failed) the next owner delivers.
        if (!failures.some((f) => f.err instanceof LostOwnership))
          setTimeout(
            () => !this.#leaving && this.#ownedEpoch === epoch && deliver(),
            DELIVERY_RETRY_MS,
          ).unref();
      },
    });
    const deliver = (): void => void delivery.deliver();
    this.#ownedEpoch = epoch;
    if (this.#outboxSinks.length > 0) deliver();
    const commit = async (caughtUp: boolean): Promise<void> => {
      const checkpoint = Date.now() - lastCheckpointAt >= ctx.checkpointIntervalMs || this.#leaving;
      const batch = pending;
      pending = new Pending();
      known.clear();
      flushAt = undefined;
      await this.#commit(sql, epoch, batch, pipeline, { checkpoint, preview: caughtUp || checkpoint });
      this.#position = batch.lastSeq;
      if (batch.outbox.size > 0) deliver();
      if (checkpoint) {
        lastCheckpointAt = Date.now();
        // The stream keeps what the checkpoint does not cover; a failed purge only costs space.
        await purgeBefore(ctx.jsm, ctx.stream, this.subject, batch.lastSeq + 1).catch((err: Error) =>
          ctx.log.warn({ pipeline: this.key, err: err.message }, 'stream purge failed'),
        );
      }
    };

    // Messages already read from the consumer, so the keys of several are looked up at once.
    const ahead: JsMsg[] = [];
    let ended = false;
    const gather = async (): Promise<void> => {
      while (ahead.length < LOOKUP_AHEAD && !ended) {
        const r = await Promise.race([next, nextTurn()]);
        if (r === WAITING) return;
        if (r.done) ended = true;
        else {
          ahead.push(r.value);
          next = read();
        }
      }
    };

    let lastTurn = performance.now();
    for (;;) {
      // The consumer hands over buffered messages (up to READ_AHEAD) without a turn of the event
      // loop, and processing is synchronous: without this, the instance's HTTP server neither
      // accepted nor read anything until the batch's commit (1–2 s), so requests on new
      // connections were published long after later ones (measured; docs/benchmarks.md).
      if (performance.now() - lastTurn > YIELD_MS) {
        await nextTurn();
        lastTurn = performance.now();
      }
      let m: JsMsg;
      if (ahead.length > 0) m = ahead.shift()!;
      else {
        if (ended) break;
        const r = flushAt ? await Promise.race([next, flushAt]) : await next;
        if (r === 'flush') {
          await commit(true);
          continue;
        }
        if (r.done) break;
        next = read();
        m = r.value;
      }
      const meta = requestMeta(m.headers, Math.floor(m.info.timestampNanos / 1e6));
      const key = this.#idempotencyKey(meta.msgId);
      if (key !== undefined && !pending.requests.has(key) && !known.has(key)) {
        await gather();
        await this.#lookUp(
          sql,
          [key, ...ahead.flatMap((a) => this.#idempotencyKey(a.headers?.get('Nats-Msg-Id')) ?? [])],
          known,
        );
      }
      const first = key === undefined ? undefined : (pending.requests.get(key)?.seq ?? known.get(key));
      const retry = first != null && first < m.seq;
      if (retry && m.seq > this.#position)
        ctx.log.info(
          { pipeline: this.key, seq: m.seq, idempotencyKey: key, requestId: meta.requestId },
          'request dropped: a request with its Idempotency-Key was processed before',
        );
      const result = retry ? NOTHING : await this.#process(pipeline, m, meta);
      processed = m.seq;
      ctx.metrics.ownerPending.set(labels, m.info.pending);
      if (m.seq <= this.#position) {
        replayed++;
        continue;
      }
      if (result.taps) this.#publishTaps(result.taps);
      if (replayed > 0) {
        ctx.log.info(
          { pipeline: this.key, checkpointSeq, replayed },
          'pipeline state restored from the stream',
        );
        replayed = 0;
      }
      this.#add(pending, m.seq, result, retry ? { ...meta, replayIds: [] } : meta);
      if (key !== undefined && !retry)
        pending.requests.set(key, {
          seq: m.seq,
          answer: JSON.stringify(ingestAnswer(result)),
          ms: meta.receivedMs,
        });
      countChunk(ctx.metrics, labels, result, this.windowed);
      if (pending.messages >= ctx.batch) await commit(false);
      else flushAt ??= new Promise((resolve) => setTimeout(() => resolve('flush'), FLUSH_MS));
      if (this.#leaving) break;
    }
    // Stopped (or the consumer ended): what was processed is committed, with a checkpoint, unless
    // the state is still being rebuilt (behind the committed position: a checkpoint would lie).
    if (pending.messages > 0 || (this.#leaving && processed >= this.#position)) {
      if (pending.messages === 0) pending.lastSeq = this.#position;
      await commit(true);
    }
    // Handing over, what the last commit put in the outbox goes out before the lock does (a run
    // under way may have read the outbox before it); stopping, the next owner delivers it.
    await delivery.deliver();
    await delivery.idle();
    await sql`SELECT pg_advisory_unlock(${this.#lockKey(sql)})`;
  }

  /**
   * The pipeline's advisory lock. Advisory locks belong to the whole database, while a cluster's
   * tables are in one schema: the key names the schema too, or two clusters sharing a database
   * (a schema each) would keep each other from owning pipelines of the same name. The suite's
   * cluster tests do that when they run side by side: one test's pipelines then went unowned for
   * a minute (2026-12-07).
   */
  #lockKey(sql: Sql): ReturnType<Sql> {
    return sql`hashtextextended('sluice:' || coalesce(current_schema(), '') || ':' || ${this.key}, 0)`;
  }

  /** Sinks fed from the outbox: every sink but those written in the owner's transaction. */
  get #outboxSinks(): ResolvedSink[] {
    return this.spec.prepared.pipeline.sinks.filter((s) => !this.#inStore.has(s.id));
  }

  /**
   * The outbox and sink cursors in PostgreSQL, as delivery sees them (src/runtime/delivery.ts): a
   * sink's progress is saved only while this owner's epoch is current. Paths are under
   * `outputsDir` of the instance that owns the pipeline (shared storage keeps one file).
   */
  #outboxStore(sql: Sql, epoch: number): OutboxStore {
    return {
      rowsAfter: async (output, seq, limit) => {
        const rows = await sql<{ seq: string; records: string }[]>`
          SELECT seq, records FROM sluice_outbox
          WHERE pipeline = ${this.key} AND output = ${output} AND seq > ${seq}
          ORDER BY seq LIMIT ${limit}`;
        return rows.map((r) => ({ seq: Number(r.seq), records: r.records }));
      },
      advance: async ({ sink, output, seq, position, trimTo }) => {
        await sql.begin(async (tx) => {
          const saved = await tx`
            INSERT INTO sluice_sink_cursors (pipeline, sink, seq, position)
            SELECT ${this.key}, ${sink}, ${seq}, ${position === null ? null : String(position)}::bigint
            WHERE EXISTS (SELECT 1 FROM sluice_pipelines WHERE pipeline = ${this.key} AND epoch = ${epoch})
            ON CONFLICT (pipeline, sink) DO UPDATE SET seq = EXCLUDED.seq, position = EXCLUDED.position
            RETURNING 1`;
          if (saved.length === 0)
            throw new LostOwnership(`epoch ${epoch} of ${this.key} is no longer current`);
          if (trimTo !== undefined)
            await tx`DELETE FROM sluice_outbox WHERE pipeline = ${this.key} AND output = ${output} AND seq <= ${trimTo}`;
        });
      },
    };
  }

  /** The request's Idempotency-Key, from the `Nats-Msg-Id` the HTTP tier published it with. */
  #idempotencyKey(msgId: string | null | undefined): string | undefined {
    const prefix = `${this.key}/`;
    return msgId?.startsWith(prefix) ? msgId.slice(prefix.length) : undefined;
  }

  /**
   * The first stream sequence of each key's request, if one was processed: a request whose key came
   * earlier in the stream is a retry. JetStream drops a retry within its duplicate window; this
   * catches the later ones (for `idempotency.retention`), and decides the same when the state is
   * rebuilt, since a key's row keeps the sequence of its first request.
   */
  async #lookUp(sql: Sql, keys: string[], known: Map<string, number | null>): Promise<void> {
    const rows = await sql<{ key: string; seq: string }[]>`
      SELECT key, seq FROM sluice_requests WHERE pipeline = ${this.key} AND key = ANY(${keys}::text[])`;
    for (const k of keys) known.set(k, null);
    for (const r of rows) known.set(r.key, Number(r.seq));
  }

  readonly #tap: ReturnType<typeof tapSubjects>;
  readonly #tapControl: Subscription;
  /** Watched steps, until when (a watcher announces itself every second). */
  readonly #tapLeases = new Map<string, number>();
  /** The steps the current StreamPipeline copies, as `a\u0000b`. */
  readonly #tapping = new WeakMap<StreamPipeline, string>();

  /** Tells the pipeline which steps are watched now, when that changed. */
  #applyTaps(pipeline: StreamPipeline): void {
    if (this.#tapLeases.size === 0 && !this.#tapping.has(pipeline)) return;
    const now = Date.now();
    for (const [step, until] of this.#tapLeases) if (until < now) this.#tapLeases.delete(step);
    const steps = [...this.#tapLeases.keys()].sort();
    const key = steps.join('\u0000');
    if ((this.#tapping.get(pipeline) ?? '') === key) return;
    this.#tapping.set(pipeline, key);
    pipeline.tap(steps);
  }

  #publishTaps(taps: Record<string, Rec[]>): void {
    for (const [step, records] of Object.entries(taps))
      this.ctx.nc.publish(this.#tap.records(step), JSON.stringify(records));
  }

  async #process(pipeline: StreamPipeline, m: JsMsg, meta: RequestMeta): Promise<ChunkResult> {
    this.#applyTaps(pipeline);
    const raw = Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength);
    let body: Buffer;
    let bounds: Int32Array | null;
    try {
      body = meta.gzip ? await inflate(raw, this.ctx.maxBodyBytes) : raw;
      bounds = meta.bounds ?? (meta.format === 'json' ? await jsonBounds(body) : null);
    } catch (err) {
      // The HTTP tier checked the body before publishing it; a message that still fails is one
      // published by something else: its records are unreadable, so they become one dead letter.
      return {
        records: 1,
        counters: {},
        outputs: new Map([
          [
            DEAD_OUTPUT,
            [
              {
                index: 0,
                reason: 'parse',
                detail: (err as Error).message,
                raw: raw.toString('utf8', 0, 4096),
              },
            ],
          ],
        ]),
      };
    }
    // Each instance is an ingest path with a watermark of its own (docs/architecture.md).
    return pipeline.process(bodyChunk(body, bounds), { path: meta.instance, receivedMs: meta.receivedMs });
  }

  #add(pending: Pending, seq: number, result: ChunkResult, meta: RequestMeta): void {
    pending.messages++;
    pending.lastSeq = seq;
    pending.replayed.push(...meta.replayIds);
    const ms = String(meta.receivedMs);
    for (const letter of result.outputs.get(DEAD_OUTPUT) ?? [])
      pending.dead.push({
        ms,
        reason: letter.reason as string,
        requestId: meta.requestId,
        letter: stringify(letter),
      });
    this.#addWindows(pending, result.outputs, 'true');
    for (const sink of this.spec.prepared.pipeline.sinks) {
      const records = result.outputs.get(sink.input);
      if (!records || records.length === 0) continue;
      const inStore = this.#inStore.get(sink.id);
      if (inStore) {
        let rows = pending.sinkRows.get(sink.id);
        if (!rows) pending.sinkRows.set(sink.id, (rows = []));
        for (const r of records) rows.push(inStore.row(sink.config, r));
      } else {
        let text = pending.outbox.get(sink.input) ?? '';
        for (const r of records) text += stringify(r) + '\n';
        pending.outbox.set(sink.input, text);
      }
    }
  }

  #addWindows(pending: Pending, outputs: Map<string, Rec[]>, closed: 'true' | 'false'): void {
    for (const w of this.windowed) {
      for (const row of outputs.get(w.output) ?? []) {
        const start = String(startMs(row[w.startField]));
        const key = windowKey(row, w);
        pending.windows.set(`${w.output}\n${start}\n${key}`, [w.output, start, key, stringify(row), closed]);
      }
    }
  }

  /** One transaction: the epoch check and new position first, then everything the batch produced. */
  async #commit(
    sql: Sql,
    epoch: number,
    batch: Pending,
    pipeline: StreamPipeline,
    opts: { checkpoint: boolean; preview: boolean },
  ): Promise<void> {
    // Open windows, as they are now, so queries see them (replaced by their closed row later).
    if (opts.preview) this.#addWindows(batch, pipeline.preview(), 'false');
    const state = opts.checkpoint ? serialize(pipeline.snapshot()) : undefined;
    const sinks = this.spec.prepared.pipeline.sinks;
    const started = performance.now();
    await sql.begin(async (tx) => {
      const fenced = await tx`
        UPDATE sluice_pipelines SET position = ${batch.lastSeq}, updated_at = now()
        WHERE pipeline = ${this.key} AND epoch = ${epoch}
        RETURNING 1`;
      if (fenced.length === 0) throw new LostOwnership(`epoch ${epoch} of ${this.key} is no longer current`);
      await this.#writeDead(tx, batch);
      await this.#writeWindows(tx, batch);
      for (const [id, rows] of batch.sinkRows)
        await this.#inStore.get(id)!.write(tx, sinks.find((s) => s.id === id)!.config, rows);
      for (const [output, records] of batch.outbox)
        await tx`INSERT INTO sluice_outbox (pipeline, output, records) VALUES (${this.key}, ${output}, ${records})`;
      if (batch.requests.size > 0) {
        const r = [...batch.requests];
        await tx`
          INSERT INTO sluice_requests (pipeline, key, seq, answer, received_at)
          SELECT ${this.key}, u.key, u.seq::bigint, u.answer::jsonb,
                 timestamptz 'epoch' + u.ms::bigint * interval '1 millisecond'
          FROM unnest(${r.map(([k]) => k)}::text[], ${r.map(([, v]) => String(v.seq))}::text[],
                      ${r.map(([, v]) => v.answer)}::text[], ${r.map(([, v]) => String(v.ms))}::text[])
               AS u(key, seq, answer, ms)
          ON CONFLICT (pipeline, key) DO NOTHING`;
      }
      if (batch.replayed.length > 0)
        await tx`DELETE FROM sluice_dead_letters WHERE pipeline = ${this.key} AND id = ANY(${batch.replayed.map(String)}::bigint[])`;
      if (state) {
        await tx`
          INSERT INTO sluice_checkpoints (pipeline, seq, state, at) VALUES (${this.key}, ${batch.lastSeq}, ${state}, now())
          ON CONFLICT (pipeline) DO UPDATE SET seq = EXCLUDED.seq, state = EXCLUDED.state, at = now()`;
        // Keys are forgotten with a checkpoint, so a rebuild from it never meets a request whose
        // decision depended on a key forgotten since.
        await tx`
          DELETE FROM sluice_requests WHERE pipeline = ${this.key}
            AND received_at < now() - ${String(this.ctx.idempotencyRetentionMs)}::bigint * interval '1 millisecond'`;
      }
    });
    if (this.#failures > 0) {
      this.ctx.log.info({ pipeline: this.key, position: batch.lastSeq }, 'pipeline processing resumed');
      this.#failures = 0;
    }
    this.ctx.metrics.commits.observe((performance.now() - started) / 1000);
    this.ctx.metrics.commitRequests.inc(batch.messages);
    this.#reportWatermarks(pipeline);
  }

  #forgetWatermarks(): void {
    const { tenant, name } = this.spec;
    for (const [step, paths] of this.#reportedPaths) {
      this.ctx.metrics.watermark.remove({ tenant, pipeline: name, step });
      for (const path of paths) this.ctx.metrics.pathWatermark.remove({ tenant, pipeline: name, step, path });
    }
    this.#reportedPaths.clear();
  }

  /** Paths reported per window step, so that paths gone idle stop being shown. */
  readonly #reportedPaths = new Map<string, Set<string>>();

  /** Only the owner reports watermarks: the pipeline's and each active ingest path's. */
  #reportWatermarks(pipeline: StreamPipeline): void {
    const { tenant, name } = this.spec;
    const { watermark, pathWatermark } = this.ctx.metrics;
    for (const w of pipeline.watermarks()) {
      const labels = { tenant, pipeline: name, step: w.step };
      if (Number.isFinite(w.watermark)) watermark.set(labels, w.watermark / 1000);
      const reported = this.#reportedPaths.get(w.step) ?? new Set();
      for (const path of reported) if (!w.paths.has(path)) pathWatermark.remove({ ...labels, path });
      reported.clear();
      for (const [path, max] of w.paths)
        if (Number.isFinite(max)) {
          pathWatermark.set({ ...labels, path }, max / 1000);
          reported.add(path);
        }
      this.#reportedPaths.set(w.step, reported);
    }
  }

  async #writeDead(tx: TransactionSql, batch: Pending): Promise<void> {
    if (batch.dead.length === 0) return;
    const d = batch.dead;
    await tx`
      INSERT INTO sluice_dead_letters (pipeline, received_at, reason, request_id, letter)
      SELECT ${this.key}, timestamptz 'epoch' + u.ms::bigint * interval '1 millisecond', u.reason, u.rid, u.letter::jsonb
      FROM unnest(${d.map((x) => x.ms)}::text[], ${d.map((x) => x.reason)}::text[],
                  ${d.map((x) => x.requestId)}::text[], ${d.map((x) => x.letter)}::text[])
           WITH ORDINALITY AS u(ms, reason, rid, letter, n)
      ORDER BY u.n`;
  }

  async #writeWindows(tx: TransactionSql, batch: Pending): Promise<void> {
    if (batch.windows.size === 0) return;
    const rows = [...batch.windows.values()];
    const col = (i: number): string[] => rows.map((r) => r[i]!);
    await tx`
      INSERT INTO sluice_windows (pipeline, output, window_start, key, row, closed, updated_at)
      SELECT ${this.key}, u.output, timestamptz 'epoch' + u.start::bigint * interval '1 millisecond',
             u.key, u.row::jsonb, u.closed::boolean, now()
      FROM unnest(${col(0)}::text[], ${col(1)}::text[], ${col(2)}::text[], ${col(3)}::text[], ${col(4)}::text[])
           AS u(output, start, key, row, closed)
      ON CONFLICT (pipeline, output, window_start, key)
        DO UPDATE SET row = EXCLUDED.row, closed = EXCLUDED.closed, updated_at = now()`;
  }
}
