/**
 * The payments example on 100k events of the project's own generator: one worker and three write
 * byte-identical files, and the counts and dead letters are those the input calls for (worked out
 * here from the generator's few kinds of bad line, its redeliveries and the lateness rule). Where
 * ../shared is present, a cross-check: on the reference workload's seed-1 100k input the results
 * equal its independent expected results (shared/workload/compare.mjs, tolerances only where the
 * spec gives them), again with one worker and with three.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { compareWithExpected, PAYMENTS, SAMPLE_100K, SEED1_100K, sluice, tempDir } from './helpers.ts';

type Json = Record<string, unknown>;

const OUTPUTS = ['windows.ndjson', 'large.ndjson', 'dead.ndjson', 'summary.json'];

async function runWith(input: string, workers: number): Promise<string> {
  const out = tempDir();
  const r = await sluice(['run', PAYMENTS, '--input', input, '--out', out, '--workers', String(workers)]);
  assert.equal(r.code, 0, r.stderr);
  return out;
}

function ndjson(file: string): Json[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Json);
}

/**
 * The dead letters (line, reason) and counters the sample input calls for. Every event the
 * generator makes whole is valid; its bad lines are not JSON, not an object, or an object that
 * lacks most fields. Then the spec's rules: a repeated id is a duplicate; an event is late when
 * its 60 s window ends 60 s or more before the largest event time accepted so far.
 */
function sampleExpectations(input: string): { dead: [number, string][]; summary: Json } {
  const lines = readFileSync(input, 'utf8').split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const dead: [number, string][] = [];
  const seen = new Set<string>();
  let watermark = -Infinity;
  let duplicates = 0;
  for (const [i, line] of lines.entries()) {
    let e: unknown;
    try {
      e = JSON.parse(line);
    } catch {
      dead.push([i + 1, 'parse']);
      continue;
    }
    const ev = e as Json | null;
    const whole =
      typeof ev === 'object' &&
      ev !== null &&
      !Array.isArray(ev) &&
      /^evt_[0-9A-HJKMNP-TV-Z]{26}$/.test(String(ev.id)) &&
      typeof ev.ts === 'string' &&
      typeof ev.amount === 'string' &&
      typeof ev.currency === 'string' &&
      typeof ev.user === 'object';
    if (!whole) {
      dead.push([i + 1, 'invalid']);
      continue;
    }
    const id = ev.id as string;
    if (seen.has(id)) {
      duplicates++;
      continue;
    }
    seen.add(id);
    const ts = Date.parse(ev.ts as string);
    if (Math.floor(ts / 60_000) * 60_000 + 120_000 <= watermark) {
      dead.push([i + 1, 'late']);
      continue;
    }
    watermark = Math.max(watermark, ts);
  }
  const count = (...reasons: string[]): number => dead.filter(([, r]) => reasons.includes(r)).length;
  return {
    dead,
    summary: {
      lines: lines.length,
      accepted: lines.length - dead.length - duplicates,
      invalid: count('parse', 'invalid'),
      duplicates,
      late: count('late'),
    },
  };
}

describe(`payments example on ${SAMPLE_100K.name}`, () => {
  const out: Record<number, string> = {};

  for (const workers of [1, 3]) {
    it(`gives the dead letters and counts the input calls for, with --workers ${workers}`, async () => {
      const input = SAMPLE_100K.input();
      out[workers] = await runWith(input, workers);
      const { dead, summary } = sampleExpectations(input);
      assert.ok(
        (['parse', 'invalid', 'late'] as const).every((r) => dead.some(([, reason]) => reason === r)) &&
          Number(summary.duplicates) > 0,
        `the sample lacks some kind of dirt: ${JSON.stringify(summary)}`,
      );
      const written = JSON.parse(readFileSync(join(out[workers], 'summary.json'), 'utf8')) as Json;
      const large = ndjson(join(out[workers], 'large.ndjson'));
      assert.deepEqual(written, { ...summary, large: large.length });
      assert.deepEqual(
        ndjson(join(out[workers], 'dead.ndjson')).map((d) => [d.line, d.reason]),
        dead,
      );
      const windows = ndjson(join(out[workers], 'windows.ndjson'));
      assert.equal(
        windows.reduce((n, w) => n + Number(w.count), 0),
        summary.accepted,
        'every accepted event is counted in one window',
      );
      assert.ok(large.length > 100, `only ${large.length} large payments`);
      for (const l of large)
        assert.ok(BigInt(l.amount_usd_micros as string) >= 10_000_000_000n, l.id as string);
    });
  }

  it('writes byte-identical outputs with 1 and 3 workers', () => {
    assert.ok(out[1] && out[3], 'the runs above did not finish');
    for (const file of OUTPUTS)
      assert.ok(
        readFileSync(join(out[1], file)).equals(readFileSync(join(out[3], file))),
        `${file} differs between 1 and 3 workers`,
      );
  });
});

describe(`payments example (${SEED1_100K.name})`, () => {
  const out: Record<number, string> = {};

  for (const workers of [1, 3]) {
    it(
      `equals ../shared/workload/expected/${SEED1_100K.expected} with --workers ${workers}`,
      SEED1_100K.options,
      async () => {
        out[workers] = await runWith(SEED1_100K.input(), workers);
        const { code, report } = compareWithExpected(SEED1_100K.expected!, out[workers]);
        assert.equal(code, 0, report);
      },
    );
  }

  it('writes byte-identical outputs with 1 and 3 workers', SEED1_100K.options, () => {
    assert.ok(out[1] && out[3], 'the runs above did not finish');
    for (const file of OUTPUTS)
      assert.ok(
        readFileSync(join(out[1], file)).equals(readFileSync(join(out[3], file))),
        `${file} differs between 1 and 3 workers`,
      );
  });
});
