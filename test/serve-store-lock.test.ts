/**
 * One `sluice serve` per store (issue 13, finding 6: a second server on the same store started too,
 * and answered 503 "UNIQUE constraint failed: log.seq"). The second one now exits before listening
 * with SLUICE_ERR_STORE_LOCKED naming the store and the holder's pid; the first goes on; the lock is
 * the operating system's, so a SIGKILLed holder leaves nothing behind and the next start just works.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { SluiceError } from '../dist/errors.js';
import { lockStore } from '../dist/runtime/embedded/store-lock.js';
import { tempDir } from './helpers.ts';
import {
  allDeadLetters,
  postEvents,
  startServer,
  writeServiceConfig,
  type Server,
  killRunning,
} from './serve-helpers.ts';

const KEY = 'sk_store_lock_test';
const PIPELINE = 'payments';

const escape = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Starts a server that must refuse to start; returns what it printed before exiting. */
async function refusedStart(config: string): Promise<string> {
  const started = await startServer(config).then(
    async (s) => {
      await s.kill();
      return undefined;
    },
    (err: Error) => err,
  );
  assert.ok(started, 'a second sluice serve started on a store another one is using');
  return started.message;
}

describe('sluice serve: one service per store', () => {
  const servers: Server[] = [];

  after(async () => {
    await killRunning(servers);
  });

  it(
    'a second server on the same store exits with SLUICE_ERR_STORE_LOCKED; after a SIGKILL of the first, a new one starts',
    { timeout: 120_000 },
    async () => {
      const dir = tempDir('sluice-store-lock-');
      const store = join(dir, 'store', 'sluice.db');
      const config = writeServiceConfig(dir, { acme: { keys: [KEY] } });
      const first = await startServer(config);
      servers.push(first);
      const before = await postEvents(first, PIPELINE, KEY, 'not json 1\n');
      assert.equal(before.status, 202, JSON.stringify(before.body));

      const refused = await refusedStart(config);
      assert.match(refused, /sluice serve exited \(1\) before listening/);
      assert.match(
        refused,
        new RegExp(
          `error\\[SLUICE_ERR_STORE_LOCKED\\]: the store ${escape(store)} is in use by process ${first.proc.pid} on `,
        ),
      );
      assert.match(refused, /help: Stop the process the message names/);

      // The first one never noticed: it accepts and commits as before.
      const during = await postEvents(first, PIPELINE, KEY, 'not json 2\n');
      assert.equal(during.status, 202, JSON.stringify(during.body));
      assert.equal((await allDeadLetters(first, PIPELINE, KEY)).length, 2);

      await first.kill();
      const second = await startServer(config);
      servers.push(second);
      // Everything the first acknowledged is there, and the new one writes.
      assert.equal((await allDeadLetters(second, PIPELINE, KEY)).length, 2);
      const afterKill = await postEvents(second, PIPELINE, KEY, 'not json 3\n');
      assert.equal(afterKill.status, 202, JSON.stringify(afterKill.body));
      // And it holds the lock in turn.
      assert.match(await refusedStart(config), new RegExp(`is in use by process ${second.proc.pid} on `));
      assert.deepEqual(await second.stop(), { code: 0, signal: null });

      // A graceful stop gives the lock back too.
      const third = await startServer(config);
      servers.push(third);
      assert.equal((await allDeadLetters(third, PIPELINE, KEY)).length, 3);
      assert.deepEqual(await third.stop(), { code: 0, signal: null });
    },
  );

  it('refuses a second holder within one process, and can be taken again once released', () => {
    const store = join(tempDir('sluice-store-lock-'), 'sluice.db');
    const lock = lockStore(Database, store);
    const refused = (err: unknown): boolean =>
      err instanceof SluiceError &&
      err.code === 'SLUICE_ERR_STORE_LOCKED' &&
      err.message.includes(`this process (pid ${process.pid}`) &&
      err.message.includes(`${store}.lock`);
    assert.throws(() => lockStore(Database, store), refused);
    // The refused attempt closed its own connection to the lock file without releasing the lock
    // (POSIX drops all of a process's locks on a file when any descriptor of it is closed).
    assert.throws(() => lockStore(Database, store), refused);
    lock.release();
    lockStore(Database, store).release();
  });
});
