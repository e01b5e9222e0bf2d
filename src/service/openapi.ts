/**
 * The OpenAPI 3.1 description of the HTTP API, served at /openapi.json (docs/http-api.md is the
 * same API for people). Error answers are RFC 9457 problems whose `code` comes from the error
 * catalogue: the codes and their statuses are read from ERRORS, never copied, so a new request
 * error shows up here by itself. test/openapi.test.ts checks the document against a real server.
 */
import { readFileSync } from 'node:fs';
import { ERRORS, type ErrorCode, type ErrorSpec } from '../errors.ts';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
  license?: string;
};

const DOCS = 'https://github.com/sluice-dev/sluice/blob/main/docs';

type Json = Record<string, unknown>;

const ref = (kind: 'schemas' | 'parameters' | 'responses' | 'headers', name: string): Json => ({
  $ref: `#/components/${kind}/${name}`,
});

/** Every code the service can answer a request with (the catalogue's errors that have a status). */
function httpErrors(): [ErrorCode, number, string][] {
  return (Object.entries(ERRORS) as [ErrorCode, ErrorSpec][]).flatMap(([code, spec]) =>
    spec.status === undefined ? [] : [[code, spec.status, spec.title] as [ErrorCode, number, string]],
  );
}

/** Reusable error responses, one per status, named after the status. */
const STATUS_NAMES: Record<number, string> = {
  400: 'BadRequest',
  401: 'Unauthorized',
  404: 'NotFound',
  408: 'RequestTimeout',
  413: 'ContentTooLarge',
  415: 'UnsupportedMediaType',
  429: 'TooManyRequests',
  500: 'InternalError',
  503: 'ServiceUnavailable',
};

function responseName(status: number): string {
  return STATUS_NAMES[status] ?? `Status${status}`;
}

function problemResponses(): Json {
  const byStatus = new Map<number, [ErrorCode, string][]>();
  for (const [code, status, title] of httpErrors()) {
    const list = byStatus.get(status) ?? [];
    list.push([code, title]);
    byStatus.set(status, list);
  }
  const responses: Json = {};
  for (const [status, codes] of [...byStatus].sort((a, b) => a[0] - b[0])) {
    const retry = status === 429 || status === 503;
    responses[responseName(status)] = {
      description: codes.map(([code, title]) => `${code}: ${title}.`).join(' '),
      headers: {
        'x-request-id': ref('headers', 'RequestId'),
        ...(retry ? { 'retry-after': ref('headers', 'RetryAfter') } : {}),
      },
      content: {
        'application/problem+json': {
          schema: {
            allOf: [
              ref('schemas', 'Problem'),
              {
                type: 'object',
                properties: {
                  status: { const: status },
                  code: { enum: codes.map(([code]) => code) },
                },
              },
            ],
          },
        },
      },
    };
  }
  return responses;
}

/** The error answers an operation documents, by status. */
function errors(...statuses: number[]): Json {
  return Object.fromEntries(statuses.map((s) => [String(s), ref('responses', responseName(s))]));
}

const instant = (what: string): Json => ({
  type: 'string',
  description: `${what}: an RFC 3339 time (\`2026-11-21T10:00:00Z\`) or epoch milliseconds (\`1795255200000\`).`,
  examples: ['2026-11-21T10:00:00Z'],
});

const limit = (fallback: number): Json => ({
  type: 'integer',
  minimum: 1,
  maximum: 10000,
  default: fallback,
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

const dependency = (what: string): Json => ({
  type: 'string',
  enum: ['up', 'down'],
  description: `${what} (cluster runtime).`,
});

const schemas: Json = {
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
        enum: httpErrors().map(([code]) => code),
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
      index: { type: 'integer', minimum: 0, description: 'Position of the record in the body, from 0.' },
      reason: {
        type: 'string',
        description:
          'Dead-letter reason: parse, invalid, late, error, missing, too_large, or a reason of your own transform.',
      },
      detail: { type: 'string' },
      pointer: { type: 'string', description: 'JSON pointer to the offending field.' },
      records: {
        type: 'integer',
        minimum: 1,
        description: "With `dead_letters_per: line`: how many of the line's records failed.",
      },
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
      rejected: { type: 'array', items: ref('schemas', 'Rejection') },
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
    properties: {
      items: { type: 'array', items: ref('schemas', 'WindowRow') },
      next_cursor: {
        type: ['string', 'null'],
        description: 'Pass as `cursor` for the next page; null on the last page.',
      },
    },
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
      records: {
        type: 'integer',
        minimum: 1,
        description: "With `dead_letters_per: line`: how many of the line's records failed.",
      },
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
    properties: {
      items: { type: 'array', items: ref('schemas', 'DeadLetter') },
      next_cursor: {
        type: ['string', 'null'],
        description: 'Pass as `cursor` for the next page; null on the last page.',
      },
    },
  },
  ReplayRequest: {
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
      to: { type: ['string', 'integer'], description: 'Received before: RFC 3339 or epoch milliseconds.' },
      limit: { ...limit(1000), description: 'At most this many dead letters.' },
    },
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
            records: { type: 'integer', minimum: 1 },
          },
        },
      },
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

const parameters: Json = {
  Pipeline: {
    name: 'pipeline',
    in: 'path',
    required: true,
    description: "The pipeline's name under the tenant in the service config.",
    schema: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$' },
  },
  Cursor: {
    name: 'cursor',
    in: 'query',
    description: '`next_cursor` of the previous page.',
    schema: { type: 'string' },
  },
  RequestId: {
    name: 'x-request-id',
    in: 'header',
    description:
      'Your own id for the request; otherwise the service makes one. Answers, problems, dead letters and log lines carry it.',
    schema: { type: 'string' },
  },
};

const requestIdHeader = { 'x-request-id': ref('headers', 'RequestId') };

const ingestExample = {
  id: 'evt_01HZX3K4M5N6P7Q8R9S0T1V2W3',
  type: 'payment.captured',
  ts: '2026-11-21T10:00:00Z',
  user: { id: 'usr_000042', country: 'de' },
  amount: '12.50',
  currency: 'EUR',
};

const paths: Json = {
  '/v1/pipelines/{pipeline}/events': {
    post: {
      operationId: 'ingestEvents',
      tags: ['events'],
      summary: 'Send events to a pipeline',
      description:
        'The body is one JSON object, a JSON array of objects, or NDJSON (one object per line), optionally gzip (`Content-Encoding: gzip`); `limits.body_bytes` applies before and after decompression. Each record is processed on its own: a bad one becomes a dead letter, the rest goes on. In the embedded runtime, the answer lists the bad ones in `rejected`, a 202 is sent only once the body and everything it produced are durable in the store, and with `Idempotency-Key` a retry gets the first answer instead of being processed again. In the cluster runtime, the 202 (`QueuedAnswer`) is sent once NATS JetStream has stored the request; the records are processed later, and those that fail become dead letters.',
      parameters: [
        ref('parameters', 'Pipeline'),
        {
          name: 'Content-Encoding',
          in: 'header',
          description: '`gzip` (or `x-gzip`) for a gzip body.',
          schema: { type: 'string', enum: ['gzip', 'x-gzip', 'identity'] },
        },
        {
          name: 'Idempotency-Key',
          in: 'header',
          description:
            'Your id for this batch of events (a UUID, say). A request with a key already answered with a 202 for this pipeline (within `idempotency.retention`, 24 h by default) is not processed again: it gets that answer, with `idempotent-replayed: true`. The body is not compared. In the cluster runtime, a retry within `runtime.nats.duplicate_window` (2 min by default) is not stored again, and its 202 has `idempotent-replayed: true`.',
          schema: { type: 'string', minLength: 1, maxLength: 255, pattern: '^[!-~]+$' },
        },
        ref('parameters', 'RequestId'),
      ],
      requestBody: {
        required: true,
        description:
          'Also accepted: any `application/*+json` type as JSON, and `application/jsonl`, `application/jsonlines`, `application/x-jsonlines` as NDJSON.',
        content: {
          'application/json': {
            schema: {
              oneOf: [ref('schemas', 'Event'), { type: 'array', items: ref('schemas', 'Event') }],
            },
            examples: {
              one: { value: ingestExample },
              array: { value: [ingestExample, { ...ingestExample, id: 'evt_01HZX3K4M5N6P7Q8R9S0T1V2W4' }] },
            },
          },
          'application/x-ndjson': {
            schema: { type: 'string', description: 'One JSON object per line.' },
            example: `${JSON.stringify(ingestExample)}\n`,
          },
          'application/ndjson': {
            schema: { type: 'string', description: 'One JSON object per line.' },
          },
        },
      },
      responses: {
        '202': {
          description:
            'Embedded runtime (`IngestAnswer`): every record was processed and the outcome is durable: accepted, dropped as a duplicate, or a dead letter listed in `rejected`. Cluster runtime (`QueuedAnswer`): the request is stored on the stream and its records are queued.',
          headers: {
            ...requestIdHeader,
            'idempotent-replayed': {
              description:
                '`true` when an earlier request to this pipeline had the same Idempotency-Key: in the embedded runtime this is its stored answer; in the cluster runtime the request was already on the stream and was not stored again.',
              schema: { type: 'string', const: 'true' },
            },
          },
          content: {
            'application/json': {
              schema: { oneOf: [ref('schemas', 'IngestAnswer'), ref('schemas', 'QueuedAnswer')] },
              examples: {
                embedded: {
                  value: {
                    accepted: 1,
                    duplicates: 0,
                    rejected: [
                      {
                        index: 1,
                        reason: 'invalid',
                        detail: 'missing required field /type',
                        pointer: '/type',
                      },
                    ],
                  },
                },
                cluster: { value: { queued: 2 } },
              },
            },
          },
        },
        ...errors(400, 401, 404, 408, 413, 415, 429, 500, 503),
      },
    },
  },
  '/v1/pipelines/{pipeline}/windows': {
    get: {
      operationId: 'listWindows',
      tags: ['results'],
      summary: "Query a window step's rows",
      description:
        "Closed rows (final, from the store) and open rows (state so far), ordered by window start then group key. In the cluster runtime rows come from PostgreSQL, and an open row is its window's state when the pipeline's owner last caught up with the stream or checkpointed; 503 while PostgreSQL is unreachable. Query parameters other than the ones below filter on the window's `group_by` fields (`?currency=EUR&region=EU`); any other name is a 400.",
      parameters: [
        ref('parameters', 'Pipeline'),
        {
          name: 'output',
          in: 'query',
          description: "The window step's output name, when the pipeline has several (default: the first).",
          schema: { type: 'string' },
        },
        {
          name: 'from',
          in: 'query',
          description: 'Windows starting at or after this.',
          schema: instant('from'),
        },
        { name: 'to', in: 'query', description: 'Windows starting before this.', schema: instant('to') },
        { name: 'limit', in: 'query', description: 'Rows per page.', schema: limit(100) },
        ref('parameters', 'Cursor'),
        {
          name: 'group_by',
          in: 'query',
          description: 'Filters: a `group_by` field of the window = its value (as text).',
          style: 'form',
          explode: true,
          schema: { type: 'object', additionalProperties: { type: 'string' } },
        },
        ref('parameters', 'RequestId'),
      ],
      responses: {
        '200': {
          description: 'A page of rows.',
          headers: requestIdHeader,
          content: { 'application/json': { schema: ref('schemas', 'WindowPage') } },
        },
        ...errors(400, 401, 404, 500, 503),
      },
    },
  },
  '/v1/pipelines/{pipeline}/dead-letters': {
    get: {
      operationId: 'listDeadLetters',
      tags: ['dead letters'],
      summary: 'Query dead letters',
      description:
        'Oldest first. Any other query parameter is a 400. In the cluster runtime, 503 while PostgreSQL is unreachable.',
      parameters: [
        ref('parameters', 'Pipeline'),
        { name: 'reason', in: 'query', description: 'Only this reason.', schema: { type: 'string' } },
        { name: 'from', in: 'query', description: 'Received at or after this.', schema: instant('from') },
        { name: 'to', in: 'query', description: 'Received before this.', schema: instant('to') },
        { name: 'limit', in: 'query', description: 'Dead letters per page.', schema: limit(100) },
        ref('parameters', 'Cursor'),
        ref('parameters', 'RequestId'),
      ],
      responses: {
        '200': {
          description: 'A page of dead letters.',
          headers: requestIdHeader,
          content: { 'application/json': { schema: ref('schemas', 'DeadLetterPage') } },
        },
        ...errors(400, 401, 404, 500, 503),
      },
    },
  },
  '/v1/pipelines/{pipeline}/dead-letters/replay': {
    post: {
      operationId: 'replayDeadLetters',
      tags: ['dead letters'],
      summary: 'Run dead letters again through the current pipeline',
      description:
        'Each chosen dead letter is processed again as if just received, exactly like ingested events, in one durable step: the replayed ones leave the dead-letter store, and those that fail again become new dead letters. In the embedded runtime the answer (`ReplayAnswer`) comes once that is durable. In the cluster runtime (`QueuedReplayAnswer`) it comes once the records are stored on the stream as one message; the owner processes them later and deletes the replayed dead letters in the same transaction.',
      parameters: [ref('parameters', 'Pipeline'), ref('parameters', 'RequestId')],
      requestBody: {
        required: false,
        content: {
          'application/json': {
            schema: ref('schemas', 'ReplayRequest'),
            example: { reason: 'invalid', from: '2026-11-21T00:00:00Z', limit: 500 },
          },
        },
      },
      responses: {
        '200': {
          description: 'What the replay did (embedded runtime) or queued (cluster runtime).',
          headers: requestIdHeader,
          content: {
            'application/json': {
              schema: { oneOf: [ref('schemas', 'ReplayAnswer'), ref('schemas', 'QueuedReplayAnswer')] },
            },
          },
        },
        ...errors(400, 401, 404, 408, 413, 500, 503),
      },
    },
  },
  '/metrics': {
    get: {
      operationId: 'getMetrics',
      tags: ['operations'],
      summary: 'Prometheus metrics',
      description: 'Every metric is described in docs/operations.md.',
      security: [],
      responses: {
        '200': {
          description: 'The Prometheus text exposition format.',
          content: { 'text/plain; version=0.0.4; charset=utf-8': { schema: { type: 'string' } } },
        },
      },
    },
  },
  '/healthz': {
    get: {
      operationId: 'getHealth',
      tags: ['operations'],
      summary: 'Liveness: the process answers',
      security: [],
      responses: {
        '200': {
          description: 'The process is up.',
          content: {
            'application/json': { schema: ref('schemas', 'Status'), example: { status: 'ok' } },
          },
        },
      },
    },
  },
  '/readyz': {
    get: {
      operationId: 'getReadiness',
      tags: ['operations'],
      summary: 'Readiness: the service accepts events',
      security: [],
      responses: {
        '200': {
          description: 'Ready.',
          content: {
            'application/json': {
              schema: ref('schemas', 'Readiness'),
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
        '503': {
          description:
            'Not ready: starting, restoring state after a store error, or stopping; in the cluster runtime also `degraded` while NATS is unreachable.',
          headers: { 'retry-after': ref('headers', 'RetryAfter') },
          content: {
            'application/json': {
              schema: ref('schemas', 'Readiness'),
              examples: {
                embedded: { value: { status: 'recovering' } },
                cluster: {
                  value: { status: 'degraded', nats: 'down', postgres: 'up', redis: 'up', owns: [] },
                },
              },
            },
          },
        },
      },
    },
  },
  '/openapi.json': {
    get: {
      operationId: 'getOpenApi',
      tags: ['operations'],
      summary: 'This document',
      security: [],
      responses: {
        '200': {
          description: 'The OpenAPI 3.1 document of this API.',
          content: { 'application/json': { schema: { type: 'object' } } },
        },
      },
    },
  },
};

function build(): Json {
  return {
    openapi: '3.1.0',
    info: {
      title: 'sluice',
      version: pkg.version,
      summary: 'Multi-tenant HTTP ingestion and queries of `sluice serve`.',
      description: `Producers POST events to a tenant's pipelines with an API key; results (window rows) and dead letters are queried and replayed over the same API. Errors are RFC 9457 problem documents (\`application/problem+json\`) with a stable \`code\`. Guide: ${DOCS}/http-api.md`,
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
    },
    externalDocs: { description: 'The HTTP API guide', url: `${DOCS}/http-api.md` },
    tags: [
      { name: 'events', description: 'Sending events.' },
      { name: 'results', description: 'Window rows.' },
      { name: 'dead letters', description: 'Records that failed, and replay.' },
      { name: 'operations', description: 'Metrics, health, this document. No key needed.' },
    ],
    security: [{ apiKey: [] }],
    paths,
    components: {
      securitySchemes: {
        apiKey: {
          type: 'http',
          scheme: 'bearer',
          description:
            "`Authorization: Bearer <key>` with one of the tenant's API keys. The key decides the tenant; a tenant sees only its own pipelines.",
        },
      },
      schemas,
      parameters,
      headers: {
        RequestId: {
          description: 'The request id (yours from `x-request-id`, or one the service made).',
          schema: { type: 'string' },
        },
        RetryAfter: {
          description:
            'Seconds to wait before retrying. Absent on a 429 whose request is larger than the whole burst: split it instead.',
          schema: { type: 'integer', minimum: 1 },
        },
      },
      responses: problemResponses(),
    },
  };
}

let document: Json | undefined;

/** The OpenAPI 3.1 description of the HTTP API, served at /openapi.json. */
export function openApiDocument(): Record<string, unknown> {
  document ??= build();
  return document;
}
