/**
 * The service's SQLite store stays bounded while it runs: log rows a checkpoint covers are deleted
 * (a slice per commit, in the writer thread), and the WAL is copied back into the database file by
 * its own thread long before the writer's 16 MiB auto-checkpoint would do it.
 */
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { sampleInput, tempDir } from './helpers.ts';
import { postEvents, readLines, startServer, writeServiceConfig, type Server } from './serve-helpers.ts';

const KEY = 'sk_store_test';
const NL = Buffer.from('\n');
const ndjson = (lines: Buffer[]): Buffer => Buffer.concat(lines.flatMap((l) => [l, NL]));

describe('sluice serve: the store', () => {
  const dir = tempDir('sluice-serve-store-');
  const dbPath = join(dir, 'store', 'sluice.db');
  let server: Server | undefined;

  after(async () => {
    await server?.stop();
  });

  it('deletes the log a checkpoint covers and copies the WAL into the database file', async () => {
    const config = writeServiceConfig(dir, { acme: { keys: [KEY] } }, { checkpoint: { interval: '200ms' } });
    server = await startServer(config);
    const emptySize = statSync(dbPath).size;
    const lines = readLines(sampleInput(100_000)).slice(0, 3000);
    let posted = 0;
    for (let i = 0; i < lines.length; i += 100) {
      const res = await postEvents(server, 'payments', KEY, ndjson(lines.slice(i, i + 100)));
      assert.equal(res.status, 202, JSON.stringify(res.body));
      posted++;
    }
    // Let a checkpoint cover every body, then give the writer commits to trim with.
    await sleep(600);
    for (let i = 0; i < 3; i++) {
      await postEvents(server, 'payments', KEY, ndjson(lines.slice(i, i + 1)));
      await sleep(50);
    }

    const db = new Database(dbPath, { readonly: true });
    try {
      const { seq } = db.prepare('SELECT seq FROM checkpoints').get() as { seq: number };
      const total = db.prepare('SELECT COUNT(*) AS n FROM log').get() as { n: number };
      assert.ok(seq >= posted, `the checkpoint covers log seq ${seq}, ${posted} bodies were posted`);
      // At most the last few: a checkpoint's rows go with the commits after it.
      assert.ok(total.n <= 3, `${total.n} log rows left after ${posted + 3} requests`);
    } finally {
      db.close();
    }
    // About 0.9 MB of bodies were written, far below the writer's own 16 MiB auto-checkpoint: only
    // the WAL thread can have moved them into the database file.
    const size = statSync(dbPath).size;
    assert.ok(size > emptySize + 500_000, `the database file grew from ${emptySize} to only ${size} bytes`);
  });
});
