/**
 * 32-bit string hash over UTF-16 code units (MurmurHash2 mixing, fmix32 finalizer). The same
 * function is used where a hash is computed and where it is looked up, in any thread, so equal
 * strings always hash equally without encoding them first.
 */
export function hashString(s: string): number {
  let h = 0x9747b28c ^ s.length;
  for (let i = 0; i < s.length; i++) {
    h = Math.imul(h ^ s.charCodeAt(i), 0x5bd1e995);
    h ^= h >>> 13;
  }
  return fmix32(h);
}

/**
 * {@link hashString} of the Latin-1 text in `bytes[start, end)` (one character per byte): the same
 * value, without making the string.
 */
export function hashBytes(bytes: Uint8Array, start: number, end: number): number {
  let h = 0x9747b28c ^ (end - start);
  for (let i = start; i < end; i++) {
    h = Math.imul(h ^ bytes[i]!, 0x5bd1e995);
    h ^= h >>> 13;
  }
  return fmix32(h);
}

/** MurmurHash3's finalizer: every input bit reaches every output bit. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Smallest power of two ≥ n (and ≥ 16). */
export function capacityFor(n: number): number {
  let c = 16;
  while (c < n) c *= 2;
  return c;
}
