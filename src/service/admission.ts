/**
 * Bounds what an instance holds for requests in flight: their number, and the bytes of their
 * bodies from arrival to answer (`limits.in_flight_*`). Beyond either, new requests get 503 with
 * Retry-After instead of queueing without end.
 *
 * Requests are admitted only once authenticated, and with more than one tenant configured no tenant
 * may hold more than TENANT_SHARE of either budget: one tenant's flood (or slow bodies) leaves the
 * rest to the others. Before, anyone without a key could declare large bodies, trickle them, and
 * lock every tenant out.
 *
 * While the thread's event loop stays behind by more than `limits.loop_delay`, a tenant that holds
 * its share of the requests in flight or more is refused at once, before its body is read, so the
 * thread sheds the work that made it late; a tenant with none in flight, or fewer than its share,
 * is not, and every tenant still makes progress.
 */
import { SluiceError } from '../errors.ts';
import type { ServiceConfig } from './config.ts';
import { loopDelayMs, watchLoopDelay } from './loop-delay.ts';

/** The share of `limits.in_flight_*` one tenant may hold when there are others. */
export const TENANT_SHARE = 0.5;

interface Held {
  bytes: number;
  requests: number;
}

export class Admission {
  #bytes = 0;
  #requests = 0;
  readonly #byTenant = new Map<string, Held>();

  constructor() {
    watchLoopDelay();
  }

  get bytes(): number {
    return this.#bytes;
  }

  get requests(): number {
    return this.#requests;
  }

  /**
   * Whether a request of `bytes` from `tenant` may start under `limits`, `tenants` being how many
   * are configured; otherwise the error to answer with.
   */
  admit(
    limits: ServiceConfig['limits'],
    bytes: number,
    tenant: string,
    tenants: number,
  ): SluiceError | undefined {
    const held = this.#byTenant.get(tenant);
    if (held && limits.loopDelayMs > 0) {
      // Its share of what is in flight: the requests split evenly over the tenants that have some.
      // One at a time alone, and a light tenant beside a flood is not refused (with one request at
      // a time as the rule, a tenant at 50 req/s whose answers the late loop slowed had 2-5 in
      // flight and got 31 of 1,500 refused in bench:overload).
      const share = Math.ceil(this.#requests / this.#byTenant.size);
      const delay = held.requests >= share ? loopDelayMs() : 0;
      if (delay > limits.loopDelayMs)
        return new SluiceError(
          'SLUICE_ERR_OVERLOADED',
          `this instance's event loop is ${Math.round(delay)} ms behind (limits.loop_delay = ${limits.loopDelayMs} ms) and tenant ${tenant} has ${held.requests} of the ${this.#requests} requests in flight, its share or more`,
        );
    }
    if (tenants > 1 && held) {
      const requests = Math.max(1, Math.floor(limits.inFlightRequests * TENANT_SHARE));
      if (held.requests >= requests)
        return new SluiceError(
          'SLUICE_ERR_OVERLOADED',
          `tenant ${tenant} has ${held.requests} requests in flight, its share of limits.in_flight_requests (${requests} of ${limits.inFlightRequests})`,
        );
      // A body as large as body_bytes is always allowed a place of its own.
      const share = Math.max(limits.bodyBytes, Math.floor(limits.inFlightBytes * TENANT_SHARE));
      if (held.bytes + bytes > share)
        return new SluiceError(
          'SLUICE_ERR_OVERLOADED',
          `tenant ${tenant} has ${held.bytes} bytes in flight, near its share of limits.in_flight_bytes (${share} of ${limits.inFlightBytes})`,
        );
    }
    if (this.#requests >= limits.inFlightRequests)
      return new SluiceError(
        'SLUICE_ERR_OVERLOADED',
        `${this.#requests} requests are in flight (limits.in_flight_requests = ${limits.inFlightRequests})`,
      );
    if (this.#bytes + bytes > limits.inFlightBytes)
      return new SluiceError(
        'SLUICE_ERR_OVERLOADED',
        `${this.#bytes} bytes are waiting to be processed or made durable (limits.in_flight_bytes = ${limits.inFlightBytes})`,
      );
    return undefined;
  }

  /**
   * Counts a tenant's request and its bytes until the returned function is called (once; more calls
   * do nothing).
   */
  track(bytes: number, tenant: string): () => void {
    this.#requests++;
    this.#bytes += bytes;
    let held = this.#byTenant.get(tenant);
    if (!held) this.#byTenant.set(tenant, (held = { bytes: 0, requests: 0 }));
    held.requests++;
    held.bytes += bytes;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#requests--;
      this.#bytes -= bytes;
      held.requests--;
      held.bytes -= bytes;
      if (held.requests === 0) this.#byTenant.delete(tenant);
    };
  }
}
