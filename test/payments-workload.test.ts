/**
 * The payments example on the reference workload's seed-1 100k input equals the expected results
 * (shared/workload/compare.mjs, tolerances only where the spec gives them), with one worker and
 * with three, and the two runs write byte-identical files.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { compareWithExpected, PAYMENTS, sluice, tempDir, workloadInput } from './helpers.ts';

describe('payments example on seed-1 100k', () => {
  let input: string;
  const out: Record<number, string> = {};

  before(() => {
    input = workloadInput(100_000);
  });

  for (const workers of [1, 3]) {
    it(`equals shared/workload/expected/seed1-100k with --workers ${workers}`, async () => {
      out[workers] = tempDir();
      const r = await sluice([
        'run',
        PAYMENTS,
        '--input',
        input,
        '--out',
        out[workers]!,
        '--workers',
        String(workers),
      ]);
      assert.equal(r.code, 0, r.stderr);
      const { code, report } = compareWithExpected('seed1-100k', out[workers]!);
      assert.equal(code, 0, report);
    });
  }

  it('writes byte-identical outputs with 1 and 3 workers', () => {
    for (const file of ['windows.ndjson', 'large.ndjson', 'dead.ndjson', 'summary.json']) {
      assert.ok(
        readFileSync(join(out[1]!, file)).equals(readFileSync(join(out[3]!, file))),
        `${file} differs between 1 and 3 workers`,
      );
    }
  });
});
