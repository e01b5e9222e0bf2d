/**
 * Per-tenant rate limits shared through the machine's real Redis: two limiters (two connections, as
 * two service instances) together admit one tenant's capacity, not twice it; a refused request
 * takes nothing from either bucket; refill runs on Redis's clock and idle buckets expire. With a
 * throwaway redis-server killed, stopped and restarted: the fallback decides (per instance, or
 * refusing), the outage is logged once, and the shared buckets are used again when Redis is back.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it, type TestContext } from 'node:test';
import { Redis } from 'ioredis';
import type { TenantLimits } from '../dist/service/config.js';
import { TenantLimiter, type Verdict } from '../dist/service/rate-limit.js';
import { SharedLimiter, type OnRedisError } from '../dist/service/shared-limits.js';
import { freePort, haveBinary, REDIS_URL, reachable } from './services.ts';

const RUN = `${process.pid}_${Date.now().toString(36)}`;
const PREFIX = `sluice:test:limits:${RUN}:`;
const TIMEOUT = 30_000;

const eventsKey = (tenant: string): string => `${PREFIX}{${tenant}}:events`;
const bytesKey = (tenant: string): string => `${PREFIX}{${tenant}}:bytes`;

const limits = (eventsPerSecond?: number, bytesPerSecond?: number, burstSeconds = 1): TenantLimits => ({
  eventsPerSecond,
  bytesPerSecond,
  burstSeconds,
});

const verdict = (v: Verdict): object => ({
  ok: v.ok,
  retryAfter: v.retryAfter,
  tooBig: v.tooBig,
  limit: v.limit,
});

class Log {
  warns: { obj: object; msg: string }[] = [];
  infos: { obj: object; msg: string }[] = [];
  warn(obj: object, msg: string): void {
    this.warns.push({ obj, msg });
  }
  info(obj: object, msg: string): void {
    this.infos.push({ obj, msg });
  }
}

const limiters: SharedLimiter[] = [];
const servers: ChildProcess[] = [];
let admin: Redis | undefined;

after(async () => {
  for (const p of servers) p.kill('SIGKILL');
  await Promise.all(limiters.map((l) => l.close()));
  if (!admin) return;
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await admin.scan(cursor, 'MATCH', `${PREFIX}*`, 'COUNT', 1000);
    keys.push(...found);
    cursor = next;
  } while (cursor !== '0');
  if (keys.length) await admin.del(...keys);
  await admin.quit();
});

async function open(
  url = REDIS_URL,
  onError: OnRedisError = 'local',
  log?: Log,
  timeoutMs?: number,
): Promise<SharedLimiter> {
  const limiter = await SharedLimiter.connect({ url, prefix: PREFIX, onError, log, timeoutMs });
  limiters.push(limiter);
  return limiter;
}

/** The shared Redis, or a skip (a failure under CI) when it is not running. */
async function sharedRedis(t: TestContext): Promise<Redis | undefined> {
  if (!(await reachable(t, 'Redis', REDIS_URL, 6379))) return undefined;
  admin ??= new Redis(REDIS_URL);
  return admin;
}

async function bucket(redis: Redis, key: string): Promise<{ tokens: number; ts: number } | undefined> {
  const [tokens, ts] = await redis.hmget(key, 'tokens', 'ts');
  return tokens === null || ts === null ? undefined : { tokens: Number(tokens), ts: Number(ts) };
}

/** A redis-server of the test's own on `port`, answering; killed in after() if the test does not. */
async function startRedis(port: number): Promise<ChildProcess> {
  const p = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  servers.push(p);
  let out = '';
  p.stdout.on('data', (d: Buffer) => (out += d.toString()));
  p.stderr.on('data', (d: Buffer) => (out += d.toString()));
  for (const deadline = Date.now() + 5000; !out.includes('Ready to accept connections'); await sleep(20)) {
    if (p.exitCode !== null) throw new Error(`redis-server exited with ${p.exitCode}:\n${out}`);
    if (Date.now() > deadline) throw new Error(`redis-server did not start on port ${port}:\n${out}`);
  }
  return p;
}

async function kill(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = once(p, 'exit');
  p.kill('SIGKILL');
  await exited;
}

/** Takes one event `n` times in a row; how many each decider admitted and refused. */
async function takeMany(limiter: SharedLimiter, tenant: string, l: TenantLimits, n: number) {
  const seen: Record<string, { ok: number; refused: number }> = {};
  for (let i = 0; i < n; i++) {
    const v = await limiter.take(tenant, l, 1, 0);
    seen[v.decidedBy] ??= { ok: 0, refused: 0 };
    seen[v.decidedBy][v.ok ? 'ok' : 'refused']++;
  }
  return seen;
}

/** Takes until one is decided by Redis again; the time it took. */
async function untilRedis(limiter: SharedLimiter, tenant: string, l: TenantLimits): Promise<number> {
  const start = performance.now();
  while ((await limiter.take(tenant, l, 1, 0)).decidedBy !== 'redis') {
    assert.ok(performance.now() - start < 5000, 'Redis is not used again within 5 s of its restart');
    await sleep(50);
  }
  return performance.now() - start;
}

describe('shared rate limits (Redis)', { timeout: 120_000 }, () => {
  it('two instances together admit the capacity once, not once each', { timeout: TIMEOUT }, async (t) => {
    if (!(await sharedRedis(t))) return;
    const [a, b] = [await open(), await open()];
    const l = limits(100, undefined, 1);
    const admitted = [0, 0];
    let refused = 0;
    const start = performance.now();
    // 8 concurrent callers per instance, each taking one event at a time: 400 attempts in all.
    await Promise.all(
      [a, b].flatMap((limiter, i) =>
        Array.from({ length: 8 }, async () => {
          for (let k = 0; k < 25; k++) {
            const v = await limiter.take('both', l, 1, 10);
            assert.equal(v.decidedBy, 'redis');
            if (v.ok) admitted[i]++;
            else refused++;
          }
        }),
      ),
    );
    const seconds = (performance.now() - start) / 1000;
    const total = admitted[0] + admitted[1];
    // The capacity, plus what refilled while the test ran (at 100/s), plus one for rounding.
    assert.ok(total >= 100, `admitted ${total}, below the capacity of 100`);
    assert.ok(
      total <= 100 + Math.ceil(100 * seconds) + 1,
      `admitted ${total} in ${seconds.toFixed(3)} s: more than capacity + refill`,
    );
    assert.ok(
      total < 150,
      `admitted ${total}: nearer twice the capacity than once (${seconds.toFixed(3)} s)`,
    );
    assert.equal(total + refused, 400);
    assert.ok(admitted[0] > 0 && admitted[1] > 0, `both instances admit some: ${admitted}`);
  });

  it(
    'all or nothing: a request refused by one bucket takes nothing from the other',
    { timeout: TIMEOUT },
    async (t) => {
      const redis = await sharedRedis(t);
      if (!redis) return;
      const limiter = await open();
      const l = limits(10, 1000, 1);

      assert.deepEqual(await limiter.take('aon', l, 1, 900), {
        ok: true,
        retryAfter: 0,
        tooBig: false,
        decidedBy: 'redis',
      });
      const events = await bucket(redis, eventsKey('aon'));
      const bytes = await bucket(redis, bytesKey('aon'));
      assert.equal(events?.tokens, 9);
      assert.equal(bytes?.tokens, 100);

      // Bytes refuse (200 > ~100): the events bucket is left exactly as it was, and so is bytes.
      const refusedByBytes = await limiter.take('aon', l, 1, 200);
      assert.equal(refusedByBytes.ok, false);
      assert.equal(refusedByBytes.limit, 'bytes');
      assert.equal(refusedByBytes.tooBig, false);
      assert.deepEqual(await bucket(redis, eventsKey('aon')), events);
      assert.deepEqual(await bucket(redis, bytesKey('aon')), bytes);

      // Events refuse (10 > ~9): the bytes bucket is left as it was.
      const refusedByEvents = await limiter.take('aon', l, 10, 50);
      assert.equal(refusedByEvents.ok, false);
      assert.equal(refusedByEvents.limit, 'events');
      assert.deepEqual(await bucket(redis, eventsKey('aon')), events);
      assert.deepEqual(await bucket(redis, bytesKey('aon')), bytes);

      // A request that fits both takes from both.
      assert.equal((await limiter.take('aon', l, 2, 50)).ok, true);
      const after2 = await bucket(redis, eventsKey('aon'));
      const bytes2 = await bucket(redis, bytesKey('aon'));
      assert.ok(after2 && after2.tokens >= 7 && after2.tokens < 7.5, `events tokens ${after2?.tokens}`);
      assert.ok(bytes2 && bytes2.tokens >= 50 && bytes2.tokens < 100, `bytes tokens ${bytes2?.tokens}`);
    },
  );

  it('a request larger than a bucket is tooBig and writes nothing', { timeout: TIMEOUT }, async (t) => {
    const redis = await sharedRedis(t);
    if (!redis) return;
    const limiter = await open();
    const l = limits(10, 1000, 2); // capacities 20 events, 2000 bytes

    const events = await limiter.take('big', l, 21, 0);
    assert.deepEqual(verdict(events), { ok: false, retryAfter: 0, tooBig: true, limit: 'events' });
    const bytes = await limiter.take('big', l, 1, 2001);
    assert.deepEqual(verdict(bytes), { ok: false, retryAfter: 0, tooBig: true, limit: 'bytes' });
    assert.equal(await redis.exists(eventsKey('big'), bytesKey('big')), 0);

    // Exactly the capacity fits.
    assert.equal((await limiter.take('big', l, 20, 2000)).ok, true);
    // A rate below 1/burst still holds one token, as in TenantLimiter.
    const slow = limits(0.5, undefined, 1);
    assert.equal((await limiter.take('big-slow', slow, 1, 0)).ok, true);
    assert.equal((await limiter.take('big-slow', slow, 2, 0)).tooBig, true);
  });

  it(
    'retryAfter is whole seconds, at least 1, and the request fits after it',
    { timeout: TIMEOUT },
    async (t) => {
      if (!(await sharedRedis(t))) return;
      const limiter = await open();
      const local = new TenantLimiter(limits(2, 100, 10));
      const l = limits(2, 100, 10); // capacities 20 events, 1000 bytes

      // The same sequence on TenantLimiter and SharedLimiter gets the same answers.
      for (const [events, bytes, expected] of [
        [20, 1000, 0],
        [7, 0, 4], // 7 events at 2/s: 3.5 s
        [1, 0, 1], // 0.5 s, rounded up to 1
        [0, 250, 3], // 250 bytes at 100/s: 2.5 s
        [3, 150, 2], // events first: 1.5 s
      ] as const) {
        const shared = await limiter.take('retry', l, events, bytes);
        assert.equal(shared.retryAfter, expected, `take(${events}, ${bytes})`);
        assert.ok(Number.isInteger(shared.retryAfter));
        assert.deepEqual(verdict(shared), verdict(local.take(events, bytes)));
      }

      // A 10/s bucket emptied: 5 events are refused with retryAfter 1 and fit a second later.
      const fast = limits(10, undefined, 1);
      assert.equal((await limiter.take('retry-fast', fast, 10, 0)).ok, true);
      const refused = await limiter.take('retry-fast', fast, 5, 0);
      assert.deepEqual(verdict(refused), { ok: false, retryAfter: 1, tooBig: false, limit: 'events' });
      await sleep(refused.retryAfter * 1000);
      assert.equal((await limiter.take('retry-fast', fast, 5, 0)).ok, true);
    },
  );

  // Every bound below is what the rate allows in the time measured around the calls, so a loaded
  // machine (slow calls, long pauses between them) cannot fail it: at 100/s, "refused right after
  // the drain" failed whenever more than 10 ms passed between two calls.
  it("refills over time by Redis's clock", { timeout: TIMEOUT }, async (t) => {
    const redis = await sharedRedis(t);
    if (!redis) return;
    // Redis decides every take: a slow answer must not hand one to the per-instance fallback.
    const limiter = await open(REDIS_URL, 'local', undefined, 10_000);
    // A burst of 10 s: the bucket is not full again (the capacity plays no part) while this runs.
    const RATE = 100;
    const FULL = RATE * 10;
    const l = limits(RATE, undefined, 10);
    const take = async (n: number): Promise<boolean> => {
      const v = await limiter.take('refill', l, n, 0);
      assert.equal(v.decidedBy, 'redis');
      return v.ok;
    };
    /** Tokens the rate gives between two moments of this process's monotonic clock. */
    const refill = (from: number, to: number): number => (RATE * (to - from)) / 1000;

    // The drain happens on Redis at some moment between these two.
    const drainStart = performance.now();
    assert.equal(await take(FULL), true);
    const drainEnd = performance.now();
    let taken = 0;

    /**
     * Asks for 2 tokens more than the rate has given back so far. Admitted is right only if the
     * call itself took long enough to refill them; otherwise the bucket refills faster than the rate
     * on Redis's clock (at once, or by a clock that is ahead).
     */
    const moreThanRefilled = async (what: string): Promise<void> => {
      const asked = Math.ceil(refill(drainStart, performance.now())) - taken + 2;
      const ok = await take(asked);
      const now = performance.now();
      assert.ok(
        !ok || taken + asked <= refill(drainStart, now) + 1,
        `${what}: ${asked} more tokens admitted ${(now - drainStart).toFixed(1)} ms after the drain at ${RATE}/s (${taken} taken since)`,
      );
      if (ok) taken += asked;
    };

    await moreThanRefilled('right after the drain');
    // This process's clock an hour ahead (as another instance's might be) refills nothing, and the
    // bucket's timestamp stays Redis's time.
    const realNow = Date.now;
    Date.now = () => realNow() + 3_600_000;
    try {
      await moreThanRefilled("with this process's clock an hour ahead");
    } finally {
      Date.now = realNow;
    }
    const [sec, usec] = await redis.time();
    const stored = await bucket(redis, eventsKey('refill'));
    const redisNow = Number(sec) * 1000 + Number(usec) / 1000;
    // The timestamp is Redis's time of the last admitted take: after the drain began, before now.
    const sinceDrain = performance.now() - drainStart;
    assert.ok(
      stored && stored.ts <= redisNow + 1 && redisNow - stored.ts <= sinceDrain + 1,
      `ts ${stored?.ts}, Redis time ${redisNow}, ${sinceDrain.toFixed(1)} ms since the drain began`,
    );

    // Wait until the rate has given back at least 30 tokens since the drain ended (about 300 ms)...
    await sleep(Math.max(0, ((30 + taken) / RATE) * 1000 - (performance.now() - drainEnd)));
    // ...and they are there, in one take...
    const least = Math.min(FULL, Math.floor(refill(drainEnd, performance.now()))) - taken;
    assert.equal(await take(least), true, `${least} tokens refused 300 ms after the drain at ${RATE}/s`);
    taken += least;
    // ...and no more than it gave since the drain began.
    await moreThanRefilled('after the wait');
  });

  it(
    'keys expire once their bucket would be full again; an unconfigured limit has no key',
    { timeout: TIMEOUT },
    async (t) => {
      const redis = await sharedRedis(t);
      if (!redis) return;
      const limiter = await open();
      assert.equal((await limiter.take('ttl', limits(10, 1000, 2), 1, 10)).ok, true);
      // Refilling takes 2 s; the key is kept 1 s more.
      for (const key of [eventsKey('ttl'), bytesKey('ttl')]) {
        const ttl = await redis.pttl(key);
        assert.ok(ttl > 2500 && ttl <= 3000, `${key}: PTTL ${ttl}`);
      }
      assert.equal((await limiter.take('ttl-events', limits(50, undefined, 1), 1, 10)).ok, true);
      const ttl = await redis.pttl(eventsKey('ttl-events'));
      assert.ok(ttl > 1500 && ttl <= 2000, `PTTL ${ttl}`);
      assert.equal(await redis.exists(bytesKey('ttl-events')), 0);
    },
  );

  it(
    'fails to connect within ~2 s with SLUICE_ERR_CONNECT, naming Redis and the URL without password',
    { timeout: TIMEOUT },
    async () => {
      const port = await freePort();
      const start = performance.now();
      await assert.rejects(
        open(`redis://user:hunter2@127.0.0.1:${port}/0`),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, 'SLUICE_ERR_CONNECT');
          assert.match(err.message, new RegExp(`Redis at redis://user:\\*\\*\\*@127\\.0\\.0\\.1:${port}/0`));
          assert.doesNotMatch(err.message, /hunter2/);
          return true;
        },
      );
      assert.ok(performance.now() - start < 3000);

      // A server that accepts the connection but never answers: the same error, after ~2 s.
      const sockets: Socket[] = [];
      const mute = createServer((s) => sockets.push(s)).listen(0, '127.0.0.1');
      await once(mute, 'listening');
      const { port: mutePort } = mute.address() as { port: number };
      const muteStart = performance.now();
      try {
        await assert.rejects(open(`redis://127.0.0.1:${mutePort}`), (err: Error & { code?: string }) => {
          assert.equal(err.code, 'SLUICE_ERR_CONNECT');
          assert.match(err.message, new RegExp(`Redis at redis://127\\.0\\.0\\.1:${mutePort}`));
          return true;
        });
        const waited = performance.now() - muteStart;
        assert.ok(waited >= 1900 && waited < 3000, `failed after ${waited.toFixed(0)} ms`);
      } finally {
        for (const s of sockets) s.destroy();
        mute.close();
      }
    },
  );

  it(
    "with onError 'local', Redis down means per-instance limits; it is used again once back",
    { timeout: TIMEOUT },
    async (t) => {
      if (!haveBinary(t, 'redis-server')) return;
      const port = await freePort();
      let server = await startRedis(port);
      const log = new Log();
      const limiter = await open(`redis://127.0.0.1:${port}`, 'local', log);
      const l = limits(10, undefined, 1);

      assert.deepEqual(await takeMany(limiter, 'down', l, 3), { redis: { ok: 3, refused: 0 } });
      assert.equal(limiter.healthy, true);

      await kill(server);
      // A fresh in-process bucket with the tenant's full capacity decides: 10 of 15.
      assert.deepEqual(await takeMany(limiter, 'down', l, 15), { local: { ok: 10, refused: 5 } });
      assert.equal(limiter.healthy, false);
      await sleep(1500); // a few reconnect attempts fail meanwhile
      assert.equal((await limiter.take('down', l, 1, 0)).decidedBy, 'local');
      assert.equal(log.warns.length, 1, JSON.stringify(log.warns));
      assert.equal(log.infos.length, 0);

      server = await startRedis(port);
      await untilRedis(limiter, 'down', l);
      assert.equal(limiter.healthy, true);
      assert.equal(log.infos.length, 1, JSON.stringify(log.infos));
      assert.equal(log.warns.length, 1);
      // The restarted Redis is empty: a full shared bucket of 10, one already taken above.
      assert.deepEqual(await takeMany(limiter, 'down', l, 12), { redis: { ok: 9, refused: 3 } });
      await kill(server);
    },
  );

  it(
    "with onError 'reject', Redis down means every request is refused until it is back",
    { timeout: TIMEOUT },
    async (t) => {
      if (!haveBinary(t, 'redis-server')) return;
      const port = await freePort();
      let server = await startRedis(port);
      const log = new Log();
      const limiter = await open(`redis://127.0.0.1:${port}`, 'reject', log);
      const l = limits(10, undefined, 1);
      assert.equal((await limiter.take('down', l, 1, 0)).decidedBy, 'redis');

      await kill(server);
      for (let i = 0; i < 5; i++)
        assert.deepEqual(await limiter.take('down', l, 1, 0), {
          ok: false,
          retryAfter: 1,
          tooBig: false,
          decidedBy: 'unavailable',
        });
      assert.equal(limiter.healthy, false);
      assert.equal(log.warns.length, 1, JSON.stringify(log.warns));

      server = await startRedis(port);
      await untilRedis(limiter, 'down', l);
      assert.equal(limiter.healthy, true);
      assert.equal(log.infos.length, 1);
      assert.equal(log.warns.length, 1);
      await kill(server);
    },
  );

  it('a Redis that stops answering costs each take at most the timeout', { timeout: TIMEOUT }, async (t) => {
    if (!haveBinary(t, 'redis-server')) return;
    const port = await freePort();
    const server = await startRedis(port);
    const log = new Log();
    // A long timeout, so that "waited for it" and "answered at once" stay far apart on a loaded machine.
    const limiter = await open(`redis://127.0.0.1:${port}`, 'local', log, 400);
    const l = limits(10, undefined, 1);
    assert.equal((await limiter.take('hung', l, 1, 0)).decidedBy, 'redis');

    server.kill('SIGSTOP'); // the connection stays open; nothing answers
    try {
      const start = performance.now();
      const first = await limiter.take('hung', l, 1, 0);
      const waited = performance.now() - start;
      assert.equal(first.decidedBy, 'local');
      assert.ok(waited >= 390 && waited < 2000, `first take waited ${waited.toFixed(0)} ms`);
      assert.equal(limiter.healthy, false);
      // Concurrent takes do not all wait: one probes Redis, the others are decided at once.
      const concurrent = await Promise.all(
        Array.from({ length: 5 }, async () => {
          const start = performance.now();
          const v = await limiter.take('hung', l, 1, 0);
          return { decidedBy: v.decidedBy, ms: performance.now() - start };
        }),
      );
      assert.deepEqual(
        concurrent.map((v) => v.decidedBy),
        Array(5).fill('local'),
      );
      const quick = concurrent.filter((v) => v.ms < 200).length;
      assert.ok(
        quick >= 4,
        `only ${quick} of 5 concurrent takes answered at once: ${JSON.stringify(concurrent)}`,
      );
      assert.equal(log.warns.length, 1);
    } finally {
      server.kill('SIGCONT');
    }
    await untilRedis(limiter, 'hung', l);
    assert.equal(limiter.healthy, true);
    assert.equal(log.infos.length, 1);
    await kill(server);
  });
});
