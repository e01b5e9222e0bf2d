/**
 * `sluice serve`: the long-running service. Owns the store (writer thread + read connection),
 * every tenant's pipelines, the timers that checkpoint and deliver to sinks, and the lifecycle:
 * SIGTERM drains and checkpoints, SIGHUP swaps in a new config without dropping a request.
 */
import Database from 'better-sqlite3';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { prepare } from '../core/engine.ts';
import { SluiceError } from '../errors.ts';
import { Committer } from './committer.ts';
import { fingerprintOf, restartOnly, type ServiceConfig, type TenantConfig } from './config.ts';
import type { ServiceHandle, ServiceState } from './api.ts';
import { Admission } from './admission.ts';
import { buildApp } from './http.ts';
import { KeyRing } from './keys.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import { TenantLimiter } from './rate-limit.ts';
import { PipelineRuntime, type PipelineSpec, type RuntimeContext } from './runtime.ts';
import { openDatabase } from './store.ts';

export interface Tenant {
  config: TenantConfig;
  limiter: TenantLimiter;
  pipelines: Map<string, PipelineRuntime>;
}

export type { ServiceState };

/** Log a checkpoint early when this much log has built up since the last one. */
const CHECKPOINT_LOG_BYTES = 64 * 1024 * 1024;

export class Service implements ServiceHandle {
  readonly log: Logger;
  readonly metrics: Metrics;
  config: ServiceConfig;
  #app!: FastifyInstance;
  #committer!: Committer;
  #db!: Database.Database;
  #ctx!: RuntimeContext;
  #tenants = new Map<string, Tenant>();
  #keys = new KeyRing([]);
  #seq = 0;
  #timers: NodeJS.Timeout[] = [];
  #state: ServiceState = 'starting';
  readonly #admission = new Admission();
  #logBytes = new Map<string, number>();
  url = '';

  private constructor(config: ServiceConfig, log: Logger) {
    this.config = config;
    this.log = log;
    this.metrics = createMetrics();
  }

  static async start(config: ServiceConfig, log: Logger): Promise<Service> {
    const service = new Service(config, log);
    await service.#start();
    return service;
  }

  get state(): ServiceState {
    return this.#state;
  }

  async #start(): Promise<void> {
    const { config } = this;
    try {
      this.#committer = await Committer.start(config.store.path, {
        onCommit: (ms, requests) => {
          this.metrics.commits.observe(ms / 1000);
          this.metrics.commitRequests.inc(requests);
        },
      });
    } catch (err) {
      throw new SluiceError(
        'SLUICE_ERR_SERVICE_START',
        `cannot open the store ${config.store.path}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    this.#committer.onFailure((err) => void this.#recoverAll(err));
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
      nextSeq: () => ++this.#seq,
      maxBodyBytes: config.limits.bodyBytes,
      broken: (runtime, err) =>
        void this.#recoverAll(
          new SluiceError('SLUICE_ERR_INTERNAL', `pipeline ${runtime.key} failed: ${String(err)}`, {
            cause: err,
          }),
        ),
    };
    const tenants = await this.#openTenants(config, undefined);
    this.#install(config, tenants);
    this.#app = buildApp(this);
    try {
      this.url = await this.#app.listen({ host: config.listen.host, port: config.listen.port });
    } catch (err) {
      await this.#committer.close();
      throw new SluiceError(
        'SLUICE_ERR_SERVICE_START',
        `cannot listen on ${config.listen.host}:${config.listen.port}: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    this.#timers.push(
      setInterval(() => void this.checkpointAll(), config.checkpointIntervalMs).unref(),
      setInterval(() => this.#deliverAll(), config.deliveryIntervalMs).unref(),
      setInterval(() => {
        this.metrics.queueDepth.set(this.#committer.waiting);
        this.metrics.inFlightBytes.set(this.#admission.bytes);
        this.metrics.inFlightRequests.set(this.#admission.requests);
      }, 1000).unref(),
    );
    this.#state = 'ready';
  }

  /** Prepares every pipeline (compiles modules, loads tables); nothing is installed yet. */
  async #openTenants(
    config: ServiceConfig,
    previous: Map<string, Tenant> | undefined,
  ): Promise<Map<string, Tenant>> {
    const tenants = new Map<string, Tenant>();
    for (const t of config.tenants) {
      const pipelines = new Map<string, PipelineRuntime>();
      for (const [name, pipeline] of t.pipelines) {
        const fingerprint = fingerprintOf(pipeline);
        const old = previous?.get(t.id)?.pipelines.get(name);
        if (old && old.spec.fingerprint === fingerprint) {
          pipelines.set(name, old);
          continue;
        }
        const spec: PipelineSpec = { tenant: t.id, name, prepared: await prepare(pipeline), fingerprint };
        const runtime = await PipelineRuntime.prepare(this.#ctx, spec);
        // A new pipeline (or the first start) continues from the store; a changed one, on reload,
        // takes over the running state at the moment of the swap.
        if (!old) await runtime.recover();
        pipelines.set(name, runtime);
      }
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
  admit(bytes: number): SluiceError | undefined {
    if (this.#state === 'draining' || this.#state === 'stopped')
      return new SluiceError('SLUICE_ERR_SHUTTING_DOWN', 'the service is shutting down');
    if (this.#state !== 'ready')
      return new SluiceError(
        'SLUICE_ERR_OVERLOADED',
        'the service is restoring pipeline state after a store error',
      );
    return this.#admission.admit(this.config.limits, bytes);
  }

  /** Tracks a request's bytes from arrival to answer; returns the release function. */
  track(bytes: number): () => void {
    return this.#admission.track(bytes);
  }

  /** Called after each ingest: checkpoints early when much log built up. */
  noteLogged(runtime: PipelineRuntime, bytes: number): void {
    const total = (this.#logBytes.get(runtime.key) ?? 0) + bytes;
    if (total < CHECKPOINT_LOG_BYTES) {
      this.#logBytes.set(runtime.key, total);
      return;
    }
    this.#logBytes.set(runtime.key, 0);
    void runtime.checkpoint().catch(() => {});
  }

  async checkpointAll(): Promise<void> {
    if (this.#state !== 'ready' && this.#state !== 'draining') return;
    const now = Date.now();
    const { retentionMs } = this.config.store;
    const pending: Promise<void>[] = [
      this.#committer.commit((ops) => {
        ops.trimRequestsBefore = now - this.config.idempotencyRetentionMs;
        if (retentionMs !== undefined) ops.trimStoreBefore = now - retentionMs;
      }),
    ];
    for (const t of this.#tenants.values())
      for (const r of t.pipelines.values()) {
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
    for (const t of this.#tenants.values()) for (const r of t.pipelines.values()) void r.deliver();
  }

  /**
   * SIGHUP: reads the config again and swaps it in. Pipelines whose files did not change keep
   * running untouched; changed ones take over the running state in one synchronous step, so no
   * request sees a half-swapped service. A config that does not load changes nothing.
   */
  async reload(load: () => ServiceConfig): Promise<boolean> {
    if (this.#state !== 'ready') {
      this.log.warn({ state: this.#state }, 'reload ignored: the service is not ready');
      return false;
    }
    let next: ServiceConfig;
    let tenants: Map<string, Tenant>;
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
      tenants = await this.#openTenants(next, this.#tenants);
    } catch (err) {
      this.log.error(
        { err: err instanceof SluiceError ? err.toJSON() : err },
        'reload refused; the running config stays',
      );
      return false;
    }
    const replaced: PipelineRuntime[] = [];
    const retired: PipelineRuntime[] = [];
    for (const [id, t] of this.#tenants)
      for (const [name, old] of t.pipelines) {
        const now = tenants.get(id)?.pipelines.get(name);
        if (!now) retired.push(old);
        else if (now !== old) replaced.push(old);
      }
    await Promise.all([...replaced, ...retired].map((r) => r.close()));
    // From here to #install nothing awaits: requests see the old config or the new one.
    try {
      for (const [id, t] of tenants)
        for (const [name, runtime] of t.pipelines) {
          const old = this.#tenants.get(id)?.pipelines.get(name);
          if (old && old !== runtime) runtime.takeOver(old);
        }
    } catch (err) {
      this.log.error(
        { err: err instanceof SluiceError ? err.toJSON() : err },
        'reload refused; the running config stays',
      );
      for (const r of [...replaced, ...retired]) r.resume();
      return false;
    }
    this.#install(next, tenants);
    for (const t of tenants.values())
      for (const r of t.pipelines.values()) if (r.dirty) void r.checkpoint().catch(() => {});
    for (const r of retired) void r.checkpoint().catch(() => {});
    this.log.info(
      {
        replaced: replaced.map((r) => r.key),
        retired: retired.map((r) => r.key),
        tenants: [...tenants.keys()],
      },
      'config reloaded',
    );
    return true;
  }

  /**
   * After a failed commit or a pipeline bug: every pipeline is rebuilt from what the store holds
   * (requests meanwhile get 503).
   */
  async #recoverAll(err: SluiceError): Promise<void> {
    if (this.#state !== 'ready') return;
    this.#state = 'recovering';
    this.log.error({ err: err.message, code: err.code }, 'rebuilding pipeline state from the store');
    try {
      for (const t of this.#tenants.values())
        for (const [name, old] of t.pipelines) {
          await old.close();
          const runtime = await PipelineRuntime.prepare(this.#ctx, old.spec);
          await runtime.recover();
          t.pipelines.set(name, runtime);
        }
      this.#state = 'ready';
      this.log.info('pipeline state rebuilt from the store');
    } catch (e) {
      this.log.fatal({ err: e }, 'cannot rebuild pipeline state; stopping');
      process.exitCode = 1;
      await this.shutdown();
    }
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
   * Graceful stop: refuse new requests, let in-flight ones finish (each waits for its commit),
   * checkpoint every pipeline, deliver to sinks, close the store.
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
    await this.checkpointAll();
    for (const t of this.#tenants.values()) for (const r of t.pipelines.values()) await r.close();
    await this.#committer.close();
    this.#db.close();
    this.#state = 'stopped';
    this.log.info({ ms: Math.round(performance.now() - started) }, 'stopped');
  }
}
