/**
 * `dedupe`: drops a record whose key was already seen earlier in the input; the first occurrence
 * wins. "Earlier" is input order, whichever worker parsed the record: workers extract keys and
 * their hashes, and the main thread decides in input order against one exact key set.
 */
import { hashString } from '../../core/hash.ts';
import type { Batch, OrderedStep, Rec, Sequencer, TransformSpec } from '../../core/types.ts';
import { verdictOf } from '../../core/types.ts';
import { fieldReader } from '../../core/fields.ts';
import { KeySet, type KeySetState } from './key-set.ts';

export interface DedupeConfig {
  type: 'dedupe';
  /** One field or several; dots reach into objects. */
  key: string | string[];
}

interface KeysPayload {
  /** Every key, concatenated. */
  text: string;
  /** End offset of key i in `text`; -1 when the record has no key. */
  ends: Int32Array;
  hashes: Uint32Array;
}

const DUPLICATE = 0;
const NO_KEY = 1;

/** A key's text: strings as they are; other values as JSON after a marker, so 1 and "1" differ. */
function keyPart(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v === undefined || v === null) return undefined;
  return '\u0001' + JSON.stringify(v);
}

class DedupeStep implements OrderedStep {
  readonly kind = 'ordered';
  readonly outcomes = [
    { kind: 'drop', reason: 'duplicate' },
    { kind: 'dead', reason: 'invalid' },
  ] as const;
  readonly #readers: ((r: Rec) => unknown)[];
  readonly #fields: string[];

  constructor(config: DedupeConfig) {
    this.#fields = Array.isArray(config.key) ? config.key : [config.key];
    this.#readers = this.#fields.map(fieldReader);
  }

  #keyOf(r: Rec): string | undefined {
    if (this.#readers.length === 1) return keyPart(this.#readers[0]!(r));
    const parts: unknown[] = [];
    for (const read of this.#readers) {
      const v = read(r);
      if (v === undefined || v === null) return undefined;
      parts.push(v);
    }
    return JSON.stringify(parts);
  }

  extract(input: Batch): KeysPayload {
    const n = input.records.length;
    const ends = new Int32Array(n);
    const hashes = new Uint32Array(n);
    let text = '';
    for (let i = 0; i < n; i++) {
      const key = this.#keyOf(input.records[i]!);
      if (key === undefined) {
        ends[i] = -1;
        continue;
      }
      text += key;
      ends[i] = text.length;
      hashes[i] = hashString(key);
    }
    return { text, ends, hashes };
  }

  describe(outcome: number): string {
    return outcome === NO_KEY ? `dedupe key ${this.#fields.join(', ')} is missing or null` : 'duplicate';
  }
}

class DedupeSequencer implements Sequencer {
  #seen = new KeySet();

  snapshot(): KeySetState {
    return this.#seen.snapshot();
  }

  restore(state: unknown): void {
    this.#seen = KeySet.from(state as KeySetState);
  }

  decide(payload: unknown, verdicts: Uint16Array, slot: number): undefined {
    const { text, ends, hashes } = payload as KeysPayload;
    let start = 0;
    for (let i = 0; i < ends.length; i++) {
      const end = ends[i]!;
      if (end < 0) {
        if (verdicts[i] === 0) verdicts[i] = verdictOf(slot, NO_KEY);
        continue;
      }
      if (verdicts[i] === 0 && !this.#seen.add(text, start, end, hashes[i]!))
        verdicts[i] = verdictOf(slot, DUPLICATE);
      start = end;
    }
    return undefined;
  }
}

export const dedupeTransform: TransformSpec<DedupeConfig> = {
  type: 'dedupe',
  description: 'Drops records whose key was already seen earlier in the input (first occurrence wins).',
  schema: {
    type: 'object',
    required: ['key'],
    properties: {
      key: {
        anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' }, minItems: 1 }],
        description: 'Field, or fields, whose values identify a record (dots reach into objects).',
      },
    },
  },
  create: (config) => new DedupeStep(config),
  sequencer: () => new DedupeSequencer(),
};
