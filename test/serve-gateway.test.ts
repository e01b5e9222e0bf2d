/**
 * `sluice serve` at its HTTP edge, against one real server process on 127.0.0.1 with a real SQLite
 * store in a temporary directory: API keys and tenant isolation, rate and body limits, every kind of
 * bad body (and that the next good request still gets a 202), problem+json errors with catalogue
 * codes, /metrics as Prometheus text with the right counts, window and dead-letter queries with
 * filters and cursors, and replay of dead letters after a fixed pipeline is swapped in by SIGHUP.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { ERRORS } from '../dist/index.js';
import { PAYMENTS, tempDir } from './helpers.ts';
import {
  allWindows,
  getJson,
  postEvents,
  startServer,
  writeServiceConfig,
  type Posted,
  type Server,
  type TenantSpec,
  waitForLog,
  postJson,
  paymentEvent,
  sinkRecords,
} from './serve-helpers.ts';

type Json = Record<string, unknown>;
type ErrorCode = keyof typeof ERRORS;

interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  hint: string;
  instance: string;
  request_id: string;
}

interface Rejection {
  index: number;
  reason: string;
  detail: string;
  pointer?: string;
}

interface Answer {
  accepted: number;
  duplicates: number;
  rejected: Rejection[];
}

interface ReplayAnswer {
  replayed: number;
  accepted: number;
  duplicates: number;
  rejected: (Rejection & { id: number })[];
  skipped: { id: number; reason: string }[];
}

interface DeadLetter {
  id: number;
  received_at: string;
  request_id: string;
  index: number;
  reason: string;
  detail: string;
  pointer?: string;
  raw: string;
}

interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

interface MetricFamily {
  name: string;
  help: string;
  type: string;
  metrics: { value?: string; labels?: Record<string, string>; buckets?: Record<string, string> }[];
}

const parsePrometheus = createRequire(import.meta.url)('parse-prometheus-text-format') as (
  text: string,
) => MetricFamily[];

const PROMTOOL = '/usr/bin/promtool';
const NDJSON = { 'content-type': 'application/x-ndjson' };
const JSON_TYPE = { 'content-type': 'application/json' };

let lastId = 0;
/** A valid, file-wide unique event id (`^evt_[0-9A-HJKMNP-TV-Z]{26}$`). */
function nextId(): string {
  return `evt_${String(++lastId).padStart(26, '0')}`;
}

/** A valid payments event (payment.captured, DE → EU, EUR) at 2026-11-21T10:00:00Z. */
function event(patch: Json = {}): Json {
  return paymentEvent({ id: nextId(), ...patch });
}

/** 20,000 USD: the payments example routes the normalized record to its `large` file sink. */
const LARGE = { amount: '20000.00', currency: 'USD' };

const ndjson = (records: (Json | string)[]): string =>
  records.map((r) => (typeof r === 'string' ? r : JSON.stringify(r))).join('\n') + '\n';

const apiKey = (tenant: string): string => `sk_test_${tenant}_${randomBytes(16).toString('hex')}`;

/** An RFC 9457 problem document with the catalogue's code, title and status. */
function assertProblem(res: Posted, status: number, code: ErrorCode, what: string): Problem {
  const body = res.body as Problem;
  const shown = `${what}: ${res.status} ${JSON.stringify(res.body).slice(0, 500)}`;
  assert.equal(res.status, status, shown);
  assert.match(res.headers.get('content-type') ?? '', /^application\/problem\+json/, shown);
  assert.equal(body.code, code, shown);
  assert.equal(
    (ERRORS[code] as { status?: number }).status,
    status,
    `${code} has status ${status} in the catalogue`,
  );
  assert.equal(body.status, status, shown);
  assert.equal(body.title, ERRORS[code].title, shown);
  assert.ok(typeof body.detail === 'string' && body.detail.length > 0, `${shown}: detail`);
  assert.ok(typeof body.hint === 'string' && body.hint.length > 0, `${shown}: hint`);
  assert.ok(body.request_id, `${shown}: request_id`);
  assert.equal(body.request_id, res.headers.get('x-request-id'), `${shown}: request_id is X-Request-Id`);
  return body;
}

function assertAnswer(res: Posted, what: string): Answer {
  assert.equal(res.status, 202, `${what}: ${res.status} ${JSON.stringify(res.body).slice(0, 500)}`);
  return res.body as Answer;
}

/** Sum of `count` over window rows. */
const totalCount = (rows: Json[]): number => rows.reduce((n, r) => n + (r.count as number), 0);

/** Every own key anywhere inside `value`. */
function hasKey(value: unknown, key: string): boolean {
  if (value === null || typeof value !== 'object') return false;
  if (Object.prototype.hasOwnProperty.call(value, key)) return true;
  return Object.values(value as Json).some((v) => hasKey(v, key));
}

/** SIGTERM, and SIGKILL if the server has not exited after 10 s. */
async function shutdown(server: Server | undefined): Promise<void> {
  if (!server || server.proc.exitCode !== null || server.proc.signalCode !== null) return;
  const stopped = await Promise.race([server.stop(), sleep(10_000, undefined, { ref: false })]);
  if (!stopped) await server.kill();
}

describe('sluice serve: the HTTP gateway', { timeout: 120_000 }, () => {
  const dir = tempDir('sluice-gateway-');
  const KEYS = {
    acme: apiKey('acme'),
    globex: apiKey('globex'),
    tiny: apiKey('tiny'),
    metered: apiKey('metered'),
  };
  const WRONG_KEY = apiKey('wrong');
  /** acme's `fixme` pipeline file is what the replay test changes; everything else stays. */
  const tenants = (fixme: string): Record<string, TenantSpec> => ({
    acme: {
      keys: [KEYS.acme],
      pipelines: { payments: PAYMENTS, windows: PAYMENTS, intake: PAYMENTS, dead: PAYMENTS, fixme },
    },
    globex: { keys: [KEYS.globex], pipelines: { payments: PAYMENTS, ledger: PAYMENTS } },
    tiny: {
      keys: [KEYS.tiny],
      limits: { events_per_second: 1, burst: '4s' },
      pipelines: { payments: PAYMENTS },
    },
    metered: { keys: [KEYS.metered], pipelines: { payments: PAYMENTS } },
  });
  const config = writeServiceConfig(dir, tenants(PAYMENTS));
  const outputs = join(dir, 'store', 'outputs');
  let server: Server;

  before(async () => {
    // Debug level: the most the server ever logs, for the check that no key reaches the log.
    server = await startServer(config, { args: ['--log-level', 'debug'] });
  });

  after(async () => {
    await shutdown(server);
  });

  it('GET /healthz, /readyz and /openapi.json answer 200', async () => {
    const health = await getJson(server, '/healthz');
    assert.equal(health.status, 200);
    assert.deepEqual(health.body, { status: 'ok' });
    const ready = await getJson(server, '/readyz');
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.body, { status: 'ready' });
    const openapi = await getJson(server, '/openapi.json');
    assert.equal(openapi.status, 200);
    assert.equal(typeof (openapi.body as Json).openapi, 'string');
    assertProblem(await getJson(server, '/v1/nothing-here'), 404, 'SLUICE_ERR_NOT_FOUND', 'unknown route');
  });

  it('no key, a wrong key or another auth scheme → 401 on every route, and no key reaches the log', async () => {
    const body = ndjson([event()]);
    const headersFor: [string, Record<string, string>][] = [
      ['no Authorization header', {}],
      ['a wrong key', { authorization: `Bearer ${WRONG_KEY}` }],
      ['a valid key with one more character', { authorization: `Bearer ${KEYS.acme}x` }],
      [
        'a valid key under Basic',
        { authorization: `Basic ${Buffer.from(`${KEYS.acme}:`).toString('base64')}` },
      ],
      ['Bearer without a key', { authorization: 'Bearer ' }],
    ];
    // A pipeline that does not exist answers 401 too: without a key, nothing tells what exists.
    const routes: [string, string, string | undefined][] = [
      ['POST', '/v1/pipelines/payments/events', body],
      ['POST', '/v1/pipelines/nosuch/events', body],
      ['GET', '/v1/pipelines/payments/windows', undefined],
      ['GET', '/v1/pipelines/payments/dead-letters', undefined],
      ['POST', '/v1/pipelines/payments/dead-letters/replay', '{}'],
    ];
    for (const [what, auth] of headersFor)
      for (const [method, path, payload] of routes) {
        const res = await fetch(`${server.url}${path}`, {
          method,
          headers: { ...auth, ...(payload ? NDJSON : {}) },
          body: payload,
        });
        const text = await res.text();
        assertProblem(
          { status: res.status, headers: res.headers, body: JSON.parse(text) as unknown },
          401,
          'SLUICE_ERR_UNAUTHORIZED',
          `${method} ${path} with ${what}`,
        );
      }
    // The right key works, so the server has seen every key in a header by now.
    assertAnswer(await postEvents(server, 'payments', KEYS.acme, ndjson([event()])), 'acme with its key');
    const log = server.output();
    for (const [name, key] of [...Object.entries(KEYS), ['wrong', WRONG_KEY]])
      assert.ok(!log.includes(key), `the ${name} API key appears in the server's log`);
  });

  it("tenant isolation: another tenant's pipeline is a 404 identical to a missing one; data stays apart", async () => {
    // Both tenants run a pipeline named `payments`; only globex has `ledger`.
    const acmeEvent = event();
    const globexEvent = event({ user: { id: 'usr_000042', country: 'gb' }, currency: 'GBP' });
    assertAnswer(await postEvents(server, 'payments', KEYS.acme, ndjson([acmeEvent])), 'acme');
    assertAnswer(await postEvents(server, 'payments', KEYS.globex, ndjson([globexEvent])), 'globex');
    assertAnswer(await postEvents(server, 'ledger', KEYS.globex, ndjson([event()])), 'globex ledger');
    const acmeMarker = `acme-only-${randomBytes(6).toString('hex')}`;
    const globexMarker = `globex-only-${randomBytes(6).toString('hex')}`;
    const acmeBad = assertAnswer(
      await postEvents(server, 'payments', KEYS.acme, ndjson([{ marker: acmeMarker }])),
      'acme bad record',
    );
    assert.equal(acmeBad.rejected.length, 1);
    assertAnswer(
      await postEvents(server, 'ledger', KEYS.globex, ndjson([{ marker: globexMarker }])),
      'globex bad record',
    );

    // `ledger` (globex's) and `nosuch` (nobody's) have names of the same length, so the two
    // answers can be compared byte for byte once the name and the request id are set aside.
    const attempts: [string, (p: string) => Promise<Posted>][] = [
      ['POST events', (p) => postEvents(server, p, KEYS.acme, ndjson([event()]))],
      ['GET windows', (p) => getJson(server, `/v1/pipelines/${p}/windows`, KEYS.acme)],
      ['GET windows with a filter', (p) => getJson(server, `/v1/pipelines/${p}/windows?type=x`, KEYS.acme)],
      ['GET dead-letters', (p) => getJson(server, `/v1/pipelines/${p}/dead-letters`, KEYS.acme)],
      ['POST replay', (p) => postJson(server, `/v1/pipelines/${p}/dead-letters/replay`, KEYS.acme, {})],
    ];
    const comparable = (res: Posted, name: string): Json => {
      const { request_id: _id, ...rest } = res.body as Problem;
      return {
        status: res.status,
        contentType: res.headers.get('content-type'),
        contentLength: res.headers.get('content-length'),
        body: JSON.parse(JSON.stringify(rest).replaceAll(name, '<pipeline>')) as Json,
      };
    };
    for (const [what, attempt] of attempts) {
      const foreign = await attempt('ledger');
      const missing = await attempt('nosuch');
      assertProblem(foreign, 404, 'SLUICE_ERR_NOT_FOUND', `acme ${what} on globex's ledger`);
      assertProblem(missing, 404, 'SLUICE_ERR_NOT_FOUND', `acme ${what} on a missing pipeline`);
      assert.deepEqual(
        comparable(foreign, 'ledger'),
        comparable(missing, 'nosuch'),
        `${what}: another tenant's pipeline must look exactly like a missing one`,
      );
    }
    assertProblem(
      await getJson(server, '/v1/pipelines/windows/windows', KEYS.globex),
      404,
      'SLUICE_ERR_NOT_FOUND',
      "globex reading acme's windows pipeline",
    );

    // acme's refused write left nothing in globex's ledger.
    assert.equal(
      totalCount(await allWindows(server, 'ledger', KEYS.globex)),
      1,
      "acme's POST reached ledger",
    );
    const acmeRows = await allWindows(server, 'payments', KEYS.acme);
    const globexRows = await allWindows(server, 'payments', KEYS.globex);
    assert.ok(
      acmeRows.every((r) => r.currency === 'EUR'),
      `acme sees globex's windows: ${JSON.stringify(acmeRows)}`,
    );
    assert.deepEqual(
      globexRows.map((r) => [r.currency, r.region, r.count]),
      [['GBP', 'EU', 1]],
      `globex sees exactly its own event: ${JSON.stringify(globexRows)}`,
    );

    const deadText = async (pipeline: string, key: string): Promise<string> => {
      const res = await getJson(server, `/v1/pipelines/${pipeline}/dead-letters?limit=10000`, key);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return JSON.stringify(res.body);
    };
    assert.ok((await deadText('payments', KEYS.acme)).includes(acmeMarker), "acme's own dead letter");
    assert.ok(
      !(await deadText('payments', KEYS.acme)).includes(globexMarker),
      "acme sees globex's dead letter",
    );
    assert.ok((await deadText('ledger', KEYS.globex)).includes(globexMarker), "globex's own dead letter");
    for (const p of ['payments', 'ledger'])
      assert.ok(
        !(await deadText(p, KEYS.globex)).includes(acmeMarker),
        `globex's ${p} shows acme's dead letter`,
      );
  });

  it('rate limit: an empty bucket → 429 with Retry-After, nothing of that request is kept, and later it fits', async () => {
    // tiny: 1 event per second, a burst of 4 s: the bucket holds 4 events, and refills slowly
    // enough that the next request finds it empty however slow this machine is.
    const first = [event(), event(), event(), event()];
    assert.equal(
      assertAnswer(await postEvents(server, 'payments', KEYS.tiny, ndjson(first)), 'burst').accepted,
      4,
    );
    const refused = [event(), event()];
    const res = await postEvents(server, 'payments', KEYS.tiny, ndjson(refused));
    assertProblem(res, 429, 'SLUICE_ERR_RATE_LIMITED', 'over the rate');
    const retryAfter = res.headers.get('retry-after');
    assert.match(retryAfter ?? '', /^[1-9][0-9]*$/, `Retry-After must be whole seconds, got ${retryAfter}`);
    assert.ok(
      Number(retryAfter) <= 2,
      `2 events at 1/s fit again within 2 s, Retry-After says ${retryAfter}`,
    );
    assert.equal(
      totalCount(await allWindows(server, 'payments', KEYS.tiny)),
      4,
      'the refused events were counted',
    );

    await sleep(Number(retryAfter) * 1000 + 250);
    // The same events now: had any of them been taken before, they would be duplicates.
    const retried = assertAnswer(
      await postEvents(server, 'payments', KEYS.tiny, ndjson(refused)),
      'after Retry-After',
    );
    assert.deepEqual(retried, { records: 2, accepted: 2, duplicates: 0, rejected: [] });
    assert.equal(totalCount(await allWindows(server, 'payments', KEYS.tiny)), 6);

    // A request larger than the whole bucket can never fit.
    const tooBig = await postEvents(
      server,
      'payments',
      KEYS.tiny,
      ndjson([1, 2, 3, 4, 5].map(() => event())),
    );
    assertProblem(tooBig, 429, 'SLUICE_ERR_RATE_LIMITED', 'more events than the burst');
    assert.equal(tooBig.headers.get('retry-after'), null, 'a request that can never fit gets no Retry-After');
  });

  describe('bad bodies: each is answered as documented, and the next valid request still gets a 202', () => {
    const DEEP = 10_000;
    const deepArray = '['.repeat(DEEP) + ']'.repeat(DEEP);
    const deepObject = '{"a":'.repeat(DEEP) + '1' + '}'.repeat(DEEP);
    /** `s` with BYTES replaced by bytes that are not UTF-8 (a lone 0xff and a cut 3-byte sequence). */
    const withInvalidUtf8 = (s: string): Buffer => {
      const [a, b] = s.split('BYTES') as [string, string];
      return Buffer.concat([Buffer.from(a), Buffer.from([0xff, 0xe2, 0x82]), Buffer.from(b)]);
    };
    const largeFile = join(outputs, 'acme', 'intake', 'large.ndjson');
    let acceptedInIntake = 0;

    interface Case {
      name: string;
      body: () => string | Uint8Array;
      headers?: Record<string, string>;
      /** Times the same body is sent; each must be answered. */
      attempts?: number;
      check: (res: Posted) => Promise<void> | void;
    }

    const utf8Good = event({
      ...LARGE,
      user: { id: 'usr_000042', country: 'de', email: 'AnBYTESa@Example.com' },
    });
    const utf8BadId = event({ id: 'evt_BYTES' });
    const protoProbe = event();
    const protoUser = event({
      ...LARGE,
      user: { id: 'usr_000042', country: 'de', PROTO: { email: 'x@polluted.example', polluted: true } },
    });

    const cases: Case[] = [
      {
        name: 'a 50 MB body (limits.body_bytes defaults to 10 MiB) → 413, every time',
        body: () => Buffer.alloc(50 * 1024 * 1024, ' '),
        // The client is still sending when the answer comes: it must be able to read it.
        attempts: 10,
        check: (res) => void assertProblem(res, 413, 'SLUICE_ERR_BODY_TOO_LARGE', '50 MB body'),
      },
      {
        name: 'a gzip bomb (100 KB inflating to 100 MB) → 413',
        body: () => gzipSync(Buffer.alloc(100 * 1024 * 1024, ' '), { level: 9 }),
        headers: { ...NDJSON, 'content-encoding': 'gzip' },
        check: (res) => {
          const p = assertProblem(res, 413, 'SLUICE_ERR_BODY_TOO_LARGE', 'gzip bomb');
          assert.match(p.detail, /inflate/);
        },
      },
      {
        name: 'gzip of valid events that inflates to just over body_bytes → 413',
        body: () => {
          const line = JSON.stringify(event()) + '\n';
          return gzipSync(line.repeat(Math.ceil((10 * 1024 * 1024 + 1) / line.length)));
        },
        headers: { ...NDJSON, 'content-encoding': 'gzip' },
        check: (res) => void assertProblem(res, 413, 'SLUICE_ERR_BODY_TOO_LARGE', 'gzip over the limit'),
      },
      {
        name: 'truncated gzip → 400',
        body: () => {
          const gz = gzipSync(ndjson([event(), event(), event()]));
          return gz.subarray(0, Math.floor(gz.length / 2));
        },
        headers: { ...NDJSON, 'content-encoding': 'gzip' },
        check: (res) => void assertProblem(res, 400, 'SLUICE_ERR_BODY_MALFORMED', 'truncated gzip'),
      },
      {
        name: 'invalid UTF-8 → 202: decoded as U+FFFD, each record judged on its own',
        body: () =>
          Buffer.concat([
            withInvalidUtf8(JSON.stringify(utf8Good)),
            Buffer.from('\n'),
            withInvalidUtf8(JSON.stringify(utf8BadId)),
            Buffer.from('\n'),
          ]),
        check: async (res) => {
          const a = assertAnswer(res, 'invalid UTF-8');
          assert.equal(a.accepted, 1, JSON.stringify(a));
          assert.equal(a.rejected.length, 1, JSON.stringify(a));
          assert.deepEqual(
            [a.rejected[0]!.index, a.rejected[0]!.reason, a.rejected[0]!.pointer],
            [1, 'invalid', '/id'],
          );
          const dead = await getJson(server, '/v1/pipelines/intake/dead-letters?limit=10000', KEYS.acme);
          const letter = (dead.body as Page<DeadLetter>).items.find(
            (d) => d.request_id === res.headers.get('x-request-id'),
          );
          assert.ok(letter, 'the dead letter of the bad id is queryable');
          assert.ok(
            letter.raw.includes('"evt_\uFFFD\uFFFD"'),
            `raw keeps the decoded text: ${letter.raw.slice(0, 60)}`,
          );
          const large = await sinkRecords<Json>(largeFile, (rs) => rs.some((r) => r.id === utf8Good.id));
          const rec = large.find((r) => r.id === utf8Good.id);
          assert.ok(rec, `the accepted event reaches the large sink (${largeFile})`);
          assert.equal(rec.email, 'an\uFFFD\uFFFDa@example.com');
        },
      },
      {
        name: `${DEEP}-deep nesting (NDJSON) → 202 with one rejection per deep record`,
        body: () =>
          ndjson([
            deepArray,
            deepObject,
            JSON.stringify(event({ meta: 'DEEP' })).replace('"DEEP"', deepObject),
          ]),
        check: (res) => {
          const a = assertAnswer(res, 'deep NDJSON');
          assert.equal(a.accepted, 1, 'deep nesting inside `meta` is still a valid event');
          assert.deepEqual(
            a.rejected.map((r) => r.index),
            [0, 1],
          );
          for (const r of a.rejected) assert.ok(['parse', 'invalid'].includes(r.reason), JSON.stringify(r));
        },
      },
      {
        name: `${DEEP}-deep nesting (JSON array) → 202 with a rejection`,
        body: () => `[${deepObject},${deepArray},${JSON.stringify(event())}]`,
        headers: JSON_TYPE,
        check: (res) => {
          const a = assertAnswer(res, 'deep JSON');
          assert.equal(a.accepted, 1);
          assert.deepEqual(
            a.rejected.map((r) => r.index),
            [0, 1],
          );
        },
      },
      {
        name: '__proto__ keys → invalid (unknown field) rejections, and no prototype pollution',
        body: () =>
          ndjson([
            `{"__proto__":{"polluted":true,"${protoProbe.id as string}":true},${JSON.stringify(protoProbe).slice(1)}`,
            JSON.stringify(event({ constructor: { prototype: { polluted: true } } })),
            JSON.stringify(protoUser).replace('"PROTO"', '"__proto__"'),
          ]),
        check: async (res) => {
          const a = assertAnswer(res, '__proto__');
          assert.equal(
            a.accepted,
            1,
            `a __proto__ key inside user (which allows any key) is fine: ${JSON.stringify(a)}`,
          );
          assert.deepEqual(
            a.rejected.map((r) => [r.index, r.reason, r.pointer]),
            [
              [0, 'invalid', '/__proto__'],
              [1, 'invalid', '/constructor'],
            ],
          );
          assert.match(a.rejected[0]!.detail, /unknown field.*__proto__/);
          // Had the first record's id become a (prototype) key anywhere, it would now be a duplicate.
          const probe = assertAnswer(
            await postEvents(server, 'intake', KEYS.acme, ndjson([protoProbe])),
            'the id named in __proto__',
          );
          assert.deepEqual(probe, { records: 1, accepted: 1, duplicates: 0, rejected: [] });
          acceptedInIntake += 1;
          // Had `user.__proto__` been assigned rather than defined, user.email would be inherited.
          const large = await sinkRecords<Json>(largeFile, (rs) => rs.some((r) => r.id === protoUser.id));
          const rec = large.find((r) => r.id === protoUser.id);
          assert.ok(rec, 'the event with __proto__ inside user reaches the large sink');
          assert.equal(rec.email, null, 'user.email came from the __proto__ key');
          for (const r of large) assert.ok(!hasKey(r, 'polluted'), `polluted output: ${JSON.stringify(r)}`);
          for (const r of await allWindows(server, 'intake', KEYS.acme))
            assert.ok(!hasKey(r, 'polluted'), `polluted window row: ${JSON.stringify(r)}`);
        },
      },
      {
        name: 'an NDJSON line that is not JSON → a parse rejection, the other lines accepted',
        body: () => ndjson([event(), 'this is not JSON', event()]),
        check: (res) => {
          const a = assertAnswer(res, 'not JSON');
          assert.equal(a.accepted, 2);
          assert.deepEqual(
            a.rejected.map((r) => [r.index, r.reason]),
            [[1, 'parse']],
          );
        },
      },
      {
        name: 'Content-Type: text/plain → 415',
        body: () => ndjson([event()]),
        headers: { 'content-type': 'text/plain' },
        check: (res) => void assertProblem(res, 415, 'SLUICE_ERR_UNSUPPORTED_MEDIA_TYPE', 'text/plain'),
      },
      {
        name: 'Content-Encoding: br → 415',
        body: () => ndjson([event()]),
        headers: { ...NDJSON, 'content-encoding': 'br' },
        check: (res) => void assertProblem(res, 415, 'SLUICE_ERR_UNSUPPORTED_MEDIA_TYPE', 'br'),
      },
      {
        name: 'a JSON body that is a number → 400',
        body: () => '42',
        headers: JSON_TYPE,
        check: (res) => void assertProblem(res, 400, 'SLUICE_ERR_BODY_MALFORMED', 'number'),
      },
      {
        name: 'an empty JSON body → 400',
        body: () => '',
        headers: JSON_TYPE,
        check: (res) => void assertProblem(res, 400, 'SLUICE_ERR_BODY_MALFORMED', 'empty'),
      },
      {
        name: 'an empty NDJSON body → 400, as an empty JSON body',
        body: () => '',
        headers: { 'content-type': 'application/x-ndjson' },
        check: (res) => void assertProblem(res, 400, 'SLUICE_ERR_BODY_MALFORMED', 'empty'),
      },
      {
        name: 'a JSON array that is never closed → 400',
        body: () => `[${JSON.stringify(event())},${JSON.stringify(event())}`,
        headers: JSON_TYPE,
        check: (res) => void assertProblem(res, 400, 'SLUICE_ERR_BODY_MALFORMED', 'unclosed array'),
      },
    ];

    for (const c of cases)
      it(c.name, async () => {
        const payload = c.body();
        const attempts = c.attempts ?? 1;
        for (let attempt = 1; attempt <= attempts; attempt++) {
          let res: Posted;
          try {
            res = await postEvents(server, 'intake', KEYS.acme, payload, c.headers ?? NDJSON);
          } catch (err) {
            const cause = (err as { cause?: { code?: string; message?: string } }).cause;
            assert.fail(
              `BUG: attempt ${attempt} of ${attempts} got no answer, only ${(err as Error).message} ` +
                `(${cause?.code ?? ''} ${cause?.message ?? ''}): the server closes the connection while the ` +
                'client is still sending the body, so the client never reads the error',
            );
          }
          if (res.status === 202) acceptedInIntake += (res.body as Answer).accepted;
          await c.check(res);
        }
        const next = assertAnswer(
          await postEvents(server, 'intake', KEYS.acme, ndjson([event()])),
          `the valid request after "${c.name}"`,
        );
        assert.deepEqual(next, { records: 1, accepted: 1, duplicates: 0, rejected: [] });
        acceptedInIntake += 1;
      });

    it('refused bodies left nothing behind: the windows count exactly the accepted events', async () => {
      assert.equal(totalCount(await allWindows(server, 'intake', KEYS.acme)), acceptedInIntake);
    });
  });

  it('/metrics shows ingest→durable and ingest→sink latency, queue depth, event-loop lag and heap', async () => {
    // A rejected record goes to the payments pipeline's dead-letter file sink: a sink delivery.
    assertAnswer(
      await postEvents(server, 'payments', KEYS.acme, ndjson([event()]) + 'not json\n'),
      'acme, with one bad line',
    );
    const series = (text: string, name: string): number =>
      text
        .split('\n')
        .filter((l) => l.startsWith(name) && l.includes('tenant="acme"') && l.includes('pipeline="payments"'))
        .reduce((n, l) => n + Number(l.split(' ').pop()), 0);
    const deadline = Date.now() + 10_000;
    let text = '';
    // Sinks are fed every sinks.interval: wait for a delivery to be observed.
    while (Date.now() < deadline) {
      text = await (await fetch(`${server.url}/metrics`)).text();
      if (series(text, 'sluice_ingest_to_sink_seconds_count') > 0) break;
      await sleep(50);
    }
    assert.ok(series(text, 'sluice_ingest_to_durable_seconds_count') > 0, 'no ingest→durable observation');
    assert.ok(series(text, 'sluice_ingest_to_sink_seconds_count') > 0, 'no ingest→sink observation');
    for (const name of [
      'sluice_queue_depth',
      'sluice_nodejs_eventloop_lag_seconds',
      'sluice_nodejs_heap_size_used_bytes',
      'sluice_in_flight_bytes',
    ])
      assert.match(text, new RegExp(`^${name} \\d`, 'm'), `/metrics has no ${name}`);
    // Every thread that works on requests reports its busy time, and each has done some by now (the
    // pipeline thread's includes its group commits, also timed by sluice_store_commit_seconds).
    for (const thread of ['http', 'pipeline']) {
      const m = new RegExp(`^sluice_thread_busy_seconds_total\\{thread="${thread}"\\} (\\S+)$`, 'm').exec(
        text,
      );
      assert.ok(m, `/metrics has no busy time of the ${thread} thread`);
      assert.ok(Number(m[1]) > 0, `the ${thread} thread was never busy: ${m[0]}`);
    }
  });

  it('/metrics is valid Prometheus text with per-tenant, per-pipeline counts', async () => {
    const scrape = async (): Promise<{ text: string; families: MetricFamily[] }> => {
      const res = await fetch(`${server.url}/metrics`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
      const text = await res.text();
      return { text, families: parsePrometheus(text) };
    };
    /** The value of the one series of `name` with these labels; 0 when there is none yet. */
    const valueIn = (
      families: MetricFamily[],
      name: string,
      type: string,
      labels: Record<string, string>,
    ): number => {
      const f = families.find((x) => x.name === name);
      if (!f) return 0;
      assert.equal(f.type.toLowerCase(), type, `${name} type`);
      const found = f.metrics.filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
      assert.ok(found.length <= 1, `${name}${JSON.stringify(labels)}: ${JSON.stringify(found)}`);
      return found.length === 0 ? 0 : Number(found[0]!.value);
    };
    const metered = { tenant: 'metered', pipeline: 'payments' };
    const series: [string, string, Record<string, string>][] = [
      ['sluice_events_received_total', 'counter', metered],
      ['sluice_events_accepted_total', 'counter', metered],
      ['sluice_events_duplicate_total', 'counter', metered],
      ['sluice_events_dead_total', 'counter', { ...metered, reason: 'invalid' }],
      ['sluice_events_dead_total', 'counter', { ...metered, reason: 'parse' }],
      ['sluice_http_rejected_total', 'counter', { tenant: 'metered', code: 'SLUICE_ERR_NOT_FOUND' }],
      ['sluice_http_rejected_total', 'counter', { tenant: 'tiny', code: 'SLUICE_ERR_RATE_LIMITED' }],
      ['sluice_http_rejected_total', 'counter', { tenant: '', code: 'SLUICE_ERR_UNAUTHORIZED' }],
      ['sluice_events_received_total', 'counter', { tenant: 'globex', pipeline: 'ledger' }],
    ];
    const before = await scrape();
    const start = series.map(([n, t, l]) => valueIn(before.families, n, t, l));

    const [a, b] = [event(), event()];
    const answer = assertAnswer(
      await postEvents(
        server,
        'payments',
        KEYS.metered,
        ndjson([a, b, a, { id: 'not-an-event' }, 'not JSON']),
      ),
      'metered NDJSON',
    );
    assert.deepEqual(
      [answer.accepted, answer.duplicates, answer.rejected.map((r) => r.reason)],
      [2, 1, ['invalid', 'parse']],
    );
    assertAnswer(
      await postEvents(server, 'payments', KEYS.metered, JSON.stringify([event()]), JSON_TYPE),
      'JSON',
    );
    assertProblem(
      await postEvents(server, 'nosuch', KEYS.metered, ndjson([event()])),
      404,
      'SLUICE_ERR_NOT_FOUND',
      '404',
    );
    assertProblem(
      await postEvents(server, 'payments', undefined, ndjson([event()])),
      401,
      'SLUICE_ERR_UNAUTHORIZED',
      '401',
    );
    // More events than tiny's whole bucket: refused without taking tokens.
    const tooBig = ndjson([1, 2, 3, 4, 5].map(() => event()));
    assertProblem(
      await postEvents(server, 'payments', KEYS.tiny, tooBig),
      429,
      'SLUICE_ERR_RATE_LIMITED',
      '429',
    );
    assertAnswer(await postEvents(server, 'ledger', KEYS.globex, ndjson([event(), event()])), 'globex');

    const { text, families } = await scrape();
    const family = (name: string, type: string): MetricFamily => {
      const f = families.find((x) => x.name === name);
      assert.ok(f, `/metrics has no ${name}`);
      assert.equal(f.type.toLowerCase(), type, `${name} type`);
      return f;
    };
    const value = (name: string, type: string, labels: Record<string, string>): number => {
      family(name, type);
      return valueIn(families, name, type, labels);
    };
    const deltas = series.map(([n, t, l], i) => value(n, t, l) - start[i]!);
    assert.deepEqual(
      Object.fromEntries(series.map(([n, , l], i) => [`${n}${JSON.stringify(l)}`, deltas[i]])),
      Object.fromEntries(
        series.map(([n, , l], i) => [`${n}${JSON.stringify(l)}`, [6, 3, 1, 1, 1, 1, 1, 1, 2][i]]),
      ),
      'each series grew by exactly what this test sent',
    );
    // The parser folds a labelled histogram's series into one, so read its _count lines directly.
    family('sluice_http_request_duration_seconds', 'histogram');
    const accepted202 = text
      .split('\n')
      .filter(
        (l) =>
          l.startsWith('sluice_http_request_duration_seconds_count{') &&
          l.includes('route="/v1/pipelines/:pipeline/events"') &&
          l.includes('status="202"'),
      );
    assert.equal(accepted202.length, 1, `one latency series for accepted ingest requests: ${accepted202}`);
    assert.ok(Number(accepted202[0]!.split(' ').pop()) >= 2, accepted202[0]);
    // Process metrics under the names docs/operations.md gives.
    assert.ok(value('sluice_process_resident_memory_bytes', 'gauge', {}) > 0);
    assert.ok(value('sluice_process_cpu_seconds_total', 'counter', {}) > 0);

    if (existsSync(PROMTOOL)) {
      // Exit 3 is lint advice (e.g. prom-client's default `_total` gauges); 1 is a parse error.
      const check = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
      const said = `${check.stdout}${check.stderr}`;
      assert.ok(
        check.status === 0 || check.status === 3,
        `promtool check metrics exit ${check.status}: ${said}`,
      );
      assert.doesNotMatch(said, /error while linting|parsing error|parse error/i, said);
    }
  });

  describe('windows query: filters, time range and cursor pagination', () => {
    const TYPES = ['payment.captured', 'payment.refunded', 'invoice.paid'];
    const PLACES = [
      { country: 'de', region: 'EU', currency: 'EUR' },
      { country: 'us', region: 'NA', currency: 'USD' },
      { country: 'fr', region: 'EU', currency: 'USD' },
    ];
    const minute = (m: number): string => `2026-11-21T10:${String(m).padStart(2, '0')}:00.000Z`;
    const expected = new Map<string, Json>();
    type Row = {
      window_start: string;
      type: string;
      region: string;
      currency: string;
      count: number;
      closed: boolean;
    };
    const project = (rows: Json[]): Row[] =>
      rows.map((r) => ({
        window_start: r.window_start as string,
        type: r.type as string,
        region: r.region as string,
        currency: r.currency as string,
        count: r.count as number,
        closed: r.closed as boolean,
      }));
    const sorted = (rows: Row[]): Row[] =>
      [...rows].sort((x, y) => JSON.stringify(x).localeCompare(JSON.stringify(y)));
    let unpaged: Row[];

    const pages = async (query: string): Promise<{ rows: Row[]; pages: number }> => {
      const rows: Row[] = [];
      let cursor: string | null = null;
      let n = 0;
      do {
        const q: string = `${query}&limit=2${cursor ? `&cursor=${cursor}` : ''}`;
        const res = await getJson(server, `/v1/pipelines/windows/windows?${q}`, KEYS.acme);
        assert.equal(res.status, 200, JSON.stringify(res.body));
        const page = res.body as Page<Json>;
        assert.ok(page.items.length <= 2, `a page of ${page.items.length} rows for limit=2`);
        assert.ok(page.items.length > 0, `an empty page (cursor ${cursor}) before the end`);
        rows.push(...project(page.items));
        cursor = page.next_cursor;
        assert.ok(++n < 100, 'pagination does not end');
      } while (cursor);
      return { rows, pages: n };
    };
    const unpagedOf = async (query: string): Promise<Row[]> => {
      const res = await getJson(server, `/v1/pipelines/windows/windows?${query}&limit=10000`, KEYS.acme);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const page = res.body as Page<Json>;
      assert.equal(page.next_cursor, null);
      return project(page.items);
    };

    before(async () => {
      // Minutes 10:00–10:04 with a mix of groups, then one event at 10:10 that closes them all
      // (a window closes when the watermark passes start + 60 s size + 60 s lateness).
      for (let m = 0; m < 5; m++) {
        const batch: Json[] = [];
        for (let i = 0; i < 4 + m; i++) {
          const type = TYPES[(i + m) % 3]!;
          const place = PLACES[(2 * i + m) % 3]!;
          batch.push(
            event({
              type,
              ts: `2026-11-21T10:0${m}:${String((i * 7) % 60).padStart(2, '0')}Z`,
              user: { id: 'usr_000042', country: place.country },
              currency: place.currency,
            }),
          );
          const k = `${minute(m)}|${type}|${place.region}|${place.currency}`;
          const row = expected.get(k) ?? {
            window_start: minute(m),
            type,
            region: place.region,
            currency: place.currency,
            count: 0,
            closed: true,
          };
          row.count = (row.count as number) + 1;
          expected.set(k, row);
        }
        assertAnswer(await postEvents(server, 'windows', KEYS.acme, ndjson(batch)), `minute ${m}`);
      }
      const late = event({
        type: 'payment.failed',
        ts: '2026-11-21T10:10:30Z',
        user: { id: 'usr_000042', country: 'jp' },
        currency: 'JPY',
        amount: '1200',
      });
      assertAnswer(await postEvents(server, 'windows', KEYS.acme, ndjson([late])), 'closing event');
      expected.set('open', {
        window_start: minute(10),
        type: 'payment.failed',
        region: 'APAC',
        currency: 'JPY',
        count: 1,
        closed: false,
      });
      unpaged = await unpagedOf('');
    });

    it('the unpaged result is every window row, closed and open, ordered by start', () => {
      assert.deepEqual(sorted(unpaged), sorted([...expected.values()] as Row[]));
      const starts = unpaged.map((r) => Date.parse(r.window_start));
      assert.deepEqual(
        starts,
        [...starts].sort((x, y) => x - y),
        'rows are ordered by window start',
      );
    });

    it('filters named after group_by fields select exactly the matching rows', async () => {
      const want = unpaged.filter((r) => r.type === 'payment.captured' && r.region === 'EU');
      assert.ok(want.length >= 2, 'the data set has several captured EU rows');
      assert.deepEqual(await unpagedOf('type=payment.captured&region=EU'), want);
      assert.deepEqual(await unpagedOf('currency=JPY'), [expected.get('open') as Row]);
      assert.deepEqual(await unpagedOf('region=NOWHERE'), []);
    });

    it('from/to (RFC 3339 or epoch ms) select window starts in [from, to)', async () => {
      const from = '2026-11-21T10:01:00Z';
      const to = Date.parse('2026-11-21T10:03:00Z');
      const want = unpaged.filter(
        (r) => Date.parse(r.window_start) >= Date.parse(from) && Date.parse(r.window_start) < to,
      );
      assert.ok(want.length > 0);
      assert.deepEqual(await unpagedOf(`from=${encodeURIComponent(from)}&to=${to}`), want);
      assert.deepEqual(
        await unpagedOf(`from=${Date.parse(from)}&to=${encodeURIComponent('2026-11-21T10:03:00Z')}`),
        want,
      );
      assert.deepEqual(await unpagedOf(`from=${encodeURIComponent('2026-11-21T10:05:00Z')}`), [
        expected.get('open') as Row,
      ]);
    });

    it('paging with limit=2 gives exactly the unpaged result, with and without filters', async () => {
      const all = await pages('');
      assert.deepEqual(all.rows, unpaged);
      assert.equal(all.pages, Math.ceil(unpaged.length / 2));
      const query = `type=payment.captured&from=${encodeURIComponent('2026-11-21T10:00:00Z')}`;
      const filtered = await pages(query);
      assert.deepEqual(filtered.rows, await unpagedOf(query));
    });

    it('bad parameters → 400 problems', async () => {
      for (const q of [
        'amount=1',
        'cursor=bm90LWEtY3Vyc29y',
        'limit=0',
        'limit=10001',
        'from=yesterday',
        'output=nope',
      ]) {
        const res = await getJson(server, `/v1/pipelines/windows/windows?${q}`, KEYS.acme);
        assertProblem(res, 400, 'SLUICE_ERR_BAD_REQUEST', `windows?${q}`);
      }
    });
  });

  it('dead letters: query by reason and received time, with cursor pagination', async () => {
    interface Expect {
      request: number;
      index: number;
      reason: string;
      raw: string;
    }
    const requests: (Json | string)[][] = [
      [{ ...event(), id: undefined }, '{"truncated": ', event(), event({ currency: 'XXX' })],
      ['{', event({ type: 'payment.stolen' }), event({ channel: 'web' })],
      [event({ amount: '12.5.0' })],
    ];
    const expected: Expect[] = [];
    const requestIds: string[] = [];
    for (const [r, records] of requests.entries()) {
      if (r > 0) await sleep(30); // distinct received times
      const res = await postEvents(server, 'dead', KEYS.acme, ndjson(records));
      const a = assertAnswer(res, `request ${r}`);
      requestIds.push(res.headers.get('x-request-id')!);
      records.forEach((rec, index) => {
        const raw = typeof rec === 'string' ? rec : JSON.stringify(rec);
        const reason = typeof rec === 'string' ? 'parse' : 'invalid';
        if (index === 2 && r === 0) return; // the valid one
        expected.push({ request: r, index, reason, raw });
      });
      assert.equal(a.rejected.length, r === 0 ? 3 : records.length);
    }
    const list = async (query: string): Promise<DeadLetter[]> => {
      const res = await getJson(server, `/v1/pipelines/dead/dead-letters?${query}`, KEYS.acme);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      return (res.body as Page<DeadLetter>).items;
    };
    const matches = (got: DeadLetter[], want: Expect[], what: string): void => {
      assert.deepEqual(
        got.map((d) => ({
          request: requestIds.indexOf(d.request_id),
          index: d.index,
          reason: d.reason,
          raw: d.raw,
        })),
        want,
        what,
      );
      for (const d of got) {
        assert.ok(Number.isSafeInteger(d.id), `${what}: id`);
        assert.ok(!Number.isNaN(Date.parse(d.received_at)), `${what}: received_at`);
        assert.ok(typeof d.detail === 'string' && d.detail.length > 0, `${what}: detail`);
      }
      const ids = got.map((d) => d.id);
      assert.deepEqual(
        ids,
        [...ids].sort((x, y) => x - y),
        `${what}: oldest first`,
      );
    };

    const all = await list('limit=10000');
    matches(all, expected, 'every dead letter');
    const invalid = await list('reason=invalid');
    matches(
      invalid,
      expected.filter((e) => e.reason === 'invalid'),
      'reason=invalid',
    );
    matches(
      await list('reason=parse'),
      expected.filter((e) => e.reason === 'parse'),
      'reason=parse',
    );
    assert.deepEqual(await list('reason=late'), []);

    // Pages of 2 through the invalid ones: the union is the unpaged answer.
    const paged: DeadLetter[] = [];
    let cursor: string | null = null;
    let n = 0;
    do {
      const q: string = `reason=invalid&limit=2${cursor ? `&cursor=${cursor}` : ''}`;
      const res = await getJson(server, `/v1/pipelines/dead/dead-letters?${q}`, KEYS.acme);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      const page = res.body as Page<DeadLetter>;
      assert.ok(page.items.length > 0 && page.items.length <= 2, `page of ${page.items.length}`);
      paged.push(...page.items);
      cursor = page.next_cursor;
      assert.ok(++n < 100);
    } while (cursor);
    assert.deepEqual(paged, invalid);
    assert.equal(n, Math.ceil(invalid.length / 2));

    // from/to on the received time: exactly the letters of the second request.
    const at = (r: number): string => all.find((d) => d.request_id === requestIds[r])!.received_at;
    matches(
      await list(`from=${encodeURIComponent(at(1))}&to=${Date.parse(at(2))}`),
      expected.filter((e) => e.request === 1),
      'from/to',
    );
    assert.deepEqual(await list(`from=${Date.now() + 60_000}`), []);
    for (const q of ['type=invalid', 'cursor=WzEsMl0', 'limit=abc'])
      assertProblem(
        await getJson(server, `/v1/pipelines/dead/dead-letters?${q}`, KEYS.acme),
        400,
        'SLUICE_ERR_BAD_REQUEST',
        `dead-letters?${q}`,
      );
  });

  it('replay: dead letters re-run through a fixed pipeline (swapped in by SIGHUP) are accepted and leave the store', async () => {
    // The example's schema has additionalProperties: false, so `channel` is an unknown field.
    const withChannel = [event({ channel: 'web' }), event({ channel: 'app' }), event({ channel: 'pos' })];
    const res = await postEvents(
      server,
      'fixme',
      KEYS.acme,
      ndjson([withChannel[0]!, withChannel[1]!, event(), withChannel[2]!, 'not JSON']),
    );
    const a = assertAnswer(res, 'events with channel');
    assert.equal(a.accepted, 1);
    assert.deepEqual(
      a.rejected.map((r) => [r.index, r.reason, r.pointer]),
      [
        [0, 'invalid', '/channel'],
        [1, 'invalid', '/channel'],
        [3, 'invalid', '/channel'],
        [4, 'parse', undefined],
      ],
    );
    const dead = async (query: string): Promise<DeadLetter[]> => {
      const r = await getJson(server, `/v1/pipelines/fixme/dead-letters?${query}`, KEYS.acme);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return (r.body as Page<DeadLetter>).items;
    };
    const replay = (body: unknown): Promise<Posted> =>
      postJson(server, '/v1/pipelines/fixme/dead-letters/replay', KEYS.acme, body);
    assert.equal((await dead('reason=invalid')).length, 3);

    // Replayed through the same pipeline, they are rejected again: still three, not six or none.
    const again = await replay({ reason: 'invalid' });
    assert.equal(again.status, 200, JSON.stringify(again.body));
    assert.equal((again.body as Answer).accepted, 0);
    const stillDead = await dead('reason=invalid');
    assert.deepEqual(
      stillDead.map((d) => d.raw),
      withChannel.map((e) => JSON.stringify(e)),
      'a replayed record that fails again is a dead letter exactly once',
    );

    // The fix: a copy of the example whose schema knows `channel`, swapped in by SIGHUP.
    const fixed = join(dir, 'payments-fixed');
    cpSync(dirname(PAYMENTS), fixed, { recursive: true });
    const schemaFile = join(fixed, 'event.schema.json');
    const schema = JSON.parse(readFileSync(schemaFile, 'utf8')) as { properties: Json };
    schema.properties.channel = { type: 'string' };
    writeFileSync(schemaFile, JSON.stringify(schema, null, 2));
    const reloads = server
      .output()
      .split('\n')
      .filter((l) => l.includes('"config reloaded"')).length;
    writeServiceConfig(dir, tenants(join(fixed, 'pipeline.yaml')));
    server.proc.kill('SIGHUP');
    const [reloaded] = (
      await waitForLog(server, /"msg":"config reloaded"/, reloads + 1, /reload refused/)
    ).slice(-1);
    assert.deepEqual((JSON.parse(reloaded!) as { replaced: string[] }).replaced, ['acme/fixme']);

    const replayed = await replay({ reason: 'invalid' });
    assert.equal(replayed.status, 200, JSON.stringify(replayed.body));
    assert.deepEqual(replayed.body, {
      replayed: 3,
      records: 3,
      accepted: 3,
      duplicates: 0,
      rejected: [],
      skipped: [],
    });
    assert.deepEqual(await dead('reason=invalid'), [], 'replayed dead letters leave the store');
    const parse = await dead('reason=parse');
    assert.equal(parse.length, 1, 'the parse dead letter was not selected and stays');
    assert.equal(
      totalCount(await allWindows(server, 'fixme', KEYS.acme)),
      4,
      'the replayed events are counted',
    );
    assert.deepEqual((await replay({ reason: 'invalid' })).body, {
      replayed: 0,
      records: 0,
      accepted: 0,
      duplicates: 0,
      rejected: [],
      skipped: [],
    });

    // By id: still not JSON, so rejected again, under the id it was replayed from.
    const byId = await replay({ ids: [parse[0]!.id] });
    assert.equal(byId.status, 200, JSON.stringify(byId.body));
    const b = byId.body as ReplayAnswer;
    assert.equal(b.replayed, 1);
    assert.deepEqual(
      b.rejected.map((r) => [r.id, r.reason]),
      [[parse[0]!.id, 'parse']],
    );
    assert.equal((await dead('reason=parse')).length, 1);

    assertProblem(await replay({ nope: 1 }), 400, 'SLUICE_ERR_BAD_REQUEST', 'unknown replay field');
    assertProblem(await replay('not JSON'), 400, 'SLUICE_ERR_BODY_MALFORMED', 'replay body not JSON');
    assertProblem(await replay({ ids: ['x'] }), 400, 'SLUICE_ERR_BAD_REQUEST', 'ids not numbers');
  });

  it('after all of the above, no API key appears anywhere in the log', () => {
    const log = server.output();
    for (const [name, key] of [...Object.entries(KEYS), ['wrong', WRONG_KEY]])
      assert.ok(!log.includes(key), `the ${name} API key appears in the server's log`);
  });
});
