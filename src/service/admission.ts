/**
 * Bounds what an instance holds for requests in flight: their number, and the bytes of their
 * bodies from arrival to answer (`limits.in_flight_*`). Beyond either, new requests get 503 with
 * Retry-After instead of queueing without end.
 */
import { SluiceError } from '../errors.ts';
import type { ServiceConfig } from './config.ts';

export class Admission {
  #bytes = 0;
  #requests = 0;

  get bytes(): number {
    return this.#bytes;
  }

  get requests(): number {
    return this.#requests;
  }

  /** Whether a request of `bytes` may start under `limits`; otherwise the error to answer with. */
  admit(limits: ServiceConfig['limits'], bytes: number): SluiceError | undefined {
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

  /** Counts a request's bytes until the returned function is called (once; more calls do nothing). */
  track(bytes: number): () => void {
    this.#requests++;
    this.#bytes += bytes;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#requests--;
      this.#bytes -= bytes;
    };
  }
}
