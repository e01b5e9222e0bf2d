/**
 * Per-tenant token buckets shared by every instance of the service through Redis, so a tenant gets
 * its rate once for the whole cluster rather than once per instance. One Lua script refills and
 * takes from both of a tenant's buckets atomically, on Redis's clock, with the semantics of
 * `TenantLimiter`: all or nothing, a refused request costs nothing.
 *
 * When Redis is unreachable or too slow, `onError` decides: `local` falls back to an in-process
 * `TenantLimiter` per tenant (each instance then admits the full rate, so the cluster may admit up to
 * N× the rate until Redis is back: availability over strictness), `reject` refuses every request
 * (strictness over availability).
 */
import { Redis } from 'ioredis';
import { SluiceError } from '../errors.ts';
import { redact } from '../helpers/url.ts';
import type { OnRedisError, TenantLimits } from './config.ts';
import { TenantLimiter, type Verdict } from './rate-limit.ts';

export type { OnRedisError };

export interface SharedLimiterOptions {
  url: string;
  /** Key prefix; a tenant's buckets are `<prefix>{<tenant>}:events` and `:bytes`. */
  prefix?: string;
  /** Longest wait for one command before the fallback decides (ms). */
  timeoutMs?: number;
  onError: OnRedisError;
  log?: { warn(obj: object, msg: string): void; info(obj: object, msg: string): void };
}

export interface SharedVerdict extends Verdict {
  /** 'redis', or 'local' when the fallback decided, or 'unavailable' when onError is 'reject' and Redis is down */
  decidedBy: 'redis' | 'local' | 'unavailable';
}

const CONNECT_TIMEOUT_MS = 2000;
/**
 * Longest wait for a take: far above Redis's sub-millisecond answer on purpose. An instance whose
 * event loop stalls (GC, a large batch) past the timeout sees the answer too late and falls back to
 * per-instance buckets, at the moments of highest load (at 50 ms, a loaded test run admitted more
 * than one bucket allows, most likely this way). Only the takes in flight when Redis goes silent
 * wait this long; later ones decide at once while one probe waits.
 */
const DEFAULT_TIMEOUT_MS = 250;

/** A key is kept this long after its bucket would be full again, so clock jitter cannot drop a debt. */
const EXPIRE_MARGIN_MS = 1000;

/**
 * KEYS: the tenant's events and bytes buckets, hashes of `tokens` and `ts` (Redis time, ms).
 * ARGV, for events then bytes: rate, capacity, tokens wanted; rate 0 means no such limit.
 * Returns {ok, retryAfter, tooBig, limit} with limit 1 for events, 2 for bytes, 0 for none.
 * Nothing is written unless both buckets hold enough: a refused request costs nothing.
 */
const TAKE_SCRIPT = `
-- Redis < 5 refuses writes after TIME unless effects are replicated; later versions always do.
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local levels = {}
for i = 1, 2 do
  local rate, capacity, n = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  if rate > 0 then
    if n > capacity then return {0, 0, 1, i} end
    local bucket = redis.call('HMGET', KEYS[i], 'tokens', 'ts')
    local tokens, ts = tonumber(bucket[1]), tonumber(bucket[2])
    -- An absent bucket expired after refilling completely, or never existed: it is full.
    local level = capacity
    -- Redis's clock can step back (failover to a replica): never refill by a negative time.
    if tokens and ts then level = math.min(capacity, tokens + math.max(0, now - ts) / 1000 * rate) end
    if level < n then return {0, math.max(1, math.ceil((n - level) / rate)), 0, i} end
    levels[i] = level
  end
end
for i = 1, 2 do
  if levels[i] then
    local rate, capacity, n = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
    redis.call('HSET', KEYS[i], 'tokens', string.format('%.17g', levels[i] - n), 'ts', string.format('%.17g', now))
    -- Once the bucket would be full again the key says nothing an absent key does not: let it go.
    redis.call('PEXPIRE', KEYS[i], math.ceil(capacity / rate * 1000) + ${EXPIRE_MARGIN_MS})
  end
end
return {1, 0, 0, 0}
`;

type TakeReply = [ok: number, retryAfter: number, tooBig: number, limit: number];

interface LimitsClient extends Redis {
  sluiceTake(eventsKey: string, bytesKey: string, ...args: string[]): Promise<TakeReply>;
}

export class SharedLimiter {
  readonly #redis: LimitsClient;
  readonly #prefix: string;
  readonly #onError: OnRedisError;
  readonly #log: SharedLimiterOptions['log'];
  readonly #local = new Map<string, { limits: TenantLimits; limiter: TenantLimiter }>();
  #healthy = true;
  /** While unhealthy, one take at a time tries Redis; the rest do not wait for it. */
  #probing = false;
  #closed = false;

  private constructor(redis: LimitsClient, options: SharedLimiterOptions) {
    this.#redis = redis;
    this.#prefix = options.prefix ?? 'sluice:limits:';
    this.#onError = options.onError;
    this.#log = options.log;
    // A dropped connection is noticed here at once; a hung one only by a command's timeout.
    redis.on('close', () => this.#down(new Error('connection closed')));
    redis.on('ready', () => this.#up());
  }

  /** Connects, failing within ~2 s when Redis does not answer. Later, ioredis reconnects by itself. */
  static async connect(options: SharedLimiterOptions): Promise<SharedLimiter> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    let lastError: Error | undefined;
    let redis: LimitsClient | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      redis = new Redis(options.url, {
        lazyConnect: true,
        connectTimeout: CONNECT_TIMEOUT_MS,
        commandTimeout: timeoutMs,
        // Fail at once while disconnected, so the fallback decides instead of a queue waiting.
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        // Keep reconnecting, at most a second apart, so recovery is noticed quickly.
        retryStrategy: (times) => Math.min(times * 100, 1000),
      }) as LimitsClient;
      // Without a listener ioredis prints every failed reconnect; the state changes are logged instead.
      redis.on('error', (err: Error) => (lastError = err));
      redis.defineCommand('sluiceTake', { numberOfKeys: 2, lua: TAKE_SCRIPT });
      await Promise.race([
        redis.connect(),
        new Promise((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no answer within ${CONNECT_TIMEOUT_MS} ms`)),
            CONNECT_TIMEOUT_MS,
          );
        }),
      ]);
    } catch (err) {
      redis?.disconnect();
      const reason = lastError ?? (err as Error);
      throw new SluiceError(
        'SLUICE_ERR_CONNECT',
        `cannot connect to Redis at ${redact(options.url)}: ${reason.message}`,
        {
          cause: reason,
        },
      );
    } finally {
      clearTimeout(timer);
    }
    return new SharedLimiter(redis, options);
  }

  /** False while Redis is unreachable: takes are decided by the fallback. */
  get healthy(): boolean {
    return this.#healthy;
  }

  /** Takes `events` and `bytes` tokens from the tenant's shared buckets, all or none. */
  async take(tenant: string, limits: TenantLimits, events: number, bytes: number): Promise<SharedVerdict> {
    if (this.#redis.status !== 'ready' || (!this.#healthy && this.#probing))
      return this.#fallback(tenant, limits, events, bytes);
    const probe = !this.#healthy;
    if (probe) this.#probing = true;
    const burst = limits.burstSeconds;
    // Capacities as in TenantLimiter; a rate of 0 tells the script there is no such limit.
    const eventsRate = limits.eventsPerSecond || 0;
    const bytesRate = limits.bytesPerSecond || 0;
    const key = `${this.#prefix}{${tenant}}`;
    let reply: TakeReply;
    try {
      // The braces make both keys hash to one slot, as a script's keys must on Redis Cluster.
      reply = await this.#redis.sluiceTake(
        `${key}:events`,
        `${key}:bytes`,
        String(eventsRate),
        String(Math.max(1, eventsRate * burst)),
        String(events),
        String(bytesRate),
        String(Math.max(1, bytesRate * burst)),
        String(bytes),
      );
    } catch (err) {
      // A timed-out take may still have run on Redis; the fallback deciding too errs towards admitting.
      this.#down(err as Error);
      return this.#fallback(tenant, limits, events, bytes);
    } finally {
      if (probe) this.#probing = false;
    }
    this.#up();
    const [ok, retryAfter, tooBig, limit] = reply;
    if (ok) return { ok: true, retryAfter: 0, tooBig: false, decidedBy: 'redis' };
    return {
      ok: false,
      retryAfter,
      tooBig: tooBig === 1,
      limit: limit === 1 ? 'events' : 'bytes',
      decidedBy: 'redis',
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    // quit() waits for replies still due; when disconnected it fails at once, and disconnect()
    // then stops the reconnecting.
    await this.#redis.quit().catch(() => {});
    this.#redis.disconnect();
  }

  #fallback(tenant: string, limits: TenantLimits, events: number, bytes: number): SharedVerdict {
    if (this.#onError === 'reject')
      return { ok: false, retryAfter: 1, tooBig: false, decidedBy: 'unavailable' };
    let entry = this.#local.get(tenant);
    // A reload may have changed the tenant's limits: start a bucket with the new ones.
    if (
      !entry ||
      entry.limits.eventsPerSecond !== limits.eventsPerSecond ||
      entry.limits.bytesPerSecond !== limits.bytesPerSecond ||
      entry.limits.burstSeconds !== limits.burstSeconds
    ) {
      entry = { limits, limiter: new TenantLimiter(limits) };
      this.#local.set(tenant, entry);
    }
    return { ...entry.limiter.take(events, bytes), decidedBy: 'local' };
  }

  /** Logged once per outage, not per request. */
  #down(err: Error): void {
    if (!this.#healthy || this.#closed) return;
    this.#healthy = false;
    this.#log?.warn(
      { err: err.message, onError: this.#onError },
      this.#onError === 'local'
        ? 'Redis is unreachable: rate limits are enforced per instance until it is back'
        : 'Redis is unreachable: requests are refused until it is back',
    );
  }

  #up(): void {
    if (this.#healthy || this.#closed) return;
    this.#healthy = true;
    this.#log?.info({}, 'Redis is reachable again: rate limits are shared again');
  }
}
