/**
 * An exact set of strings stored compactly: keys as Latin-1 bytes in one growing arena, an
 * open-addressing index of entry numbers. A million 30-character ids take ~45 MB here against
 * ~100 MB as a JavaScript Set of strings, with no per-key objects for the GC to trace. Keys arrive
 * as Latin-1 bytes (dedupe's workers write them so); keys with characters above U+00FF (rare for
 * ids) arrive as strings and go to a plain Set.
 */
/** A key set's contents, compact and structured-cloneable (typed arrays, no per-key objects). */
export interface KeySetState {
  arena: Uint8Array;
  lengths: Uint32Array;
  hashes: Uint32Array;
  wide: string[];
}

export class KeySet {
  #arena = new Uint8Array(1 << 16);
  #used = 0;
  #offsets = new Uint32Array(1024);
  #lengths = new Uint32Array(1024);
  #hashes = new Uint32Array(1024);
  #count = 0;
  #slots = new Int32Array(2048);
  readonly #wide = new Set<string>();

  /** Rebuilds a set from {@link snapshot}; the index is recomputed from the stored hashes. */
  static from(state: KeySetState): KeySet {
    const set = new KeySet();
    const count = state.lengths.length;
    let capacity = 1024;
    while (capacity < count) capacity *= 2;
    set.#arena = new Uint8Array(Math.max(1 << 16, state.arena.length));
    set.#arena.set(state.arena);
    set.#used = state.arena.length;
    set.#offsets = new Uint32Array(capacity);
    set.#lengths = new Uint32Array(capacity);
    set.#hashes = new Uint32Array(capacity);
    set.#lengths.set(state.lengths);
    set.#hashes.set(state.hashes);
    for (let e = 0, off = 0; e < count; e++) {
      set.#offsets[e] = off;
      off += state.lengths[e]!;
    }
    set.#count = count;
    let slots = 2048;
    while (count * 2 > slots) slots *= 2;
    set.#slots = new Int32Array(slots / 2);
    set.#rehash();
    for (const key of state.wide) set.#wide.add(key);
    return set;
  }

  /**
   * The keys in insertion order. Entries are stored contiguously in the arena, so offsets need not
   * be saved.
   */
  snapshot(): KeySetState {
    return {
      arena: this.#arena.slice(0, this.#used),
      lengths: this.#lengths.slice(0, this.#count),
      hashes: this.#hashes.slice(0, this.#count),
      wide: [...this.#wide],
    };
  }

  get size(): number {
    return this.#count + this.#wide.size;
  }

  /** Whether the Latin-1 key in `bytes[start, end)` (whose hash is `hash`) is present. */
  has(bytes: Uint8Array, start: number, end: number, hash: number): boolean {
    return this.#find(bytes, start, end, hash) < 0;
  }

  /**
   * Adds the Latin-1 key in `bytes[start, end)`, whose hash is `hash` ({@link hashBytes}); returns
   * false when it was already present.
   */
  add(bytes: Uint8Array, start: number, end: number, hash: number): boolean {
    const slot = this.#find(bytes, start, end, hash);
    if (slot < 0) return false;
    this.#store(bytes, start, end - start, hash, slot);
    return true;
  }

  /** Whether a key with characters above U+00FF is present. */
  hasWide(key: string): boolean {
    return this.#wide.has(key);
  }

  /** Adds a key with characters above U+00FF; returns false when it was already present. */
  addWide(key: string): boolean {
    if (this.#wide.has(key)) return false;
    this.#wide.add(key);
    return true;
  }

  /** The free slot where the key would go, or -1 when it is present. */
  #find(bytes: Uint8Array, start: number, end: number, hash: number): number {
    const len = end - start;
    const mask = this.#slots.length - 1;
    let slot = hash & mask;
    const arena = this.#arena;
    for (;;) {
      const entry = this.#slots[slot]!;
      if (entry === 0) break;
      const e = entry - 1;
      if (this.#hashes[e] === hash && this.#lengths[e] === len) {
        const off = this.#offsets[e]!;
        let j = 0;
        while (j < len && arena[off + j] === bytes[start + j]) j++;
        if (j === len) return -1;
      }
      slot = (slot + 1) & mask;
    }
    return slot;
  }

  #store(bytes: Uint8Array, start: number, len: number, hash: number, slot: number): void {
    if (this.#used + len > this.#arena.length) {
      const bigger = new Uint8Array(Math.max(this.#arena.length * 2, this.#used + len));
      bigger.set(this.#arena.subarray(0, this.#used));
      this.#arena = bigger;
    }
    const arena = this.#arena;
    const off = this.#used;
    // A loop, not arena.set(bytes.subarray(...)): keys are ~10–40 bytes, and a subarray is an
    // object per key.
    for (let j = 0; j < len; j++) arena[off + j] = bytes[start + j]!;
    this.#used += len;
    const e = this.#count++;
    if (e === this.#offsets.length) {
      this.#offsets = grow(this.#offsets);
      this.#lengths = grow(this.#lengths);
      this.#hashes = grow(this.#hashes);
    }
    this.#offsets[e] = off;
    this.#lengths[e] = len;
    this.#hashes[e] = hash;
    this.#slots[slot] = e + 1;
    if (this.#count * 2 > this.#slots.length) this.#rehash();
  }

  #rehash(): void {
    const slots = new Int32Array(this.#slots.length * 2);
    const mask = slots.length - 1;
    for (let e = 0; e < this.#count; e++) {
      let slot = this.#hashes[e]! & mask;
      while (slots[slot] !== 0) slot = (slot + 1) & mask;
      slots[slot] = e + 1;
    }
    this.#slots = slots;
  }
}

function grow(a: Uint32Array<ArrayBuffer>): Uint32Array<ArrayBuffer> {
  const b = new Uint32Array(a.length * 2);
  b.set(a);
  return b;
}
