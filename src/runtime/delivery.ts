/**
 * Delivery of committed sink records, one routine for both runtimes (docs/architecture.md). A
 * sink reads its output's outbox rows after its cursor, in order, and its progress (the cursor,
 * and for a file sink the size it reached) is saved only after the batch is durable in the sink,
 * with the rows every sink of that output has taken dropped in the same write. A file sink is cut
 * back to the saved size before it writes again, so a crash between the two writes nothing twice.
 *
 * What differs between the runtimes is only where the outbox and the cursors live: the embedded
 * store's SQLite file, or the cluster's PostgreSQL, where a save also checks that the instance
 * still owns the pipeline. That is the {@link OutboxStore} each one passes in.
 */
import type { ResolvedSink } from '../core/config.ts';
import { registry } from '../core/registry.ts';
import type { Encoder, Rec, SinkWriter } from '../core/types.ts';
import type { Metrics } from '../service/metrics.ts';

/** Outbox rows per sink write. */
export const DELIVERY_BATCH = 200;

export interface OutboxRow {
  seq: number;
  /** NDJSON. */
  records: string;
  /** When the request that produced the records was received, where the store keeps it. */
  receivedMs?: number;
}

/** A sink's progress: the last outbox row it took, and where its target ended then. */
export interface SinkProgress {
  seq: number;
  /** A file sink's size; undefined until the first delivery recorded it. */
  position: number | undefined;
}

/** What delivery needs of a runtime's store, for one pipeline. */
export interface OutboxStore {
  /** The output's rows after `seq`, oldest first, at most `limit`. */
  rowsAfter(output: string, seq: number, limit: number): Promise<OutboxRow[]>;
  /**
   * Saves a sink's progress durably and, with `trimTo`, drops the output's rows up to it, in one
   * write. Throws when this runtime may no longer write the pipeline (the cluster's fencing).
   */
  advance(a: {
    sink: string;
    output: string;
    seq: number;
    position: number | null;
    trimTo?: number;
  }): Promise<void>;
}

export interface SinkFailure {
  sink: string;
  err: unknown;
}

/**
 * The delivery of one pipeline's sinks. One run at a time: {@link deliver} starts one, or, while one
 * is under way, queues one more after it, because the run under way may have read the outbox before
 * the commit that asked for delivery. A graceful stop relies on that: before it, the embedded
 * runtime's stop could hand back a run that had read the outbox before the last commit, and leave
 * that commit's records undelivered until the next start.
 */
export class SinkDelivery {
  readonly #sinks: ResolvedSink[];
  readonly #progress: Map<string, SinkProgress>;
  readonly #store: OutboxStore;
  readonly #outDir: string;
  readonly #metrics: Metrics;
  readonly #labels: { tenant: string; pipeline: string };
  readonly #stop: () => boolean;
  readonly #onFailures: (failures: SinkFailure[]) => void;
  /** The run under way, and the one queued after it. */
  #current: Promise<void> | undefined;
  #next: Promise<void> | undefined;

  constructor(o: {
    sinks: ResolvedSink[];
    /** Saved progress by sink id; a sink missing here starts at the outbox's beginning. */
    progress: Map<string, SinkProgress>;
    store: OutboxStore;
    /** Where relative sink paths (a file sink's) are resolved. */
    outDir: string;
    metrics: Metrics;
    labels: { tenant: string; pipeline: string };
    /** Checked between batches: a run ends early once it says so. */
    stop: () => boolean;
    /** The sinks that failed in a run (each already counted in `sluice_sink_errors_total`). */
    onFailures: (failures: SinkFailure[]) => void;
  }) {
    this.#sinks = o.sinks;
    this.#progress = new Map(
      o.sinks.map((s) => [s.id, { ...(o.progress.get(s.id) ?? { seq: 0, position: undefined }) }]),
    );
    this.#store = o.store;
    this.#outDir = o.outDir;
    this.#metrics = o.metrics;
    this.#labels = o.labels;
    this.#stop = o.stop;
    this.#onFailures = o.onFailures;
  }

  /** The outputs sinks read: the only ones a runtime needs to put in the outbox. */
  get inputs(): Set<string> {
    return new Set(this.#sinks.map((s) => s.input));
  }

  /**
   * On reload: sinks that read the same output under the same id as before go on from the
   * progress of the delivery this one replaces.
   */
  continueFrom(previous: SinkDelivery): void {
    for (const s of this.#sinks) {
      const old = previous.#sinks.find((p) => p.id === s.id && p.input === s.input);
      if (old) this.#progress.set(s.id, { ...previous.#progress.get(old.id)! });
    }
  }

  /**
   * Resolves once a run that started after this call has ended: everything committed before the
   * call was delivered, unless a sink failed or `stop()` ended the run.
   */
  deliver(): Promise<void> {
    if (!this.#current) {
      this.#current = this.#run().finally(() => (this.#current = undefined));
      return this.#current;
    }
    this.#next ??= this.#current.then(() => {
      this.#next = undefined;
      return this.deliver();
    });
    return this.#next;
  }

  /** Resolves once no run is under way or queued. */
  async idle(): Promise<void> {
    while (this.#current || this.#next) await (this.#next ?? this.#current);
  }

  /**
   * Delivers to each sink until it has caught up with the outbox, or `stop()` says so. A sink that
   * fails is counted in `sluice_sink_errors_total` and left for the next run; the others still
   * have their turn.
   */
  async #run(): Promise<void> {
    const failures: SinkFailure[] = [];
    for (const sink of this.#sinks) {
      if (this.#stop()) break;
      try {
        while (!this.#stop() && (await this.#batch(sink)) === DELIVERY_BATCH);
      } catch (err) {
        this.#metrics.sinkErrors.inc({ ...this.#labels, sink: sink.id });
        failures.push({ sink: sink.id, err });
      }
    }
    if (failures.length > 0) this.#onFailures(failures);
  }

  /** One batch of outbox rows to one sink; returns how many rows it took. */
  async #batch(sink: ResolvedSink): Promise<number> {
    const progress = this.#progress.get(sink.id)!;
    const rows = await this.#store.rowsAfter(sink.input, progress.seq, DELIVERY_BATCH);
    if (rows.length === 0) return 0;
    const spec = registry.sinks.get(sink.type)!;
    const writer = await spec.open(sink.config, {
      outDir: this.#outDir,
      sinkId: sink.id,
      append: { truncateTo: progress.position },
    });
    if (progress.position === undefined) {
      // Never delivered before: record where the target starts, so that a crash during this
      // first delivery is cut back too.
      const start = writer.position?.();
      if (start !== undefined) {
        try {
          await this.#store.advance({
            sink: sink.id,
            output: sink.input,
            seq: progress.seq,
            position: start,
          });
        } catch (err) {
          await writer.abort().catch(() => {});
          throw err;
        }
        progress.position = start;
      }
    }
    const count = await writeOutboxRows(writer, spec.encoder(sink.config), rows);
    const seq = rows[rows.length - 1]!.seq;
    const position = writer.position?.();
    // Rows every sink of this output has taken are done (a sink never delivered keeps them all).
    const trimTo = Math.min(
      ...this.#sinks
        .filter((s) => s.input === sink.input)
        .map((s) => (s.id === sink.id ? seq : this.#progress.get(s.id)!.seq)),
    );
    await this.#store.advance({ sink: sink.id, output: sink.input, seq, position: position ?? null, trimTo });
    progress.seq = seq;
    progress.position = position;
    const labels = { ...this.#labels, sink: sink.id };
    this.#metrics.sinkRecords.inc(labels, count);
    const now = Date.now();
    for (const row of rows)
      if (row.receivedMs !== undefined)
        this.#metrics.ingestToSink.observe(labels, (now - row.receivedMs) / 1000);
    return rows.length;
  }
}

/**
 * Writes outbox rows (NDJSON records) to an opened sink writer and commits it; aborts it and
 * rethrows on failure. Returns the number of records written.
 */
export async function writeOutboxRows(
  writer: SinkWriter,
  encode: Encoder,
  rows: { records: string }[],
): Promise<number> {
  let count = 0;
  try {
    for (const row of rows) {
      const records = row.records
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Rec);
      count += records.length;
      await writer.write(encode(records), records.length);
    }
    await writer.commit();
  } catch (err) {
    await writer.abort().catch(() => {});
    throw err;
  }
  return count;
}
