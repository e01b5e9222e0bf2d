/**
 * `sluice serve` over its lifetime, against real server processes on 127.0.0.1 with real SQLite
 * stores in temporary directories: SIGTERM under load and with requests in flight on keep-alive
 * connections (exit 0 within 10 s; after a restart every acknowledged event is counted exactly
 * once), shutdown_timeout, SIGHUP under load (no request fails, nothing acknowledged is lost or
 * doubled, live or after a restart), SIGHUP with an invalid config or a window that cannot take
 * over the running state (refused, the old config keeps serving), and backpressure (503 with
 * Retry-After instead of queueing, bounded memory).
 *
 * The pipeline (test/fixtures/serve/counts.yaml) counts events per producer, after dedupe on id,
 * in one window per producer: the expected count of a producer is the number of its events that
 * got a 202.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { Agent, request, type IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { ROOT, tempDir } from './helpers.ts';
import {
  allWindows,
  getJson,
  postEvents,
  startServer,
  writeServiceConfig,
  type Server,
  type TenantSpec,
  waitForLog,
} from './serve-helpers.ts';

const FIXTURES = join(ROOT, 'test', 'fixtures', 'serve');
const V1 = join(FIXTURES, 'counts.yaml');
const V2 = join(FIXTURES, 'counts-v2.yaml');
/** Every event falls in the one-hour window starting here. */
const TS = Date.parse('2026-11-21T10:00:00Z');

const apiKey = (name: string): string => `sk_test_${name}_${randomBytes(16).toString('hex')}`;

type BodyKind = 'ndjson' | 'json' | 'gzip';
const KINDS: BodyKind[] = ['ndjson', 'json', 'gzip'];

/** A request body of events with the given ids, as NDJSON, a JSON array or gzip NDJSON. */
function body(
  producer: string,
  ids: string[],
  kind: BodyKind,
  pad = '',
): { body: string | Buffer; headers: Record<string, string> } {
  const events = ids.map((id) => ({
    id,
    producer,
    ts: TS + (Number(id.split('-')[1]) % 3_600_000),
    ...(pad ? { pad } : {}),
  }));
  if (kind === 'json')
    return { body: JSON.stringify(events), headers: { 'content-type': 'application/json' } };
  const text = events.map((e) => JSON.stringify(e)).join('\n') + '\n';
  if (kind === 'ndjson') return { body: text, headers: { 'content-type': 'application/x-ndjson' } };
  return {
    body: gzipSync(text),
    headers: { 'content-type': 'application/x-ndjson', 'content-encoding': 'gzip' },
  };
}

interface Outcome {
  status: number;
  code?: string;
  retryAfter: string | null;
  contentType: string | null;
}

/** One producer's record of what it sent and what it was told. */
class Producer {
  seq = 0;
  /** Ids of events in requests answered 202. */
  readonly acked: string[] = [];
  /** Batches whose request failed without an answer (accepted or not: nobody knows). */
  readonly unknown: string[][] = [];
  /** Answers other than 202. */
  readonly refused: Outcome[] = [];
  /** 202 answers that did not accept every event. */
  readonly partial: string[] = [];
  /** Transport errors other than a refused connection. */
  readonly errors: string[] = [];
  requests = 0;

  constructor(
    readonly name: string,
    readonly kind: BodyKind,
  ) {}

  nextIds(n: number): string[] {
    return Array.from({ length: n }, () => `${this.name}-${++this.seq}`);
  }
}

/**
 * Posts batches until `done()` or, when `stopOnRefusal`, the first answer that is not a 202 or a
 * failed connection. Every request has a deadline: a hung request fails the test.
 */
async function produce(
  server: Server,
  key: string,
  p: Producer,
  options: { batch: number; done: () => boolean; stopOnRefusal: boolean },
): Promise<void> {
  while (!options.done()) {
    const ids = p.nextIds(options.batch);
    const req = body(p.name, ids, p.kind);
    p.requests++;
    let res: Response;
    let text: string;
    try {
      res = await fetch(`${server.url}/v1/pipelines/counts/events`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, ...req.headers },
        body: req.body,
        signal: AbortSignal.timeout(20_000),
      });
      text = await res.text();
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause;
      if (cause?.code === 'ECONNREFUSED') {
        // Nothing was sent: these events were certainly not accepted.
        return;
      }
      p.unknown.push(ids);
      p.errors.push(`${(err as Error).name}: ${(err as Error).message} (${cause?.code ?? String(cause)})`);
      if (options.stopOnRefusal) return;
      continue;
    }
    if (res.status === 202) {
      const answer = JSON.parse(text) as { accepted: number; duplicates: number; rejected: unknown[] };
      if (answer.accepted !== ids.length) p.partial.push(text);
      p.acked.push(...ids);
      continue;
    }
    let code: string | undefined;
    try {
      code = (JSON.parse(text) as { code?: string }).code;
    } catch {
      // not JSON
    }
    p.refused.push({
      status: res.status,
      code,
      retryAfter: res.headers.get('retry-after'),
      contentType: res.headers.get('content-type'),
    });
    if (options.stopOnRefusal) return;
  }
}

/** Window count per producer. */
async function counts(server: Server, key: string): Promise<Map<string, number>> {
  const rows = await allWindows(server, 'counts', key);
  const out = new Map<string, number>();
  for (const r of rows)
    out.set(r.producer as string, (out.get(r.producer as string) ?? 0) + (r.count as number));
  return out;
}

async function waitFor(what: string, ready: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** SIGTERM; resolves with the exit and how long it took, or 'hung' (then SIGKILLs) after `limitMs`. */
async function terminate(
  server: Server,
  limitMs = 15_000,
): Promise<{ code: number | null; signal: string | null; ms: number } | 'hung'> {
  const started = performance.now();
  const exit = await Promise.race([server.stop(), sleep(limitMs, 'hung' as const, { ref: false })]);
  if (exit === 'hung') {
    await server.kill();
    return 'hung';
  }
  return { ...exit, ms: performance.now() - started };
}

/**
 * SIGTERM with requests in flight: the process exits 0 (not 1 from shutdown_timeout) within 10 s,
 * having logged `stopped`.
 */
function assertGracefulExit(exit: Awaited<ReturnType<typeof terminate>>, server: Server): void {
  const fatal = server
    .output()
    .split('\n')
    .filter((l) => /"level":(50|60)/.test(l) && !l.includes('SLUICE_ERR_SHUTTING_DOWN'))
    .slice(-3)
    .join('\n');
  assert.notEqual(
    exit,
    'hung',
    `BUG: still running long after SIGTERM (SIGKILLed); errors logged:\n${fatal}`,
  );
  if (exit === 'hung') return;
  assert.deepEqual(
    [exit.code, exit.signal],
    [0, null],
    `BUG: exit code ${exit.code} ${Math.round(exit.ms)} ms after SIGTERM instead of a graceful stop: the drain ` +
      `waits for keep-alive connections that were busy at SIGTERM until shutdown_timeout; errors logged:\n${fatal}`,
  );
  assert.ok(exit.ms < 10_000, `graceful stop took ${Math.round(exit.ms)} ms`);
  assert.match(server.output(), /"msg":"stopped"/);
}

/** A server without requests in flight stops at once on SIGTERM, with exit code 0. */
function assertStopped(exit: Awaited<ReturnType<typeof terminate>>): void {
  assert.notEqual(exit, 'hung', 'an idle server was still running 15 s after SIGTERM');
  if (exit !== 'hung') assert.deepEqual([exit.code, exit.signal], [0, null], 'exit after SIGTERM');
}

/** Resident memory of the server, from its /metrics. */
async function rss(server: Server): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('sluice_process_resident_memory_bytes '));
  assert.ok(line, '/metrics has sluice_process_resident_memory_bytes');
  return Number(line.split(' ')[1]);
}

interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/**
 * A POST of events over node:http with the given agent (so the connection is known): headers and
 * the first half of the body now, the rest on `finish()`.
 */
function partialRequest(
  server: Server,
  agent: Agent,
  key: string,
  payload: Buffer,
): { finish(): Promise<RawResponse> } {
  const url = new URL(server.url);
  let settle: { resolve(r: RawResponse): void; reject(e: Error): void } | undefined;
  const answered = new Promise<RawResponse>((resolve, reject) => (settle = { resolve, reject }));
  // An error before finish() is reported by finish(), not as an unhandled rejection.
  answered.catch(() => undefined);
  const req = request(
    {
      host: url.hostname,
      port: url.port,
      path: '/v1/pipelines/counts/events',
      method: 'POST',
      agent,
      timeout: 20_000,
      headers: {
        authorization: `Bearer ${key}`,
        'content-type': 'application/x-ndjson',
        'content-length': payload.length,
      },
    },
    (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => settle!.resolve({ status: res.statusCode!, headers: res.headers, body: text }));
      res.on('error', (e) => settle!.reject(e));
    },
  );
  req.on('error', (e) => settle!.reject(e));
  req.on('timeout', () => req.destroy(new Error('no answer within 20 s')));
  const half = Math.floor(payload.length / 2);
  req.write(payload.subarray(0, half));
  return {
    finish: () => {
      req.end(payload.subarray(half));
      return answered;
    },
  };
}

/** A 503 problem document with SLUICE_ERR_SHUTTING_DOWN and Retry-After. */
function assertShuttingDown(r: RawResponse, what: string): void {
  const shown = `${what}: ${r.status} ${r.headers['content-type']} retry-after=${r.headers['retry-after']} ${r.body.slice(0, 300)}`;
  assert.equal(r.status, 503, shown);
  assert.match(String(r.headers['content-type']), /^application\/problem\+json/, shown);
  assert.equal((JSON.parse(r.body) as { code?: string }).code, 'SLUICE_ERR_SHUTTING_DOWN', shown);
  assert.match(String(r.headers['retry-after']), /^[1-9][0-9]*$/, shown);
}

const running: Server[] = [];

async function start(config: string): Promise<Server> {
  const server = await startServer(config);
  running.push(server);
  return server;
}

after(async () => {
  for (const s of running)
    if (s.proc.exitCode === null && s.proc.signalCode === null) {
      const stopped = await Promise.race([s.stop(), sleep(10_000, undefined, { ref: false })]);
      if (!stopped) await s.kill();
    }
});

describe('sluice serve: lifecycle', { timeout: 120_000 }, () => {
  describe('SIGTERM under load', () => {
    const key = apiKey('term');
    const producers = Array.from({ length: 6 }, (_, i) => new Producer(`p${i}`, KINDS[i % 3]!));
    let config: string;
    let server: Server;
    let exit: { code: number | null; signal: string | null; ms: number } | 'hung';

    before(async () => {
      const dir = tempDir('sluice-lifecycle-term-');
      // A short checkpoint interval: the restart reads a checkpoint and the log after it.
      config = writeServiceConfig(
        dir,
        { load: { keys: [key], pipelines: { counts: V1 } } },
        { checkpoint: { interval: '300ms' } },
      );
      server = await start(config);
      const producing = producers.map((p) =>
        produce(server, key, p, { batch: 40, done: () => false, stopOnRefusal: true }),
      );
      const acked = (): number => producers.reduce((n, p) => n + p.acked.length, 0);
      await waitFor('4000 acknowledged events', () => acked() >= 4000);
      exit = await terminate(server, 12_000);
      await Promise.all(producing);
    });

    it('the process exits 0 within 10 s; requests it refuses meanwhile get 503 SHUTTING_DOWN', () => {
      for (const p of producers) {
        assert.deepEqual(p.partial, [], `${p.name}: a 202 that did not accept every event`);
        for (const r of p.refused) {
          assert.equal(r.status, 503, `${p.name}: refused with ${JSON.stringify(r)}`);
          assert.equal(r.code, 'SLUICE_ERR_SHUTTING_DOWN', `${p.name}: ${JSON.stringify(r)}`);
          assert.match(r.contentType ?? '', /^application\/problem\+json/);
          assert.match(r.retryAfter ?? '', /^[1-9][0-9]*$/, `${p.name}: Retry-After`);
        }
      }
      assertGracefulExit(exit, server);
    });

    it('after a restart on the same store, every acknowledged event is counted exactly once', async () => {
      const restarted = await start(config);
      const before = await counts(restarted, key);
      for (const p of producers) {
        const n = before.get(p.name) ?? 0;
        const unknown = p.unknown.flat().length;
        assert.ok(
          n >= p.acked.length && n <= p.acked.length + unknown,
          `${p.name}: ${n} events counted after the restart, ${p.acked.length} acknowledged, ${unknown} unanswered`,
        );
      }
      // Every acknowledged event is known to dedupe after the restart: sending them again adds nothing.
      for (const p of producers)
        for (let i = 0; i < p.acked.length; i += 2000) {
          const ids = p.acked.slice(i, i + 2000);
          const req = body(p.name, ids, 'ndjson');
          const res = await postEvents(restarted, 'counts', key, req.body, req.headers);
          assert.equal(res.status, 202, JSON.stringify(res.body));
          assert.deepEqual(
            res.body,
            { records: ids.length, accepted: 0, duplicates: ids.length, rejected: [] },
            `${p.name} resent`,
          );
        }
      // Unanswered batches sent again: those already in must be duplicates, the rest new.
      for (const p of producers) {
        let duplicates = 0;
        for (const ids of p.unknown) {
          const req = body(p.name, ids, 'ndjson');
          const res = await postEvents(restarted, 'counts', key, req.body, req.headers);
          assert.equal(res.status, 202, JSON.stringify(res.body));
          duplicates += (res.body as { duplicates: number }).duplicates;
        }
        assert.equal(before.get(p.name) ?? 0, p.acked.length + duplicates, `${p.name}: counted exactly once`);
      }
      const final = await counts(restarted, key);
      for (const p of producers)
        assert.equal(
          final.get(p.name) ?? 0,
          p.acked.length + p.unknown.flat().length,
          `${p.name}: final count`,
        );
      assertStopped(await terminate(restarted));
    });
  });

  describe('SIGTERM with requests in flight on keep-alive connections', () => {
    // Two clients with one keep-alive connection each have sent headers and half a body when
    // SIGTERM arrives; then they finish, and the second sends one more request on its connection.
    const key = apiKey('drain');
    let config: string;
    let server: Server;
    let first: RawResponse | Error;
    let second: RawResponse | Error;
    let afterSigterm: RawResponse | Error;
    let exit: Awaited<ReturnType<typeof terminate>>;

    before(async () => {
      const dir = tempDir('sluice-lifecycle-drain-');
      config = writeServiceConfig(dir, { load: { keys: [key], pipelines: { counts: V1 } } });
      server = await start(config);
      const [a, b] = [
        new Agent({ keepAlive: true, maxSockets: 1 }),
        new Agent({ keepAlive: true, maxSockets: 1 }),
      ];
      const one = (ids: string[]): Buffer => Buffer.from(body('p1', ids, 'ndjson').body);
      const r1 = partialRequest(server, a, key, one(['p1-1', 'p1-2']));
      const r2 = partialRequest(server, b, key, one(['p1-3', 'p1-4']));
      await sleep(200);
      const started = performance.now();
      server.proc.kill('SIGTERM');
      await waitForLog(server, /"msg":"shutting down"/, 1);
      second = await r2.finish().catch((e: Error) => e);
      afterSigterm = await partialRequest(server, b, key, one(['p1-5']))
        .finish()
        .catch((e: Error) => e);
      first = await r1.finish().catch((e: Error) => e);
      const limit = 10_500 - (performance.now() - started);
      const ended = await Promise.race([server.exited, sleep(limit, 'hung' as const, { ref: false })]);
      if (ended === 'hung') await server.kill();
      exit = ended === 'hung' ? 'hung' : { ...ended, ms: performance.now() - started };
      a.destroy();
      b.destroy();
    });

    it('requests admitted before SIGTERM finish with their 202', () => {
      for (const [what, r] of [
        ['first', first],
        ['second', second],
      ] as const) {
        assert.ok(!(r instanceof Error), `${what} in-flight request got no answer: ${String(r)}`);
        if (r instanceof Error) continue;
        assert.equal(r.status, 202, `${what} in-flight request: ${r.status} ${r.body.slice(0, 300)}`);
      }
    });

    it('a request that reaches the draining server on an open connection gets 503 problem+json SHUTTING_DOWN', () => {
      // Closing the connection instead is fine too; answering outside the catalogue is not.
      if (afterSigterm instanceof Error) return;
      assertShuttingDown(
        afterSigterm,
        'a request arriving during the drain on an open keep-alive connection',
      );
    });

    it('the process exits 0 within 10 s of SIGTERM', () => {
      assertGracefulExit(exit, server);
    });

    it('after a restart, exactly the events of the 202s are counted', async () => {
      const acked = [first, second, afterSigterm].reduce(
        (n, r, i) => n + (!(r instanceof Error) && r.status === 202 ? (i === 2 ? 1 : 2) : 0),
        0,
      );
      const restarted = await start(config);
      assert.equal((await counts(restarted, key)).get('p1') ?? 0, acked);
      assertStopped(await terminate(restarted));
    });
  });

  it('shutdown_timeout bounds the drain: the process exits even when connections stay open', async () => {
    const key = apiKey('timeout');
    const dir = tempDir('sluice-lifecycle-timeout-');
    const server = await start(
      writeServiceConfig(
        dir,
        { load: { keys: [key], pipelines: { counts: V1 } } },
        { shutdown_timeout: '2s' },
      ),
    );
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const r = partialRequest(server, agent, key, Buffer.from(body('p1', ['p1-1'], 'ndjson').body));
      await sleep(200);
      const started = performance.now();
      server.proc.kill('SIGTERM');
      await waitForLog(server, /"msg":"shutting down"/, 1);
      await r.finish().catch(() => undefined);
      // The client keeps its idle keep-alive connection, as pooling clients do.
      const ended = await Promise.race([server.exited, sleep(5_000, 'hung' as const, { ref: false })]);
      if (ended === 'hung') await server.kill();
      assert.notEqual(
        ended,
        'hung',
        'BUG: shutdown_timeout is 2 s, but the process was still running 5 s after SIGTERM (SIGKILLed); ' +
          `log:\n${server.output().slice(-1500)}`,
      );
      assert.ok(performance.now() - started < 5_000);
    } finally {
      agent.destroy();
    }
  });

  describe('SIGHUP under load: pipelines swap back and forth', () => {
    const key = apiKey('hup');
    const producers = Array.from({ length: 6 }, (_, i) => new Producer(`p${i}`, KINDS[i % 3]!));
    const RELOADS = 10;
    let live: Map<string, number>;
    let recovered: Map<string, number>;
    let reloadLines: string[];

    before(async () => {
      const dir = tempDir('sluice-lifecycle-hup-');
      const tenants = (pipeline: string): Record<string, TenantSpec> => ({
        load: { keys: [key], pipelines: { counts: pipeline } },
      });
      const extra = { checkpoint: { interval: '500ms' } };
      const config = writeServiceConfig(dir, tenants(V1), extra);
      const server = await start(config);
      let reloading = true;
      const producing = producers.map((p) =>
        produce(server, key, p, { batch: 200, done: () => !reloading, stopOnRefusal: false }),
      );
      const requests = (): number => producers.reduce((n, p) => n + p.requests, 0);
      try {
        await waitFor('the first requests', () => requests() >= 20);
        for (let i = 1; i <= RELOADS; i++) {
          const before = requests();
          writeServiceConfig(dir, tenants(i % 2 === 1 ? V2 : V1), extra);
          server.proc.kill('SIGHUP');
          reloadLines = await waitForLog(server, /"msg":"config reloaded"/, i, /reload refused/);
          // Let requests run against the new definition before the next swap.
          await waitFor(`requests after reload ${i}`, () => requests() >= before + 10);
        }
      } finally {
        reloading = false;
        await Promise.all(producing);
      }
      live = await counts(server, key);
      // And the store: stop, start again, count again.
      assertStopped(await terminate(server));
      recovered = await counts(await start(config), key);
    });

    it('every reload swapped the pipeline, and no request failed or was refused', () => {
      assert.equal(reloadLines.length, RELOADS);
      for (const line of reloadLines)
        assert.deepEqual((JSON.parse(line) as { replaced: string[] }).replaced, ['load/counts'], line);
      for (const p of producers) {
        assert.ok(p.requests >= RELOADS, `${p.name} sent only ${p.requests} requests`);
        assert.deepEqual(p.errors, [], `${p.name}: requests failed without an answer`);
        assert.deepEqual(p.refused, [], `${p.name}: requests refused during reloads`);
        assert.deepEqual(p.partial, [], `${p.name}: 202s that did not accept every event`);
      }
    });

    for (const kind of KINDS) {
      it(`${kind} bodies: the live windows count every acknowledged event exactly once`, () => {
        for (const p of producers.filter((x) => x.kind === kind))
          assert.equal(
            live.get(p.name) ?? 0,
            p.acked.length,
            `BUG: ${p.name} (${kind} bodies): acknowledged events missing from (or doubled in) the live windows after SIGHUP reloads; at the time of writing, a gzip body still inflating when the swap happens is ingested into the replaced pipeline`,
          );
      });

      it(`${kind} bodies: after a restart, every acknowledged event is counted exactly once`, () => {
        for (const p of producers.filter((x) => x.kind === kind))
          assert.equal(
            recovered.get(p.name) ?? 0,
            p.acked.length,
            `BUG: ${p.name} (${kind} bodies): acknowledged events lost (or doubled) in the store after SIGHUP reloads`,
          );
      });
    }
  });

  it('SIGHUP with an invalid config: refused with a logged error, the old config keeps serving', async () => {
    const dir = tempDir('sluice-lifecycle-bad-hup-');
    const key = apiKey('old');
    const newKey = apiKey('new');
    const config = writeServiceConfig(dir, { load: { keys: [key], pipelines: { counts: V1 } } });
    const server = await start(config);
    const p = new Producer('p1', 'ndjson');
    const post = async (k: string): Promise<number> => {
      const ids = p.nextIds(10);
      const req = body(p.name, ids, 'ndjson');
      const res = await postEvents(server, 'counts', k, req.body, req.headers);
      if (res.status === 202) p.acked.push(...ids);
      return res.status;
    };
    assert.equal(await post(key), 202);

    const attempts: [string, () => void][] = [
      ['a config file that is not JSON', () => writeFileSync(config, '{ "tenants": ')],
      [
        'a new key and a pipeline file that does not exist',
        () =>
          writeServiceConfig(dir, {
            load: { keys: [key, newKey], pipelines: { counts: join(dir, 'missing.yaml') } },
          }),
      ],
      [
        'an unknown key in the config',
        () =>
          writeServiceConfig(
            dir,
            { load: { keys: [key, newKey], pipelines: { counts: V2 } } },
            { colour: 'blue' },
          ),
      ],
      [
        'another store',
        () =>
          writeServiceConfig(
            dir,
            { load: { keys: [key, newKey], pipelines: { counts: V2 } } },
            { store: { path: join(dir, 'elsewhere', 'sluice.db') } },
          ),
      ],
    ];
    for (const [i, [what, write]] of attempts.entries()) {
      write();
      server.proc.kill('SIGHUP');
      const refusals = await waitForLog(server, /reload refused/, i + 1, /"msg":"config reloaded"/);
      const logged = JSON.parse(refusals[i]!) as { level: number; err?: unknown };
      assert.ok(logged.level >= 50, `${what}: the refusal is logged as an error: ${refusals[i]}`);
      assert.ok(logged.err, `${what}: the log line says why: ${refusals[i]}`);
      assert.equal(await post(key), 202, `${what}: the old key still works`);
      assert.equal(await post(newKey), 401, `${what}: the new config's key must not work`);
      assert.equal(server.proc.exitCode, null, `${what}: the server is still running`);
      const ready = await getJson(server, '/readyz');
      assert.equal(ready.status, 200, `${what}: /readyz`);
    }
    assert.equal(
      (await counts(server, key)).get('p1'),
      50,
      'every accepted event counted under the old config',
    );

    // A valid config is still taken afterwards.
    writeServiceConfig(dir, { load: { keys: [key, newKey], pipelines: { counts: V2 } } });
    server.proc.kill('SIGHUP');
    await waitForLog(server, /"msg":"config reloaded"/, 1);
    assert.equal(await post(newKey), 202, 'the new key works after a valid reload');
    assert.equal((await counts(server, key)).get('p1'), 60);
    assertStopped(await terminate(server));
  });

  it('SIGHUP with a window that cannot take over the running state (1 h → 30 min windows) is refused', async () => {
    const dir = tempDir('sluice-lifecycle-window-hup-');
    const key = apiKey('window');
    const config = writeServiceConfig(dir, { load: { keys: [key], pipelines: { counts: V1 } } });
    const server = await start(config);
    const at = (id: string, minutes: number): string =>
      JSON.stringify({ id, producer: 'p1', ts: TS + minutes * 60_000 });
    const post = async (lines: string[]): Promise<void> => {
      const res = await postEvents(server, 'counts', key, lines.join('\n') + '\n');
      assert.equal(res.status, 202, JSON.stringify(res.body));
    };
    // Both in the open window [10:00, 11:00).
    await post([at('p1-1', 0), at('p1-2', 45)]);

    writeServiceConfig(dir, {
      load: { keys: [key], pipelines: { counts: join(FIXTURES, 'counts-30m.yaml') } },
    });
    server.proc.kill('SIGHUP');
    let outcome: string | undefined;
    await waitFor('the reload to be applied or refused', () => {
      outcome = server
        .output()
        .split('\n')
        .find((l) => /reload refused|"msg":"config reloaded"/.test(l));
      return outcome !== undefined;
    });
    // Whatever the outcome, the rows must stay right: one more event at 10:50, then one three
    // hours later that closes every window.
    await post([at('p1-3', 50)]);
    await post([at('p1-4', 200)]);
    const rows = (await allWindows(server, 'counts', key)).map((r) => [r.window_start, r.count, r.closed]);
    assert.match(
      outcome!,
      /reload refused/,
      'BUG: a reload that changes the window size (1 h → 30 min) was applied, although the open one-hour window ' +
        `cannot be taken over (docs/operations.md says the reload is refused); the rows are now ${JSON.stringify(rows)}`,
    );
    assert.deepEqual(rows, [
      ['2026-11-21T10:00:00.000Z', 3, true],
      ['2026-11-21T13:00:00.000Z', 1, false],
    ]);
    assertStopped(await terminate(server));
  });

  describe('backpressure', () => {
    // One ingest request at a time (and bodies up to 5 MiB, 10 MiB of them in flight).
    const key = apiKey('pressure');
    let server: Server;
    const MB = 1024 * 1024;

    before(async () => {
      const dir = tempDir('sluice-lifecycle-pressure-');
      server = await start(
        writeServiceConfig(
          dir,
          { load: { keys: [key], pipelines: { counts: V1 } } },
          { limits: { in_flight_requests: 1, body_bytes: 5 * MB, in_flight_bytes: 10 * MB } },
        ),
      );
    });

    /** Posts `bodies` all at once; every request has a deadline, so a hung one is reported. */
    async function burst(
      bodies: { ids: string[]; body: string | Buffer }[],
      repeated = false,
    ): Promise<{
      statuses: Record<number, number>;
      accepted: number;
      problems: string[];
    }> {
      const statuses: Record<number, number> = {};
      const problems: string[] = [];
      let accepted = 0;
      await Promise.all(
        bodies.map(async ({ ids, body: payload }) => {
          let res: Response;
          let text: string;
          try {
            res = await fetch(`${server.url}/v1/pipelines/counts/events`, {
              method: 'POST',
              headers: { authorization: `Bearer ${key}`, 'content-type': 'application/x-ndjson' },
              body: payload,
              signal: AbortSignal.timeout(30_000),
            });
            text = await res.text();
          } catch (err) {
            problems.push(`a request failed or hung: ${(err as Error).name} ${(err as Error).message}`);
            return;
          }
          statuses[res.status] = (statuses[res.status] ?? 0) + 1;
          if (res.status === 202) {
            const answer = JSON.parse(text) as { accepted: number; duplicates: number };
            // With `repeated`, every body holds the same events: accepted once, duplicates after.
            const seen = repeated ? answer.accepted + answer.duplicates : answer.accepted;
            if (seen !== ids.length) problems.push(`202 with ${text.slice(0, 200)} for ${ids.length} events`);
            accepted += answer.accepted;
          } else if (res.status === 503) {
            const problem = JSON.parse(text) as { code: string };
            if (problem.code !== 'SLUICE_ERR_OVERLOADED') problems.push(`503 with ${problem.code}`);
            if (!/^application\/problem\+json/.test(res.headers.get('content-type') ?? ''))
              problems.push(`503 as ${res.headers.get('content-type')}`);
            if (!/^[1-9][0-9]*$/.test(res.headers.get('retry-after') ?? ''))
              problems.push(`503 with Retry-After ${res.headers.get('retry-after')}`);
          } else problems.push(`status ${res.status}: ${text.slice(0, 300)}`);
        }),
      );
      return { statuses, accepted, problems };
    }

    it('over in_flight_requests: some requests get 503 OVERLOADED with Retry-After, none hangs, nothing refused is kept', async (t) => {
      let seq = 0;
      let accepted = 0;
      const statuses: Record<number, number> = {};
      for (let round = 0; round < 5; round++) {
        const bodies = Array.from({ length: 48 }, () => {
          const ids = Array.from({ length: 1500 }, () => `p0-${++seq}`);
          return { ids, body: body('p0', ids, 'ndjson').body };
        });
        const r = await burst(bodies);
        assert.deepEqual(r.problems, [], `round ${round}`);
        accepted += r.accepted;
        for (const [s, n] of Object.entries(r.statuses)) statuses[Number(s)] = (statuses[Number(s)] ?? 0) + n;
      }
      t.diagnostic(`statuses ${JSON.stringify(statuses)}`);
      assert.ok((statuses[503] ?? 0) > 0, `no 503 among ${JSON.stringify(statuses)}`);
      assert.ok((statuses[202] ?? 0) > 0, `no 202 among ${JSON.stringify(statuses)}`);
      // Refused requests left nothing behind; accepted ones are all there.
      assert.equal((await counts(server, key)).get('p0') ?? 0, accepted);
    });

    it('a flood of 4 MB bodies: refused ones are not read into memory, RSS stays bounded', async (t) => {
      // The same 25,000 events in every body: whichever are accepted, the state holds them once.
      // Were the refused bodies read into memory, 48 at a time would add about 200 MB.
      const ids = Array.from({ length: 25_000 }, (_, i) => `p9-${i}`);
      const big = Buffer.from(body('p9', ids, 'ndjson', 'x'.repeat(100)).body);
      assert.ok(big.length > 3.5 * MB && big.length < 5 * MB, `${big.length} bytes`);
      const rssBefore = await rss(server);
      let sent = 0;
      const statuses: Record<number, number> = {};
      for (let round = 0; round < 2; round++) {
        const r = await burst(
          Array.from({ length: 48 }, () => ({ ids, body: big })),
          true,
        );
        assert.deepEqual(r.problems, [], `round ${round}`);
        for (const [s, n] of Object.entries(r.statuses)) statuses[Number(s)] = (statuses[Number(s)] ?? 0) + n;
        sent += 48 * big.length;
      }
      const rssAfter = await rss(server);
      t.diagnostic(
        `statuses ${JSON.stringify(statuses)}; ${Math.round(sent / MB)} MB sent; ` +
          `RSS ${Math.round(rssBefore / MB)} → ${Math.round(rssAfter / MB)} MB`,
      );
      assert.ok((statuses[503] ?? 0) > 0 && (statuses[202] ?? 0) > 0, JSON.stringify(statuses));
      assert.equal((await counts(server, key)).get('p9'), ids.length, 'the events are counted once');
      // What the accepted bodies leave behind is mostly the allocator's: glibc keeps freed 4 MB
      // blocks in its arenas, one per thread that touched them (HTTP, pipeline, store writer). It
      // grew the RSS by 94–129 MB with one thread, 115–150 MB with the pipeline on a thread of its
      // own (docs/benchmarks.md). Reading the refused bodies would add about 200 MB on top.
      assert.ok(
        rssAfter - rssBefore < 192 * MB,
        `RSS grew by ${Math.round((rssAfter - rssBefore) / MB)} MB (${Math.round(rssBefore / MB)} → ${Math.round(rssAfter / MB)} MB) while ${Math.round(sent / MB)} MB were offered, 48 × ${Math.round(big.length / MB)} MB at a time`,
      );
      assertStopped(await terminate(server));
    });
  });
});
