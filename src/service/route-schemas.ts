/**
 * The schemas of the HTTP API's routes (http.ts): what each route takes and answers, from which
 * @fastify/swagger generates /openapi.json (openapi.ts). Error answers are RFC 9457 problems whose
 * `code` comes from the error catalogue: the codes and their statuses are read from ERRORS, never
 * copied, so a new request error shows up here by itself.
 *
 * The request and answer schemas are documentation only. The handlers check requests themselves
 * (after authentication, with the catalogue's messages) and answer with JSON.stringify; a schema
 * Fastify reads would validate before them and compile answers with fast-json-stringify, which
 * drops fields the schema does not list. So they sit under `documented`, a key Fastify ignores,
 * and openapi.ts hands them to @fastify/swagger.
 */
import type { FastifySchema } from 'fastify';
import { ERRORS, type ErrorCode, type ErrorSpec } from '../errors.ts';

type Json = Record<string, unknown>;

/** What a route takes and answers, in the terms of Fastify's route schemas. */
export interface RouteDocumentation {
  params?: Json;
  querystring?: Json;
  headers?: Json;
  /** An OpenAPI Request Body: schemas by media type (`x-examples` for named examples). */
  body?: { description?: string; required: boolean; content: Record<string, { schema: Json }> };
  /** By status: `description`, `headers` (a JSON Schema for each) and `content` by media type. */
  response: Record<string, Json>;
}

export interface RouteSchema extends FastifySchema {
  operationId: string;
  tags: string[];
  summary: string;
  description?: string;
  /** `[]` for a route that needs no API key. */
  security?: [];
  documented: RouteDocumentation;
}

const ref = (name: string): Json => ({ $ref: `#/components/schemas/${name}` });

/** Every code the service can answer a request with (the catalogue's errors that have a status). */
function httpErrors(): { code: ErrorCode; status: number; title: string }[] {
  return (Object.entries(ERRORS) as [ErrorCode, ErrorSpec][]).flatMap(([code, spec]) =>
    spec.status === undefined ? [] : [{ code, status: spec.status, title: spec.title }],
  );
}

const requestIdHeader = {
  'x-request-id': {
    type: 'string',
    description: 'The request id (yours from `x-request-id`, or one the service made).',
  },
};

const retryAfterHeader = {
  'retry-after': {
    type: 'integer',
    minimum: 1,
    description:
      'Seconds to wait before retrying. Absent on a 429 whose request is larger than the whole burst: split it instead.',
  },
};

/** The problem answers of a route with these statuses, each with every code of that status. */
function problems(...statuses: number[]): Record<string, Json> {
  return Object.fromEntries(
    statuses.map((status) => {
      const codes = httpErrors().filter((e) => e.status === status);
      const retry = status === 429 || status === 503;
      const answer = {
        description: codes.map((e) => `${e.code}: ${e.title}.`).join(' '),
        headers: { ...requestIdHeader, ...(retry ? retryAfterHeader : {}) },
        content: {
          'application/problem+json': {
            schema: {
              allOf: [
                ref('Problem'),
                {
                  type: 'object',
                  properties: { status: { const: status }, code: { enum: codes.map((e) => e.code) } },
                },
              ],
            },
          },
        },
      };
      return [String(status), answer];
    }),
  );
}

const instant = (what: string): Json => ({
  type: 'string',
  description: `${what}: an RFC 3339 time (\`2026-11-21T10:00:00Z\`) or epoch milliseconds (\`1795255200000\`).`,
  examples: ['2026-11-21T10:00:00Z'],
});

const limit = (fallback: number, description: string): Json => ({
  type: 'integer',
  minimum: 1,
  maximum: 10000,
  default: fallback,
  description,
});

const pipelineParams = {
  type: 'object',
  required: ['pipeline'],
  properties: {
    pipeline: {
      type: 'string',
      pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$',
      description: "The pipeline's name under the tenant in the service config.",
    },
  },
};

const cursor = { type: 'string', description: '`next_cursor` of the previous page.' };

/** The request headers of a /v1 route: `x-request-id`, and those given. */
const requestHeaders = (headers: Json = {}): Json => ({
  type: 'object',
  properties: {
    ...headers,
    'x-request-id': {
      type: 'string',
      description:
        'Your own id for the request; otherwise the service makes one. Answers, problems, dead letters and log lines carry it.',
    },
  },
});

/** Dead letters a replay left where they are; the same in both runtimes. */
const skipped: Json = {
  type: 'array',
  description: 'Dead letters that do not hold their whole record (too_large, or raw cut); they stay.',
  items: {
    type: 'object',
    required: ['id', 'reason'],
    additionalProperties: false,
    properties: { id: { type: 'integer' }, reason: { type: 'string' } },
  },
};

const rejectionRecords = {
  type: 'integer',
  minimum: 1,
  description: "With `dead_letters_per: line`: how many of the line's records failed.",
};

/** Rejections past the first 100 of an answer (runtime.ts, ANSWER_REJECTIONS). */
const rejectedOmitted = {
  type: 'object',
  description:
    'Only when more than 100 records were rejected: the rejections past the first 100, counted instead of listed (all are in the dead-letter store).',
  required: ['count', 'records', 'reasons'],
  additionalProperties: false,
  properties: {
    count: { type: 'integer', minimum: 1, description: 'Rejections not listed.' },
    records: { type: 'integer', minimum: 1, description: 'Records they stand for.' },
    reasons: {
      type: 'object',
      additionalProperties: { type: 'integer', minimum: 1 },
      description: 'Rejections not listed, by reason.',
    },
  },
};

const dependency = (what: string): Json => ({
  type: 'string',
  enum: ['up', 'down'],
  description: `${what} (cluster runtime).`,
});

const nextCursor = {
  type: ['string', 'null'],
  description: 'Pass as `cursor` for the next page; null on the last page.',
};

/** The schemas the routes refer to, as `#/components/schemas/<name>`. */
export const COMPONENT_SCHEMAS: Record<string, Json> = {
  Problem: {
    type: 'object',
    description:
      'An RFC 9457 problem document. `code` is a stable code from the error catalogue; `type` links to its entry in docs/errors.md.',
    required: ['type', 'title', 'status', 'detail', 'code', 'hint', 'instance', 'request_id'],
    properties: {
      type: { type: 'string', format: 'uri', description: 'Link to the code in docs/errors.md.' },
      title: { type: 'string', description: 'The same for every answer with this code.' },
      status: { type: 'integer', description: 'The HTTP status.' },
      detail: { type: 'string', description: 'What went wrong with this request.' },
      code: {
        type: 'string',
        enum: httpErrors().map((e) => e.code),
        description: 'Stable error code (docs/errors.md).',
      },
      hint: { type: 'string', description: 'What to do about it.' },
      instance: { type: 'string', description: 'The request path and query.' },
      request_id: {
        type: 'string',
        description: 'The request id, as in the `x-request-id` header and the service log.',
      },
    },
  },
  Event: {
    type: 'object',
    description:
      "Any JSON object. The pipeline's steps decide whether it is valid; a record that fails becomes a dead letter, the rest of the body goes on.",
  },
  Rejection: {
    type: 'object',
    description: 'A record of the body that became a dead letter.',
    required: ['index', 'reason', 'detail'],
    additionalProperties: false,
    properties: {
      index: {
        type: 'integer',
        minimum: 0,
        description: "Position of the record's line in the body, from 0.",
      },
      reason: {
        type: 'string',
        description:
          'Dead-letter reason: parse, invalid, late, error, missing, too_large, or a reason of your own transform.',
      },
      detail: { type: 'string' },
      pointer: { type: 'string', description: 'JSON pointer to the offending field.' },
      records: rejectionRecords,
    },
  },
  IngestAnswer: {
    type: 'object',
    description:
      'Counts in records: the lines of the body plus the records fan-out added. accepted + duplicates + the records of rejected (1 each unless it says `records`) is `records`.',
    required: ['records', 'accepted', 'duplicates', 'rejected'],
    additionalProperties: false,
    properties: {
      records: {
        type: 'integer',
        minimum: 0,
        description: 'Records the body became: its lines, plus what transforms returning arrays added.',
      },
      accepted: { type: 'integer', minimum: 0, description: 'Records accepted: valid and not duplicates.' },
      duplicates: {
        type: 'integer',
        minimum: 0,
        description: 'Records dropped by a dedupe step as duplicates of an earlier event.',
      },
      rejected: { type: 'array', items: ref('Rejection') },
      rejected_omitted: rejectedOmitted,
    },
  },
  QueuedAnswer: {
    type: 'object',
    description:
      "The cluster runtime's answer: the request is stored on the pipeline's stream, and its records are processed later by the pipeline's owner. Records that fail become dead letters with the request's `request_id` and their `index`.",
    required: ['queued'],
    additionalProperties: false,
    properties: {
      queued: { type: 'integer', minimum: 0, description: 'The number of records in the body.' },
    },
  },
  WindowRow: {
    type: 'object',
    description:
      "One row of a window step: the window start (the step's `start_field`, default `window_start`), its end if `end_field` is set, the `group_by` fields and one field per metric, plus `closed`.",
    required: ['closed'],
    properties: {
      closed: {
        type: 'boolean',
        description:
          'true: the watermark has closed the window and the row is final. false: the window is still open and the row is its state so far.',
      },
    },
  },
  WindowPage: {
    type: 'object',
    required: ['items', 'next_cursor'],
    additionalProperties: false,
    properties: { items: { type: 'array', items: ref('WindowRow') }, next_cursor: nextCursor },
  },
  DeadLetter: {
    type: 'object',
    required: ['id', 'received_at', 'request_id', 'reason', 'detail', 'step', 'raw'],
    properties: {
      id: { type: 'integer', minimum: 1, description: 'Identifies the dead letter for replay.' },
      received_at: { type: 'string', format: 'date-time', description: 'When its request arrived.' },
      request_id: {
        type: ['string', 'null'],
        description:
          'The id of the request that carried the record (or of the replay that rejected it again).',
      },
      line: { type: 'integer', minimum: 1, description: 'Line of the record in its body, from 1.' },
      index: { type: 'integer', minimum: 0, description: 'Position of the record in its body, from 0.' },
      reason: { type: 'string' },
      detail: { type: 'string' },
      pointer: { type: 'string', description: 'JSON pointer to the offending field (validate steps).' },
      keyword: { type: 'string', description: 'The JSON Schema keyword that failed (validate steps).' },
      step: { type: 'string', description: 'The id of the step that refused the record.' },
      records: rejectionRecords,
      raw: { type: 'string', description: 'The record as received (its first 1 MiB).' },
      raw_truncated: {
        type: 'boolean',
        const: true,
        description: '`raw` was cut; such a dead letter cannot be replayed.',
      },
    },
  },
  DeadLetterPage: {
    type: 'object',
    required: ['items', 'next_cursor'],
    additionalProperties: false,
    properties: { items: { type: 'array', items: ref('DeadLetter') }, next_cursor: nextCursor },
  },
  ReplayAnswer: {
    type: 'object',
    required: ['replayed', 'records', 'accepted', 'duplicates', 'rejected', 'skipped'],
    additionalProperties: false,
    properties: {
      replayed: {
        type: 'integer',
        minimum: 0,
        description: 'Dead letters run again; each left the dead-letter store.',
      },
      records: { type: 'integer', minimum: 0, description: 'Records the replayed lines became.' },
      accepted: { type: 'integer', minimum: 0 },
      duplicates: { type: 'integer', minimum: 0 },
      rejected: {
        type: 'array',
        description: 'Replayed records that failed again; each is a new dead letter with a new id.',
        items: {
          type: 'object',
          required: ['id', 'index', 'reason', 'detail'],
          additionalProperties: false,
          properties: {
            id: { type: 'integer', description: 'The id of the dead letter that was replayed.' },
            index: { type: 'integer', minimum: 0 },
            reason: { type: 'string' },
            detail: { type: 'string' },
            pointer: { type: 'string' },
            records: rejectionRecords,
          },
        },
      },
      rejected_omitted: rejectedOmitted,
      skipped,
    },
  },
  QueuedReplayAnswer: {
    type: 'object',
    description:
      "The cluster runtime's answer: the records are published as one message; the pipeline's owner processes them and deletes the replayed dead letters in the same transaction.",
    required: ['replayed', 'queued', 'skipped'],
    additionalProperties: false,
    properties: {
      replayed: {
        type: 'integer',
        minimum: 0,
        description:
          'Dead letters whose records were queued; they stay listed until the owner has processed them.',
      },
      queued: { type: 'integer', minimum: 0, description: 'Records queued (one per replayed dead letter).' },
      skipped,
    },
  },
  PipelineList: {
    type: 'object',
    required: ['tenant', 'pipelines'],
    additionalProperties: false,
    properties: {
      tenant: { type: 'string', description: 'The tenant the key belongs to.' },
      pipelines: { type: 'array', items: ref('PipelineCounts') },
    },
  },
  PipelineCounts: {
    type: 'object',
    description:
      'A pipeline and its counts since this instance started: the series of /metrics with its tenant and pipeline labels (docs/operations.md).',
    required: ['name', 'windows', 'records', 'dead_by_reason', 'ingest_to_durable_seconds'],
    additionalProperties: false,
    properties: {
      name: { type: 'string' },
      windows: {
        type: 'array',
        description: 'Its window steps, whose rows `GET /v1/pipelines/{pipeline}/windows` answers.',
        items: {
          type: 'object',
          required: ['output', 'start_field', 'group_by'],
          additionalProperties: false,
          properties: {
            output: { type: 'string', description: 'The value of `output` for the windows query.' },
            start_field: { type: 'string', description: 'The row field holding the window start.' },
            group_by: { type: 'array', items: { type: 'string' }, description: 'The group key fields.' },
          },
        },
      },
      records: {
        type: 'object',
        description: 'sluice_events_{received,accepted,duplicate,dead}_total.',
        required: ['received', 'accepted', 'duplicates', 'dead'],
        additionalProperties: false,
        properties: {
          received: { type: 'number', minimum: 0 },
          accepted: { type: 'number', minimum: 0 },
          duplicates: { type: 'number', minimum: 0 },
          dead: { type: 'number', minimum: 0 },
        },
      },
      dead_by_reason: {
        type: 'object',
        additionalProperties: { type: 'number', minimum: 0 },
        description: 'sluice_events_dead_total by reason.',
      },
      ingest_to_durable_seconds: {
        type: 'object',
        description:
          'The histogram sluice_ingest_to_durable_seconds: from a request body read to its events durable. No buckets before the first request.',
        required: ['buckets', 'count', 'sum'],
        additionalProperties: false,
        properties: {
          buckets: {
            type: 'array',
            description: 'Cumulative: requests that took at most `le` seconds, by increasing `le`.',
            items: {
              type: 'object',
              required: ['le', 'count'],
              additionalProperties: false,
              properties: {
                le: { oneOf: [{ type: 'number' }, { const: '+Inf' }] },
                count: { type: 'number', minimum: 0 },
              },
            },
          },
          count: { type: 'number', minimum: 0 },
          sum: { type: 'number', minimum: 0 },
        },
      },
    },
  },
  Status: {
    type: 'object',
    required: ['status'],
    properties: {
      status: {
        type: 'string',
        enum: ['ok', 'ready', 'starting', 'recovering', 'draining', 'stopped'],
      },
    },
  },
  Readiness: {
    type: 'object',
    description:
      'The embedded runtime answers `status` alone. The cluster runtime adds its dependencies and the pipelines this instance owns.',
    required: ['status'],
    additionalProperties: false,
    properties: {
      status: {
        type: 'string',
        enum: ['ready', 'starting', 'recovering', 'degraded', 'draining', 'stopped'],
        description: '`degraded`: a cluster instance that is running but cannot reach NATS.',
      },
      nats: dependency('NATS JetStream; while it is down the instance takes no request'),
      postgres: dependency('PostgreSQL; while it is down, queries and replays answer 503'),
      redis: {
        type: 'string',
        enum: ['up', 'down', 'not configured'],
        description:
          'Redis for shared rate limits; `not configured` without `runtime.redis` (cluster runtime).',
      },
      owns: {
        type: 'array',
        items: { type: 'string' },
        description: 'The pipelines this instance owns now, as `tenant/pipeline` (cluster runtime).',
      },
    },
  },
};

const ingestExample = {
  id: 'evt_01HZX3K4M5N6P7Q8R9S0T1V2W3',
  type: 'payment.captured',
  ts: '2026-11-21T10:00:00Z',
  user: { id: 'usr_000042', country: 'de' },
  amount: '12.50',
  currency: 'EUR',
};

const ingestEvents: RouteSchema = {
  operationId: 'ingestEvents',
  tags: ['events'],
  summary: 'Send events to a pipeline',
  description:
    'The body is one JSON object, a JSON array of objects, or NDJSON (one object per line), optionally gzip (`Content-Encoding: gzip`); `limits.body_bytes` applies before and after decompression. Each record is processed on its own: a bad one becomes a dead letter, the rest goes on. In the embedded runtime, the answer lists the bad ones in `rejected`, a 202 is sent only once the body and everything it produced are durable in the store, and with `Idempotency-Key` a retry gets the first answer instead of being processed again. In the cluster runtime, the 202 (`QueuedAnswer`) is sent once NATS JetStream has stored the request; the records are processed later, and those that fail become dead letters.',
  documented: {
    params: pipelineParams,
    headers: requestHeaders({
      'Content-Encoding': {
        type: 'string',
        enum: ['gzip', 'x-gzip', 'identity'],
        description: '`gzip` (or `x-gzip`) for a gzip body.',
      },
      'Idempotency-Key': {
        type: 'string',
        minLength: 1,
        maxLength: 255,
        pattern: '^[!-~]+$',
        description:
          'Your id for this batch of events (a UUID, say). A request with a key already answered with a 202 for this pipeline (within `idempotency.retention`, 24 h by default) is not processed again: it gets that answer, with `idempotent-replayed: true`. The body is not compared. In the cluster runtime, a retry within `runtime.nats.duplicate_window` (2 min by default) is not stored again, and its 202 has `idempotent-replayed: true`.',
      },
    }),
    body: {
      required: true,
      description:
        'Also accepted: any `application/*+json` type as JSON, and `application/jsonl`, `application/jsonlines`, `application/x-jsonlines` as NDJSON.',
      content: {
        'application/json': {
          schema: {
            oneOf: [ref('Event'), { type: 'array', items: ref('Event') }],
            'x-examples': {
              one: { value: ingestExample },
              array: { value: [ingestExample, { ...ingestExample, id: 'evt_01HZX3K4M5N6P7Q8R9S0T1V2W4' }] },
            },
          },
        },
        'application/x-ndjson': {
          schema: {
            type: 'string',
            description: 'One JSON object per line.',
            examples: [`${JSON.stringify(ingestExample)}\n`],
          },
        },
        'application/ndjson': { schema: { type: 'string', description: 'One JSON object per line.' } },
      },
    },
    response: {
      202: {
        description:
          'Embedded runtime (`IngestAnswer`): every record was processed and the outcome is durable: accepted, dropped as a duplicate, or a dead letter listed in `rejected`. Cluster runtime (`QueuedAnswer`): the request is stored on the stream and its records are queued.',
        headers: {
          ...requestIdHeader,
          'idempotent-replayed': {
            type: 'string',
            const: 'true',
            description:
              '`true` when an earlier request to this pipeline had the same Idempotency-Key: in the embedded runtime this is its stored answer; in the cluster runtime the request was already on the stream and was not stored again.',
          },
        },
        content: {
          'application/json': {
            schema: { oneOf: [ref('IngestAnswer'), ref('QueuedAnswer')] },
            examples: {
              embedded: {
                value: {
                  records: 2,
                  accepted: 1,
                  duplicates: 0,
                  rejected: [
                    { index: 1, reason: 'invalid', detail: 'missing required field /type', pointer: '/type' },
                  ],
                },
              },
              fanOut: {
                summary: 'A line whose transform returned 3 records, all late, with `dead_letters_per: line`',
                value: {
                  records: 4,
                  accepted: 1,
                  duplicates: 0,
                  rejected: [
                    {
                      index: 1,
                      reason: 'late',
                      detail:
                        'event time 2026-11-21T09:58:00.000Z falls in window [2026-11-21T09:58:00.000Z, 2026-11-21T09:59:00.000Z), closed once the watermark passed 2026-11-21T09:59:00.000Z',
                      records: 3,
                    },
                  ],
                },
              },
              cluster: { value: { queued: 2 } },
            },
          },
        },
      },
      ...problems(400, 401, 404, 408, 413, 415, 429, 500, 503),
    },
  },
};

const listWindows: RouteSchema = {
  operationId: 'listWindows',
  tags: ['results'],
  summary: "Query a window step's rows",
  description:
    "Closed rows (final, from the store) and open rows (state so far), ordered by window start then group key. In the cluster runtime rows come from PostgreSQL, and an open row is its window's state when the pipeline's owner last caught up with the stream or checkpointed; 503 while PostgreSQL is unreachable. Query parameters other than the ones below filter on the window's `group_by` fields (`?currency=EUR&region=EU`); any other name is a 400.",
  documented: {
    params: pipelineParams,
    querystring: {
      type: 'object',
      style: 'form',
      explode: true,
      properties: {
        output: {
          type: 'string',
          description: "The window step's output name, when the pipeline has several (default: the first).",
        },
        from: instant('Windows starting at or after this'),
        to: instant('Windows starting before this'),
        limit: limit(100, 'Rows per page.'),
        cursor,
        group_by: {
          type: 'object',
          additionalProperties: { type: 'string' },
          description: 'Filters: a `group_by` field of the window = its value (as text).',
        },
      },
    },
    headers: requestHeaders(),
    response: {
      200: {
        description: 'A page of rows.',
        headers: requestIdHeader,
        content: { 'application/json': { schema: ref('WindowPage') } },
      },
      ...problems(400, 401, 404, 500, 503),
    },
  },
};

const listDeadLetters: RouteSchema = {
  operationId: 'listDeadLetters',
  tags: ['dead letters'],
  summary: 'Query dead letters',
  description:
    'Oldest first. Any other query parameter is a 400. In the cluster runtime, 503 while PostgreSQL is unreachable.',
  documented: {
    params: pipelineParams,
    querystring: {
      type: 'object',
      properties: {
        reason: { type: 'string', description: 'Only this reason.' },
        from: instant('Received at or after this'),
        to: instant('Received before this'),
        limit: limit(100, 'Dead letters per page.'),
        cursor,
      },
    },
    headers: requestHeaders(),
    response: {
      200: {
        description: 'A page of dead letters.',
        headers: requestIdHeader,
        content: { 'application/json': { schema: ref('DeadLetterPage') } },
      },
      ...problems(400, 401, 404, 500, 503),
    },
  },
};

const replayDeadLetters: RouteSchema = {
  operationId: 'replayDeadLetters',
  tags: ['dead letters'],
  summary: 'Run dead letters again through the current pipeline',
  description:
    'Each chosen dead letter is processed again as if just received, exactly like ingested events, in one durable step: the replayed ones leave the dead-letter store, and those that fail again become new dead letters. In the embedded runtime the answer (`ReplayAnswer`) comes once that is durable. In the cluster runtime (`QueuedReplayAnswer`) it comes once the records are stored on the stream as one message; the owner processes them later and deletes the replayed dead letters in the same transaction.',
  documented: {
    params: pipelineParams,
    headers: requestHeaders(),
    body: {
      required: false,
      description: 'No body is the same as `{}`.',
      content: {
        'application/json': {
          schema: {
            type: 'object',
            description:
              'Which dead letters to run again through the current pipeline; every field narrows the choice, oldest first. An empty object replays the oldest `limit`.',
            additionalProperties: false,
            properties: {
              ids: {
                type: 'array',
                maxItems: 10000,
                items: { type: 'integer' },
                description: 'Dead-letter ids.',
              },
              reason: { type: 'string', description: 'Only dead letters with this reason.' },
              from: {
                type: ['string', 'integer'],
                description: 'Received at or after: RFC 3339 or epoch milliseconds.',
              },
              to: {
                type: ['string', 'integer'],
                description: 'Received before: RFC 3339 or epoch milliseconds.',
              },
              limit: limit(1000, 'At most this many dead letters.'),
            },
            examples: [{ reason: 'invalid', from: '2026-11-21T00:00:00Z', limit: 500 }],
          },
        },
      },
    },
    response: {
      200: {
        description: 'What the replay did (embedded runtime) or queued (cluster runtime).',
        headers: requestIdHeader,
        content: {
          'application/json': { schema: { oneOf: [ref('ReplayAnswer'), ref('QueuedReplayAnswer')] } },
        },
      },
      ...problems(400, 401, 404, 408, 413, 500, 503),
    },
  },
};

const getMetrics: RouteSchema = {
  operationId: 'getMetrics',
  tags: ['operations'],
  summary: 'Prometheus metrics',
  description: 'Every metric is described in docs/operations.md.',
  security: [],
  documented: {
    response: {
      200: {
        description: 'The Prometheus text exposition format.',
        headers: requestIdHeader,
        content: { 'text/plain; version=0.0.4; charset=utf-8': { schema: { type: 'string' } } },
      },
    },
  },
};

const getHealth: RouteSchema = {
  operationId: 'getHealth',
  tags: ['operations'],
  summary: 'Liveness: the process answers',
  security: [],
  documented: {
    response: {
      200: {
        description: 'The process is up.',
        headers: requestIdHeader,
        content: { 'application/json': { schema: ref('Status'), example: { status: 'ok' } } },
      },
    },
  },
};

const getReadiness: RouteSchema = {
  operationId: 'getReadiness',
  tags: ['operations'],
  summary: 'Readiness: the service accepts events',
  security: [],
  documented: {
    response: {
      200: {
        description: 'Ready.',
        headers: requestIdHeader,
        content: {
          'application/json': {
            schema: ref('Readiness'),
            examples: {
              embedded: { value: { status: 'ready' } },
              cluster: {
                value: {
                  status: 'ready',
                  nats: 'up',
                  postgres: 'up',
                  redis: 'not configured',
                  owns: ['demo/payments'],
                },
              },
            },
          },
        },
      },
      503: {
        description:
          'Not ready: starting, restoring state after a store error, or stopping; in the cluster runtime also `degraded` while NATS is unreachable.',
        headers: { ...requestIdHeader, ...retryAfterHeader },
        content: {
          'application/json': {
            schema: ref('Readiness'),
            examples: {
              embedded: { value: { status: 'recovering' } },
              cluster: { value: { status: 'degraded', nats: 'down', postgres: 'up', redis: 'up', owns: [] } },
            },
          },
        },
      },
    },
  },
};

const getOpenApi: RouteSchema = {
  operationId: 'getOpenApi',
  tags: ['operations'],
  summary: 'This document',
  security: [],
  documented: {
    response: {
      200: {
        description: 'The OpenAPI 3.1 document of this API.',
        headers: requestIdHeader,
        content: { 'application/json': { schema: { type: 'object' } } },
      },
    },
  },
};

const listPipelines: RouteSchema = {
  operationId: 'listPipelines',
  tags: ['pipelines'],
  summary: "The key's tenant, its pipelines and their counts",
  description:
    "What the dashboard at /ui polls. The counts are those of /metrics for this tenant, since this instance started (in the cluster runtime, this instance's only): read twice, their differences give events/s and the latency percentiles of the interval.",
  documented: {
    headers: requestHeaders(),
    response: {
      200: {
        description: "The tenant's pipelines, by name.",
        headers: requestIdHeader,
        content: {
          'application/json': {
            schema: ref('PipelineList'),
            example: {
              tenant: 'demo',
              pipelines: [
                {
                  name: 'payments',
                  windows: [
                    {
                      output: 'windows',
                      start_field: 'window_start',
                      group_by: ['type', 'region', 'currency'],
                    },
                  ],
                  records: { received: 12, accepted: 10, duplicates: 1, dead: 1 },
                  dead_by_reason: { invalid: 1 },
                  ingest_to_durable_seconds: {
                    buckets: [
                      { le: 0.001, count: 2 },
                      { le: 0.002, count: 3 },
                      { le: '+Inf', count: 3 },
                    ],
                    count: 3,
                    sum: 0.0031,
                  },
                },
              ],
            },
          },
        },
      },
      ...problems(401, 500),
    },
  },
};

const getDashboard: RouteSchema = {
  operationId: 'getDashboard',
  tags: ['operations'],
  summary: 'The dashboard: a web page of the pipelines',
  description:
    'A static page; it asks for an API key and sends it with each request it makes to the API (`GET /v1/pipelines`, window rows, dead letters), so it shows only that tenant.',
  security: [],
  documented: {
    response: {
      200: {
        description: 'The page, its script and style inline.',
        headers: requestIdHeader,
        content: { 'text/html; charset=utf-8': { schema: { type: 'string' } } },
      },
    },
  },
};

const tapPipeline: RouteSchema = {
  operationId: 'tapPipeline',
  tags: ['pipelines'],
  summary: 'Watch records leaving a step, live (`sluice tap`)',
  description:
    'An NDJSON stream: first `{"tap": {pipeline, step, limit, seconds}}`, then `{"step", "record"}` for records leaving the step in bodies processed from now on: up to 20 per body (a sample, copied as they left the step, before they are durable), until `limit` records or `seconds` have passed, or the client hangs up. A pipeline nobody taps pays nothing for it. In the cluster runtime any instance answers; the owner of the pipeline sends the copies over core NATS.',
  documented: {
    params: pipelineParams,
    querystring: {
      type: 'object',
      properties: {
        step: { type: 'string', description: "A step's id (default: the last step)." },
        limit: limit(100, 'Records to send at most.'),
        seconds: {
          type: 'number',
          exclusiveMinimum: 0,
          maximum: 3600,
          default: 60,
          description: 'Stop after this long.',
        },
      },
    },
    headers: requestHeaders(),
    response: {
      200: {
        description: 'Records as they leave the step, one JSON object a line.',
        headers: requestIdHeader,
        content: { 'application/x-ndjson': { schema: { type: 'string' } } },
      },
      ...problems(400, 401, 404),
    },
  },
};

/** The schema of every route, by its operationId. */
export const ROUTE_SCHEMAS = {
  ingestEvents,
  listWindows,
  listDeadLetters,
  replayDeadLetters,
  getMetrics,
  getHealth,
  getReadiness,
  getOpenApi,
  listPipelines,
  getDashboard,
  tapPipeline,
} satisfies Record<string, RouteSchema>;
