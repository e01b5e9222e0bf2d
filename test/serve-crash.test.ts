/**
 * Crash safety of `sluice serve`: a producer POSTs the payments seed-1 100k input in order, one
 * batch at a time, each batch with a stable Idempotency-Key and X-Request-Id, retrying it on
 * connection errors and 5xx until it gets a 202, while the server is SIGKILLed at seeded random
 * moments (every 200 to 800 ms of posting, at most 10 times) and restarted on the same store. The end result still
 * equals shared/workload/expected/seed1-100k exactly, with the dead letters taken from the 202
 * answers and again from GET dead-letters: every acknowledged event is counted once, and nothing
 * else is.
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { compareWithExpected, tempDir, workloadInput } from './helpers.ts';
import { allWindows, getJson, startServer, writeServiceConfig, type Server } from './serve-helpers.ts';

/** Kills per run: enough to land in every phase, few enough to keep the run short. */
const MAX_KILLS = 10;
const KEY = 'sk_crash_test';
const PIPELINE = 'payments';
const SEED = 1121;
/** A request the server does not answer in this time is a hang, not a crash. */
const ANSWER_TIMEOUT_MS = 30_000;

/** Small seeded PRNG (mulberry32). */
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
  body: Buffer;
  headers: Record<string, string>;
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

/**
 * Consecutive batches of 1 to 500 lines: NDJSON, or a JSON array up to the next line that is not
 * JSON (an array cannot hold it); a third of them gzip.
 */
function planBatches(lines: Buffer[], random: () => number): Batch[] {
  const isJson = lines.map((l) => {
    try {
      JSON.parse(l.toString('utf8'));
      return true;
    } catch {
      return false;
    }
  });
  const batches: Batch[] = [];
  let at = 0;
  while (at < lines.length) {
    let count = Math.min(
      lines.length - at,
      random() < 0.25 ? 1 + Math.floor(random() * 10) : 1 + Math.floor(random() * 500),
    );
    let body: Buffer;
    const headers: Record<string, string> = {};
    if (random() < 0.5 || !isJson[at]) {
      body = Buffer.concat(lines.slice(at, at + count).flatMap((l) => [l, Buffer.from('\n')]));
      headers['content-type'] = 'application/x-ndjson';
    } else {
      let n = 0;
      while (n < count && isJson[at + n]) n++;
      count = n;
      body = Buffer.from(`[${lines.slice(at, at + count).join(',\n')}]`);
      headers['content-type'] = 'application/json';
    }
    if (random() < 0.33) {
      body = gzipSync(body);
      headers['content-encoding'] = 'gzip';
    }
    batches.push({ first: at, count, body, headers });
    at += count;
  }
  return batches;
}

interface Answer {
  accepted: number;
  duplicates: number;
  rejected: { index: number; reason: string; detail: string }[];
}

interface Letter {
  id: number;
  request_id: string | null;
  index: number;
  reason: string;
}

async function allDeadLetters(server: { url: string }): Promise<Letter[]> {
  const letters: Letter[] = [];
  let cursor: string | null = null;
  do {
    const q: string = cursor ? `&cursor=${cursor}` : '';
    const page = await getJson(server, `/v1/pipelines/${PIPELINE}/dead-letters?limit=1000${q}`, KEY);
    assert.equal(page.status, 200, JSON.stringify(page.body));
    const body = page.body as { items: Letter[]; next_cursor: string | null };
    letters.push(...body.items);
    cursor = body.next_cursor;
  } while (cursor);
  return letters;
}

/** Why an attempt got no answer: the `code` of fetch's cause (ECONNREFUSED, UND_ERR_SOCKET, ...). */
function failureCode(err: unknown): string {
  const cause = (err as { cause?: { code?: string } }).cause;
  return cause?.code ?? (err as Error).name;
}

/** The service's log line on what a start restored (for the test's diagnostics only). */
function restoredOf(output: string): { replayed: number; checkpoint: boolean }[] {
  return output
    .split('\n')
    .filter((l) => l.includes('"msg":"pipeline state restored from the store"'))
    .map((l) => {
      const m = JSON.parse(l) as { replayed: number; checkpointSeq: number | null };
      return { replayed: m.replayed, checkpoint: m.checkpointSeq !== null };
    });
}

const requestId = (b: number): string => `crash-batch-${b}`;

describe('sluice serve under SIGKILL while ingesting (seed-1 100k)', () => {
  const dir = tempDir('sluice-serve-crash-');
  const largeSink = join(dir, 'store', 'outputs', 'acme', PIPELINE, 'large.ndjson');
  // Short intervals so kills land before and after checkpoints, and during sink deliveries.
  const config = writeServiceConfig(
    dir,
    { acme: { keys: [KEY] } },
    { checkpoint: { interval: '300ms' }, sinks: { interval: '50ms' } },
  );
  let server: Server | undefined;
  let finished = false;
  let killer: Promise<void> | undefined;

  after(async () => {
    finished = true;
    // A restart in progress finishes within seconds; a hung one must not hang the run.
    await Promise.race([killer?.catch(() => {}), sleep(15_000)]);
    if (server && server.proc.exitCode === null && server.proc.signalCode === null) await server.kill();
  });

  it(
    'counts every acknowledged event exactly once across at least 5 kills',
    { timeout: 300_000 },
    async (t) => {
      const random = prng(SEED);
      const batches = planBatches(readLines(workloadInput(100_000)), random);
      const runId = `${process.pid}-${Date.now()}`;
      const answers: Answer[] = [];
      const kills: { inFlight: boolean; batch: number }[] = [];
      const failures = new Map<string, number>();
      let replayed = 0;
      /** What each restart restored: log bodies replayed, and whether from a checkpoint. */
      const recoveries: { replayed: number; checkpoint: boolean }[] = [];
      /** Output of servers that exited without being killed. */
      const exitedAlone: string[] = [];
      let inFlight = false;
      let current = 0;

      server = await startServer(config);
      let up: Promise<Server> = Promise.resolve(server);

      killer = (async () => {
        // At most MAX_KILLS: each restart costs 1–2 s (more on a loaded machine), and the
        // exactness argument needs several kills, not dozens.
        while (!finished && kills.length < MAX_KILLS) {
          await sleep(200 + Math.floor(random() * 600));
          if (finished) break;
          recoveries.push(...restoredOf(server!.output()));
          if (server!.proc.exitCode !== null || server!.proc.signalCode !== null)
            exitedAlone.push(server!.output().slice(-2000));
          const kill = { inFlight, batch: current };
          let ready!: (s: Server) => void;
          let broken!: (e: unknown) => void;
          up = new Promise<Server>((resolve, reject) => {
            ready = resolve;
            broken = reject;
          });
          up.catch(() => {});
          await server!.kill();
          kills.push(kill);
          try {
            server = await startServer(config);
          } catch (err) {
            broken(err);
            throw err;
          }
          ready(server);
        }
      })();
      // Awaited below; a failed restart also fails the producer, through `up`.
      killer.catch(() => {});

      for (const [b, batch] of batches.entries()) {
        current = b;
        for (let attempt = 1; ; attempt++) {
          const target = await up;
          let res: Response | undefined;
          let text = '';
          inFlight = true;
          try {
            res = await fetch(`${target.url}/v1/pipelines/${PIPELINE}/events`, {
              method: 'POST',
              headers: {
                ...batch.headers,
                authorization: `Bearer ${KEY}`,
                'idempotency-key': `crash-${runId}-${b}`,
                'x-request-id': requestId(b),
              },
              body: batch.body,
              signal: AbortSignal.timeout(ANSWER_TIMEOUT_MS),
            });
            text = await res.text();
          } catch (err) {
            if ((err as Error).name === 'TimeoutError')
              assert.fail(`batch ${b} attempt ${attempt}: no answer in ${ANSWER_TIMEOUT_MS} ms`);
            res = undefined;
            const code = failureCode(err);
            failures.set(code, (failures.get(code) ?? 0) + 1);
          } finally {
            inFlight = false;
          }
          if (res?.status === 202) {
            if (res.headers.get('idempotent-replayed') === 'true') {
              assert.ok(attempt > 1, `batch ${b}: a first attempt was answered as a replay`);
              replayed++;
            }
            const answer = JSON.parse(text) as Answer;
            assert.equal(
              answer.accepted + answer.duplicates + answer.rejected.length,
              batch.count,
              `batch ${b}: ${text}`,
            );
            answers.push(answer);
            break;
          }
          if (res) {
            assert.ok(res.status >= 500, `batch ${b} attempt ${attempt}: ${res.status} ${text}`);
            failures.set(`HTTP ${res.status}`, (failures.get(`HTTP ${res.status}`) ?? 0) + 1);
          }
          assert.ok(attempt < 500, `batch ${b}: no 202 after ${attempt} attempts`);
          await sleep(10);
        }
      }
      finished = true;
      await killer;

      t.diagnostic(
        `${batches.length} batches, ${kills.length} kills (${kills.filter((k) => k.inFlight).length} with a request in flight), ` +
          `${replayed} idempotent replays, failed attempts: ${JSON.stringify(Object.fromEntries(failures))}, ` +
          `kills at batches ${kills.map((k) => k.batch).join(' ')}; restarts restored ` +
          `${recoveries.filter((r) => r.checkpoint).length} checkpoints and replayed ` +
          `${recoveries.map((r) => r.replayed).join(' ')} logged bodies`,
      );
      assert.deepEqual(exitedAlone, [], 'a server exited without being killed');
      assert.ok(kills.length >= 5, `only ${kills.length} kills`);
      assert.ok(
        kills.some((k) => k.inFlight),
        'no kill happened while a request was in flight',
      );
      assert.ok(
        [...failures.keys()].some((code) => code !== 'ECONNREFUSED' && !code.startsWith('HTTP')),
        'no request was cut off by a kill',
      );

      const live = server!;
      const windows = await allWindows(live, PIPELINE, KEY);
      const letters = await allDeadLetters(live);
      const stopped = await live.stop();
      assert.deepEqual(stopped, { code: 0, signal: null }, live.output());

      const dead = answers.flatMap((a, b) =>
        a.rejected.map((x) => ({
          line: batches[b]!.first + x.index + 1,
          reason: x.reason,
          detail: x.detail,
        })),
      );
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
      const firstLine = new Map(batches.map((batch, b) => [requestId(b), batch.first]));
      const deadFromApi = letters.map((l) => {
        const first = firstLine.get(l.request_id ?? '');
        assert.ok(first !== undefined, `dead letter ${l.id} has request_id ${l.request_id}`);
        return { line: first + l.index + 1, reason: l.reason };
      });

      // The same windows, large and summary with either list of dead letters.
      for (const [name, deadList] of [
        ['answers', dead],
        ['api', deadFromApi],
      ] as const) {
        const out = join(dir, `actual-${name}`);
        mkdirSync(out, { recursive: true });
        writeFileSync(
          join(out, 'windows.ndjson'),
          windows.map(({ closed: _closed, ...row }) => JSON.stringify(row) + '\n').join(''),
        );
        const sorted = [...deadList].sort((x, y) => x.line - y.line);
        writeFileSync(join(out, 'dead.ndjson'), sorted.map((d) => JSON.stringify(d) + '\n').join(''));
        copyFileSync(largeSink, join(out, 'large.ndjson'));
        writeFileSync(join(out, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
        const { code, report } = compareWithExpected('seed1-100k', out);
        assert.equal(code, 0, `dead letters from the ${name}:\n${report}`);
      }
    },
  );
});
