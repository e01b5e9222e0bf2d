/**
 * The file source cuts NDJSON into chunks two ways: a plain file is read straight into the buffers
 * that become chunks; gzip (and standard input) go through a stream whose reads are joined and cut.
 * For any lines (empty ones, lines longer than a chunk, lines above max_record_bytes, a last line
 * without a newline) and any chunk size, both must give every line once, in order, whole in one
 * chunk, and each line above the limit either whole (the decoder refuses it) or as one oversize
 * chunk of its beginning.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { openFile } from '../dist/sources/file/reader.js';
import { OVERSIZE_PREFIX } from '../dist/sources/file/decoder.js';

const dir = mkdtempSync(join(tmpdir(), 'sluice-file-reader-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const TOO_LARGE = '(too large)';

/** The lines a reader gives, each line above `maxRecord` as TOO_LARGE; checks chunks end at lines. */
async function linesRead(path: string, chunkBytes: number, maxRecord: number): Promise<string[]> {
  const reader = await openFile({ type: 'file', max_record_bytes: maxRecord }, path, { chunkBytes });
  const lines: string[] = [];
  try {
    for await (const chunk of reader.chunks()) {
      const text = Buffer.from(chunk.bytes.buffer, chunk.bytes.byteOffset, chunk.bytes.byteLength).toString(
        'latin1',
      );
      if (chunk.oversize !== undefined) {
        assert.ok(chunk.oversize > maxRecord, 'an oversize chunk stands for a line above the limit');
        assert.ok(text.length <= OVERSIZE_PREFIX, 'an oversize chunk keeps only the beginning');
        lines.push(TOO_LARGE);
        continue;
      }
      const parts = text.split('\n');
      if (parts[parts.length - 1] === '') parts.pop();
      for (const line of parts) lines.push(line.length > maxRecord ? TOO_LARGE : line);
    }
  } finally {
    await reader.close();
  }
  return lines;
}

describe('the file source cuts NDJSON', () => {
  let n = 0;
  it('into the same lines from a plain file and from gzip, for any lines and chunk size', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.oneof(
            {
              weight: 6,
              arbitrary: fc.string({ unit: fc.constantFrom('a', 'b', '{', '"', ' '), maxLength: 80 }),
            },
            { weight: 1, arbitrary: fc.integer({ min: 100, max: 5000 }).map((k) => 'x'.repeat(k)) },
          ),
          { maxLength: 60 },
        ),
        fc.boolean(),
        fc.integer({ min: 16, max: 2048 }),
        fc.integer({ min: 50, max: 3000 }),
        async (lines, lastNewline, chunkBytes, maxRecord) => {
          const text = lines.join('\n') + (lastNewline && lines.length > 0 ? '\n' : '');
          const plain = join(dir, `in-${n}.ndjson`);
          const gz = join(dir, `in-${n++}.ndjson.gz`);
          writeFileSync(plain, text, 'latin1');
          writeFileSync(gz, gzipSync(Buffer.from(text, 'latin1')));
          // What a reader must give: a last line without a newline is still a line, an empty
          // input has none.
          const expected = text === '' ? [] : text.replace(/\n$/, '').split('\n');
          const want = expected.map((l) => (l.length > maxRecord ? TOO_LARGE : l));
          assert.deepEqual(await linesRead(plain, chunkBytes, maxRecord), want, 'plain file');
          assert.deepEqual(await linesRead(gz, chunkBytes, maxRecord), want, 'gzip');
        },
      ),
      { numRuns: 300 },
    );
  });
});
