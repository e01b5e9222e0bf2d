/** API keys: only their SHA-256 digests are kept, and a presented key is compared with every one. */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { TenantConfig } from './config.ts';

export class KeyRing {
  readonly #keys: { hash: Buffer; tenant: string }[];

  constructor(tenants: TenantConfig[]) {
    this.#keys = tenants.flatMap((t) => t.keyHashes.map((hash) => ({ hash, tenant: t.id })));
  }

  /** The tenant id a `Bearer` key belongs to. Every hash is compared, in constant time each. */
  tenantOf(authorization: string | undefined): string | undefined {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (!m) return undefined;
    const presented = createHash('sha256').update(m[1]!, 'utf8').digest();
    let found: string | undefined;
    for (const k of this.#keys) if (timingSafeEqual(k.hash, presented)) found = k.tenant;
    return found;
  }
}
