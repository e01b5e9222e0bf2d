/**
 * `sluice serve` with `runtime: { type: cluster }` (docs/architecture.md). Every instance serves the
 * whole HTTP API: ingest publishes each request to the pipeline's JetStream subject and answers 202
 * once JetStream has stored it; queries read PostgreSQL. Each instance also runs a
 * {@link PipelineOwner} per pipeline, which processes the pipeline when this instance owns it.
 */
import type { JetStreamClient, PubAck } from '@nats-io/jetstream';
import { jetstream } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import { prepare } from '../core/engine.ts';
import { registry } from '../core/registry.ts';
import type { Rec, WindowedOutput } from '../core/types.ts';
import { SluiceError } from '../errors.ts';
import { connectJetStream, ensureStream } from '../helpers/jetstream.ts';
import { openPg } from '../helpers/postgres.ts';
import { redact } from '../helpers/url.ts';
import { recordCount, type BodyFormat } from '../sources/http/index.ts';
import { Admission } from '../service/admission.ts';
import type {
  DeadLetterQuery,
  IngestMeta,
  Page,
  PipelineHandle,
  ReplayFilter,
  ReplayResult,
  ServiceHandle,
  ServiceState,
  TenantHandle,
  WindowQuery,
} from '../service/api.ts';
import {
  fingerprintOf,
  restartOnly,
  type ClusterRuntimeConfig,
  type ServiceConfig,
  type TenantConfig,
} from '../service/config.ts';
import { buildApp } from '../service/http.ts';
import { KeyRing } from '../service/keys.ts';
import { createMetrics, type Metrics } from '../service/metrics.ts';
import { TenantLimiter } from '../service/rate-limit.ts';
import { replayBody, windowedOutputs, type LoggedBody, type PipelineSpec } from '../runtime/pipeline.ts';
import { SharedLimiter } from '../service/shared-limits.ts';
import { requestHeaders, subjectOf, subjectsOf, TAP_ANNOUNCE_MS, tapSubjects } from './log.ts';
import { migrate } from './migrations.ts';
import { PipelineOwner } from './owner.ts';

const MAX_LIMIT = 10_000;
/** Longest wait for JetStream to store a request before answering 503. */
const PUBLISH_TIMEOUT_MS = 5000;

/** A PostgreSQL failure as an answer: unreachable is 503 (retry), anything else is ours (500). */
function storeError(err: unknown): SluiceError {
  if (err instanceof SluiceError) return err;
  const e = err as Error & { code?: string; name?: string };
  const serverSide = e.name === 'PostgresError' && !/^(08|57)/.test(e.code ?? '');
  return serverSide
    ? new SluiceError('SLUICE_ERR_INTERNAL', `PostgreSQL query failed: ${e.message}`, { cause: err })
    : new SluiceError('SLUICE_ERR_UNAVAILABLE', `PostgreSQL is unreachable: ${e.message}`, { cause: err });
}

/** Epoch milliseconds as a timestamptz, in a query. */
const instant = (sql: Sql, ms: number) =>
  sql`timestamptz 'epoch' + ${String(ms)}::bigint * interval '1 millisecond'`;

interface Shared {
  sql: Sql;
  js: JetStreamClient;
  natsUp(): boolean;
  /** Largest message the NATS server takes (its max_payload), headers included. */
  maxPayload: number;
  log: Logger;
  /** This instance's name: the ingest path its requests carry (per-path watermarks). */
  instance: string;
  nc: NatsConnection;
  stream: string;
}

/** Record bounds travel with a message up to this many records; beyond, the owner finds them again. */
const BOUNDS_IN_HEADER = 4096;
/** Room kept in a message for its headers. */
const HEADER_ROOM = 64 * 1024;

/** A pipeline as the HTTP API sees it in the cluster: publish to its subject, query PostgreSQL. */
class ClusterPipeline implements PipelineHandle {
  readonly key: string;
  readonly windowed: WindowedOutput[];

  constructor(
    private readonly shared: Shared,
    readonly spec: PipelineSpec,
    readonly subject: string,
  ) {
    this.key = `${spec.tenant}/${spec.name}`;
    this.windowed = windowedOutputs(spec.prepared.pipeline);
  }

  /**
   * `sluice tap`: the pipeline runs on its owner, wherever that is, so this instance announces the
   * watched step on core NATS every second and receives what the owner copies (cluster/log.ts
   * tapSubjects). An owner that changes hands meanwhile hears the next announcement.
   */
  async tap(
    step: string | undefined,
    listener: (records: Rec[]) => void,
  ): Promise<{ step: string; stop: () => Promise<void> }> {
    const steps = this.spec.prepared.pipeline.steps.map((s) => s.id);
    const id = step ?? steps.at(-1);
    if (id === undefined || !steps.includes(id))
      throw new SluiceError(
        'SLUICE_ERR_NOT_FOUND',
        id === undefined
          ? `pipeline ${JSON.stringify(this.spec.name)} has no steps to tap`
          : `pipeline ${JSON.stringify(this.spec.name)} has no step ${JSON.stringify(id)}`,
      );
    const { nc, stream } = this.shared;
    const subjects = tapSubjects(stream, this.spec.tenant, this.spec.name);
    const sub = nc.subscribe(subjects.records(id), {
      callback: (err, msg) => {
        if (!err) listener(msg.json<Rec[]>());
      },
    });
    const announce = (): void => nc.publish(subjects.control, JSON.stringify({ step: id }));
    announce();
    const timer = setInterval(announce, TAP_ANNOUNCE_MS);
    return {
      step: id,
      stop: async () => {
        clearInterval(timer);
        sub.unsubscribe();
      },
    };
  }

  /** Retries are recognised by JetStream itself (`Nats-Msg-Id`), when they are published. */
  answered(): undefined {
    return undefined;
  }

  ingest(
    body: LoggedBody & { format: BodyFormat },
    meta: IngestMeta,
  ): Promise<{ answer: { queued: number }; replayed: boolean }> {
    if (body.raw.length > this.shared.maxPayload - HEADER_ROOM)
      throw new SluiceError(
        'SLUICE_ERR_BODY_TOO_LARGE',
        `the body (${body.raw.length} bytes as sent) is larger than the NATS server takes in one message (max_payload ${this.shared.maxPayload}, less ${HEADER_ROOM} for headers)`,
        { hint: 'Send smaller requests, or raise max_payload in the NATS server config.' },
      );
    const headers = requestHeaders({
      requestId: meta.requestId,
      receivedMs: meta.receivedMs,
      instance: this.shared.instance,
      format: body.format,
      gzip: body.gzip,
      // Found once, here: the owner, which processes every request of the pipeline, reuses them.
      bounds: body.bounds && body.bounds.length <= 2 * BOUNDS_IN_HEADER ? body.bounds : undefined,
    });
    const answer = { queued: recordCount(body.body, body.bounds) };
    return this.#publish(body.raw, headers, meta.idempotencyKey).then((ack) => ({
      answer,
      replayed: ack.duplicate,
    }));
  }

  async #publish(
    data: Buffer,
    headers: ReturnType<typeof requestHeaders>,
    idempotencyKey: string | undefined,
  ): Promise<PubAck> {
    if (!this.shared.natsUp())
      throw new SluiceError('SLUICE_ERR_UNAVAILABLE', 'NATS is unreachable; the request was not stored');
    try {
      return await this.shared.js.publish(this.subject, data, {
        headers,
        timeout: PUBLISH_TIMEOUT_MS,
        ...(idempotencyKey !== undefined ? { msgID: `${this.key}/${idempotencyKey}` } : {}),
      });
    } catch (err) {
      throw new SluiceError(
        'SLUICE_ERR_UNAVAILABLE',
        `JetStream did not store the request: ${(err as Error).message}`,
        {
          cause: err,
          hint: 'Retry with the same Idempotency-Key: a request stored twice is then kept once.',
        },
      );
    }
  }

  async windows(q: WindowQuery): Promise<Page<[number, string]>> {
    const { sql } = this.shared;
    let where = sql`pipeline = ${this.key} AND output = ${q.output.output}`;
    if (q.fromMs !== undefined) where = sql`${where} AND window_start >= ${instant(sql, q.fromMs)}`;
    if (q.toMs !== undefined) where = sql`${where} AND window_start < ${instant(sql, q.toMs)}`;
    if (q.after) where = sql`${where} AND (window_start, key) > (${instant(sql, q.after[0])}, ${q.after[1]})`;
    // As text the way keyText writes it: a JSON null or a missing field is 'null'.
    for (const [field, value] of Object.entries(q.keys))
      where = sql`${where} AND coalesce(row ->> ${field}, 'null') = ${value}`;
    try {
      const rows = await sql<{ start_ms: string; key: string; row: string; closed: boolean }[]>`
        SELECT (extract(epoch FROM window_start) * 1000)::bigint AS start_ms, key, row::text AS row, closed
        FROM sluice_windows WHERE ${where}
        ORDER BY window_start, key LIMIT ${Math.min(q.limit, MAX_LIMIT) + 1}`;
      const page = rows.slice(0, q.limit);
      const last = page[page.length - 1];
      return {
        items: page.map((r) => ({ ...(JSON.parse(r.row) as Rec), closed: r.closed })),
        next: rows.length > q.limit && last ? [Number(last.start_ms), last.key] : undefined,
      };
    } catch (err) {
      throw storeError(err);
    }
  }

  async deadLetters(q: DeadLetterQuery): Promise<Page<number>> {
    try {
      const rows = await this.#dead({ ...q, limit: q.limit + 1 }, q.after);
      const more = rows.length > q.limit;
      const items = rows.slice(0, q.limit).map((r) => ({
        id: Number(r.id),
        received_at: r.received_at.toISOString(),
        request_id: r.request_id,
        ...(JSON.parse(r.letter) as Rec),
      }));
      return { items, next: more ? Number(rows[q.limit - 1]!.id) : undefined };
    } catch (err) {
      throw storeError(err);
    }
  }

  #dead(
    q: ReplayFilter,
    after = 0,
  ): Promise<{ id: string; received_at: Date; request_id: string | null; letter: string }[]> {
    const { sql } = this.shared;
    let where = sql`pipeline = ${this.key} AND id > ${after}`;
    if (q.ids) where = sql`${where} AND id = ANY(${q.ids.map(String)}::bigint[])`;
    if (q.reason !== undefined) where = sql`${where} AND reason = ${q.reason}`;
    if (q.fromMs !== undefined) where = sql`${where} AND received_at >= ${instant(sql, q.fromMs)}`;
    if (q.toMs !== undefined) where = sql`${where} AND received_at < ${instant(sql, q.toMs)}`;
    return sql<{ id: string; received_at: Date; request_id: string | null; letter: string }[]>`
      SELECT id, received_at, request_id, letter::text AS letter FROM sluice_dead_letters
      WHERE ${where} ORDER BY id LIMIT ${Math.min(q.limit ?? 1000, MAX_LIMIT + 1)}`;
  }

  /**
   * Publishes the chosen dead letters' records as one message; the owner deletes the letters in
   * the transaction that processes it, so they leave the store exactly when their records are in.
   */
  async replay(filter: ReplayFilter, meta: IngestMeta): Promise<ReplayResult> {
    let letters;
    try {
      letters = await this.#dead(filter);
    } catch (err) {
      throw storeError(err);
    }
    const { ids, body, bounds, skipped } = replayBody(letters, filter.maxBytes);
    if (ids.length === 0) return { answer: { replayed: 0, queued: 0 }, skipped, durable: Promise.resolve() };
    const headers = requestHeaders({
      requestId: meta.requestId,
      receivedMs: meta.receivedMs,
      instance: this.shared.instance,
      format: 'ndjson',
      gzip: false,
      replayIds: ids,
      bounds,
    });
    await this.#publish(body, headers, undefined);
    return { answer: { replayed: ids.length, queued: ids.length }, skipped, durable: Promise.resolve() };
  }
}

interface ClusterTenant extends TenantHandle {
  pipelines: Map<string, ClusterPipeline>;
}

export class ClusterService implements ServiceHandle {
  readonly log: Logger;
  readonly metrics: Metrics;
  config: ServiceConfig;
  readonly runtime: ClusterRuntimeConfig;
  url = '';
  #state: ServiceState = 'starting';
  #app: FastifyInstance | undefined;
  #nc: NatsConnection | undefined;
  #natsUp = false;
  #sql: Sql | undefined;
  #limiter: SharedLimiter | undefined;
  #tenants = new Map<string, ClusterTenant>();
  #owners: PipelineOwner[] = [];
  #keys: KeyRing;
  readonly #admission = new Admission();
  #timer: NodeJS.Timeout | undefined;
  #heartbeatTimer: NodeJS.Timeout | undefined;
  /** Pipelines this instance should own: all of them divided by the live instances. */
  #share = Infinity;

  private constructor(config: ServiceConfig, log: Logger) {
    if (config.runtime.type !== 'cluster') throw new Error('internal: not a cluster config');
    this.config = config;
    this.runtime = config.runtime;
    this.log = log.child({ instance: config.runtime.instance });
    this.metrics = createMetrics();
    this.#keys = new KeyRing(config.tenants);
  }

  static async start(config: ServiceConfig, log: Logger): Promise<ClusterService> {
    const service = new ClusterService(config, log);
    try {
      await service.#start();
    } catch (err) {
      await service.#close();
      throw err;
    }
    return service;
  }

  get state(): ServiceState {
    return this.#state;
  }

  async #start(): Promise<void> {
    const { runtime, config } = this;
    const { nc, jsm } = await connectJetStream(runtime.nats.url, `sluice ${runtime.instance}`);
    this.#nc = nc;
    this.#natsUp = true;
    void this.#watchNats(nc);
    await ensureStream(jsm, {
      name: runtime.nats.stream,
      subjects: subjectsOf(runtime.nats.stream),
      duplicateWindowMs: runtime.nats.duplicateWindowMs,
      maxBytes: runtime.nats.maxBytes,
    });
    const js = jetstream(nc);
    this.#sql = openPg(runtime.postgres.url, { max: 4 });
    try {
      const applied = await migrate(this.#sql);
      if (applied.length > 0) this.log.info({ versions: applied }, 'PostgreSQL schema migrated');
    } catch (err) {
      if (err instanceof SluiceError) throw err;
      throw new SluiceError(
        'SLUICE_ERR_CONNECT',
        `cannot prepare PostgreSQL at ${redact(runtime.postgres.url)}: ${(err as Error).message}`,
        { cause: err, hint: 'Check runtime.postgres.url; the user needs to create tables in its schema.' },
      );
    }
    if (runtime.redis)
      this.#limiter = await SharedLimiter.connect({
        url: runtime.redis.url,
        prefix: runtime.redis.prefix,
        timeoutMs: runtime.redis.timeoutMs,
        onError: runtime.redis.onError,
        log: this.log,
      });
    else this.log.warn("runtime.redis is not set: each instance applies the tenants' rate limits on its own");

    const maxPayload = nc.info?.max_payload ?? 1024 * 1024;
    if (config.limits.bodyBytes > maxPayload - HEADER_ROOM)
      this.log.warn(
        { bodyBytes: config.limits.bodyBytes, maxPayload },
        'limits.body_bytes is above what the NATS server takes in one message: larger bodies get 413',
      );
    const shared: Shared = {
      sql: this.#sql,
      js,
      natsUp: () => this.#natsUp,
      maxPayload,
      log: this.log,
      instance: runtime.instance,
      nc,
      stream: runtime.nats.stream,
    };
    for (const t of config.tenants) {
      const pipelines = new Map<string, ClusterPipeline>();
      for (const [name, resolved] of t.pipelines) {
        checkSinks(resolved.sinks, runtime, `${t.id}/${name}`);
        const spec: PipelineSpec = {
          tenant: t.id,
          name,
          prepared: await prepare(resolved),
          fingerprint: fingerprintOf(resolved),
        };
        const subject = subjectOf(runtime.nats.stream, t.id, name);
        pipelines.set(name, new ClusterPipeline(shared, spec, subject));
        this.#owners.push(
          new PipelineOwner(
            {
              pgUrl: runtime.postgres.url,
              nc,
              js,
              jsm,
              stream: runtime.nats.stream,
              instance: runtime.instance,
              log: this.log,
              metrics: this.metrics,
              batch: runtime.owner.batch,
              claimIntervalMs: runtime.owner.claimIntervalMs,
              checkpointIntervalMs: config.checkpointIntervalMs,
              idempotencyRetentionMs: config.idempotencyRetentionMs,
              maxBodyBytes: config.limits.bodyBytes,
              belowShare: () => this.#owning().length < this.#share,
              outputsDir: config.outputsDir,
            },
            spec,
            subject,
          ),
        );
      }
      this.#tenants.set(t.id, { config: t, limiter: this.#limiterOf(t), pipelines });
    }
    await this.#heartbeat();
    for (const o of this.#owners) o.start();
    this.#app = buildApp(this);
    try {
      this.url = await this.#app.listen({ host: config.listen.host, port: config.listen.port });
    } catch (err) {
      throw new SluiceError(
        'SLUICE_ERR_SERVICE_START',
        `cannot listen on ${config.listen.host}:${config.listen.port}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    this.#timer = setInterval(() => {
      this.metrics.inFlightBytes.set(this.#admission.bytes);
      this.metrics.inFlightRequests.set(this.#admission.requests);
    }, 1000).unref();
    this.#heartbeatTimer = setInterval(() => void this.#heartbeat(), runtime.owner.claimIntervalMs).unref();
    this.#state = 'ready';
  }

  #limiterOf(t: TenantConfig): ClusterTenant['limiter'] {
    const shared = this.#limiter;
    return shared
      ? { take: (events, bytes) => shared.take(t.id, t.limits, events, bytes) }
      : new TenantLimiter(t.limits);
  }

  /** The owners that own their pipeline now. */
  #owning(): PipelineOwner[] {
    return this.#owners.filter((o) => o.status === 'owner');
  }

  /**
   * Says this instance is alive, counts the live ones, and from that its share of the pipelines
   * (all instances run the same config). An instance above its share hands one pipeline over per
   * beat, so pipelines spread when instances join; below it, its owners claim free pipelines first.
   */
  async #heartbeat(): Promise<void> {
    const sql = this.#sql!;
    const { instance, owner } = this.runtime;
    try {
      await sql`
        INSERT INTO sluice_instances (instance, seen_at) VALUES (${instance}, now())
        ON CONFLICT (instance) DO UPDATE SET seen_at = now()`;
      const [row] = await sql<{ n: string }[]>`
        SELECT count(*) AS n FROM sluice_instances
        WHERE seen_at > now() - ${String(3 * owner.claimIntervalMs)}::bigint * interval '1 millisecond'`;
      const live = Math.max(1, Number(row?.n ?? 1));
      this.#share = Math.ceil(this.#owners.length / live);
    } catch {
      // PostgreSQL is unreachable: the owners notice on their own; the share stays as it was.
      return;
    }
    const owning = this.#owning();
    if (owning.length > this.#share) owning.pop()?.release();
  }

  /** Follows the NATS connection, so ingest answers 503 at once while it is down. */
  async #watchNats(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') {
        this.#natsUp = false;
        this.log.warn('NATS disconnected: ingest answers 503 until it is back');
      } else if (s.type === 'reconnect') {
        this.#natsUp = true;
        this.log.info('NATS reconnected');
      }
    }
  }

  async readiness(): Promise<{ ready: boolean; body: Record<string, unknown> }> {
    let timer: NodeJS.Timeout | undefined;
    const pg = await Promise.race([
      this.#sql!`SELECT 1`.then(
        () => 'up',
        () => 'down',
      ),
      new Promise<string>((resolve) => (timer = setTimeout(() => resolve('down'), 1000))),
    ]);
    clearTimeout(timer);
    const body = {
      status:
        this.#state === 'ready' && this.#natsUp
          ? 'ready'
          : this.#state === 'ready'
            ? 'degraded'
            : this.#state,
      nats: this.#natsUp ? 'up' : 'down',
      postgres: pg,
      redis: this.#limiter ? (this.#limiter.healthy ? 'up' : 'down') : 'not configured',
      owns: this.#owning().map((o) => o.key),
    };
    // Without NATS this instance can take no request; without PostgreSQL it still can.
    return { ready: this.#state === 'ready' && this.#natsUp, body };
  }

  authenticate(authorization: string | undefined): TenantHandle | undefined {
    const id = this.#keys.tenantOf(authorization);
    return id === undefined ? undefined : this.#tenants.get(id);
  }

  admit(bytes: number, tenant: string): SluiceError | undefined {
    if (this.#state === 'draining' || this.#state === 'stopped')
      return new SluiceError('SLUICE_ERR_SHUTTING_DOWN', 'the service is shutting down');
    if (!this.#natsUp)
      return new SluiceError('SLUICE_ERR_UNAVAILABLE', 'NATS is unreachable; requests cannot be stored');
    return this.#admission.admit(this.config.limits, bytes, tenant, this.#tenants.size);
  }

  track(bytes: number, tenant: string): () => void {
    return this.#admission.track(bytes, tenant);
  }

  tenant(id: string): TenantHandle | undefined {
    return this.#tenants.get(id);
  }

  metricsText(): Promise<string> {
    return this.metrics.registry.metrics();
  }

  /** What each pipeline owner of this instance is doing (for tests and /readyz). */
  owners(): { pipeline: string; status: string; position: number }[] {
    return this.#owners.map((o) => ({ pipeline: o.key, status: o.status, position: o.position }));
  }

  /**
   * SIGHUP: swaps in what each instance decides alone: tenants' API keys and rate limits. Pipelines
   * and the runtime section must be the same on every instance (owners move between them), so a
   * config that changes them is refused, as is one that does not load: the running one stays.
   */
  async reload(load: () => ServiceConfig): Promise<boolean> {
    if (this.#state !== 'ready') {
      this.log.warn({ state: this.#state }, 'reload ignored: the service is not ready');
      return false;
    }
    let next: ServiceConfig;
    try {
      next = load();
      const changed = clusterRestartOnly(this.config, next);
      if (changed.length > 0)
        throw new SluiceError(
          'SLUICE_ERR_CONFIG_INVALID',
          `in the cluster runtime these change only on a restart: ${changed.join(', ')}`,
          { hint: 'Restart the instances one at a time (SIGTERM hands their pipelines over).' },
        );
    } catch (err) {
      this.log.error(
        { err: err instanceof SluiceError ? err.toJSON() : err },
        'reload refused; the running config stays',
      );
      return false;
    }
    const fixed = restartOnly(this.config, next);
    // Owners took it at start.
    if (next.idempotencyRetentionMs !== this.config.idempotencyRetentionMs)
      fixed.push('idempotency.retention');
    if (fixed.length > 0)
      this.log.warn({ settings: fixed }, 'these settings change only on a restart; the running values stay');
    // Nothing awaits from here on: a request sees the old keys and limits or the new ones.
    for (const t of next.tenants) {
      const tenant = this.#tenants.get(t.id)!;
      // A tenant whose limits did not change keeps its tokens (as in the embedded runtime).
      if (JSON.stringify(t.limits) !== JSON.stringify(tenant.config.limits))
        tenant.limiter = this.#limiterOf(t);
      tenant.config = t;
    }
    this.#keys = new KeyRing(next.tenants);
    this.config = next;
    this.log.info({ tenants: next.tenants.map((t) => t.id) }, 'config reloaded');
    return true;
  }

  /** Stops taking requests, lets the owned pipelines commit and checkpoint, and lets go of them. */
  async shutdown(): Promise<void> {
    if (this.#state === 'draining' || this.#state === 'stopped') return;
    this.#state = 'draining';
    const started = performance.now();
    if (this.#app) {
      const server = this.#app.server;
      const closer = setInterval(() => server.closeIdleConnections(), 50);
      try {
        await this.#app.close();
      } finally {
        clearInterval(closer);
      }
    }
    await this.#close();
    this.#state = 'stopped';
    this.log.info({ ms: Math.round(performance.now() - started) }, 'stopped');
  }

  async #close(): Promise<void> {
    clearInterval(this.#timer);
    clearInterval(this.#heartbeatTimer);
    await Promise.all(this.#owners.map((o) => o.stop()));
    const sql = this.#sql;
    if (sql)
      await sql`DELETE FROM sluice_instances WHERE instance = ${this.runtime.instance}`.catch(() => {});
    await this.#limiter?.close();
    await this.#sql?.end({ timeout: 2 }).catch(() => {});
    await this.#nc?.close().catch(() => {});
  }
}

/**
 * Sinks a cluster can feed: sinks written in the owner's transaction (`inStoreTransaction`) write
 * into the cluster's own database.
 */
export function checkSinks(
  sinks: { id: string; type: string; config: unknown }[],
  runtime: ClusterRuntimeConfig,
  pipeline: string,
): void {
  for (const s of sinks) {
    const inStore = registry.sinks.get(s.type)?.capabilities?.inStoreTransaction;
    if (!inStore) continue;
    const url = inStore.database(s.config);
    if (url !== undefined && url !== runtime.postgres.url)
      throw new SluiceError(
        'SLUICE_ERR_CONFIG_INVALID',
        `pipeline ${pipeline}, sink ${s.id}: in the cluster runtime a ${s.type} sink writes into runtime.postgres (in the owner's transaction), not into ${redact(url)}`,
        { hint: "Remove the sink's url, or point runtime.postgres.url at that database." },
      );
  }
}

/**
 * What a cluster instance cannot take on reload: anything every instance must agree on. The
 * tenants and their pipelines (by name and definition), the runtime section, and the listen address.
 */
function clusterRestartOnly(running: ServiceConfig, next: ServiceConfig): string[] {
  const changed: string[] = [];
  if (next.listen.host !== running.listen.host || next.listen.port !== running.listen.port)
    changed.push('listen');
  if (JSON.stringify(next.runtime) !== JSON.stringify(running.runtime)) changed.push('runtime');
  const pipelines = (c: ServiceConfig): string[] =>
    c.tenants
      .flatMap((t) => [...t.pipelines].map(([name, p]) => `${t.id}/${name} ${fingerprintOf(p)}`))
      .sort();
  const [was, now] = [pipelines(running), pipelines(next)];
  const differ = [...was.filter((p) => !now.includes(p)), ...now.filter((p) => !was.includes(p))];
  const names = [...new Set(differ.map((p) => p.split(' ')[0]!))];
  if (names.length > 0) changed.push(`the pipelines ${names.join(', ')}`);
  return changed;
}
