/**
 * `sluice serve` on the payments reference workload: the seed-1 100k input, POSTed in input order
 * in batches of 1 to 500 records (NDJSON with LF or CRLF, JSON arrays, single JSON objects, some
 * gzip), gives exactly shared/workload/expected/seed1-100k. Windows come from GET windows, dead
 * letters from the 202 answers (and again from GET dead-letters), large payments from the sink
 * file after a graceful stop. Paging through windows and dead letters gives the same rows as one
 * page. A restart on the same store changes none of them.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { compareWithExpected, tempDir, workloadInput } from './helpers.ts';
import {
  allWindows,
  getJson,
  postEvents,
  startServer,
  writeServiceConfig,
  type Server,
} from './serve-helpers.ts';

const KEY = 'sk_workload_test';
const PIPELINE = 'payments';

/** Small seeded PRNG (mulberry32): the same batches on every run. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Batch {
  /** 0-based index of the batch's first input line. */
  first: number;
  count: number;
  kind: string;
  body: Buffer;
  headers: Record<string, string>;
}

/**
 * Cuts the input lines into consecutive batches. A JSON array can only hold lines that are JSON,
 * so an array batch stops before the next line that is not; a line that is not JSON but starts
 * like an object sometimes goes alone as a single-object JSON body.
 */
function planBatches(lines: Buffer[], seed: number): Batch[] {
  const random = prng(seed);
  const isJson = lines.map((l) => {
    try {
      JSON.parse(l.toString('utf8'));
      return true;
    } catch {
      return false;
    }
  });
  const batches: Batch[] = [];
  const nl = Buffer.from('\n');
  const crlf = Buffer.from('\r\n');
  let at = 0;
  while (at < lines.length) {
    let count = Math.min(
      lines.length - at,
      random() < 0.25 ? 1 + Math.floor(random() * 10) : 1 + Math.floor(random() * 500),
    );
    const gzip = random() < 0.4;
    let kind: string;
    let body: Buffer;
    let type: string;
    const pick = random();
    if (pick < 0.45 || (!isJson[at] && lines[at]![0] !== 0x7b)) {
      // NDJSON: LF or CRLF, the last line with or without its end.
      const crlfEnds = random() < 0.2;
      const end = crlfEnds ? crlf : nl;
      const parts: Buffer[] = [];
      for (let i = at; i < at + count; i++) parts.push(lines[i]!, end);
      if (!crlfEnds && random() < 0.5) parts.pop();
      body = Buffer.concat(parts);
      kind = crlfEnds ? 'ndjson-crlf' : 'ndjson';
      type = random() < 0.5 ? 'application/x-ndjson' : 'application/ndjson';
    } else if (!isJson[at]) {
      count = 1;
      body = lines[at]!;
      kind = 'json-object';
      type = 'application/json';
    } else {
      let n = 0;
      while (n < count && isJson[at + n]) n++;
      count = n;
      const parts: Buffer[] = [Buffer.from('[')];
      for (let i = at; i < at + count; i++)
        parts.push(lines[i]!, Buffer.from(i + 1 < at + count ? ',\n' : ']'));
      body = Buffer.concat(parts);
      kind = 'json-array';
      type = random() < 0.5 ? 'application/json' : 'application/json; charset=utf-8';
      if (count === 1 && lines[at]![0] === 0x7b && random() < 0.5) {
        body = lines[at]!;
        kind = 'json-object';
      }
    }
    const headers: Record<string, string> = { 'content-type': type };
    if (gzip) {
      body = gzipSync(body);
      headers['content-encoding'] = 'gzip';
      kind += '+gzip';
    }
    batches.push({ first: at, count, kind, body, headers });
    at += count;
  }
  return batches;
}

function readLines(file: string): Buffer[] {
  const buf = readFileSync(file);
  const lines: Buffer[] = [];
  let from = 0;
  for (let nl = buf.indexOf(10); nl >= 0; nl = buf.indexOf(10, from)) {
    lines.push(buf.subarray(from, nl));
    from = nl + 1;
  }
  if (from < buf.length) lines.push(buf.subarray(from));
  return lines;
}

interface Answer {
  accepted: number;
  duplicates: number;
  rejected: { index: number; reason: string; detail: string; pointer?: string }[];
}

interface Letter {
  id: number;
  request_id: string | null;
  index: number;
  reason: string;
}

/** Every dead letter, in pages of `limit`, following cursors. */
async function allDeadLetters(server: { url: string }, limit: number): Promise<Letter[]> {
  const letters: Letter[] = [];
  let cursor: string | null = null;
  do {
    const q: string = cursor ? `&cursor=${cursor}` : '';
    const page = await getJson(server, `/v1/pipelines/${PIPELINE}/dead-letters?limit=${limit}${q}`, KEY);
    assert.equal(page.status, 200, JSON.stringify(page.body));
    const body = page.body as { items: Letter[]; next_cursor: string | null };
    letters.push(...body.items);
    cursor = body.next_cursor;
  } while (cursor);
  return letters;
}

/** Every window row, in pages of `limit`, following cursors. */
async function windowPages(server: { url: string }, limit: number): Promise<Record<string, unknown>[]> {
  const rows: Record<string, unknown>[] = [];
  let cursor: string | null = null;
  do {
    const q: string = cursor ? `&cursor=${cursor}` : '';
    const page = await getJson(server, `/v1/pipelines/${PIPELINE}/windows?limit=${limit}${q}`, KEY);
    assert.equal(page.status, 200, JSON.stringify(page.body));
    const body = page.body as { items: Record<string, unknown>[]; next_cursor: string | null };
    assert.ok(body.items.length <= limit);
    rows.push(...body.items);
    cursor = body.next_cursor;
  } while (cursor);
  return rows;
}

const requestId = (b: number): string => `workload-batch-${b}`;

describe('sluice serve on the payments workload (seed-1 100k over HTTP)', () => {
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
    if (server && server.proc.exitCode === null && server.proc.signalCode === null) await server.kill();
  });

  it('answers every batch with 202 and counts that add up to its records', { timeout: 90_000 }, async () => {
    const lines = readLines(workloadInput(100_000));
    assert.equal(lines.length, 100_000);
    batches = planBatches(lines, 20261121);
    const kinds = new Set(batches.map((b) => b.kind));
    for (const k of ['ndjson', 'ndjson-crlf', 'json-array', 'json-object', 'ndjson+gzip', 'json-array+gzip'])
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
        answer.accepted + answer.duplicates + answer.rejected.length,
        batch.count,
        `batch ${b} (${batch.kind}, ${batch.count} records): ${JSON.stringify(answer)}`,
      );
      for (const x of answer.rejected) assert.ok(x.index >= 0 && x.index < batch.count, `batch ${b}`);
      answers.push(answer);
    }
  });

  it(
    'lists every rejected record in GET dead-letters, under its request id and index',
    { timeout: 30_000 },
    async () => {
      assert.ok(server, 'the server did not start');
      const fromAnswers = answers.flatMap((a, b) =>
        a.rejected.map((x) => `${batches[b]!.first + x.index + 1} ${x.reason}`),
      );
      lettersBefore = await allDeadLetters(server, 1000);
      assert.deepEqual(lettersBefore, await allDeadLetters(server, 10_000));
      assert.equal(lettersBefore.length, fromAnswers.length);
      const firstLine = new Map(batches.map((batch, b) => [requestId(b), batch.first]));
      const fromApi = lettersBefore.map((l) => {
        const first = firstLine.get(l.request_id ?? '');
        assert.ok(first !== undefined, `dead letter ${l.id} has request_id ${l.request_id}`);
        return `${first + l.index + 1} ${l.reason}`;
      });
      assert.deepEqual(fromApi.sort(), fromAnswers.sort());
    },
  );

  it(
    'equals expected/seed1-100k: windows from the API, dead letters from the answers, large from the sink',
    { timeout: 60_000 },
    async () => {
      assert.ok(server, 'the server did not start');
      // Small pages, so that cursors cross from closed windows (the store) to open ones (the state).
      windowsBefore = await windowPages(server, 499);
      assert.deepEqual(windowsBefore, await allWindows(server, PIPELINE, KEY));
      assert.ok(
        windowsBefore.some((w) => w.closed === false) && windowsBefore.some((w) => w.closed === true),
      );
      const stopped = await server.stop();
      assert.deepEqual(stopped, { code: 0, signal: null }, server.output());

      const dead = answers.flatMap((a, b) =>
        a.rejected.map((x) => ({
          line: batches[b]!.first + x.index + 1,
          reason: x.reason,
          detail: x.detail,
        })),
      );
      dead.sort((x, y) => x.line - y.line);
      const count = (reason: string): number => dead.filter((d) => d.reason === reason).length;
      const large = readFileSync(largeSink, 'utf8');
      const summary = {
        lines: batches.reduce((n, b) => n + b.count, 0),
        accepted: answers.reduce((n, a) => n + a.accepted, 0),
        invalid: count('parse') + count('invalid'),
        duplicates: answers.reduce((n, a) => n + a.duplicates, 0),
        late: count('late'),
        large: large.split('\n').filter((l) => l !== '').length,
      };
      mkdirSync(out, { recursive: true });
      writeFileSync(
        join(out, 'windows.ndjson'),
        windowsBefore.map(({ closed: _closed, ...row }) => JSON.stringify(row) + '\n').join(''),
      );
      writeFileSync(join(out, 'dead.ndjson'), dead.map((d) => JSON.stringify(d) + '\n').join(''));
      copyFileSync(largeSink, join(out, 'large.ndjson'));
      writeFileSync(join(out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
      const { code, report } = compareWithExpected('seed1-100k', out);
      assert.equal(code, 0, report);
    },
  );

  it(
    'has the same windows, dead letters and sink file after a restart on the same store',
    { timeout: 60_000 },
    async () => {
      assert.ok(windowsBefore.length > 0, 'the previous test did not read the windows');
      const largeBefore = readFileSync(largeSink);
      server = await startServer(config);
      assert.deepEqual(await allWindows(server, PIPELINE, KEY), windowsBefore);
      assert.deepEqual(await allDeadLetters(server, 1000), lettersBefore);
      const stopped = await server.stop();
      assert.deepEqual(stopped, { code: 0, signal: null }, server.output());
      assert.ok(readFileSync(largeSink).equals(largeBefore), 'large.ndjson changed across the restart');
    },
  );
});
