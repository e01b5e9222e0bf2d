/**
 * What the HTTP API needs from a runtime. The embedded runtime (SQLite, `service.ts`) and the
 * cluster runtime (NATS JetStream and PostgreSQL, `src/cluster/`) both provide it, so the routes,
 * their validation and their errors are the same code for both.
 */
import type { Logger } from 'pino';
import type { Rec, WindowedOutput } from '../core/types.ts';
import type { SluiceError } from '../errors.ts';
import type { BodyFormat } from '../sources/http/index.ts';
import type { ServiceConfig, TenantConfig } from './config.ts';
import type { Metrics } from './metrics.ts';
import type { Verdict } from './rate-limit.ts';
import type { LoggedBody } from '../runtime/pipeline.ts';

export type ServiceState = 'starting' | 'ready' | 'recovering' | 'draining' | 'stopped';

export interface IngestMeta {
  requestId: string;
  receivedMs: number;
  idempotencyKey?: string;
}

export interface WindowQuery {
  output: WindowedOutput;
  fromMs?: number;
  toMs?: number;
  keys: Record<string, string>;
  limit: number;
  after?: [number, string];
}

export interface DeadLetterQuery {
  reason?: string;
  fromMs?: number;
  toMs?: number;
  limit: number;
  after: number;
}

export interface ReplayFilter {
  ids?: number[];
  reason?: string;
  fromMs?: number;
  toMs?: number;
  limit?: number;
  /** Stop selecting once the records' text reaches this size (the rest stays for later). */
  maxBytes?: number;
}

export interface PipelineHandle {
  readonly key: string;
  readonly spec: { readonly tenant: string; readonly name: string };
  readonly windowed: WindowedOutput[];
  /**
   * The answer given to an earlier request with this Idempotency-Key, once that request is durable;
   * undefined when there was none (or the runtime does not keep them).
   */
  answered(key: string): Promise<object> | undefined;
  /**
   * Takes a request body. Synchronous up to its first await, so requests are taken in the order
   * they arrive; resolves when the 202 may go out, `replayed` when the runtime recognised a retry
   * of an earlier request.
   */
  ingest(
    body: LoggedBody & { format: BodyFormat },
    meta: IngestMeta,
  ): Promise<{ answer: object; replayed: boolean }>;
  windows(q: WindowQuery): Page<[number, string]> | Promise<Page<[number, string]>>;
  deadLetters(q: DeadLetterQuery): Page<number> | Promise<Page<number>>;
  replay(filter: ReplayFilter, meta: IngestMeta): ReplayResult | Promise<ReplayResult>;
  /**
   * `sluice tap`: calls `listener` with copies of the first records leaving `step` (default: the
   * last step) of each body processed from now on; resolves with the step and the function that
   * stops. Rejects with SLUICE_ERR_NOT_FOUND for a step the pipeline does not have.
   */
  tap(
    step: string | undefined,
    listener: (records: Rec[]) => void,
  ): Promise<{ step: string; stop: () => Promise<void> }>;
}

export interface Page<C> {
  items: Rec[];
  next: C | undefined;
}

export interface ReplayResult {
  answer: object;
  skipped: { id: number; reason: string }[];
  durable: Promise<unknown>;
}

export interface TenantHandle {
  config: TenantConfig;
  limiter: { take(events: number, bytes: number): Verdict | Promise<Verdict> };
  pipelines: Map<string, PipelineHandle>;
}

export interface ServiceHandle {
  readonly config: ServiceConfig;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly state: ServiceState;
  /** For GET /readyz: whether this instance should get traffic, and what to say about it. */
  readiness(): Promise<{ ready: boolean; body: Record<string, unknown> }>;
  authenticate(authorization: string | undefined): TenantHandle | undefined;
  /** Whether a new ingest request of an authenticated tenant may start; otherwise the error to answer with. */
  admit(bytes: number, tenant: string): SluiceError | undefined;
  /** Tracks a tenant's request and its bytes from arrival to answer; returns the release function. */
  track(bytes: number, tenant: string): () => void;
  tenant(id: string): TenantHandle | undefined;
  /** GET /metrics: every metric of the instance, in Prometheus' text format. */
  metricsText(): Promise<string>;
}
