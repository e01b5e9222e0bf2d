/**
 * The cluster runtime's PostgreSQL schema, on the machine's real PostgreSQL: migrations apply in
 * order, once, even when several instances start together; a second start changes nothing; a
 * database migrated by a newer sluice is refused.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { migrate, MIGRATIONS, SCHEMA_VERSION } from '../dist/cluster/migrations.js';
import { freshSchema, PG_URL, pgIn, reachable } from './services.ts';

describe('PostgreSQL migrations', () => {
  it('apply once, in order, when three instances start at the same time', async (t) => {
    if (!(await reachable(t, 'PostgreSQL', PG_URL, 5432))) return;
    const { schema, drop } = await freshSchema('migrate');
    const clients = [pgIn(schema), pgIn(schema), pgIn(schema)];
    try {
      const applied = await Promise.all(clients.map((sql) => migrate(sql)));
      // One instance applied everything, the others found it done.
      assert.deepEqual(
        applied.flat().sort((a, b) => a - b),
        MIGRATIONS.map((m) => m.version),
      );
      assert.equal(applied.filter((a) => a.length > 0).length, 1);
      const sql = clients[0]!;
      const rows = await sql<{ version: number }[]>`SELECT version FROM sluice_migrations ORDER BY version`;
      assert.deepEqual(
        rows.map((r) => r.version),
        MIGRATIONS.map((m) => m.version),
      );
      const tables = await sql<{ table_name: string }[]>`
        SELECT table_name FROM information_schema.tables WHERE table_schema = ${schema} ORDER BY table_name`;
      assert.deepEqual(
        tables.map((r) => r.table_name),
        [
          'sluice_checkpoints',
          'sluice_dead_letters',
          'sluice_instances',
          'sluice_migrations',
          'sluice_outbox',
          'sluice_pipelines',
          'sluice_requests',
          'sluice_sink_cursors',
          'sluice_windows',
        ],
      );
      // A restart applies nothing and keeps the data.
      await sql`INSERT INTO sluice_pipelines (pipeline) VALUES ('acme/payments')`;
      assert.deepEqual(await migrate(sql), []);
      const [p] = await sql<{ epoch: string }[]>`SELECT epoch FROM sluice_pipelines`;
      assert.equal(Number(p!.epoch), 0);
    } finally {
      await Promise.all(clients.map((c) => c.end()));
      await drop();
    }
  });

  it('refuse a database migrated by a newer sluice, and change nothing', async (t) => {
    if (!(await reachable(t, 'PostgreSQL', PG_URL, 5432))) return;
    const { schema, drop } = await freshSchema('newer');
    const sql = pgIn(schema);
    try {
      await migrate(sql);
      await sql`INSERT INTO sluice_migrations (version, name) VALUES (${SCHEMA_VERSION + 1}, 'from the future')`;
      await assert.rejects(migrate(sql), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'SLUICE_ERR_STORE');
        assert.match(err.message, new RegExp(`version ${SCHEMA_VERSION + 1}, written by a newer sluice`));
        return true;
      });
    } finally {
      await sql.end();
      await drop();
    }
  });

  it('a failing migration leaves the database as it was', async (t) => {
    if (!(await reachable(t, 'PostgreSQL', PG_URL, 5432))) return;
    const { schema, drop } = await freshSchema('rollback');
    const sql = pgIn(schema);
    try {
      const broken = [
        ...MIGRATIONS,
        {
          version: SCHEMA_VERSION + 1,
          name: 'broken',
          async up(tx: Parameters<(typeof MIGRATIONS)[number]['up']>[0]) {
            await tx`CREATE TABLE sluice_half_done (x int)`;
            await tx`SELECT * FROM no_such_table`;
          },
        },
      ];
      await assert.rejects(migrate(sql, broken), /no_such_table/);
      const [row] = await sql<{ n: number }[]>`
        SELECT count(*)::int AS n FROM information_schema.tables WHERE table_schema = ${schema}`;
      // Everything ran in one transaction: not even the migrations table is left.
      assert.equal(row!.n, 0);
    } finally {
      await sql.end();
      await drop();
    }
  });
});
