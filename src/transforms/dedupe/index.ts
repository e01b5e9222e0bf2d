/**
 * `dedupe`: drops a record whose key was already seen earlier in the input; the first occurrence
 * wins. "Earlier" is input order, whichever worker parsed the record: workers extract keys and
 * their hashes, and the main thread decides in input order against one exact key set.
 *
 * With `within`, keys expire so that a long-running service holds a bounded set: keys live in
 * generations of `within` of event time (the current one and the one before), and a generation
 * is dropped when the largest event time seen passes the end of the next. A duplicate whose event
 * time is less than `within` after the largest time seen with its first occurrence is always caught.
 */
import { parseDuration, rfc3339ToEpochMs } from '../../helpers/time.ts';
import type { ComponentExtras } from '../../core/registry.ts';
import { hashString } from '../../core/hash.ts';
import type { Batch, OrderedStep, Rec, Sequencer, TransformSpec } from '../../core/types.ts';
import { verdictOf } from '../../core/types.ts';
import { fieldReader } from '../../core/fields.ts';
import { KeySet, type KeySetState } from './key-set.ts';

export interface DedupeConfig {
  type: 'dedupe';
  /** One field or several; dots reach into objects. */
  key: string | string[];
  /** Event time (epoch ms or RFC 3339), required with `within`. */
  time_field?: string;
  /** How long, in event time, a key is remembered at least; without it, forever. */
  within?: string | number;
}

interface KeysPayload {
  /** Every key, concatenated. */
  text: string;
  /** End offset of key i in `text`; -1 when the record has no key. */
  ends: Int32Array;
  hashes: Uint32Array;
  /** Event times, when keys expire (`within`); NaN when missing. */
  times?: Float64Array;
}

const DUPLICATE = 0;
const NO_KEY = 1;
const NO_TIME = 2;

/** A key's text: strings as they are; other values as JSON after a marker, so 1 and "1" differ. */
function keyPart(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v === undefined || v === null) return undefined;
  return '\u0001' + JSON.stringify(v);
}

/** Text that JSON writes as it is between quotes: no quote, backslash, control or surrogate. */
function plainText(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c || (c >= 0xd800 && c <= 0xdfff)) return false;
  }
  return true;
}

class DedupeStep implements OrderedStep {
  readonly kind = 'ordered';
  readonly outcomes = [
    { kind: 'drop', reason: 'duplicate' },
    { kind: 'dead', reason: 'invalid' },
    { kind: 'dead', reason: 'invalid' },
  ] as const;
  readonly #readers: ((r: Rec) => unknown)[];
  readonly #fields: string[];
  readonly #timeField: string | undefined;
  readonly #time: ((r: Rec) => unknown) | undefined;

  constructor(config: DedupeConfig) {
    this.#fields = Array.isArray(config.key) ? config.key : [config.key];
    this.#readers = this.#fields.map(fieldReader);
    this.#timeField = config.within === undefined ? undefined : config.time_field;
    this.#time = this.#timeField === undefined ? undefined : fieldReader(this.#timeField);
  }

  #keyOf(r: Rec): string | undefined {
    const readers = this.#readers;
    if (readers.length === 1) return keyPart(readers[0]!(r));
    // The key is the JSON text of the values' array (saved in checkpoints, so it must not change),
    // written here without the array and JSON.stringify's call for each value, which measured
    // 4.7% of the telemetry workload's CPU with a three-field key.
    let key = '[';
    for (let i = 0; i < readers.length; i++) {
      const v = readers[i]!(r);
      if (v === undefined || v === null) return undefined;
      if (i > 0) key += ',';
      key +=
        typeof v === 'string' && plainText(v)
          ? '"' + v + '"'
          : typeof v === 'number' && Number.isFinite(v)
            ? String(v)
            : JSON.stringify(v);
    }
    return key + ']';
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
    if (!this.#time) return { text, ends, hashes };
    const times = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const v = this.#time(input.records[i]!);
      times[i] = typeof v === 'number' ? v : typeof v === 'string' ? rfc3339ToEpochMs(v) : NaN;
    }
    return { text, ends, hashes, times };
  }

  describe(outcome: number, record: Rec): string {
    if (outcome === NO_TIME)
      return `dedupe time field ${this.#timeField} is missing, or is not epoch milliseconds or an RFC 3339 time`;
    if (outcome !== NO_KEY) return 'duplicate';
    if (this.#fields.length === 1) return `dedupe key ${this.#fields[0]} is missing or null`;
    const missing = this.#fields.filter((_, i) => this.#readers[i]!(record) == null);
    return `dedupe key field${missing.length > 1 ? 's' : ''} ${missing.join(', ')} ${missing.length > 1 ? 'are' : 'is'} missing or null (key: ${this.#fields.join(', ')})`;
  }
}

interface DedupeState {
  current: KeySetState;
  previous: KeySetState | null;
  generationEnd: number;
}

class DedupeSequencer implements Sequencer {
  #current = new KeySet();
  /** With `within`: the generation before the current one. */
  #previous: KeySet | undefined;
  /** Event time at which the current generation ends. */
  #generationEnd = -Infinity;

  constructor(private readonly within: number | undefined) {}

  snapshot(): DedupeState {
    return {
      current: this.#current.snapshot(),
      previous: this.#previous?.snapshot() ?? null,
      generationEnd: this.#generationEnd,
    };
  }

  restore(state: unknown): void {
    const s = state as DedupeState;
    this.#current = KeySet.from(s.current);
    this.#previous = s.previous ? KeySet.from(s.previous) : undefined;
    this.#generationEnd = s.generationEnd;
  }

  /** Moves to the generation holding event time `t`, dropping what has expired. */
  #advance(t: number): void {
    const within = this.within!;
    const end = Math.floor(t / within) * within + within;
    this.#previous = end - within === this.#generationEnd ? this.#current : undefined;
    this.#current = new KeySet();
    this.#generationEnd = end;
  }

  decide(payload: unknown, verdicts: Uint16Array, slot: number): undefined {
    const { text, ends, hashes, times } = payload as KeysPayload;
    let start = 0;
    for (let i = 0; i < ends.length; i++) {
      const end = ends[i]!;
      if (end < 0) {
        if (verdicts[i] === 0) verdicts[i] = verdictOf(slot, NO_KEY);
        continue;
      }
      const keyStart = start;
      start = end;
      if (verdicts[i] !== 0) continue;
      if (times) {
        const t = times[i]!;
        if (Number.isNaN(t)) {
          verdicts[i] = verdictOf(slot, NO_TIME);
          continue;
        }
        if (t >= this.#generationEnd) this.#advance(t);
        if (this.#previous?.has(text, keyStart, end, hashes[i]!)) {
          verdicts[i] = verdictOf(slot, DUPLICATE);
          continue;
        }
      }
      if (!this.#current.add(text, keyStart, end, hashes[i]!)) verdicts[i] = verdictOf(slot, DUPLICATE);
    }
    return undefined;
  }
}

export const dedupeTransform: TransformSpec<DedupeConfig> & ComponentExtras<DedupeConfig> = {
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
      time_field: {
        type: 'string',
        description: 'Event time (epoch milliseconds or RFC 3339) that `within` is measured in.',
      },
      within: {
        anyOf: [{ type: 'string' }, { type: 'number', minimum: 0 }],
        description:
          'Remember keys for at least this long in event time, then forget them (bounded memory); default: forever.',
      },
    },
    dependentRequired: { within: ['time_field'] },
  },
  check: (config) => {
    if (config.within === undefined) return undefined;
    const ms = parseDuration(config.within);
    if (!Number.isFinite(ms) || ms <= 0)
      return {
        key: 'within',
        message: `${JSON.stringify(config.within)} is not a duration`,
        hint: 'Write durations like 24h, 30m or 7d.',
      };
    return undefined;
  },
  knownFields: (_config, before) => before,
  readsFields: (config) => {
    const without = 'becomes an `invalid` dead letter at this step';
    const keys = Array.isArray(config.key)
      ? config.key.map((field, i) => ({ option: ['key', i], field, without }))
      : [{ option: ['key'], field: config.key, without }];
    if (config.within === undefined || config.time_field === undefined) return keys;
    return [...keys, { option: ['time_field'], field: config.time_field, without }];
  },
  create: (config) => new DedupeStep(config),
  sequencer: (config) =>
    new DedupeSequencer(config.within === undefined ? undefined : parseDuration(config.within)),
};
