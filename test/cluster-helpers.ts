/**
 * Helpers for tests of the cluster runtime: a service config whose runtime is the local NATS
 * JetStream and PostgreSQL (a fresh schema and a fresh stream per test), the payments pipeline with
 * its large payments in a postgres sink, and the results read back from PostgreSQL in the format
 * of `sluice run`'s result directory (and of ../shared/workload/expected).
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { subjectOf } from '../dist/cluster/log.js';
import type postgres from 'postgres';
import assert from 'node:assert/strict';
import { assertSameResults, compareWithExpected, paymentsCopy, tempDir } from './helpers.ts';
import {
  allDeadLetters,
  allWindows,
  deadFromLetters,
  getJson,
  postEvents,
  producerRequestId,
  sha256Hex,
  startServer,
  type Batch,
  type DeadLine,
  type Producer,
  type Server,
  type TenantSpec,
  writeResults,
  killRunning,
} from './serve-helpers.ts';
import { freshSchema, NATS_URL, PG_URL, pgIn } from './services.ts';

/**
 * The payments example whose large payments go, whole, to the postgres table `large_payments` (in
 * the owner's transaction) and to the file `large.ndjson` (delivered from the outbox).
 */
export function clusterPayments(dir: string): string {
  return paymentsCopy(dir, (yaml) =>
    yaml.replace(
      /^sinks:[\s\S]*?(?=^dead_letters:)/m,
      'sinks:\n  large:\n    type: postgres\n    input: large\n    table: large_payments\n' +
        '  large_file:\n    type: file\n    input: large\n    path: large.ndjson\n\n',
    ),
  );
}

/** A stream name no other test run uses. */
export const streamName = (label: string): string =>
  `T_${label}_${process.pid}_${Date.now().toString(36)}`.toUpperCase();

export interface ClusterOptions {
  stream: string;
  schema: string;
  tenants: Record<string, TenantSpec>;
  natsUrl?: string;
  pgUrl?: string;
  redis?: Record<string, unknown>;
  /** Other runtime.nats settings (duplicate_window...). */
  nats?: Record<string, unknown>;
  /** Any other top-level settings (checkpoint, limits...). */
  extra?: Record<string, unknown>;
}

/** A PostgreSQL URL whose tables resolve in `schema`. */
export function pgUrlIn(schema: string, base = PG_URL): string {
  const u = new URL(base);
  u.searchParams.set('search_path', schema);
  return u.toString();
}

/** Writes a cluster service config (one per instance: `name` sets the instance and file). */
export function writeClusterConfig(dir: string, name: string, o: ClusterOptions): string {
  mkdirSync(dir, { recursive: true });
  const config = {
    runtime: {
      type: 'cluster',
      instance: name,
      nats: { url: o.natsUrl ?? NATS_URL, stream: o.stream, ...o.nats },
      postgres: { url: pgUrlIn(o.schema, o.pgUrl) },
      owner: { claim_interval: '300ms' },
      ...(o.redis ? { redis: o.redis } : {}),
    },
    listen: { host: '127.0.0.1', port: 0 },
    checkpoint: { interval: '1s' },
    ...o.extra,
    tenants: Object.fromEntries(
      Object.entries(o.tenants).map(([id, t]) => [
        id,
        {
          api_keys: t.keys.map((k) => ({ sha256: sha256Hex(k) })),
          ...(t.limits ? { limits: t.limits } : {}),
          pipelines: t.pipelines,
        },
      ]),
    ),
  };
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

/** Deletes a test's stream. */
export async function dropStream(stream: string, url = NATS_URL): Promise<void> {
  const nc = await connect({ servers: url, timeout: 2000 });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(stream).catch(() => {});
  } finally {
    await nc.close();
  }
}

/** The last sequence JetStream stored in `stream` (0 when empty). */
export async function lastSeq(stream: string, url = NATS_URL): Promise<number> {
  const nc = await connect({ servers: url, timeout: 2000 });
  try {
    const jsm = await jetstreamManager(nc);
    return (await jsm.streams.info(stream)).state.last_seq;
  } finally {
    await nc.close();
  }
}

/**
 * The last sequence JetStream stored in `stream` for a pipeline's subject; 0 when the subject has
 * no message left (a checkpoint, committed after the position it covers, purged them).
 */
export async function lastSeqOf(
  stream: string,
  tenant: string,
  pipeline: string,
  url = NATS_URL,
): Promise<number> {
  const nc = await connect({ servers: url, timeout: 2000 });
  try {
    const jsm = await jetstreamManager(nc);
    const last = await jsm.streams.getMessage(stream, { last_by_subj: subjectOf(stream, tenant, pipeline) });
    return last?.seq ?? 0;
  } finally {
    await nc.close();
  }
}

/** Waits until the pipeline's committed position in PostgreSQL reaches `seq`. */
export async function caughtUp(
  sql: postgres.Sql,
  pipeline: string,
  seq: number,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const [row] = await sql<{ position: string }[]>`
      SELECT position FROM sluice_pipelines WHERE pipeline = ${pipeline}`.catch(() => []);
    if (row && Number(row.position) >= seq) return;
    if (Date.now() > deadline)
      throw new Error(
        `${pipeline} is at ${row?.position ?? 'no position'} after ${timeoutMs} ms; the stream is at ${seq}`,
      );
    await sleep(100);
  }
}

export interface PgLetter {
  id: number;
  request_id: string | null;
  index: number;
  reason: string;
}

/** The pipeline's windows, dead letters and large payments (in `largeTable`) as PostgreSQL holds them. */
export async function pgResults(
  sql: postgres.Sql,
  pipeline: string,
  largeTable = 'large_payments',
): Promise<{ windows: Record<string, unknown>[]; letters: PgLetter[]; large: Record<string, unknown>[] }> {
  const windows = await sql<{ row: string; closed: boolean }[]>`
    SELECT row::text AS row, closed FROM sluice_windows WHERE pipeline = ${pipeline} ORDER BY window_start, key`;
  const letters = await sql<{ id: string; request_id: string | null; letter: string }[]>`
    SELECT id, request_id, letter::text AS letter FROM sluice_dead_letters WHERE pipeline = ${pipeline} ORDER BY id`;
  const large = await sql<{ record: string }[]>`SELECT record::text AS record FROM ${sql(largeTable)}`;
  return {
    windows: windows.map((w) => ({ ...(JSON.parse(w.row) as Record<string, unknown>), closed: w.closed })),
    letters: letters.map((l) => {
      const letter = JSON.parse(l.letter) as { index: number; reason: string };
      return { id: Number(l.id), request_id: l.request_id, index: letter.index, reason: letter.reason };
    }),
    large: large.map((l) => JSON.parse(l.record) as Record<string, unknown>),
  };
}

/**
 * Writes what PostgreSQL holds in the comparison format; returns the directory. The summary's
 * counters come from the same rows: accepted is the windows' total count, and duplicates are the
 * lines neither accepted nor dead.
 */
export function clusterResults(
  out: string,
  r: {
    batches: Batch[];
    windows: Record<string, unknown>[];
    dead: DeadLine[];
    large: Record<string, unknown>[];
  },
): string {
  const count = (reason: string): number => r.dead.filter((d) => d.reason === reason).length;
  const lines = r.batches.reduce((n, b) => n + b.count, 0);
  const accepted = r.windows.reduce((n, w) => n + Number(w.count), 0);
  const summary = {
    lines,
    accepted,
    invalid: count('parse') + count('invalid'),
    duplicates: lines - accepted - r.dead.length,
    late: count('late'),
    large: r.large.length,
  };
  return writeResults(out, {
    windows: r.windows,
    dead: r.dead,
    large: r.large.map((l) => JSON.stringify(l) + '\n').join(''),
    summary,
  });
}

export const WORKLOAD_KEY = 'sk_cluster_workload';
export const WORKLOAD_PIPELINE = 'payments';
export const batchRequestId = (b: number): string => `cluster-batch-${b}`;

export interface ScenarioContext {
  /** The running instances (a restarted one replaces its slot). */
  servers: Server[];
  restart(i: number): Promise<void>;
  /** 503 answers met so far, by code; each was retried until 202. */
  unavailable: Map<string, number>;
}

export interface ScenarioOptions {
  label: string;
  batches: Batch[];
  /** What PostgreSQL must hold at the end: `sluice run`'s results on the same input (a directory). */
  reference: string;
  /** Also compared with ../shared/workload/expected/<expected>, for a cross-check. */
  expected?: string;
  instances?: number;
  natsUrl?: string;
  pgUrl?: string;
  /** Other top-level config settings. */
  extra?: Record<string, unknown>;
  /** Runs before batch `at` is posted (default: a third of the way). */
  during?: (ctx: ScenarioContext) => Promise<void>;
  at?: number;
  /** How long one batch may keep getting 503 before the test fails (ms). */
  retryForMs?: number;
}

/**
 * Instances of the cluster runtime on a fresh stream and schema take `batches` over HTTP, in input
 * order, each request to the next instance in turn, each with an Idempotency-Key and retried on
 * 503 until it is answered 202. At the end, what PostgreSQL holds must equal `o.reference` (and
 * `o.expected` where given), and the instances' API must serve the same. Returns every server
 * started.
 */
export async function runWorkload(o: ScenarioOptions): Promise<{ servers: Server[]; ctx: ScenarioContext }> {
  const dir = tempDir(`sluice-cluster-${o.label}-`);
  const stream = streamName(o.label);
  const db = await freshSchema(o.label, o.pgUrl);
  const sql: postgres.Sql = pgIn(db.schema, 2, o.pgUrl);
  const pipeline = clusterPayments(dir);
  const configs = ['a', 'b', 'c', 'd'].slice(0, o.instances ?? 3).map((name) =>
    writeClusterConfig(dir, name, {
      stream,
      schema: db.schema,
      natsUrl: o.natsUrl,
      pgUrl: o.pgUrl,
      tenants: { acme: { keys: [WORKLOAD_KEY], pipelines: { [WORKLOAD_PIPELINE]: pipeline } } },
      extra: o.extra,
    }),
  );
  const all: Server[] = [];
  const ctx: ScenarioContext = {
    servers: [],
    unavailable: new Map(),
    restart: async (i: number) => {
      ctx.servers[i] = await startServer(configs[i]!);
      all.push(ctx.servers[i]);
    },
  };
  try {
    for (let i = 0; i < configs.length; i++) await ctx.restart(i);
    const at = o.at ?? Math.floor(o.batches.length / 3);
    for (const [b, batch] of o.batches.entries()) {
      if (b === at) await o.during?.(ctx);
      const deadline = Date.now() + (o.retryForMs ?? 30_000);
      for (let attempt = 0; ; attempt++) {
        const server = ctx.servers[(b + attempt) % ctx.servers.length]!;
        const r = await postEvents(server, WORKLOAD_PIPELINE, WORKLOAD_KEY, batch.body, {
          ...batch.headers,
          'x-request-id': batchRequestId(b),
          'idempotency-key': `batch-${b}`,
        }).catch((err: Error) => ({ status: 0, body: err.message, headers: new Headers() }));
        if (r.status === 202) {
          assert.deepEqual(r.body, { queued: batch.count }, `batch ${b}`);
          break;
        }
        const code = (r.body as { code?: string }).code ?? String(r.status);
        assert.ok(r.status === 503, `batch ${b} (${batch.kind}): ${r.status} ${JSON.stringify(r.body)}`);
        ctx.unavailable.set(code, (ctx.unavailable.get(code) ?? 0) + 1);
        if (Date.now() > deadline)
          assert.fail(`batch ${b} still gets 503 ${code} after ${o.retryForMs ?? 30_000} ms`);
        await sleep(100);
      }
    }
    await caughtUp(sql, `acme/${WORKLOAD_PIPELINE}`, await lastSeq(stream, o.natsUrl));
    // The owner, and only it, reports that nothing is left to read.
    const pendingSeries = await Promise.all(
      ctx.servers.map(async (s) => {
        const text = await (await fetch(`${s.url}/metrics`)).text();
        return /^sluice_owner_pending_messages\{tenant="acme",pipeline="payments"\} (\d+)$/m.exec(text)?.[1];
      }),
    );
    assert.deepEqual(
      pendingSeries.filter((v) => v !== undefined),
      ['0'],
      `sluice_owner_pending_messages by instance: ${JSON.stringify(pendingSeries)}`,
    );
    const results = await pgResults(sql, `acme/${WORKLOAD_PIPELINE}`);
    // Rows of postgres sinks carry the tenant and pipeline that wrote them.
    const origins = await sql<{ t: string; p: string }[]>`
      SELECT DISTINCT sluice_tenant AS t, sluice_pipeline AS p FROM large_payments`;
    assert.deepEqual(
      origins.map((o) => [o.t, o.p]),
      [['acme', WORKLOAD_PIPELINE]],
    );
    const dead = deadFromLetters(o.batches, results.letters, batchRequestId);
    const actual = clusterResults(join(dir, 'actual'), {
      batches: o.batches,
      windows: results.windows,
      dead,
      large: results.large,
    });
    assertSameResults(o.reference, actual, 'what PostgreSQL holds');
    if (o.expected) {
      const { code, report } = compareWithExpected(o.expected, actual);
      assert.equal(code, 0, report);
    }

    // Any instance's API serves what PostgreSQL holds.
    const viaApi = await allWindows(
      ctx.servers[1 % ctx.servers.length]!,
      WORKLOAD_PIPELINE,
      WORKLOAD_KEY,
      997,
    );
    assert.deepEqual(viaApi, results.windows);
    const lettersViaApi = await allDeadLetters(
      ctx.servers[ctx.servers.length - 1]!,
      WORKLOAD_PIPELINE,
      WORKLOAD_KEY,
    );
    assert.deepEqual(
      lettersViaApi.map((l) => [l.id, l.request_id, l.index, l.reason]),
      results.letters.map((l) => [l.id, l.request_id, l.index, l.reason]),
    );
    // The file sink, fed from the outbox, ends up with the same records, each once.
    for (const deadline = Date.now() + 30_000; ;) {
      const [row] = await sql<{ n: string }[]>`SELECT count(*) AS n FROM sluice_outbox`;
      if (Number(row!.n) === 0) break;
      if (Date.now() > deadline) assert.fail(`${row!.n} outbox rows are still undelivered`);
      await sleep(100);
    }
    for (const s of ctx.servers) assert.deepEqual(await s.stop(), { code: 0, signal: null }, s.output());
    const file = readFileSync(join(dir, 'data', 'outputs', 'acme', WORKLOAD_PIPELINE, 'large.ndjson'), 'utf8')
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const byId = (a: Record<string, unknown>, b: Record<string, unknown>): number =>
      String(a.id).localeCompare(String(b.id));
    assert.deepEqual(file.sort(byId), [...results.large].sort(byId));
    return { servers: all, ctx };
  } catch (err) {
    // SLUICE_TEST_DEBUG=1 prints the instances' logs with a failure, to see what they did.
    if (process.env.SLUICE_TEST_DEBUG) for (const s of all) console.error(s.output().slice(-4000));
    throw err;
  } finally {
    await killRunning(all);
    // A fault test's own server may still be down here: clearing up must not hide why it failed.
    const cleared = await Promise.allSettled([sql.end(), db.drop(), dropStream(stream, o.natsUrl)]);
    for (const c of cleared) if (c.status === 'rejected') console.error(`cleanup: ${String(c.reason)}`);
  }
}

/** The instance that owns `pipeline` once one does (after a kill, ownership moves for a moment). */
export async function ownerNow(servers: Server[], pipeline: string, timeoutMs = 30_000): Promise<number> {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await sleep(50)) {
    const owner = await ownerOf(servers, pipeline);
    if (owner >= 0) return owner;
  }
  throw new Error(`no instance owns ${pipeline} after ${timeoutMs} ms`);
}

/** The instance whose /readyz says it owns `pipeline`, or -1. */
export async function ownerOf(servers: Server[], pipeline: string): Promise<number> {
  for (const [i, s] of servers.entries()) {
    const r = await getJson(s, '/readyz');
    if ((r.body as { owns?: string[] }).owns?.includes(pipeline)) return i;
  }
  return -1;
}

/** A cluster a test drives itself: its configs on a fresh stream and schema; `clear()` drops them. */
export interface FreshCluster {
  dir: string;
  stream: string;
  /** A client in the cluster's schema. */
  sql: postgres.Sql;
  /** One config per instance (a, b, ...), each serving the pipelines with {@link WORKLOAD_KEY}. */
  configs: string[];
  clear(): Promise<void>;
}

/** The postgres table of a {@link freshCluster} pipeline's large payments. */
export const largeTableOf = (pipeline: string): string => `large_${pipeline}`;

/**
 * The configs of `instances` instances serving, for tenant `acme`, the {@link clusterPayments}
 * pipeline under each name in `pipelines` (a name of letters and `_`; default: just
 * {@link WORKLOAD_PIPELINE}), each with its own table of large payments ({@link largeTableOf}), on
 * a fresh stream and schema.
 */
export async function freshCluster(
  label: string,
  o: {
    instances: number;
    pipelines?: string[];
    extra?: Record<string, unknown>;
    /**
     * One watermark for the stream (`idle_path_timeout: 0s`) instead of one per instance: decisions
     * then equal `sluice run`'s for requests sent one after another, also while an instance is
     * down. With a watermark per instance, a killed instance holds it back until its path goes
     * idle, and events that one watermark would refuse as late may count meanwhile
     * (docs/architecture.md).
     */
    oneWatermark?: boolean;
  },
): Promise<FreshCluster> {
  const dir = tempDir(`sluice-cluster-${label}-`);
  const stream = streamName(label);
  const db = await freshSchema(label);
  const sql = pgIn(db.schema);
  const pipelines = Object.fromEntries(
    (o.pipelines ?? [WORKLOAD_PIPELINE]).map((name) => {
      const file = clusterPayments(join(dir, name));
      let yaml = readFileSync(file, 'utf8').replace('table: large_payments', `table: ${largeTableOf(name)}`);
      if (o.oneWatermark)
        yaml = yaml.replace(
          /^( +)allowed_lateness: (.*)$/m,
          '$1allowed_lateness: $2\n$1idle_path_timeout: 0s',
        );
      writeFileSync(file, yaml);
      return [name, file];
    }),
  );
  const configs = ['a', 'b', 'c', 'd'].slice(0, o.instances).map((name) =>
    writeClusterConfig(dir, name, {
      stream,
      schema: db.schema,
      tenants: { acme: { keys: [WORKLOAD_KEY], pipelines } },
      extra: o.extra,
    }),
  );
  return {
    dir,
    stream,
    sql,
    configs,
    async clear() {
      const cleared = await Promise.allSettled([sql.end(), db.drop(), dropStream(stream)]);
      for (const c of cleared) if (c.status === 'rejected') console.error(`cleanup: ${String(c.reason)}`);
    },
  };
}

/**
 * What a {@link freshCluster} holds for each producer's pipeline once its owner has read the whole
 * stream, in the comparison format (dead letters mapped to input lines through their request ids);
 * returns a result directory per producer. Also waits until the outbox is delivered, stops
 * `servers`, and checks that each pipeline's file sink got the same large payments as its postgres
 * table, each once.
 */
export async function clusterHoldings(
  cluster: FreshCluster,
  servers: Server[],
  producers: Producer[],
): Promise<string[]> {
  const { sql } = cluster;
  const held = [];
  for (const p of producers) {
    await caughtUp(sql, `acme/${p.pipeline}`, await lastSeqOf(cluster.stream, 'acme', p.pipeline));
    const results = await pgResults(sql, `acme/${p.pipeline}`, largeTableOf(p.pipeline));
    const actual = clusterResults(join(cluster.dir, 'actual', p.name), {
      batches: p.batches,
      windows: results.windows,
      dead: deadFromLetters(p.batches, results.letters, producerRequestId(p.name)),
      large: results.large,
    });
    held.push({ p, actual, large: results.large });
  }
  for (const deadline = Date.now() + 30_000; ;) {
    const [row] = await sql<{ n: string }[]>`SELECT count(*) AS n FROM sluice_outbox`;
    if (Number(row!.n) === 0) break;
    if (Date.now() > deadline) assert.fail(`${row!.n} outbox rows are still undelivered`);
    await sleep(100);
  }
  for (const s of servers)
    assert.deepEqual(await s.stop(), { code: 0, signal: null }, s.output().slice(-3000));
  const byId = (a: Record<string, unknown>, b: Record<string, unknown>): number =>
    String(a.id).localeCompare(String(b.id));
  for (const { p, large } of held) {
    const file = readFileSync(
      join(cluster.dir, 'data', 'outputs', 'acme', p.pipeline, 'large.ndjson'),
      'utf8',
    )
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.deepEqual(
      file.sort(byId),
      [...large].sort(byId),
      `${p.name}: the large payments in the file sink`,
    );
  }
  return held.map((h) => h.actual);
}
