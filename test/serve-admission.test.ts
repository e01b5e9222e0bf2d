/**
 * Admission of ingest requests, against a real `sluice serve` with two tenants: a request is
 * authenticated before it is counted against the in-flight budgets, so clients without a key
 * cannot lock the service, and one tenant's slow bodies hold at most its share of the budgets.
 * The slow clients are raw TCP sockets that declare a large body and send one byte of it.
 */
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { loadServiceConfig } from '../dist/service/config.js';
import { tempDir } from './helpers.ts';
import { paymentEvent, postEvents, startServer, writeServiceConfig, type Server } from './serve-helpers.ts';

const MB = 1024 * 1024;
const event = JSON.stringify(paymentEvent());
const KEYS = { a: 'sk_admission_tenant_a_0123456789', b: 'sk_admission_tenant_b_0123456789' };

/**
 * Opens a request that declares a body of `length` bytes and sends one byte of it; resolves with
 * the socket and a promise of the first response bytes (the status line), if any come.
 */
async function trickle(
  server: Server,
  key: string | undefined,
  length = MB,
): Promise<{ socket: Socket; answer: Promise<string> }> {
  const { hostname, port } = new URL(server.url);
  const socket = connect(Number(port), hostname);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const answer = new Promise<string>((resolve) => {
    let text = '';
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (text.includes('\r\n')) resolve(text.slice(0, text.indexOf('\r\n')));
    });
    socket.on('close', () => resolve(text));
    socket.on('error', () => resolve(text));
  });
  socket.write(
    'POST /v1/pipelines/payments/events HTTP/1.1\r\n' +
      `Host: ${hostname}:${port}\r\n` +
      (key ? `Authorization: Bearer ${key}\r\n` : '') +
      'Content-Type: application/x-ndjson\r\n' +
      `Content-Length: ${length}\r\n\r\n{`,
  );
  return { socket, answer };
}

/** Resolves with the status line, or with `pending` when none came within `ms`. */
const within = (answer: Promise<string>, ms: number): Promise<string> =>
  Promise.race([answer, new Promise<string>((r) => setTimeout(() => r('pending'), ms))]);

describe('sluice serve: admission', { timeout: 60_000 }, () => {
  let server: Server;
  const sockets: Socket[] = [];

  before(async () => {
    const dir = tempDir('sluice-admission-');
    server = await startServer(
      writeServiceConfig(
        dir,
        { a: { keys: [KEYS.a] }, b: { keys: [KEYS.b] } },
        { limits: { in_flight_requests: 8, body_bytes: MB, in_flight_bytes: 4 * MB } },
      ),
    );
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    await server?.stop();
  });

  it('a request without a valid key is refused at once, before its body, and holds nothing', async () => {
    // Each declares 1 MiB: counted before authentication, four would fill in_flight_bytes.
    const slow = await Promise.all(
      Array.from({ length: 16 }, (_, i) => trickle(server, i % 2 ? 'sk_wrong' : undefined)),
    );
    sockets.push(...slow.map((s) => s.socket));
    for (const { answer } of slow) assert.match(await within(answer, 5_000), /^HTTP\/1\.1 401 /);
    const res = await postEvents(server, 'payments', KEYS.b, event + '\n');
    assert.equal(res.status, 202, JSON.stringify(res.body));
  });

  it("one tenant's slow bodies hold at most its share; the other tenant is still answered", async () => {
    // Tenant a may hold half of in_flight_bytes (2 MiB): two slow 1 MiB bodies fill its share.
    const held = [await trickle(server, KEYS.a), await trickle(server, KEYS.a)];
    sockets.push(...held.map((s) => s.socket));
    for (const { answer } of held) assert.equal(await within(answer, 300), 'pending');
    const third = await postEvents(server, 'payments', KEYS.a, event + '\n');
    assert.equal(third.status, 503, JSON.stringify(third.body));
    assert.equal((third.body as { code: string }).code, 'SLUICE_ERR_OVERLOADED');
    assert.match((third.body as { detail: string }).detail, /tenant a .*share/);
    assert.equal(third.headers.get('retry-after'), '1');
    // Tenant b has the other half.
    const other = await postEvents(server, 'payments', KEYS.b, event + '\n');
    assert.equal(other.status, 202, JSON.stringify(other.body));
    // Once a's slow bodies are gone, its share is free again.
    for (const { socket } of held) socket.destroy();
    const deadline = Date.now() + 5_000;
    let again = await postEvents(server, 'payments', KEYS.a, event + '\n');
    while (again.status === 503 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      again = await postEvents(server, 'payments', KEYS.a, event + '\n');
    }
    assert.equal(again.status, 202, JSON.stringify(again.body));
  });

  it('a client that hangs up mid-body is counted as SLUICE_ERR_CLIENT_ABORTED, not as an internal error', async () => {
    const rejected = async (code: string): Promise<number> => {
      const text = await (await fetch(`${server.url}/metrics`)).text();
      const m = new RegExp(`^sluice_http_rejected_total\\{tenant="a",code="${code}"\\} (\\S+)$`, 'm').exec(
        text,
      );
      return m ? Number(m[1]) : 0;
    };
    const before = {
      aborted: await rejected('SLUICE_ERR_CLIENT_ABORTED'),
      internal: await rejected('SLUICE_ERR_INTERNAL'),
    };
    const gone = await trickle(server, KEYS.a, 1000);
    await new Promise((r) => setTimeout(r, 100));
    gone.socket.destroy();
    const deadline = Date.now() + 5_000;
    while ((await rejected('SLUICE_ERR_CLIENT_ABORTED')) === before.aborted && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    assert.equal(await rejected('SLUICE_ERR_CLIENT_ABORTED'), before.aborted + 1);
    assert.equal(await rejected('SLUICE_ERR_INTERNAL'), before.internal);
    assert.doesNotMatch(server.output(), /"level":50[^\n]*closed the connection/);
  });

  it('a client that hangs up after its 401 is counted once, as unauthorized; one that hangs up mid-headers, as aborted', async () => {
    /** Every series of sluice_http_rejected_total with no tenant, by code. */
    const unattributed = async (): Promise<Record<string, number>> => {
      const text = await (await fetch(`${server.url}/metrics`)).text();
      const out: Record<string, number> = {};
      for (const m of text.matchAll(/^sluice_http_rejected_total\{tenant="",code="(\w+)"\} (\S+)$/gm))
        out[m[1]!] = Number(m[2]);
      return out;
    };
    const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 300));
    const before = await unattributed();
    // The body's rest after a 401 is read and dropped by Node; the hang-up ends that request.
    for (const key of [undefined, 'sk_wrong']) {
      const refused = await trickle(server, key);
      assert.match(await within(refused.answer, 5_000), /^HTTP\/1\.1 401 /);
      refused.socket.write('"amount": 1');
      await settle();
      refused.socket.destroy();
    }
    await settle();
    const afterRefused = await unattributed();
    const delta = (now: Record<string, number>, was: Record<string, number>): Record<string, number> =>
      Object.fromEntries(
        Object.entries(now)
          .map(([code, n]): [string, number] => [code, n - (was[code] ?? 0)])
          .filter(([, n]) => n !== 0),
      );
    assert.deepEqual(delta(afterRefused, before), { SLUICE_ERR_UNAUTHORIZED: 2 });
    // No answer yet when this one hangs up: a client abort, not a bad request.
    const { hostname, port } = new URL(server.url);
    const half = connect(Number(port), hostname);
    await new Promise<void>((resolve) => half.once('connect', resolve));
    half.write('POST /v1/pipelines/payments/events HTTP/1.1\r\nHost: x\r\nContent-Ty');
    await settle();
    half.destroy();
    const deadline = Date.now() + 5_000;
    let now = await unattributed();
    while (Object.keys(delta(now, afterRefused)).length === 0 && Date.now() < deadline) {
      await settle();
      now = await unattributed();
    }
    assert.deepEqual(delta(now, afterRefused), { SLUICE_ERR_CLIENT_ABORTED: 1 });
  });

  it('a body that does not arrive within 30 s is cut with 408, and its share given back', async () => {
    const started = Date.now();
    const slow = await trickle(server, KEYS.a);
    sockets.push(slow.socket);
    const status = await within(slow.answer, 45_000);
    const took = (Date.now() - started) / 1000;
    assert.match(status, /^HTTP\/1\.1 408 /);
    // docs/operations.md: 30 s; Node checks the deadline once a second.
    assert.ok(took >= 29 && took < 33, `cut after ${took} s`);
    const res = await postEvents(server, 'payments', KEYS.a, event + '\n');
    assert.equal(res.status, 202, JSON.stringify(res.body));
  });
});

describe('sluice serve: records per body', { timeout: 60_000 }, () => {
  let server: Server;

  before(async () => {
    server = await startServer(
      writeServiceConfig(
        tempDir('sluice-records-'),
        { a: { keys: [KEYS.a] } },
        { limits: { body_records: 1000 } },
      ),
    );
  });
  after(async () => server?.stop());

  it('a body of more than limits.body_records records gets 413 before any is processed', async () => {
    const cases: [string, string, string][] = [
      [
        'a JSON array of 1,001 empty objects',
        '[' + Array(1001).fill('{}').join(',') + ']',
        'application/json',
      ],
      ['1,001 blank NDJSON lines', '\n'.repeat(1001), 'application/x-ndjson'],
      ['1,001 events', (event + '\n').repeat(1001), 'application/x-ndjson'],
    ];
    for (const [what, body, type] of cases) {
      const res = await postEvents(server, 'payments', KEYS.a, body, { 'content-type': type });
      assert.equal(res.status, 413, `${what}: ${JSON.stringify(res.body)}`);
      const problem = res.body as { code: string; detail: string };
      assert.equal(problem.code, 'SLUICE_ERR_TOO_MANY_RECORDS', what);
      assert.match(problem.detail, /1001 records, more than limits\.body_records \(1000\)/, what);
    }
    // Nothing of them was processed: no dead letter for the blank lines or the empty objects.
    const dead = await fetch(`${server.url}/v1/pipelines/payments/dead-letters`, {
      headers: { authorization: `Bearer ${KEYS.a}` },
    });
    assert.deepEqual(((await dead.json()) as { items: unknown[] }).items, []);
  });

  it('an answer lists the first 100 rejections and counts the rest by reason', async () => {
    const body = [...Array(150).fill('{"broken'), ...Array(30).fill('[1]'), event].join('\n') + '\n';
    const res = await postEvents(server, 'payments', KEYS.a, body);
    assert.equal(res.status, 202, JSON.stringify(res.body));
    const a = res.body as {
      records: number;
      accepted: number;
      duplicates: number;
      rejected: { index: number }[];
      rejected_omitted: { count: number; records: number; reasons: Record<string, number> };
    };
    assert.equal(a.records, 181);
    assert.equal(a.rejected.length, 100);
    assert.deepEqual(
      a.rejected.map((r) => r.index),
      Array.from({ length: 100 }, (_, i) => i),
    );
    assert.deepEqual(a.rejected_omitted, { count: 80, records: 80, reasons: { parse: 50, invalid: 30 } });
    assert.equal(a.accepted + a.duplicates + a.rejected.length + a.rejected_omitted.records, a.records);
  });

  it('a body of exactly limits.body_records records is taken', async () => {
    const res = await postEvents(server, 'payments', KEYS.a, '[' + Array(1000).fill(event).join(',') + ']', {
      'content-type': 'application/json',
    });
    assert.equal(res.status, 202, JSON.stringify(res.body));
  });
});

/** Sends raw bytes and resolves with everything answered until the server closes. */
async function raw(server: Server, request: string): Promise<{ status: number; type: string; body: string }> {
  const { hostname, port } = new URL(server.url);
  const socket = connect(Number(port), hostname);
  const text = await new Promise<string>((resolve, reject) => {
    let got = '';
    socket.on('data', (d: Buffer) => (got += d.toString('utf8')));
    socket.on('close', () => resolve(got));
    socket.on('error', reject);
    socket.write(request.replaceAll('{host}', `${hostname}:${port}`));
  });
  const [head = '', body = ''] = text.split('\r\n\r\n');
  return {
    status: Number(head.split(' ')[1]),
    type: /content-type: ([^\r]*)/i.exec(head)?.[1] ?? '',
    body,
  };
}

// Issue 13, finding 8: these were Fastify's `{"error":"Bad Request"}` at 3dd00e6.
describe('sluice serve: requests that are not valid HTTP get problem documents', { timeout: 60_000 }, () => {
  let server: Server;
  before(async () => {
    server = await startServer(writeServiceConfig(tempDir('sluice-bad-http-'), { a: { keys: [KEYS.a] } }));
  });
  after(() => server?.stop());

  const start = `POST /v1/pipelines/payments/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer ${KEYS.a}\r\nContent-Type: application/x-ndjson\r\n`;
  const cases: { name: string; request: string; status: number; code: string }[] = [
    {
      name: 'a bad chunk size',
      request: `${start}Transfer-Encoding: chunked\r\n\r\nZZ\r\n${event}\r\n0\r\n\r\n`,
      status: 400,
      code: 'SLUICE_ERR_BAD_REQUEST',
    },
    {
      name: 'Content-Length beside Transfer-Encoding',
      request: `${start}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
      status: 400,
      code: 'SLUICE_ERR_BAD_REQUEST',
    },
    {
      name: 'a 100 KB header',
      request: `${start}X-Big: ${'a'.repeat(100 * 1024)}\r\nContent-Length: 2\r\n\r\n{}`,
      status: 431,
      code: 'SLUICE_ERR_HEADERS_TOO_LARGE',
    },
  ];
  for (const c of cases)
    it(`${c.name} → ${c.status} ${c.code}`, async () => {
      const answer = await raw(server, c.request);
      assert.equal(answer.status, c.status, answer.body);
      assert.equal(answer.type, 'application/problem+json');
      const problem = JSON.parse(answer.body) as { code: string; status: number; title: string };
      assert.equal(problem.code, c.code);
      assert.equal(problem.status, c.status);
      assert.ok(problem.title.length > 0);
    });
});

/**
 * Sends a whole request on a socket already connected, and resolves with its status line and the
 * whole answer (head and body), once it is in.
 */
function rawPost(
  socket: Socket,
  host: string,
  key: string,
  body: string,
): Promise<{ status: string; text: string }> {
  return new Promise((resolve) => {
    let text = '';
    const onData = (d: Buffer): void => {
      text += d.toString('utf8');
      const head = text.indexOf('\r\n\r\n');
      const length = /content-length: (\d+)/i.exec(text)?.[1];
      if (head >= 0 && length !== undefined && Buffer.byteLength(text.slice(head + 4)) >= Number(length)) {
        socket.off('data', onData);
        resolve({ status: text.slice(0, text.indexOf('\r\n')), text });
      }
    };
    socket.on('data', onData);
    socket.write(
      'POST /v1/pipelines/payments/events HTTP/1.1\r\n' +
        `Host: ${host}\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/x-ndjson\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  });
}

describe('sluice serve: event-loop delay', { timeout: 60_000 }, () => {
  let server: Server;
  const sockets: Socket[] = [];

  before(async () => {
    const dir = tempDir('sluice-loop-delay-');
    server = await startServer(
      writeServiceConfig(
        dir,
        { a: { keys: [KEYS.a] }, b: { keys: [KEYS.b] } },
        { limits: { loop_delay: '25ms' } },
      ),
    );
  });
  after(async () => {
    for (const s of sockets) s.destroy();
    if (server?.proc.exitCode === null) server.proc.kill('SIGCONT');
    await server?.stop();
  });

  // The server is stopped (SIGSTOP) for 300 ms while requests reach it: when it resumes, its event
  // loop is 300 ms late when it reads them. Tenant a already has a request in flight (a body still
  // arriving), so its next one is shed at once; tenant b has none and is answered 202.
  it('while the event loop is late, a tenant with a request in flight is refused at once; one without is not', async () => {
    const { hostname, port } = new URL(server.url);
    const host = `${hostname}:${port}`;
    const held = await trickle(server, KEYS.a, 1000);
    sockets.push(held.socket);
    assert.equal(await within(held.answer, 300), 'pending');
    const open = async (): Promise<Socket> => {
      const s = connect(Number(port), hostname);
      sockets.push(s);
      await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject));
      return s;
    };
    const [forA, forB] = [await open(), await open()];
    server.proc.kill('SIGSTOP');
    const answers = [rawPost(forA, host, KEYS.a, event + '\n'), rawPost(forB, host, KEYS.b, event + '\n')];
    await new Promise((r) => setTimeout(r, 300));
    server.proc.kill('SIGCONT');
    const [a, b] = await Promise.all(answers);
    assert.match(a!.status, /^HTTP\/1\.1 503 /, a!.text);
    assert.match(a!.text, /retry-after: 1/i);
    assert.match(a!.text, /SLUICE_ERR_OVERLOADED/);
    assert.match(a!.text, /event loop is \d+ ms behind \(limits\.loop_delay = 25 ms\)/);
    assert.match(b!.status, /^HTTP\/1\.1 202 /, b!.text);
    // Caught up, tenant a is taken again, its slow body still in flight.
    await new Promise((r) => setTimeout(r, 100));
    const again = await postEvents(server, 'payments', KEYS.a, event + '\n');
    assert.equal(again.status, 202, JSON.stringify(again.body));
  });

  it('limits.loop_delay is off unless set, in either runtime; 0s turns it off', () => {
    const dir = tempDir('sluice-loop-delay-config-');
    const tenants = { a: { keys: [KEYS.a] } };
    const delay = (extra: Record<string, unknown>): number =>
      loadServiceConfig(writeServiceConfig(dir, tenants, extra)).limits.loopDelayMs;
    assert.equal(delay({}), 0);
    assert.equal(delay({ runtime: { type: 'cluster' } }), 0);
    assert.equal(delay({ limits: { loop_delay: '25ms' } }), 25);
    assert.equal(delay({ runtime: { type: 'cluster' }, limits: { loop_delay: '40ms' } }), 40);
    assert.equal(delay({ limits: { loop_delay: '0s' } }), 0);
    assert.throws(() => delay({ limits: { loop_delay: 'soon' } }), { code: 'SLUICE_ERR_CONFIG_INVALID' });
    // Other durations still refuse 0: a zero queue_delay would refuse every request.
    assert.throws(() => delay({ limits: { queue_delay: '0s' } }), { code: 'SLUICE_ERR_CONFIG_INVALID' });
  });
});
