/**
 * `sluice serve`, embedded runtime: the HTTP side. This thread answers HTTP and nothing else that
 * could hold its event loop: authentication, limits, admission and body decoding happen here; the
 * pipelines, the store and their timers run in the pipeline thread (src/runtime/), which this
 * thread calls. SIGTERM drains and checkpoints, SIGHUP swaps in a new config without dropping a
 * request.
 */
import Database from 'better-sqlite3';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { AggregatorRegistry } from 'prom-client';
import type { ResolvedPipeline } from '../core/config.ts';
import type { Rec, WindowedOutput } from '../core/types.ts';
import { SluiceError } from '../errors.ts';
import { RuntimePool } from '../runtime/pool.ts';
import { runtimeConfig, type RuntimeState, type WireBody } from '../runtime/protocol.ts';
import type { BodyFormat } from '../sources/http/index.ts';
import { Admission } from './admission.ts';
import type {
  DeadLetterQuery,
  IngestMeta,
  Page,
  PipelineHandle,
  ReplayFilter,
  ReplayResult,
  ServiceHandle,
  ServiceState,
  WindowQuery,
} from './api.ts';
import { restartOnly, type ServiceConfig, type TenantConfig } from './config.ts';
import { buildApp } from './http.ts';
import { KeyRing } from './keys.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import { TenantLimiter } from './rate-limit.ts';
import { TapHub } from './tap.ts';
import { windowedOutputs, type LoggedBody } from '../runtime/pipeline.ts';
import { openDatabase } from '../runtime/embedded/store.ts';

export interface Tenant {
  config: TenantConfig;
  limiter: TenantLimiter;
  pipelines: Map<string, EmbeddedPipeline>;
}

export type { ServiceState };

/** A pipeline as the HTTP API sees it: calls into the pipeline thread. */
class EmbeddedPipeline implements PipelineHandle {
  readonly key: string;
  readonly spec: { tenant: string; name: string };
  readonly windowed: WindowedOutput[];
  /** Answers of requests with an Idempotency-Key sent to the pipeline thread and not yet durable. */
  readonly #pending = new Map<string, Promise<object>>();

  readonly #lastStep: string | undefined;

  constructor(
    private readonly client: RuntimePool,
    private readonly answerOf: Database.Statement,
    private readonly taps: TapHub,
    tenant: string,
    name: string,
    pipeline: ResolvedPipeline,
  ) {
    this.key = `${tenant}/${name}`;
    this.spec = { tenant, name };
    this.windowed = windowedOutputs(pipeline);
    this.#lastStep = pipeline.steps.at(-1)?.id;
  }

  async tap(
    step: string | undefined,
    listener: (records: Rec[]) => void,
  ): Promise<{ step: string; stop: () => Promise<void> }> {
    const id = step ?? this.#lastStep;
    if (id === undefined)
      throw new SluiceError(
        'SLUICE_ERR_NOT_FOUND',
        `pipeline ${JSON.stringify(this.spec.name)} has no steps to tap`,
      );
    return { step: id, stop: await this.taps.watch(this.key, id, listener) };
  }

  answered(key: string): Promise<object> | undefined {
    const pending = this.#pending.get(key);
    if (pending) return pending;
    // Committed before its 202, so a request answered once is found here from then on.
    const row = this.answerOf.get(this.key, key) as { answer: string } | undefined;
    return row ? Promise.resolve(JSON.parse(row.answer) as object) : undefined;
  }

  ingest(
    body: LoggedBody & { format: BodyFormat },
    meta: IngestMeta,
  ): Promise<{ answer: object; replayed: boolean }> {
    const wire: WireBody = body.gzip
      ? { raw: body.raw, gzip: true, body: body.body, bounds: body.bounds }
      : { gzip: false, body: body.body, bounds: body.bounds };
    const answer = this.client.call('ingest', this.key, wire, meta);
    const key = meta.idempotencyKey;
    if (key !== undefined) {
      this.#pending.set(key, answer);
      const forget = (): void => void this.#pending.delete(key);
      answer.then(forget, forget);
    }
    return answer.then((a) => ({ answer: a, replayed: false }));
  }

  windows(q: WindowQuery): Promise<Page<[number, string]>> {
    return this.client.call('windows', this.key, q) as Promise<Page<[number, string]>>;
  }

  deadLetters(q: DeadLetterQuery): Promise<Page<number>> {
    return this.client.call('deadLetters', this.key, q) as Promise<Page<number>>;
  }

  async replay(filter: ReplayFilter, meta: IngestMeta): Promise<ReplayResult> {
    const { answer, skipped } = await this.client.call('replay', this.key, filter, meta);
    return { answer, skipped, durable: Promise.resolve() };
  }
}

export class Service implements ServiceHandle {
  readonly log: Logger;
  readonly metrics: Metrics;
  config: ServiceConfig;
  #app!: FastifyInstance;
  #client!: RuntimePool;
  /** `sluice tap` watchers; tells the pipeline thread which steps to copy. */
  readonly #taps = new TapHub((pipeline, steps) => this.#client.call('tap', pipeline, steps));
  #db!: Database.Database;
  #answerOf!: Database.Statement;
  #tenants = new Map<string, Tenant>();
  #keys = new KeyRing([]);
  #timers: NodeJS.Timeout[] = [];
  #state: ServiceState = 'starting';
  readonly #admission = new Admission();
  url = '';

  private constructor(
    config: ServiceConfig,
    log: Logger,
    private readonly logLevel: string,
  ) {
    this.config = config;
    this.log = log;
    this.metrics = createMetrics();
  }

  static async start(config: ServiceConfig, log: Logger): Promise<Service> {
    const service = new Service(config, log, log.level);
    await service.#start();
    return service;
  }

  get state(): ServiceState {
    return this.#state;
  }

  async #start(): Promise<void> {
    const { config } = this;
    this.#client = await RuntimePool.start(config, this.logLevel, {
      state: (state: RuntimeState) => {
        if (this.#state === 'ready' || this.#state === 'recovering') this.#state = state;
      },
      tapped: (pipeline, taps) => this.#taps.deliver(pipeline, taps),
      fatal: (err) => {
        this.log.fatal({ err: err.message, code: err.code }, 'the pipeline thread stopped; stopping');
        process.exitCode = 1;
        void this.shutdown();
      },
    });
    this.log.info(
      { threads: this.#client.threads, tenants: this.#client.owners },
      'pipeline threads started',
    );
    this.#db = openDatabase(Database, config.store.path, true);
    this.#answerOf = this.#db.prepare('SELECT answer FROM requests WHERE pipeline = ? AND key = ?');
    this.#install(config, this.#openTenants(config, undefined));
    this.#app = buildApp(this);
    try {
      this.url = await this.#app.listen({ host: config.listen.host, port: config.listen.port });
    } catch (err) {
      await this.#client.stop();
      this.#db.close();
      throw new SluiceError(
        'SLUICE_ERR_SERVICE_START',
        `cannot listen on ${config.listen.host}:${config.listen.port}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    this.#timers.push(
      setInterval(() => {
        this.metrics.inFlightBytes.set(this.#admission.bytes);
        this.metrics.inFlightRequests.set(this.#admission.requests);
      }, 1000).unref(),
    );
    this.#state = 'ready';
  }

  /** Every tenant's limiter and pipelines as this thread sees them (a tenant whose limits did not change keeps its buckets). */
  #openTenants(config: ServiceConfig, previous: Map<string, Tenant> | undefined): Map<string, Tenant> {
    const tenants = new Map<string, Tenant>();
    for (const t of config.tenants) {
      const pipelines = new Map<string, EmbeddedPipeline>();
      for (const [name, pipeline] of t.pipelines)
        pipelines.set(
          name,
          new EmbeddedPipeline(this.#client, this.#answerOf, this.#taps, t.id, name, pipeline),
        );
      const oldTenant = previous?.get(t.id);
      const sameLimits = oldTenant && JSON.stringify(oldTenant.config.limits) === JSON.stringify(t.limits);
      tenants.set(t.id, {
        config: t,
        limiter: sameLimits ? oldTenant.limiter : new TenantLimiter(t.limits),
        pipelines,
      });
    }
    return tenants;
  }

  #install(config: ServiceConfig, tenants: Map<string, Tenant>): void {
    this.config = config;
    this.#tenants = tenants;
    this.#keys = new KeyRing(config.tenants);
  }

  /** The tenant a bearer key belongs to. */
  authenticate(authorization: string | undefined): Tenant | undefined {
    const id = this.#keys.tenantOf(authorization);
    return id === undefined ? undefined : this.#tenants.get(id);
  }

  /** Whether a new ingest request may start; otherwise the error to answer with. */
  admit(bytes: number, tenant: string): SluiceError | undefined {
    if (this.#state === 'draining' || this.#state === 'stopped')
      return new SluiceError('SLUICE_ERR_SHUTTING_DOWN', 'the service is shutting down');
    if (this.#state !== 'ready')
      return new SluiceError(
        'SLUICE_ERR_OVERLOADED',
        'the service is restoring pipeline state after a store error',
      );
    const queue = this.#client.queueOf(tenant);
    if (queue.waitMs > this.config.limits.queueDelayMs)
      return new SluiceError(
        queue.shared ? 'SLUICE_ERR_TENANT_OVERLOADED' : 'SLUICE_ERR_OVERLOADED',
        `tenant ${tenant}'s requests wait ${Math.round(queue.waitMs)} ms for the pipelines (limits.queue_delay = ${this.config.limits.queueDelayMs} ms)${queue.shared ? ', while other tenants use them too' : ''}`,
      );
    return this.#admission.admit(this.config.limits, bytes, tenant, this.#tenants.size);
  }

  /** Tracks a request's bytes from arrival to answer; returns the release function. */
  track(bytes: number, tenant: string): () => void {
    return this.#admission.track(bytes, tenant);
  }

  async metricsText(): Promise<string> {
    // The pipeline thread counts what the pipelines did; this thread, requests and the process.
    const threads = [await this.metrics.registry.getMetricsAsJSON(), ...(await this.#client.metrics())];
    return AggregatorRegistry.aggregate(
      threads as Parameters<typeof AggregatorRegistry.aggregate>[0],
    ).metrics();
  }

  /**
   * SIGHUP: reads the config again and swaps it in. The pipeline thread swaps its pipelines first
   * (unchanged ones keep running untouched, changed ones take over the running state); only then
   * does this thread install the new keys and limits. A config that does not load changes nothing.
   */
  async reload(load: () => ServiceConfig): Promise<boolean> {
    if (this.#state !== 'ready') {
      this.log.warn({ state: this.#state }, 'reload ignored: the service is not ready');
      return false;
    }
    let next: ServiceConfig;
    let swapped: { replaced: string[]; retired: string[] };
    try {
      next = load();
      if (
        next.store.path !== this.config.store.path ||
        next.listen.port !== this.config.listen.port ||
        next.listen.host !== this.config.listen.host
      )
        throw new SluiceError('SLUICE_ERR_CONFIG_INVALID', 'listen and store cannot change on reload', {
          hint: 'Restart the service to change the listen address or the store.',
        });
      const fixed = restartOnly(this.config, next);
      if (fixed.length > 0)
        this.log.warn(
          { settings: fixed },
          'these settings change only on a restart; the running values stay',
        );
      swapped = await this.#client.call('reload', runtimeConfig(next));
    } catch (err) {
      this.log.error(
        { err: err instanceof SluiceError ? err.toJSON() : err },
        'reload refused; the running config stays',
      );
      return false;
    }
    this.#install(next, this.#openTenants(next, this.#tenants));
    this.log.info({ ...swapped, tenants: next.tenants.map((t) => t.id) }, 'config reloaded');
    return true;
  }

  tenant(id: string): Tenant | undefined {
    return this.#tenants.get(id);
  }

  get ready(): boolean {
    return this.#state === 'ready';
  }

  async readiness(): Promise<{ ready: boolean; body: Record<string, unknown> }> {
    return { ready: this.ready, body: { status: this.ready ? 'ready' : this.#state } };
  }

  /**
   * Graceful stop: refuse new requests, let in-flight ones finish (each waits for its commit), then
   * the pipeline thread checkpoints every pipeline, delivers to sinks and closes the store.
   */
  async shutdown(): Promise<void> {
    if (this.#state === 'draining' || this.#state === 'stopped') return;
    this.#state = 'draining';
    for (const t of this.#timers) clearInterval(t);
    const started = performance.now();
    // Connections busy when the stop began go idle after their answer (which says `Connection:
    // close`); close them as they do, rather than wait for their keep-alive timeout.
    const server = this.#app.server;
    const closer = setInterval(() => server.closeIdleConnections(), 50);
    try {
      await this.#app.close();
    } finally {
      clearInterval(closer);
    }
    try {
      await this.#client.stop();
    } catch (err) {
      process.exitCode = 1;
      this.log.error({ err }, 'the pipeline thread did not stop cleanly');
    }
    this.#db.close();
    this.#state = 'stopped';
    this.log.info({ ms: Math.round(performance.now() - started) }, 'stopped');
  }
}
