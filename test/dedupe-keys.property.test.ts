/**
 * A dedupe key of several fields is the JSON text of their values' array: it is saved in
 * checkpoints, so the fast way the step writes it must give exactly JSON.stringify's text, for any
 * values (strings with quotes, controls, lone surrogates, non-BMP characters; numbers of every
 * kind; objects), and a missing or null field means no key.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { dedupeTransform } from '../dist/transforms/dedupe/index.js';
import type { OrderedStep } from '../dist/core/types.js';

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
        const { text, ends } = step.extract({ records, pos: [] }) as { text: string; ends: Int32Array };
        let start = 0;
        rows.forEach((values, i) => {
          if (values.some((v) => v === undefined || v === null)) return assert.equal(ends[i], -1);
          assert.equal(text.slice(start, ends[i]), JSON.stringify(values));
          start = ends[i]!;
        });
      }),
      { numRuns: 2000 },
    );
  });
});
