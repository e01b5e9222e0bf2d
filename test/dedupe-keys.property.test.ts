/**
 * A dedupe key of several fields is the JSON text of their values' array: it is saved in
 * checkpoints, so the fast way the step writes it must give exactly JSON.stringify's text, for any
 * values (strings with quotes, controls, lone surrogates, non-BMP characters; numbers of every
 * kind; objects), and a missing or null field means no key. Keys travel as Latin-1 bytes, or as
 * strings when a character is above U+00FF; either way with hashString's hash of the text, the
 * hash checkpoints hold.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { dedupeTransform } from '../dist/transforms/dedupe/index.js';
import { hashBytes, hashString } from '../dist/core/hash.js';
import type { OrderedStep } from '../dist/core/types.js';

interface KeysPayload {
  bytes: Uint8Array;
  ends: Int32Array;
  hashes: Uint32Array;
  wide: string[];
}

const aboveLatin1 = (s: string): boolean => [...s].some((c) => c.codePointAt(0)! > 0xff);

/** Each record's key as text (undefined for none), read back from the payload. */
function keysOf(payload: KeysPayload): (string | undefined)[] {
  const keys: (string | undefined)[] = [];
  let start = 0;
  let w = 0;
  payload.ends.forEach((end, i) => {
    if (end === -1) return keys.push(undefined);
    const key = end === -2 ? payload.wide[w++]! : Buffer.from(payload.bytes).toString('latin1', start, end);
    if (end !== -2) {
      start = end;
      assert.ok(!aboveLatin1(key), 'a key in bytes is Latin-1');
    } else assert.ok(aboveLatin1(key), 'a key apart has a character above U+00FF');
    assert.equal(payload.hashes[i], hashString(key), `hash of ${JSON.stringify(key)}`);
    keys.push(key);
  });
  assert.equal(w, payload.wide.length);
  return keys;
}

const value = fc.oneof(
  fc.string({ unit: 'binary' }),
  fc.string({
    unit: fc.constantFrom('a', '"', '\\', '\n', '\u0000', '\u2028', '\ud800', '\udc00', '李', '🎉'),
  }),
  fc.double(),
  fc.integer(),
  fc.boolean(),
  fc.constant(null),
  fc.constant(undefined),
  fc.jsonValue(),
);

describe('dedupe keys of several fields', () => {
  it('are JSON.stringify of the values, or none when one is missing or null', () => {
    const step = dedupeTransform.create({ type: 'dedupe', key: ['a', 'b', 'c'] }, {} as never) as OrderedStep;
    fc.assert(
      fc.property(fc.array(fc.tuple(value, value, value), { maxLength: 20 }), (rows) => {
        const records = rows.map(([a, b, c]) => ({ a, b, c }));
        const keys = keysOf(step.extract({ records, pos: [] }) as KeysPayload);
        rows.forEach((values, i) => {
          if (values.some((v) => v === undefined || v === null)) return assert.equal(keys[i], undefined);
          assert.equal(keys[i], JSON.stringify(values));
        });
      }),
      { numRuns: 2000 },
    );
  });

  it('of one field are the string itself, a marker and JSON for other values, or none', () => {
    const step = dedupeTransform.create({ type: 'dedupe', key: 'a' }, {} as never) as OrderedStep;
    fc.assert(
      fc.property(fc.array(value, { maxLength: 20 }), (values) => {
        const keys = keysOf(step.extract({ records: values.map((a) => ({ a })), pos: [] }) as KeysPayload);
        values.forEach((v, i) => {
          const expected =
            v === undefined || v === null
              ? undefined
              : typeof v === 'string'
                ? v
                : '\u0001' + JSON.stringify(v);
          assert.equal(keys[i], expected);
        });
      }),
      { numRuns: 2000 },
    );
  });

  it('hash as the checkpoints already saved expect (values from before keys travelled as bytes)', () => {
    // A checkpoint stores each key's hash and looks keys up by it after a restart: a different
    // hash would let every duplicate of a key remembered before an upgrade through.
    const saved: [string, number][] = [
      ['', 3954623016],
      ['a', 2257842616],
      ['evt_01HZX3', 1750051864],
      ['["d-05173","temp",65627]', 3854197167],
      ['Łódź', 3722998902],
    ];
    for (const [key, hash] of saved) {
      assert.equal(hashString(key), hash, key);
      if (!aboveLatin1(key)) assert.equal(hashBytes(Buffer.from(key, 'latin1'), 0, key.length), hash, key);
    }
  });
});
