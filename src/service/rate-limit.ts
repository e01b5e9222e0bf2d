/**
 * Per-tenant token buckets, one for events and one for bytes. A request takes all its tokens or
 * none: a refused request costs nothing and says how long until it would fit.
 */
import type { TenantLimits } from './config.ts';

class Bucket {
  #tokens: number;
  #at: number;

  constructor(
    readonly rate: number,
    readonly capacity: number,
  ) {
    this.#tokens = capacity;
    this.#at = performance.now();
  }

  /** Tokens now, after refilling for the time since the last call. */
  level(now: number): number {
    this.#tokens = Math.min(this.capacity, this.#tokens + ((now - this.#at) / 1000) * this.rate);
    this.#at = now;
    return this.#tokens;
  }

  take(n: number): void {
    this.#tokens -= n;
  }
}

export interface Verdict {
  ok: boolean;
  /** Seconds until the request would fit (whole seconds, at least 1), when refused. */
  retryAfter: number;
  /** The request can never fit: it is larger than the bucket. */
  tooBig: boolean;
  limit?: 'events' | 'bytes';
  /** Who decided, when the limits are shared (`shared-limits.ts`); 'unavailable' refuses with 503. */
  decidedBy?: 'redis' | 'local' | 'unavailable';
}

export class TenantLimiter {
  readonly #events: Bucket | undefined;
  readonly #bytes: Bucket | undefined;

  constructor(limits: TenantLimits) {
    const burst = limits.burstSeconds;
    if (limits.eventsPerSecond)
      this.#events = new Bucket(limits.eventsPerSecond, Math.max(1, limits.eventsPerSecond * burst));
    if (limits.bytesPerSecond)
      this.#bytes = new Bucket(limits.bytesPerSecond, Math.max(1, limits.bytesPerSecond * burst));
  }

  /** Takes `events` and `bytes` tokens if both buckets hold enough. */
  take(events: number, bytes: number): Verdict {
    const now = performance.now();
    const checks: [Bucket | undefined, number, 'events' | 'bytes'][] = [
      [this.#events, events, 'events'],
      [this.#bytes, bytes, 'bytes'],
    ];
    for (const [bucket, n, limit] of checks) {
      if (!bucket) continue;
      if (n > bucket.capacity) return { ok: false, retryAfter: 0, tooBig: true, limit };
      const level = bucket.level(now);
      if (level < n)
        return {
          ok: false,
          retryAfter: Math.max(1, Math.ceil((n - level) / bucket.rate)),
          tooBig: false,
          limit,
        };
    }
    this.#events?.take(events);
    this.#bytes?.take(bytes);
    return { ok: true, retryAfter: 0, tooBig: false };
  }
}
