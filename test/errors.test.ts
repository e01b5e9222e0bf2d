/** docs/errors.md documents exactly the error codes and dead-letter reasons in src/errors.ts. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { DEAD_LETTER_REASONS, ERRORS, SluiceError } from '../dist/index.js';
import { ROOT } from './helpers.ts';

const doc = readFileSync(join(ROOT, 'docs', 'errors.md'), 'utf8');
const section = (title: string): string => {
  const start = doc.indexOf(`## ${title}`);
  assert.ok(start >= 0, `docs/errors.md has no "## ${title}" section`);
  const end = doc.indexOf('\n## ', start + 1);
  return doc.slice(start, end < 0 ? undefined : end);
};
const headings = (text: string): string[] => [...text.matchAll(/^### (\S+)$/gm)].map((m) => m[1]!).sort();

describe('docs/errors.md', () => {
  it('documents every error code, and no other', () => {
    assert.deepEqual(headings(section('Error codes')), Object.keys(ERRORS).sort());
  });

  it('documents every dead-letter reason sluice produces, and no other', () => {
    assert.deepEqual(headings(section('Dead-letter reasons')), Object.keys(DEAD_LETTER_REASONS).sort());
  });

  it('every error has a hint that says what to do', () => {
    for (const [code, spec] of Object.entries(ERRORS))
      assert.ok(spec.hint.length > 20, `${code} needs a real hint`);
  });
});

describe('SluiceError', () => {
  it('makes refusals without a stack trace (they come thousands a second), every other error with one', () => {
    const limit = Error.stackTraceLimit;
    for (const code of ['SLUICE_ERR_OVERLOADED', 'SLUICE_ERR_TENANT_OVERLOADED'] as const) {
      const err = new SluiceError(code, 'the service is overloaded');
      assert.equal(err.stack, 'SluiceError: the service is overloaded');
      assert.equal(err.hint, ERRORS[code].hint);
    }
    const internal = new SluiceError('SLUICE_ERR_INTERNAL', 'a bug');
    assert.match(internal.stack ?? '', /\n\s+at /, 'an internal error keeps its stack');
    assert.equal(Error.stackTraceLimit, limit, 'the stack depth is restored');
  });
});
