/**
 * The interfaces between the engine and its components. The core knows these and nothing about any
 * particular source, transform or sink; components register by name in ../registry.ts.
 *
 * Threads: a source's reader, a sequencer and a sink's writer run on the main thread; a source's
 * decoder, every step and a sink's encoder run in worker threads (or inline for `sluice test`).
 * Everything that crosses between them is batched.
 */
import type { JSONSchemaType } from 'ajv';
import type { TableSet } from './tables.ts';

/** A record: a plain JSON object. */
export type Rec = Record<string, unknown>;

/**
 * Records flowing through a worker. `pos[i]` is the index, within the current chunk, of the input
 * record that `records[i]` came from, so dead letters can name the input line and its raw text.
 */
export interface Batch {
  records: Rec[];
  pos: number[];
}

export interface DeadLetterExtra {
  /** JSON pointer to the offending field, e.g. `/user/email`. */
  pointer?: string;
  /** The JSON Schema keyword that failed, for validate steps. */
  keyword?: string;
}

/** What a step may do besides passing records on. One instance per step per batch run. */
export interface StepContext {
  /** Send the input record at `pos` to the dead-letter output. */
  dead(pos: number, reason: string, detail: string, extra?: DeadLetterExtra): void;
  /** Copy a record to a named output (sinks subscribe to outputs by name). */
  emit(output: string, record: Rec, pos: number): void;
  /** Add to a run counter (reported in the summary and, later, as metrics). */
  count(name: string, n?: number): void;
}

/**
 * The counter of records added by fan-out: a step that turns one record into n adds n - 1. The
 * records a chunk became are its input records plus this; every one of them ends up accepted,
 * dropped as a duplicate or dead, so counts in records always add up.
 */
export const FANOUT_COUNTER = 'fanout';

/** A stateless step: runs on any worker, on any batch, in any order. */
export interface MapStep {
  readonly kind: 'map';
  run(input: Batch, ctx: StepContext): Batch;
}

/** What a sequencer may decide for a record besides letting it pass. */
export interface Outcome {
  readonly kind: 'drop' | 'dead';
  /** Counter suffix for drops (`dropped.<reason>`), dead-letter reason for dead. */
  readonly reason: string;
}

/**
 * A step whose decision depends on input order (dedupe, the watermark of a window). Its worker side
 * extracts a compact payload per batch; the main thread's {@link Sequencer} decides in input order;
 * the worker then applies the step to the records that passed.
 */
export interface OrderedStep {
  readonly kind: 'ordered';
  readonly outcomes: readonly Outcome[];
  /** Sequencing information for every record of `input`, in order. Must be structured-cloneable. */
  extract(input: Batch): unknown;
  /** Dead-letter detail for a record the sequencer stopped with outcome `outcome`. */
  describe(outcome: number, record: Rec, info: unknown): string;
  /** Observes the records that passed (they go on unchanged). */
  apply?(input: Batch, ctx: StepContext, decision: Decision): void;
  /** Handles a message the sequencer broadcast to every worker; the reply goes back to it. */
  command?(message: unknown): unknown;
  /**
   * State that must survive a restart (e.g. open windows), structured-cloneable. Only a service
   * checkpoints; it runs one processor, so this is the whole state of the step.
   */
  snapshot?(): unknown;
  /** Replaces the state with one that {@link snapshot} returned. */
  restore?(state: unknown): void;
}

/** What an ordered step's `apply` gets besides the records that passed. */
export interface Decision {
  /** What the sequencer returned for the batch. */
  info: unknown;
  /** What this step's `extract` returned for the batch, so nothing is computed twice. */
  payload: unknown;
  /** `indices[i]` is where `input.records[i]` was in the batch given to `extract`. */
  indices: Int32Array;
}

export type Step = MapStep | OrderedStep;

/**
 * The main-thread half of an ordered step. Sees every batch's payload exactly once, in input order.
 * Verdicts are written as `(slot << 8) | (outcomeIndex + 1)`; 0 means pass, and records that an
 * earlier step of the same segment stopped already carry a non-zero verdict and must be skipped.
 */
/**
 * Where a chunk came from, when a runtime has several ingest paths into one ordered stream (the
 * cluster: the instance that took the request). Sequencers that keep a watermark keep one per path
 * (docs/architecture.md, "Watermarks per ingest path").
 */
export interface Origin {
  /** The ingest path; '' for a chunk of unknown origin. */
  readonly path: string;
  /** When the path received the chunk (epoch ms, stored with it, so a replay sees the same). */
  readonly receivedMs: number;
}

export interface Sequencer {
  /** `origin` is given by runtimes with several ingest paths, per chunk; undefined otherwise. */
  decide(payload: unknown, verdicts: Uint16Array, slot: number, origin?: Origin): unknown;
  /** A message for every worker after the batch just decided (e.g. "close these windows"). */
  pollBroadcast?(): unknown;
  /** Turns all workers' replies to a broadcast into records for the step's output. */
  gather?(message: unknown, replies: unknown[]): Rec[];
  /** The broadcast that ends the input (e.g. "close every window"). */
  finish?(): unknown;
  /**
   * A broadcast whose gathered records show what is still open (e.g. windows not yet closed),
   * without changing any state; a service answers queries with it.
   */
  preview?(): unknown;
  /** The watermark and each active ingest path's largest event time (epoch ms), for metrics. */
  watermarks?(): { watermark: number; paths: Map<string, number> };
  /** Ordering state that must survive a restart (e.g. seen keys, the watermark). */
  snapshot?(): unknown;
  restore?(state: unknown): void;
}

export const verdictOf = (slot: number, outcome: number): number => (slot << 8) | (outcome + 1);

/** Reference to a function exported by a user TypeScript module. */
export interface ModuleRef {
  /** Absolute path of the module. */
  path: string;
  /** Export name; `default` for the default export. */
  export: string;
}

/** What a step factory gets to build a step, in a worker. */
export interface StepEnv {
  readonly stepId: string;
  readonly tables: TableSet;
  /** A function exported by a module the step declared in `modules()`. */
  fn(ref: ModuleRef): (...args: never[]) => unknown;
}

export interface TransformSpec<C> {
  readonly type: string;
  readonly description: string;
  /** JSON Schema of the step's options (without `type` and `id`). */
  readonly schema: JSONSchemaType<C> | Record<string, unknown>;
  /** Modules the step needs loaded before `create` runs. */
  modules?(config: C): ModuleRef[];
  /** Tables the step reads (checked against `tables:` at config time). */
  tables?(config: C): string[];
  /** Named outputs the step emits to, for sinks to subscribe. */
  outputs?(config: C, stepId: string): string[];
  /** For a step whose output rows are per time window and key: how to read them (for queries). */
  windowed?(config: C, stepId: string): WindowedOutput;
  create(config: C, env: StepEnv): Step;
  /** Main-thread half, for ordered steps. */
  sequencer?(config: C, stepId: string): Sequencer;
}

export interface WindowedOutput {
  output: string;
  /** Row field holding the window start (ISO 8601 text or epoch milliseconds). */
  startField: string;
  /** Row fields that, with the start, identify a row. */
  keys: string[];
}

/** A unit of input handed to a worker: whole records only. */
export interface Chunk {
  bytes: Uint8Array;
  /** For formats whose records are not lines: [start, end) byte offsets of each record. */
  bounds?: Int32Array;
  /**
   * Set when the chunk stands for one record longer than the source's limit: `bytes` holds only
   * its beginning and this is its full length. It becomes a `too_large` dead letter.
   */
  oversize?: number;
  /**
   * `bytes`' whole ArrayBuffer belongs to this chunk, also when it is larger than `bytes`: it moves
   * to a worker without a copy. (Without this, only a buffer exactly as long as `bytes` does; any
   * other may be shared, like Node's pooled small buffers.)
   */
  owned?: boolean;
}

export interface DecodedChunk {
  batch: Batch;
  /** Input records in the chunk, including the ones that failed to parse. */
  recordCount: number;
  /** Newlines in the chunk, so the sequencer can number lines across chunks. */
  lineCount: number;
  /** 0-based line of input record `pos`, relative to the chunk's first line. */
  lineOf(pos: number): number;
  /** The raw text of input record `pos`. */
  raw(pos: number): string;
}

export interface SourceDecoder {
  decode(chunk: Chunk, ctx: StepContext): DecodedChunk;
}

export interface SourceReader {
  /** Bytes of the underlying file consumed so far (compressed bytes for gzip). */
  readonly bytesRead: number;
  /** Size of the underlying file, when known. */
  readonly totalBytes: number | undefined;
  /** The file is compressed, so `totalBytes` understates the input (gzip). */
  readonly compressed?: boolean;
  chunks(): AsyncIterable<Chunk>;
  /**
   * Every sink has committed what the run made of the input: a source that can forget its input
   * (a broker's messages) does it now, and only now, so nothing is lost when a run fails.
   */
  acknowledge?(): Promise<void>;
  close(): Promise<void>;
}

export interface SourceSpec<C> {
  readonly type: string;
  readonly description: string;
  readonly schema: Record<string, unknown>;
  /** Whether dead letters should carry the record's `index` besides its line. */
  indexed?(config: C): boolean;
  /** The source reads `--input` (a file or standard input); false for a broker. Default true. */
  readsInput?: boolean;
  open(config: C, input: string, options: { chunkBytes: number }): Promise<SourceReader>;
  decoder(config: C): SourceDecoder;
}

/** Encodes a batch of records for a sink; runs where the records are (usually a worker). */
export type Encoder = (records: Rec[]) => string;

export interface SinkWriter {
  /** Append an encoded batch. Batches arrive in input order. */
  write(encoded: string, count: number): Promise<void> | void;
  /** Every batch is written: make the output durable and visible. */
  commit(): Promise<void>;
  /** Discard everything written by this run. */
  abort(): Promise<void>;
  /**
   * In append mode: a position in the target (a file's size) that a later `open` may pass back
   * as `append.truncateTo`: before commit where this writer started, after it where it ended.
   */
  position?(): number | undefined;
}

export interface SinkEnv {
  /** Directory that relative output paths resolve against (`--out`). */
  readonly outDir: string;
  readonly sinkId: string;
  /**
   * A service delivers small batches to a long-lived target: add to it instead of replacing it.
   * `truncateTo` first cuts the target back to a position recorded after an earlier commit, so a
   * batch written but not recorded before a crash is not written twice.
   */
  readonly append?: { truncateTo?: number };
}

export interface SinkSpec<C> {
  readonly type: string;
  readonly description: string;
  readonly schema: Record<string, unknown>;
  encoder(config: C): Encoder;
  open(config: C, env: SinkEnv): Promise<SinkWriter>;
  /** Human-readable place the sink writes to, for summaries. */
  describe?(config: C, env: SinkEnv): string;
  /**
   * What runtimes must know about the sink beyond writing batches. Runtimes and the service read
   * these and never test a sink's type name; a sink without them is written like any other.
   */
  readonly capabilities?: SinkCapabilities<C>;
}

/** A sink's quirks, declared by the sink (docs/architecture.md, "Sink capabilities"). */
export interface SinkCapabilities<C> {
  /**
   * The sink writes into the cluster store's own PostgreSQL database, so a cluster pipeline's
   * owner writes its rows in the transaction that commits the stream position they come from:
   * exactly once, with no outbox and no delivery loop. Without it, the owner feeds the sink from
   * the outbox after the commit.
   */
  readonly inStoreTransaction?: InStoreTransaction<C>;
  /**
   * Absent: `sluice serve` may run the sink. Otherwise it may not (standard output is the
   * service's log stream), and loading a service config with it fails with `reason`.
   */
  readonly service?: {
    readonly allowed: false;
    /** Completes "a <type> sink …", e.g. "would write into the service's log stream". */
    readonly reason: string;
    readonly hint: string;
  };
  /**
   * The sink records which tenant and pipeline wrote each record (tenants may run the same
   * pipeline file into the same target): `sluice serve` passes them through this, which returns
   * the config to use. Sinks without it write records as they are.
   */
  origin?(config: C, origin: { tenant: string; pipeline: string }): C;
}

/**
 * The hooks a cluster owner calls to write a sink's records in its own PostgreSQL transaction.
 * Rows are whatever `row` returns; only `write` reads them. `Tx` is the store's transaction handle
 * (the cluster's `postgres` TransactionSql); the core passes it through without knowing its type.
 */
export interface InStoreTransaction<C, R = unknown, Tx = unknown> {
  /**
   * The database the config names, if any. In the cluster the rows go to the store, so a config
   * naming another database is refused at load time.
   */
  database(config: C): string | undefined;
  /** Creates the sink's table if it is missing, in `tx` (under a lock the owner holds). */
  createTable(tx: Tx, config: C): Promise<void>;
  /** One record as the row `write` inserts; called for every record, so plain and cheap. */
  row(config: C, record: Rec): R;
  /** Inserts the rows of one committed batch, in `tx`. */
  write(tx: Tx, config: C, rows: R[]): Promise<void>;
}

/**
 * Fields records are known to have (`sluice check`'s field warnings, core/field-check.ts): each maps
 * to the fields known inside it, or `true` for anything.
 */
export interface KnownFields {
  readonly [name: string]: KnownFields | true;
}

/** A field a step reads from every record. */
export interface FieldRead {
  /** The option naming it, below the step: `['key', 2]`, `['metrics', 'total', 'field']`. */
  option: (string | number)[];
  field: string;
  /** What a record without it comes to, for the warning: "becomes an `invalid` dead letter". */
  without: string;
}
