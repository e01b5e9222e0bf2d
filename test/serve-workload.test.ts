/**
 * `sluice serve` on the payments workload: 100k events, POSTed in input order in batches of 1 to
 * 500 records (NDJSON with LF or CRLF, JSON arrays, single JSON objects, some gzip), give exactly
 * what `sluice run` gives on the same input. Windows come from GET windows, dead letters from the
 * 202 answers (and again from GET dead-letters), large payments from the sink file after a
 * graceful stop. Paging through windows and dead letters gives the same rows as one page. A
 * restart on the same store changes none of them. The input is the project's own sample; where
 * ../shared is present, the same runs again on its seed-1 100k input and must also equal its
 * independent expected results.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { prng } from '../dist/cli/demo.js';
import {
  assertSameResults,
  batchResults,
  compareWithExpected,
  SAMPLE_100K,
  SEED1_100K,
  tempDir,
} from './helpers.ts';
import {
  allDeadLetters,
  allWindows,
  deadFromAnswers,
  deadFromLetters,
  planBatches,
  postEvents,
  readLines,
  startServer,
  writeServiceConfig,
  type Answer,
  type Batch,
  type Letter,
  type Server,
  workloadResults,
  rejectedRecords,
  killRunning,
} from './serve-helpers.ts';

const KEY = 'sk_workload_test';
const PIPELINE = 'payments';

const requestId = (b: number): string => `workload-batch-${b}`;

for (const w of [SAMPLE_100K, SEED1_100K]) {
  describe(`sluice serve on the payments workload over HTTP (${w.name})`, () => {
    const dir = tempDir('sluice-serve-workload-');
    const out = join(dir, 'actual');
    const largeSink = join(dir, 'store', 'outputs', 'acme', PIPELINE, 'large.ndjson');
    const config = writeServiceConfig(dir, { acme: { keys: [KEY] } }, { sinks: { interval: '50ms' } });
    let server: Server | undefined;
    let batches: Batch[] = [];
    const answers: Answer[] = [];
    let windowsBefore: Record<string, unknown>[] = [];
    let lettersBefore: Letter[] = [];

    after(async () => {
      await killRunning([server]);
    });

    it(
      'answers every batch with 202 and counts that add up to its records',
      { ...w.options, timeout: 90_000 },
      async () => {
        const lines = readLines(w.input());
        assert.equal(lines.length, 100_000);
        batches = planBatches(lines, prng(20261121));
        const kinds = new Set(batches.map((b) => b.kind));
        for (const k of [
          'ndjson',
          'ndjson-crlf',
          'json-array',
          'json-object',
          'ndjson+gzip',
          'json-array+gzip',
        ])
          assert.ok(kinds.has(k), `the plan has no ${k} batch`);
        server = await startServer(config);
        for (const [b, batch] of batches.entries()) {
          const r = await postEvents(server, PIPELINE, KEY, batch.body, {
            ...batch.headers,
            'x-request-id': requestId(b),
          });
          assert.equal(r.status, 202, `batch ${b} (${batch.kind}): ${JSON.stringify(r.body)}`);
          const answer = r.body as Answer;
          assert.equal(
            answer.accepted + answer.duplicates + rejectedRecords(answer),
            batch.count,
            `batch ${b} (${batch.kind}, ${batch.count} records): ${JSON.stringify(answer)}`,
          );
          for (const x of answer.rejected) assert.ok(x.index >= 0 && x.index < batch.count, `batch ${b}`);
          answers.push(answer);
        }
      },
    );

    it(
      'lists every rejected record in GET dead-letters, under its request id and index',
      { ...w.options, timeout: 30_000 },
      async () => {
        assert.ok(server, 'the server did not start');
        const text = (d: { line: number; reason: string }): string => `${d.line} ${d.reason}`;
        const fromAnswers = deadFromAnswers(batches, answers).map(text);
        lettersBefore = await allDeadLetters(server, PIPELINE, KEY, 1000);
        assert.deepEqual(lettersBefore, await allDeadLetters(server, PIPELINE, KEY, 10_000));
        assert.equal(lettersBefore.length, fromAnswers.length);
        const fromApi = deadFromLetters(batches, lettersBefore, requestId).map(text);
        assert.deepEqual(fromApi.sort(), fromAnswers.sort());
      },
    );

    it(
      'equals `sluice run` on the same input: windows from the API, dead letters from answers, large sink',
      { ...w.options, timeout: 60_000 },
      async () => {
        assert.ok(server, 'the server did not start');
        // Small pages, so that cursors cross from closed windows (the store) to open ones (the state).
        windowsBefore = await allWindows(server, PIPELINE, KEY, 499);
        assert.deepEqual(windowsBefore, await allWindows(server, PIPELINE, KEY));
        assert.ok(
          windowsBefore.some((row) => row.closed === false) &&
            windowsBefore.some((row) => row.closed === true),
        );
        const stopped = await server.stop();
        assert.deepEqual(stopped, { code: 0, signal: null }, server.output());

        workloadResults(out, {
          batches,
          answers,
          windows: windowsBefore,
          dead: deadFromAnswers(batches, answers),
          largeSink,
        });
        assertSameResults(await batchResults(w.input()), out, 'serve results');
      },
    );

    if (w.expected) {
      const expected = w.expected;
      it(`equals ../shared/workload/expected/${expected}`, w.options, () => {
        assert.ok(windowsBefore.length > 0, 'the previous test did not write the results');
        const { code, report } = compareWithExpected(expected, out);
        assert.equal(code, 0, report);
      });
    }

    it(
      'has the same windows, dead letters and sink file after a restart on the same store',
      { ...w.options, timeout: 60_000 },
      async () => {
        assert.ok(windowsBefore.length > 0, 'the previous test did not read the windows');
        const largeBefore = readFileSync(largeSink);
        server = await startServer(config);
        assert.deepEqual(await allWindows(server, PIPELINE, KEY), windowsBefore);
        assert.deepEqual(await allDeadLetters(server, PIPELINE, KEY), lettersBefore);
        const stopped = await server.stop();
        assert.deepEqual(stopped, { code: 0, signal: null }, server.output());
        assert.ok(readFileSync(largeSink).equals(largeBefore), 'large.ndjson changed across the restart');
      },
    );
  });
}
