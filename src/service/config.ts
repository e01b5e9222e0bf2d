/**
 * The service config (`sluice serve sluice.yaml`): where to listen, the store, limits, and the
 * tenants with their API keys (SHA-256 hashes only) and pipelines (the engine's pipeline files).
 * Errors name file, line, column and key path, as pipeline errors do.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020 } from 'ajv/dist/2020.js';
import {
  checkSchema,
  loadPipeline,
  readConfigFile,
  type ComponentConfig,
  type ResolvedPipeline,
  type ResolvedSink,
} from '../core/config.ts';
import { registry } from '../core/registry.ts';
import type { SinkCapabilities } from '../core/types.ts';
import { parseDuration } from '../helpers/time.ts';
import { SluiceError } from '../errors.ts';
import { makeDirectory } from '../core/paths.ts';

export interface TenantLimits {
  /** Token bucket refill rates; undefined means unlimited. */
  eventsPerSecond: number | undefined;
  bytesPerSecond: number | undefined;
  /** Bucket capacity, in seconds of the rate. */
  burstSeconds: number;
}

export interface TenantConfig {
  id: string;
  /** SHA-256 digests of the tenant's API keys. */
  keyHashes: Buffer[];
  limits: TenantLimits;
  pipelines: Map<string, ResolvedPipeline>;
}

export type OnRedisError = 'local' | 'reject';

/** `runtime: { type: cluster }`: NATS JetStream as the log, PostgreSQL as the store (docs/architecture.md). */
export interface ClusterRuntimeConfig {
  type: 'cluster';
  /** This instance's name, in logs and in `sluice_pipelines.owner`. */
  instance: string;
  nats: { url: string; stream: string; duplicateWindowMs: number; maxBytes: number | undefined };
  postgres: { url: string };
  /** Without it, rate limits are per instance. */
  redis: { url: string; prefix: string; timeoutMs: number; onError: OnRedisError } | undefined;
  owner: { batch: number; claimIntervalMs: number };
}

export interface ServiceConfig {
  /** Absolute path of the config file; undefined for the embedded defaults. */
  file: string | undefined;
  runtime: { type: 'embedded' } | ClusterRuntimeConfig;
  listen: { host: string; port: number };
  /** Where requests to routes sluice does not serve are passed, unchanged (a legacy service). */
  upstream: { url: string } | undefined;
  store: { path: string; retentionMs: number | undefined };
  /** Where the pipelines' sinks write: `<outputs>/<tenant>/<pipeline>/`. */
  outputsDir: string;
  limits: {
    bodyBytes: number;
    /** Most records (array elements or NDJSON lines) in one body. */
    bodyRecords: number;
    inFlightBytes: number;
    inFlightRequests: number;
    /** A request that would wait longer for the pipeline thread is refused at once (lanes.ts). */
    queueDelayMs: number;
    /** While the HTTP thread's event loop stays later than this, tenants at their share of the requests in flight are refused. */
    loopDelayMs: number;
  };
  checkpointIntervalMs: number;
  /** Embedded runtime: threads running the pipelines, each tenant on one (default: per core, at most per tenant). */
  pipelineThreads?: number;
  /** How long an Idempotency-Key's answer is kept. */
  idempotencyRetentionMs: number;
  deliveryIntervalMs: number;
  shutdownTimeoutMs: number;
  tenants: TenantConfig[];
  /** Set for the embedded defaults: the demo key, to print. */
  demoKey?: string;
}

const NAME = '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$';
const duration = { anyOf: [{ type: 'string' }, { type: 'number', minimum: 0 }] };

export const serviceSchema = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  title: 'sluice service config',
  type: 'object',
  required: ['tenants'],
  additionalProperties: false,
  properties: {
    runtime: {
      type: 'object',
      additionalProperties: false,
      description:
        'Where requests are logged and processed: `embedded` (one process, SQLite) or `cluster` (NATS JetStream, PostgreSQL, Redis; docs/architecture.md).',
      properties: {
        type: { enum: ['embedded', 'cluster'], default: 'embedded' },
        pipeline_threads: {
          type: 'integer',
          minimum: 1,
          maximum: 64,
          description:
            'Embedded runtime: threads that run the pipelines, each tenant on exactly one of them (default: one per core, at most one per tenant).',
        },
        instance: {
          type: 'string',
          minLength: 1,
          description: "This instance's name in logs and in PostgreSQL (default: host name and process id).",
        },
        nats: {
          type: 'object',
          additionalProperties: false,
          properties: {
            url: {
              type: 'string',
              default: 'nats://127.0.0.1:4222',
              description: 'NATS server(s), comma-separated.',
            },
            stream: {
              type: 'string',
              pattern: '^[A-Za-z0-9_-]{1,32}$',
              default: 'SLUICE',
              description:
                "JetStream stream holding every pipeline's requests (subjects `<stream>.<tenant>.<pipeline>`).",
            },
            duplicate_window: {
              ...duration,
              default: '2m',
              description: 'A retry with the same Idempotency-Key within this window is not stored twice.',
            },
            max_bytes: {
              type: 'integer',
              minimum: 1048576,
              description: 'Largest size of the stream; when full, ingest answers 503 (default: no limit).',
            },
          },
        },
        postgres: {
          type: 'object',
          additionalProperties: false,
          properties: {
            url: {
              type: 'string',
              default: 'postgres://postgres@127.0.0.1:5432/postgres',
              description: 'PostgreSQL URL; the schema is created and migrated at start.',
            },
          },
        },
        redis: {
          type: 'object',
          additionalProperties: false,
          description: 'Shares rate limits between instances; without it each instance limits on its own.',
          properties: {
            url: { type: 'string', default: 'redis://127.0.0.1:6379' },
            prefix: {
              type: 'string',
              default: 'sluice:limits:',
              description: 'Prefix of the keys sluice writes.',
            },
            timeout: { ...duration, default: '250ms', description: 'Longest wait for Redis on a request.' },
            on_error: {
              enum: ['local', 'reject'],
              default: 'local',
              description: 'When Redis is unreachable: `local` limits per instance, `reject` answers 503.',
            },
          },
        },
        owner: {
          type: 'object',
          additionalProperties: false,
          properties: {
            batch: {
              type: 'integer',
              minimum: 1,
              maximum: 100000,
              default: 1000,
              description: 'Requests (stream messages) per owner transaction at most.',
            },
            claim_interval: {
              ...duration,
              default: '2s',
              description: 'How often an instance tries to take pipelines that have no owner.',
            },
          },
        },
      },
    },
    listen: {
      type: 'object',
      additionalProperties: false,
      properties: {
        host: { type: 'string', default: '127.0.0.1', description: 'Address to listen on.' },
        port: { type: 'integer', minimum: 0, maximum: 65535, default: 8080 },
      },
    },
    upstream: {
      type: 'object',
      additionalProperties: false,
      required: ['url'],
      properties: {
        url: {
          type: 'string',
          description:
            'http:// or https:// origin (no path) of a service that receives, unchanged, every request to a route sluice does not serve.',
        },
      },
    },
    store: {
      type: 'object',
      additionalProperties: false,
      properties: {
        path: {
          type: 'string',
          default: 'data/sluice.db',
          description: 'SQLite file, relative to the config file.',
        },
        retention: {
          ...duration,
          description:
            'Delete closed windows and dead letters older than this (by close and receive time); default: keep them.',
        },
      },
    },
    outputs: {
      type: 'string',
      description:
        "Directory the pipelines' sinks write under, relative to the config file (default: beside the store, `outputs`).",
    },
    limits: {
      type: 'object',
      additionalProperties: false,
      properties: {
        body_bytes: {
          type: 'integer',
          minimum: 1024,
          default: 10485760,
          description: 'Largest request body, after decompression too (413 above).',
        },
        body_records: {
          type: 'integer',
          minimum: 1,
          default: 100000,
          description:
            'Most records in one request body: JSON array elements, or NDJSON lines, blank ones included (413 above).',
        },
        in_flight_bytes: {
          type: 'integer',
          minimum: 1048576,
          default: 67108864,
          description: 'Bodies being processed or waiting to be durable; above it, 503 with Retry-After.',
        },
        in_flight_requests: {
          type: 'integer',
          minimum: 1,
          default: 4096,
          description: 'Ingest requests between arrival and answer; above it, 503 with Retry-After.',
        },
        queue_delay: {
          ...duration,
          default: '250ms',
          description:
            "While a tenant's requests wait longer than this for the pipelines (its oldest has, or a new one would behind those queued), its new requests are refused at once: 429 when other tenants share the pipelines, 503 when not.",
        },
        loop_delay: {
          ...duration,
          default: '0s',
          description:
            'Off (0s) by default. While the event loop that answers HTTP stays later than this for 100 ms, a tenant holding its share of the requests in flight or more gets 503 for the next at once, before its body is read: the instance sheds the work that makes it late. 0s turns it off.',
        },
      },
    },
    checkpoint: {
      type: 'object',
      additionalProperties: false,
      properties: {
        interval: { ...duration, default: '10s', description: 'How often pipeline state is checkpointed.' },
      },
    },
    sinks: {
      type: 'object',
      additionalProperties: false,
      properties: {
        interval: { ...duration, default: '200ms', description: 'How often sinks receive new records.' },
      },
    },
    idempotency: {
      type: 'object',
      additionalProperties: false,
      properties: {
        retention: {
          ...duration,
          default: '24h',
          description: 'How long the answer to a request with an Idempotency-Key is kept for its retries.',
        },
      },
    },
    shutdown_timeout: { ...duration, default: '9s', description: 'Longest graceful shutdown.' },
    tenants: {
      type: 'object',
      minProperties: 1,
      propertyNames: { pattern: NAME },
      additionalProperties: {
        type: 'object',
        required: ['api_keys', 'pipelines'],
        additionalProperties: false,
        properties: {
          api_keys: {
            type: 'array',
            minItems: 1,
            items: {
              type: 'object',
              required: ['sha256'],
              additionalProperties: false,
              properties: {
                sha256: {
                  type: 'string',
                  pattern: '^[0-9a-f]{64}$',
                  description: 'Hex SHA-256 of the key: `printf %s "$KEY" | sha256sum`.',
                },
                name: { type: 'string', description: 'What the key is for (never logged with the key).' },
              },
            },
          },
          limits: {
            type: 'object',
            additionalProperties: false,
            properties: {
              events_per_second: { type: 'number', exclusiveMinimum: 0 },
              bytes_per_second: { type: 'number', exclusiveMinimum: 0 },
              burst: { ...duration, default: '1s', description: 'Bucket size, as time at the rate.' },
            },
          },
          pipelines: {
            type: 'object',
            minProperties: 1,
            propertyNames: { pattern: NAME },
            additionalProperties: { type: 'string', description: 'Pipeline file, relative to this file.' },
          },
        },
      },
    },
  },
} as const;

let validator: ReturnType<Ajv2020['compile']> | undefined;

function validate(): ReturnType<Ajv2020['compile']> {
  validator ??= new Ajv2020({
    allErrors: true,
    strict: true,
    strictRequired: false,
    allowUnionTypes: true,
  }).compile(serviceSchema);
  return validator;
}

interface RawService {
  runtime?: {
    type?: 'embedded' | 'cluster';
    pipeline_threads?: number;
    instance?: string;
    nats?: { url?: string; stream?: string; duplicate_window?: string | number; max_bytes?: number };
    postgres?: { url?: string };
    redis?: { url?: string; prefix?: string; timeout?: string | number; on_error?: OnRedisError };
    owner?: { batch?: number; claim_interval?: string | number };
  };
  listen?: { host?: string; port?: number };
  upstream?: { url: string };
  store?: { path?: string; retention?: string | number };
  outputs?: string;
  limits?: {
    body_bytes?: number;
    body_records?: number;
    in_flight_bytes?: number;
    in_flight_requests?: number;
    queue_delay?: string | number;
    loop_delay?: string | number;
  };
  checkpoint?: { interval?: string | number };
  idempotency?: { retention?: string | number };
  sinks?: { interval?: string | number };
  shutdown_timeout?: string | number;
  tenants: Record<
    string,
    {
      api_keys: { sha256: string; name?: string }[];
      limits?: { events_per_second?: number; bytes_per_second?: number; burst?: string | number };
      pipelines: Record<string, string>;
    }
  >;
}

export function sha256(key: string): Buffer {
  return createHash('sha256').update(key, 'utf8').digest();
}

function durationAt(
  value: string | number | undefined,
  fallback: string,
  file: string,
  path: string,
  /** Whether 0 is allowed (it turns the setting off). */
  zero = false,
): number {
  const ms = parseDuration(value ?? fallback);
  if (!Number.isFinite(ms) || ms < 0 || (ms === 0 && !zero))
    throw new SluiceError(
      'SLUICE_ERR_CONFIG_INVALID',
      `${path}: ${JSON.stringify(value)} is not a duration`,
      {
        hint: 'Write durations like 10s, 500ms or 1m.',
        location: { file, path },
      },
    );
  return ms;
}

/**
 * A pipeline for the service: its events come from HTTP, whatever source the file names, sinks
 * unfit for a service are refused, and sinks that record their origin tag each row with the tenant
 * and pipeline (tenants may share a pipeline file).
 */
function servicePipeline(file: string, tenant: string, name: string): ResolvedPipeline {
  const p = loadPipeline(file);
  const capabilities = (s: ResolvedSink): SinkCapabilities<ComponentConfig> | undefined =>
    registry.sinks.get(s.type)!.capabilities;
  for (const s of p.sinks) {
    const refused = capabilities(s)?.service;
    if (refused)
      throw new SluiceError('SLUICE_ERR_CONFIG_INVALID', `sink ${s.id}: a ${s.type} sink ${refused.reason}`, {
        hint: refused.hint,
        location: { file, path: `sinks.${s.id}` },
      });
  }
  const maxRecord = (p.source as { max_record_bytes?: number }).max_record_bytes;
  const sinks = p.sinks.map((s) => {
    const origin = capabilities(s)?.origin;
    return origin ? { ...s, config: origin(s.config, { tenant, pipeline: name }) } : s;
  });
  return { ...p, sinks, source: { type: 'http', ...(maxRecord ? { max_record_bytes: maxRecord } : {}) } };
}

function resolveService(raw: RawService, file: string | undefined, base: string): ServiceConfig {
  const where = file ?? '(embedded defaults)';
  const rel = (p: string): string => (isAbsolute(p) ? p : resolve(base, p));
  const storePath = rel(raw.store?.path ?? 'data/sluice.db');
  const seen = new Map<string, string>();
  const tenants = Object.entries(raw.tenants).map(([id, t]): TenantConfig => {
    t.api_keys.forEach((k, i) => {
      const other = seen.get(k.sha256);
      if (other)
        throw new SluiceError(
          'SLUICE_ERR_CONFIG_INVALID',
          `tenants.${id}.api_keys[${i}]: the same key is also configured for tenant ${other}`,
          {
            hint: 'Give every tenant its own keys.',
            location: { file: where, path: `tenants.${id}.api_keys[${i}]` },
          },
        );
      seen.set(k.sha256, id);
    });
    const pipelines = new Map<string, ResolvedPipeline>();
    for (const [name, path] of Object.entries(t.pipelines))
      pipelines.set(name, servicePipeline(rel(path), id, name));
    return {
      id,
      keyHashes: t.api_keys.map((k) => Buffer.from(k.sha256, 'hex')),
      limits: {
        eventsPerSecond: t.limits?.events_per_second,
        bytesPerSecond: t.limits?.bytes_per_second,
        burstSeconds: durationAt(t.limits?.burst, '1s', where, `tenants.${id}.limits.burst`) / 1000,
      },
      pipelines,
    };
  });
  const bodyBytes = raw.limits?.body_bytes ?? 10 * 1024 * 1024;
  const inFlightBytes = raw.limits?.in_flight_bytes ?? 64 * 1024 * 1024;
  if (inFlightBytes < bodyBytes)
    throw new SluiceError(
      'SLUICE_ERR_CONFIG_INVALID',
      `limits.in_flight_bytes (${inFlightBytes}) is below limits.body_bytes (${bodyBytes}): the largest bodies would always get 503`,
      {
        hint: 'Make in_flight_bytes a few times body_bytes.',
        location: { file: where, path: 'limits.in_flight_bytes' },
      },
    );
  return {
    file,
    runtime: runtimeOf(raw.runtime, where),
    listen: { host: raw.listen?.host ?? '127.0.0.1', port: raw.listen?.port ?? 8080 },
    upstream: raw.upstream ? { url: upstreamUrl(raw.upstream.url, where) } : undefined,
    store: {
      path: storePath,
      retentionMs:
        raw.store?.retention === undefined
          ? undefined
          : durationAt(raw.store.retention, '30d', where, 'store.retention'),
    },
    outputsDir: raw.outputs ? rel(raw.outputs) : join(dirname(storePath), 'outputs'),
    limits: {
      bodyBytes,
      bodyRecords: raw.limits?.body_records ?? 100_000,
      inFlightBytes,
      inFlightRequests: raw.limits?.in_flight_requests ?? 4096,
      queueDelayMs: durationAt(raw.limits?.queue_delay, '250ms', where, 'limits.queue_delay'),
      // Off unless set. Measured (docs/benchmarks.md, 2026-12-06): at 3x capacity it did not move
      // the overload targets; a single stall of about the window (one late tick in it) counts as
      // standing and refused a second request of a lone tenant in the suite; and in a cluster an
      // owner's pipeline shares the loop, so its delay is that work (at 25 ms, bench:cluster had
      // 150-197 bodies refused and ~11,000 more events late).
      loopDelayMs: durationAt(raw.limits?.loop_delay, '0s', where, 'limits.loop_delay', true),
    },
    checkpointIntervalMs: durationAt(raw.checkpoint?.interval, '10s', where, 'checkpoint.interval'),
    ...(raw.runtime?.pipeline_threads !== undefined && { pipelineThreads: raw.runtime.pipeline_threads }),
    idempotencyRetentionMs: durationAt(raw.idempotency?.retention, '24h', where, 'idempotency.retention'),
    deliveryIntervalMs: durationAt(raw.sinks?.interval, '200ms', where, 'sinks.interval'),
    shutdownTimeoutMs: durationAt(raw.shutdown_timeout, '9s', where, 'shutdown_timeout'),
    tenants,
  };
}

function runtimeOf(raw: RawService['runtime'], where: string): ServiceConfig['runtime'] {
  if ((raw?.type ?? 'embedded') === 'embedded') {
    const extra = Object.keys(raw ?? {}).filter((k) => k !== 'type' && k !== 'pipeline_threads');
    if (extra.length > 0)
      throw new SluiceError(
        'SLUICE_ERR_CONFIG_INVALID',
        `runtime.${extra[0]} applies to the cluster runtime only, and runtime.type is embedded`,
        {
          hint: 'Set runtime.type: cluster, or remove the cluster settings.',
          location: { file: where, path: `runtime.${extra[0]}` },
        },
      );
    return { type: 'embedded' };
  }
  const r = raw!;
  if (r.pipeline_threads !== undefined)
    throw new SluiceError(
      'SLUICE_ERR_CONFIG_INVALID',
      'runtime.pipeline_threads applies to the embedded runtime only, and runtime.type is cluster',
      {
        hint: 'Remove runtime.pipeline_threads: a cluster spreads pipelines over its instances.',
        location: { file: where, path: 'runtime.pipeline_threads' },
      },
    );
  return {
    type: 'cluster',
    instance: r.instance ?? `${hostname()}-${process.pid}`,
    nats: {
      url: r.nats?.url ?? 'nats://127.0.0.1:4222',
      stream: r.nats?.stream ?? 'SLUICE',
      duplicateWindowMs: durationAt(r.nats?.duplicate_window, '2m', where, 'runtime.nats.duplicate_window'),
      maxBytes: r.nats?.max_bytes,
    },
    postgres: { url: r.postgres?.url ?? 'postgres://postgres@127.0.0.1:5432/postgres' },
    redis: r.redis
      ? {
          url: r.redis.url ?? 'redis://127.0.0.1:6379',
          prefix: r.redis.prefix ?? 'sluice:limits:',
          timeoutMs: durationAt(r.redis.timeout, '250ms', where, 'runtime.redis.timeout'),
          onError: r.redis.on_error ?? 'local',
        }
      : undefined,
    owner: {
      batch: r.owner?.batch ?? 1000,
      claimIntervalMs: durationAt(r.owner?.claim_interval, '2s', where, 'runtime.owner.claim_interval'),
    },
  };
}

/** Reads and checks a service config, loading (but not compiling) every pipeline it names. */
export function loadServiceConfig(file: string): ServiceConfig {
  const { abs, data, locate } = readConfigFile(file, {
    what: 'service config',
    shape: 'a mapping with tenants (and optionally listen, store, limits)',
  });
  checkSchema(validate(), serviceSchema as unknown as Record<string, unknown>, data, locate);
  return resolveService(data as unknown as RawService, abs, dirname(abs));
}

const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * `npm start`: one demo tenant running the payments example, the store under ./data. The demo key
 * is random, made on first start and kept in data/demo-api-key (mode 600).
 */
export function embeddedConfig(dataDir: string): ServiceConfig {
  const keyFile = join(dataDir, 'demo-api-key');
  makeDirectory(dataDir, 'the data directory (--data)');
  if (!existsSync(keyFile))
    writeFileSync(keyFile, `sk_demo_${randomBytes(18).toString('base64url')}\n`, { mode: 0o600 });
  const key = readFileSync(keyFile, 'utf8').trim();
  const raw: RawService = {
    store: { path: join(dataDir, 'sluice.db') },
    tenants: {
      demo: {
        api_keys: [{ sha256: sha256(key).toString('hex'), name: 'demo' }],
        pipelines: { payments: join(PACKAGE_ROOT, 'examples', 'payments', 'pipeline.yaml') },
      },
    },
  };
  return { ...resolveService(raw, undefined, process.cwd()), demoKey: key };
}

/**
 * The upstream's origin, checked: http or https, no path, query or fragment (requests keep theirs),
 * no credentials (the client's own Authorization header is what reaches the upstream).
 */
function upstreamUrl(value: string, where: string): string {
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (
    !url ||
    (url.protocol !== 'http:' && url.protocol !== 'https:') ||
    url.pathname !== '/' ||
    url.search ||
    url.hash ||
    url.username ||
    url.password
  )
    throw new SluiceError(
      'SLUICE_ERR_CONFIG_INVALID',
      `upstream.url ${JSON.stringify(value)} is not an http:// or https:// origin`,
      {
        hint: 'Give the scheme, host and port of the service to pass requests to, e.g. http://127.0.0.1:3000 (no path: requests keep theirs).',
        location: { file: where, path: 'upstream.url' },
      },
    );
  return url.origin;
}

/** Settings read once at start, that differ in a reloaded config. */
export function restartOnly(running: ServiceConfig, next: ServiceConfig): string[] {
  const changed: string[] = [];
  if (running.limits.bodyBytes !== next.limits.bodyBytes) changed.push('limits.body_bytes');
  if (running.outputsDir !== next.outputsDir) changed.push('outputs');
  if (running.upstream?.url !== next.upstream?.url) changed.push('upstream.url');
  if (running.checkpointIntervalMs !== next.checkpointIntervalMs) changed.push('checkpoint.interval');
  if (running.deliveryIntervalMs !== next.deliveryIntervalMs) changed.push('sinks.interval');
  if (running.shutdownTimeoutMs !== next.shutdownTimeoutMs) changed.push('shutdown_timeout');
  if (running.pipelineThreads !== next.pipelineThreads) changed.push('runtime.pipeline_threads');
  return changed;
}

/**
 * Identifies a pipeline's definition: its resolved config and the content of every file it names
 * (modules, schemas, tables: resolved configs hold them as absolute paths).
 */
export function fingerprintOf(p: ResolvedPipeline): string {
  const h = createHash('sha256');
  const definition = { source: p.source, tables: p.tables, steps: p.steps, sinks: p.sinks };
  h.update(JSON.stringify(definition));
  const visit = (v: unknown): void => {
    if (typeof v === 'string' && isAbsolute(v) && existsSync(v) && statSync(v).isFile())
      h.update(readFileSync(v));
    else if (v && typeof v === 'object') for (const x of Object.values(v)) visit(x);
  };
  visit(definition);
  return h.digest('hex');
}
