/**
 * The embedded runtime's pipeline threads, as the HTTP thread sees them: one RuntimeClient each,
 * and every tenant owned by exactly one of them (all its pipelines, their state and their lane).
 * One thread for every tenant let one tenant's flood hold up another's requests behind its queued
 * work and its garbage collections: at 3x capacity a light tenant's p99 was 5-15x its unloaded one,
 * while a bare server on the same machine and load kept it at 1.2x (bench:overload, 2026-12-06).
 * With a thread each, the light tenant waits for neither; they share only the store's write lock
 * (one commit at a time) and the HTTP thread. It also lets tenants use more than one core.
 *
 * Threads: `runtime.pipeline_threads`, by default one per core and at most one per tenant. Tenants
 * go to threads in config order, round robin; a tenant added by a reload goes to the thread with the
 * fewest, and a tenant never moves while the service runs (its state is in its thread).
 */
import { availableParallelism } from 'node:os';
import { SluiceError } from '../errors.ts';
import type { ServiceConfig } from '../service/config.ts';
import { RuntimeClient, type ClientEvents } from './client.ts';
import {
  runtimeConfig,
  type CallName,
  type Calls,
  type RuntimeConfig,
  type RuntimeState,
} from './protocol.ts';

/** Calls about one pipeline: its first argument is the pipeline's `tenant/name` key. */
const BY_PIPELINE: ReadonlySet<CallName> = new Set(['ingest', 'windows', 'deadLetters', 'replay', 'tap']);

const tenantOf = (pipelineKey: string): string => pipelineKey.slice(0, pipelineKey.indexOf('/'));

function threadCount(config: ServiceConfig): number {
  return config.pipelineThreads ?? Math.max(1, Math.min(availableParallelism(), config.tenants.length));
}

export class RuntimePool {
  readonly #clients: RuntimeClient[] = [];
  /**
   * Tenant → index of its thread; never forgotten while the service runs, so that a tenant a reload
   * removed and a later one adds again comes back to the same thread. On another, its log
   * positions could go below those its first thread wrote, and recovery reads the log in position
   * order after the checkpoint's: events would be replayed out of order, or skipped.
   */
  readonly #owner = new Map<string, number>();
  readonly #states: RuntimeState[];
  #state: RuntimeState = 'ready';

  private constructor(
    count: number,
    private readonly events: ClientEvents,
  ) {
    this.#states = new Array<RuntimeState>(count).fill('ready');
  }

  /** Starts every thread (the first alone, as it takes the store's lock); resolves once all take calls. */
  static async start(config: ServiceConfig, logLevel: string, events: ClientEvents): Promise<RuntimePool> {
    const count = threadCount(config);
    const pool = new RuntimePool(count, events);
    config.tenants.forEach((t, i) => pool.#owner.set(t.id, i % count));
    const full = runtimeConfig(config);
    const turns = count > 1 ? new Int32Array(new SharedArrayBuffer(4)) : undefined;
    const start = (index: number): Promise<RuntimeClient> =>
      RuntimeClient.start(pool.#configOf(full, index), logLevel, pool.#eventsOf(index), {
        index,
        count,
        turns,
      });
    pool.#clients.push(await start(0));
    const rest = await Promise.allSettled(Array.from({ length: count - 1 }, (_, i) => start(i + 1)));
    for (const r of rest) if (r.status === 'fulfilled') pool.#clients.push(r.value);
    const failed = rest.find((r) => r.status === 'rejected');
    if (failed) {
      await pool.stop().catch(() => {});
      throw failed.reason;
    }
    return pool;
  }

  get threads(): number {
    return this.#states.length;
  }

  /** Which thread owns each tenant (and owned each removed since the start). */
  get owners(): Record<string, number> {
    return Object.fromEntries(this.#owner);
  }

  /** The tenants of thread `index`, and nothing else (a thread never sees another's pipelines). */
  #configOf(config: RuntimeConfig, index: number): RuntimeConfig {
    return { ...config, tenants: config.tenants.filter((t) => this.#owner.get(t.id) === index) };
  }

  #eventsOf(index: number): ClientEvents {
    return {
      state: (state) => {
        this.#states[index] = state;
        const all: RuntimeState = this.#states.includes('recovering') ? 'recovering' : 'ready';
        if (all === this.#state) return;
        this.#state = all;
        this.events.state(all);
      },
      fatal: (err) => this.events.fatal(err),
      tapped: (pipeline, taps) => this.events.tapped?.(pipeline, taps),
    };
  }

  #clientOf(tenant: string): RuntimeClient {
    return this.#clients[this.#owner.get(tenant) ?? 0]!;
  }

  /** A call to the thread that owns its pipeline, or to every thread (metrics: `metrics()`). */
  call<N extends Exclude<CallName, 'metrics'>>(
    name: N,
    ...args: Calls[N]['args']
  ): Promise<Calls[N]['value']> {
    if (BY_PIPELINE.has(name)) return this.#clientOf(tenantOf(args[0] as string)).call(name, ...args);
    switch (name) {
      case 'reload':
        return this.#reload(args[0] as RuntimeConfig) as Promise<Calls[N]['value']>;
      default:
        return Promise.all(this.#clients.map((c) => c.call(name, ...args))).then(() => undefined) as Promise<
          Calls[N]['value']
        >;
    }
  }

  /** Each thread's metrics (prom-client JSON), to be added up with the HTTP thread's. */
  metrics(): Promise<object[][]> {
    return Promise.all(this.#clients.map((c) => c.call('metrics')));
  }

  /**
   * Tenants never seen go to the threads with the fewest tenants; every thread swaps its own. A
   * thread that refuses its part leaves the others swapped: the error says so.
   */
  async #reload(config: RuntimeConfig): Promise<Calls['reload']['value']> {
    const counts = new Array<number>(this.#clients.length).fill(0);
    for (const t of config.tenants) {
      const i = this.#owner.get(t.id);
      if (i !== undefined) counts[i]!++;
    }
    for (const t of config.tenants)
      if (!this.#owner.has(t.id)) {
        const i = counts.indexOf(Math.min(...counts));
        counts[i]!++;
        this.#owner.set(t.id, i);
      }
    const results = await Promise.allSettled(
      this.#clients.map((c, i) => c.call('reload', this.#configOf(config, i))),
    );
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) {
      if (this.#clients.length === 1) throw failed.reason;
      const err = failed.reason as Error;
      throw new SluiceError(
        err instanceof SluiceError ? err.code : 'SLUICE_ERR_INTERNAL',
        `${err.message} (the pipeline threads that accepted their part run the new config)`,
        { cause: err },
      );
    }
    const swapped = { replaced: [] as string[], retired: [] as string[] };
    for (const r of results)
      if (r.status === 'fulfilled') {
        swapped.replaced.push(...r.value.replaced);
        swapped.retired.push(...r.value.retired);
      }
    return swapped;
  }

  /** How long a request of `tenant` waits for its thread (client.ts). */
  queueOf(tenant: string): { waitMs: number; shared: boolean } {
    return this.#clientOf(tenant).queueOf(tenant);
  }

  /**
   * Checkpoints, delivers and closes the store in every thread, then ends them; the first last, as
   * its writer holds the store's lock for all.
   */
  async stop(): Promise<void> {
    const [first, ...rest] = this.#clients;
    const results = await Promise.allSettled(rest.map((c) => c.stop()));
    if (first) results.push(...(await Promise.allSettled([first.stop()])));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  }
}
