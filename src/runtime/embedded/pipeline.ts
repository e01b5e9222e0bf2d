/**
 * One pipeline of one tenant inside `sluice serve`: its in-place pipeline, its share of the store,
 * checkpoints, recovery and delivery to its sinks.
 *
 * Exactly once, step by step:
 * 1. A request body is processed synchronously (ordered steps decide against the live state), and
 *    the body itself goes to the log, in the same group commit as the dead letters, closed windows
 *    and sink records it produced. The 202 waits for that commit.
 * 2. Every `checkpoint.interval`, the state (open windows, dedupe keys, watermark) is written with
 *    the log position it reflects, and the log up to there is deleted, in one transaction.
 * 3. On start, the checkpoint is restored and the log after it is processed again with its
 *    outputs discarded (they were committed with it). The state is then exactly what it was after
 *    the last acknowledged request; a request that was never acknowledged left nothing behind.
 */
import { serialize, deserialize } from 'node:v8';
import type Database from 'better-sqlite3';
import type { Logger } from 'pino';
import { DEAD_OUTPUT } from '../../core/config.ts';
import { stringify } from '../../core/encode.ts';
import { StreamPipeline, type ChunkResult, type StreamSnapshot } from '../../core/stream.ts';
import type { Rec, WindowedOutput } from '../../core/types.ts';
import { SluiceError } from '../../errors.ts';
import type { DeadLetterQuery, Page, ReplayFilter, WindowQuery } from '../../service/api.ts';
import { countChunk, type Metrics } from '../../service/metrics.ts';
import { bodyChunk, inflate } from '../../sources/http/index.ts';
import { SinkDelivery, type OutboxRow, type OutboxStore, type SinkProgress } from '../delivery.ts';
import {
  ingestAnswer,
  keyText,
  replayBody,
  startMs,
  windowedOutputs,
  windowKey,
  type IngestAnswer,
  type LoggedBody,
  type PipelineSpec,
  type Rejection,
} from '../pipeline.ts';
import type { Committer } from './committer.ts';
import type { CommitOps } from './store.ts';

export interface RuntimeContext {
  committer: Committer;
  db: Database.Database;
  metrics: Metrics;
  log: Logger;
  outputsDir: string;
  nextSeq(): number;
  /** Largest body a gzip log entry may inflate to. */
  maxBodyBytes: number;
  /** A pipeline's state can no longer be trusted: rebuild it from the store. */
  broken(runtime: PipelineRuntime, err: unknown): void;
  /** Copies of records leaving tapped steps, per step, after a body was processed (`sluice tap`). */
  tapped?(pipeline: string, taps: Record<string, Rec[]>): void;
}

const MAX_LIMIT = 10_000;

export class PipelineRuntime {
  readonly key: string;
  readonly spec: PipelineSpec;
  readonly windowed: WindowedOutput[];
  readonly #ctx: RuntimeContext;
  readonly #stream: StreamPipeline;
  readonly #delivery: SinkDelivery;
  readonly #sinkInputs: Set<string>;
  #lastSeq = 0;
  #checkpointSeq = 0;
  /** Prepared once: every request with an Idempotency-Key looks its key up. */
  #answerOf: Database.Statement | undefined;
  /** Idempotency keys of requests processed but not yet durable. */
  readonly #pendingKeys = new Map<string, { answer: IngestAnswer; durable: Promise<void> }>();
  #closed = false;

  private constructor(ctx: RuntimeContext, spec: PipelineSpec, stream: StreamPipeline) {
    this.#ctx = ctx;
    this.spec = spec;
    this.key = `${spec.tenant}/${spec.name}`;
    this.#stream = stream;
    const pipeline = spec.prepared.pipeline;
    this.windowed = windowedOutputs(pipeline);
    const cursors = ctx.db
      .prepare('SELECT sink, seq, position FROM sink_cursors WHERE pipeline = ?')
      .all(this.key) as { sink: string; seq: number; position: number | null }[];
    this.#delivery = new SinkDelivery({
      sinks: pipeline.sinks,
      progress: new Map(
        cursors.map((c): [string, SinkProgress] => [
          c.sink,
          { seq: c.seq, position: c.position ?? undefined },
        ]),
      ),
      store: this.#outboxStore(),
      outDir: `${ctx.outputsDir}/${spec.tenant}/${spec.name}`,
      metrics: ctx.metrics,
      labels: { tenant: spec.tenant, pipeline: spec.name },
      stop: () => this.#closed,
      onFailures: (failures) => {
        for (const { sink, err } of failures)
          ctx.log.error({ err, pipeline: this.key, sink }, 'sink delivery failed; will retry');
      },
    });
    this.#sinkInputs = this.#delivery.inputs;
  }

  /** Builds the pipeline with empty state; then either {@link recover} or {@link takeOver}. */
  static async prepare(ctx: RuntimeContext, spec: PipelineSpec): Promise<PipelineRuntime> {
    return new PipelineRuntime(ctx, spec, await StreamPipeline.create(spec.prepared));
  }

  /**
   * On reload: continues from the state of the runtime this one replaces (synchronous, so no
   * request falls between the two), and from its sinks' progress.
   */
  takeOver(previous: PipelineRuntime): void {
    try {
      this.#stream.restore(previous.#stream.snapshot());
    } catch (err) {
      throw new SluiceError(
        'SLUICE_ERR_CONFIG_INVALID',
        `pipeline ${this.key}: the new definition cannot take over the running state (${(err as Error).message})`,
        {
          hint: 'Keep the window and dedupe steps compatible, or deploy the change under a new pipeline name.',
        },
      );
    }
    this.#delivery.continueFrom(previous.#delivery);
    this.#lastSeq = previous.#lastSeq;
    // The log before this point would replay through the old definition: checkpoint at once.
    this.#checkpointSeq = -1;
  }

  /** On start: the checkpoint, then the log after it (see the file comment). */
  async recover(): Promise<void> {
    await this.#recover();
  }

  async #recover(): Promise<void> {
    const { db } = this.#ctx;
    const cp = db.prepare('SELECT seq, state FROM checkpoints WHERE pipeline = ?').get(this.key) as
      { seq: number; state: Buffer } | undefined;
    if (cp) {
      this.#stream.restore(deserialize(cp.state) as StreamSnapshot);
      this.#lastSeq = this.#checkpointSeq = cp.seq;
    }
    const rows = db
      .prepare('SELECT seq, gzip, body, bounds FROM log WHERE pipeline = ? AND seq > ? ORDER BY seq')
      .iterate(this.key, this.#checkpointSeq) as IterableIterator<{
      seq: number;
      gzip: number;
      body: Buffer;
      bounds: Buffer | null;
    }>;
    let replayed = 0;
    for (const row of rows) {
      const body = row.gzip ? await inflate(row.body, this.#ctx.maxBodyBytes) : row.body;
      const bounds = row.bounds
        ? new Int32Array(
            row.bounds.buffer.slice(row.bounds.byteOffset, row.bounds.byteOffset + row.bounds.byteLength),
          )
        : null;
      this.#stream.process(bodyChunk(body, bounds));
      this.#lastSeq = row.seq;
      replayed++;
    }
    if (cp || replayed > 0)
      this.#ctx.log.info(
        { pipeline: this.key, checkpointSeq: cp?.seq ?? null, replayed },
        'pipeline state restored from the store',
      );
  }

  #tapping: readonly string[] = [];

  /** Steps whose records `sluice tap` watches, from the next body on (the same array: no change). */
  tap(steps: readonly string[]): void {
    if (steps === this.#tapping) return;
    this.#tapping = steps;
    this.#stream.tap([...steps]);
  }

  /**
   * Processes a body and adds everything it produced to the open group commit. Synchronous up to
   * the returned promise, so requests are processed (and logged) in the order they arrive.
   */
  ingest(
    body: LoggedBody,
    meta: { requestId: string; receivedMs: number; idempotencyKey?: string },
    extra?: (ops: CommitOps) => void,
  ): { answer: IngestAnswer; durable: Promise<void> } {
    let result: ChunkResult;
    try {
      result = this.#stream.process(bodyChunk(body.body, body.bounds));
    } catch (err) {
      // Records that fail are dead letters; a throw here is a bug, and the state may be half
      // updated: nothing of this body was logged, so rebuilding from the store is exact.
      this.#ctx.broken(this, err);
      throw new SluiceError('SLUICE_ERR_INTERNAL', `pipeline ${this.key} failed: ${(err as Error).message}`, {
        cause: err,
      });
    }
    if (result.taps) this.#ctx.tapped?.(this.key, result.taps);
    const seq = this.#ctx.nextSeq();
    this.#lastSeq = seq;
    const answer = ingestAnswer(result);
    const durable = this.#ctx.committer.commit((ops) => {
      ops.log.push({
        seq,
        pipeline: this.key,
        receivedMs: meta.receivedMs,
        gzip: body.gzip,
        body: body.raw,
        bounds: body.bounds
          ? new Uint8Array(body.bounds.buffer, body.bounds.byteOffset, body.bounds.byteLength)
          : null,
      });
      this.#addResults(ops, result, meta);
      if (meta.idempotencyKey !== undefined)
        ops.requests.push({
          pipeline: this.key,
          key: meta.idempotencyKey,
          answer: JSON.stringify(answer),
          receivedMs: meta.receivedMs,
        });
      extra?.(ops);
    }, body.raw.length);
    if (meta.idempotencyKey !== undefined) this.#remember(meta.idempotencyKey, answer, durable);
    countChunk(
      this.#ctx.metrics,
      { tenant: this.spec.tenant, pipeline: this.spec.name },
      result,
      this.windowed,
    );
    return { answer, durable };
  }

  /**
   * The answer already given to a request with this idempotency key, if any: from a request still
   * waiting for its commit, or from the store.
   */
  answered(key: string): { answer: IngestAnswer; durable: Promise<void> } | undefined {
    const pending = this.#pendingKeys.get(key);
    if (pending) return pending;
    this.#answerOf ??= this.#ctx.db.prepare('SELECT answer FROM requests WHERE pipeline = ? AND key = ?');
    const row = this.#answerOf.get(this.key, key) as { answer: string } | undefined;
    return row ? { answer: JSON.parse(row.answer) as IngestAnswer, durable: Promise.resolve() } : undefined;
  }

  #remember(key: string, answer: IngestAnswer, durable: Promise<void>): void {
    this.#pendingKeys.set(key, { answer, durable });
    // Once committed (or failed), the store is the only memory of the key.
    void durable.then(
      () => this.#pendingKeys.delete(key),
      () => this.#pendingKeys.delete(key),
    );
  }

  /** Dead letters, closed windows and sink records of one processed chunk, into a commit. */
  #addResults(
    ops: CommitOps,
    result: ChunkResult,
    meta: { requestId: string | null; receivedMs: number },
  ): void {
    const now = Date.now();
    for (const letter of result.outputs.get(DEAD_OUTPUT) ?? []) {
      ops.dead.push({
        pipeline: this.key,
        receivedMs: meta.receivedMs,
        reason: letter.reason as string,
        requestId: meta.requestId,
        letter: stringify(letter),
      });
    }
    for (const w of this.windowed) {
      for (const row of result.outputs.get(w.output) ?? []) {
        ops.windows.push({
          pipeline: this.key,
          output: w.output,
          startMs: startMs(row[w.startField]),
          key: windowKey(row, w),
          row: stringify(row),
          closedMs: now,
        });
      }
    }
    for (const input of this.#sinkInputs) {
      const records = result.outputs.get(input);
      if (!records || records.length === 0) continue;
      // Joined, not `+=`: a string built by `+=` is a tree of pieces, and flattening it when the
      // commit went to a writer thread made postMessage ~5x slower (100 vs 21 µs for 24 rows).
      const lines = records.map(stringify);
      lines.push('');
      ops.outbox.push({
        pipeline: this.key,
        output: input,
        receivedMs: meta.receivedMs,
        records: lines.join('\n'),
      });
    }
  }

  /** Whether the state changed since the last checkpoint. */
  get dirty(): boolean {
    return this.#lastSeq !== this.#checkpointSeq;
  }

  /** Adds a checkpoint of the current state to the open group commit. */
  checkpoint(): Promise<void> {
    if (!this.dirty) return Promise.resolve();
    const seq = this.#lastSeq;
    const state = serialize(this.#stream.snapshot());
    this.#checkpointSeq = seq;
    return this.#ctx.committer.commit((ops) => {
      ops.checkpoints.push({ pipeline: this.key, seq, state, atMs: Date.now() });
      ops.trimLog.push({ pipeline: this.key, seq });
    }, state.length);
  }

  /** Re-runs chosen dead letters through the current pipeline; replayed ones leave the store. */
  replay(
    filter: ReplayFilter,
    meta: { requestId: string; receivedMs: number },
  ): {
    answer: {
      replayed: number;
      records: number;
      accepted: number;
      duplicates: number;
      rejected: (Rejection & { id: number })[];
      rejected_omitted?: IngestAnswer['rejected_omitted'];
    };
    skipped: { id: number; reason: string }[];
    durable: Promise<void>;
  } {
    const { ids, body, bounds, skipped } = replayBody(this.#selectDead(filter), filter.maxBytes);
    const empty = { replayed: 0, records: 0, accepted: 0, duplicates: 0, rejected: [] };
    if (ids.length === 0) return { answer: empty, skipped, durable: Promise.resolve() };
    const { answer, durable } = this.ingest({ raw: body, gzip: false, body, bounds }, meta, (ops) =>
      ops.deleteDead.push({ pipeline: this.key, ids }),
    );
    const rejected = answer.rejected.map((r) => ({ ...r, id: ids[r.index]! }));
    return {
      answer: {
        replayed: ids.length,
        records: answer.records,
        accepted: answer.accepted,
        duplicates: answer.duplicates,
        rejected,
        ...(answer.rejected_omitted ? { rejected_omitted: answer.rejected_omitted } : {}),
      },
      skipped,
      durable,
    };
  }

  #selectDead(filter: ReplayFilter): {
    id: number;
    letter: string;
  }[] {
    const { where, args } = deadLetterFilter(this.key, filter);
    return this.#ctx.db
      .prepare(`SELECT id, letter FROM dead_letters WHERE ${where} ORDER BY id LIMIT ?`)
      .all(...args, Math.min(filter.limit ?? 1000, MAX_LIMIT)) as { id: number; letter: string }[];
  }

  /** Dead letters, oldest first, after `cursor` (an id). */
  deadLetters(q: DeadLetterQuery): Page<number> {
    const { where, args } = deadLetterFilter(this.key, q);
    const rows = this.#ctx.db
      .prepare(
        `SELECT id, received_ms, request_id, letter FROM dead_letters WHERE ${where} ORDER BY id LIMIT ?`,
      )
      .all(...args, q.limit + 1) as {
      id: number;
      received_ms: number;
      request_id: string | null;
      letter: string;
    }[];
    const more = rows.length > q.limit;
    const items = rows.slice(0, q.limit).map((r) => ({
      id: r.id,
      received_at: new Date(r.received_ms).toISOString(),
      request_id: r.request_id,
      ...(JSON.parse(r.letter) as Rec),
    }));
    return { items, next: more ? rows[q.limit - 1]!.id : undefined };
  }

  /** Window rows, closed ones from the store and open ones from the live state, by start then key. */
  windows(q: WindowQuery): Page<[number, string]> {
    const w = q.output;
    const where = ['pipeline = ?', 'output = ?'];
    const args: unknown[] = [this.key, w.output];
    if (q.fromMs !== undefined) {
      where.push('start_ms >= ?');
      args.push(q.fromMs);
    }
    if (q.toMs !== undefined) {
      where.push('start_ms < ?');
      args.push(q.toMs);
    }
    if (q.after) {
      where.push('(start_ms, key) > (?, ?)');
      args.push(...q.after);
    }
    for (const [field, value] of Object.entries(q.keys)) {
      // Field names were checked against the window's group_by; the path is a bound parameter.
      // As text the way keyText writes it: JSON literals for true, false and null.
      where.push(
        "(CASE json_type(row, ?) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' WHEN 'null' THEN 'null' ELSE CAST(json_extract(row, ?) AS TEXT) END) = ?",
      );
      args.push(`$."${field}"`, `$."${field}"`, value);
    }
    args.push(q.limit + 1);
    const closed = this.#ctx.db
      .prepare(
        `SELECT start_ms, key, row FROM windows WHERE ${where.join(' AND ')} ORDER BY start_ms, key LIMIT ?`,
      )
      .all(...args)
      .map((r) => {
        const { start_ms, key, row } = r as { start_ms: number; key: string; row: string };
        return { start: start_ms, key, row: { ...(JSON.parse(row) as Rec), closed: true } };
      });
    const open = (this.#stream.preview().get(w.output) ?? [])
      .map((row) => ({
        start: startMs(row[w.startField]),
        key: windowKey(row, w),
        row: { ...row, closed: false } as Rec,
      }))
      .filter(
        (r) =>
          (q.fromMs === undefined || r.start >= q.fromMs) &&
          (q.toMs === undefined || r.start < q.toMs) &&
          (!q.after || r.start > q.after[0] || (r.start === q.after[0] && r.key > q.after[1])) &&
          Object.entries(q.keys).every(([f, v]) => keyText(r.row[f]) === v),
      );
    const all = [...closed, ...open].sort(
      (a, b) => a.start - b.start || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0),
    );
    const page = all.slice(0, q.limit);
    const last = page[page.length - 1];
    return {
      items: page.map((r) => r.row),
      next: all.length > q.limit && last ? [last.start, last.key] : undefined,
    };
  }

  /**
   * Delivers committed sink records, in order, to each sink; each sink's progress is recorded in
   * the store after its batch is durable in the sink. A file sink is cut back to the recorded size
   * on the next delivery, so a crash between the two writes nothing twice.
   */
  deliver(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return this.#delivery.deliver();
  }

  /** The store's outbox and sink cursors, as delivery sees them (src/runtime/delivery.ts). */
  #outboxStore(): OutboxStore {
    const rowsAfter = this.#ctx.db.prepare(
      'SELECT seq, received_ms AS receivedMs, records FROM outbox WHERE pipeline = ? AND output = ? AND seq > ? ORDER BY seq LIMIT ?',
    );
    return {
      rowsAfter: (output, seq, limit) =>
        Promise.resolve(rowsAfter.all(this.key, output, seq, limit) as OutboxRow[]),
      advance: ({ sink, output, seq, position, trimTo }) =>
        this.#ctx.committer.commit((ops) => {
          ops.cursors.push({ pipeline: this.key, sink, seq, position });
          if (trimTo !== undefined) ops.trimOutbox.push({ pipeline: this.key, output, seq: trimTo });
        }),
    };
  }

  /** Delivers what is committed, then stops delivering (before a swap or a shutdown). */
  async close(): Promise<void> {
    await this.deliver();
    this.#closed = true;
    // A run the timer queued meanwhile sees #closed and ends at once; none may outlive the swap.
    await this.#delivery.idle();
  }

  /** Undoes {@link close} when a reload is abandoned. */
  resume(): void {
    this.#closed = false;
  }
}

/** The condition (and its arguments) picking a pipeline's dead letters, for listing and replay. */
function deadLetterFilter(
  key: string,
  f: { after?: number; ids?: number[]; reason?: string; fromMs?: number; toMs?: number },
): { where: string; args: unknown[] } {
  const where = ['pipeline = ?'];
  const args: unknown[] = [key];
  if (f.after !== undefined) {
    where.push('id > ?');
    args.push(f.after);
  }
  if (f.ids) {
    where.push(`id IN (${f.ids.map(() => '?').join(', ')})`);
    args.push(...f.ids);
  }
  if (f.reason !== undefined) {
    where.push('reason = ?');
    args.push(f.reason);
  }
  if (f.fromMs !== undefined) {
    where.push('received_ms >= ?');
    args.push(f.fromMs);
  }
  if (f.toMs !== undefined) {
    where.push('received_ms < ?');
    args.push(f.toMs);
  }
  return { where: where.join(' AND '), args };
}
