/**
 * The HTTP API of `sluice serve` on Fastify (docs/http-api.md, /openapi.json). Every error is an
 * RFC 9457 problem document carrying the catalogue's code; bodies are read as raw bytes and
 * decoded by the http source, so a bad record never fails the whole request.
 */
import { PassThrough } from 'node:stream';
import { randomUUID } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import httpProxy from '@fastify/http-proxy';
import swagger from '@fastify/swagger';
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import { ERRORS, SluiceError, type ErrorCode } from '../errors.ts';
import { bodyFormat, inflate, jsonBounds, recordCount } from '../sources/http/index.ts';
import type { PipelineHandle, ServiceHandle, TenantHandle } from './api.ts';
import { openApiOptions } from './openapi.ts';
import { ROUTE_SCHEMAS as schemas } from './route-schemas.ts';
import { dashboardRoutes } from './ui/routes.ts';

const DOCS = 'https://github.com/sluice-dev/sluice/blob/main/docs/errors.md';

declare module 'fastify' {
  interface FastifyRequest {
    tenant?: TenantHandle;
    startedAt: number;
    /** Gives back the request's share of limits.in_flight_bytes. */
    release?: () => void;
  }
}

interface PipelineParams {
  pipeline: string;
}

function problem(reply: FastifyReply, err: SluiceError, extra: Record<string, unknown> = {}): FastifyReply {
  const spec = ERRORS[err.code] as { status?: number; title: string };
  const status = spec.status ?? 500;
  return reply
    .code(status)
    .type('application/problem+json')
    .send({
      type: `${DOCS}#${err.code.toLowerCase()}`,
      title: spec.title,
      status,
      detail: err.message,
      code: err.code,
      hint: err.hint,
      instance: reply.request.url,
      request_id: reply.request.id,
      ...extra,
    });
}

/**
 * Requests Node cannot parse (a bad chunk size, Content-Length beside Transfer-Encoding, headers
 * over 16 KiB, a request that took longer than requestTimeout) never reach a route: they get a
 * problem document here too, not Fastify's `{"error":"Bad Request"}`, and the connection closes.
 */
function clientError(service: ServiceHandle, err: Error & { code?: string }, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || !socket.writable) {
    socket.destroy();
    return;
  }
  // The connection ended in the middle of a request: a client that hung up, not a bad request.
  if (err.code === 'HPE_INVALID_EOF_STATE') {
    socket.destroy();
    // The rest of a body that was refused before it was read (a 401, a 503 at admission): that
    // request was answered and counted already.
    if (answeredEarly.has(socket)) return;
    service.metrics.rejectedRequests.inc({ tenant: '', code: 'SLUICE_ERR_CLIENT_ABORTED' });
    service.log.info({ code: 'SLUICE_ERR_CLIENT_ABORTED' }, 'the client closed the connection mid-request');
    return;
  }
  const code: ErrorCode =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? 'SLUICE_ERR_HEADERS_TOO_LARGE'
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? 'SLUICE_ERR_BODY_TIMEOUT'
        : 'SLUICE_ERR_BAD_REQUEST';
  const spec = ERRORS[code] as { status: number; title: string; hint: string };
  const detail =
    code === 'SLUICE_ERR_BODY_TIMEOUT'
      ? 'the request did not arrive within 30 s'
      : `the request is not valid HTTP/1.1: ${err.message}`;
  const body = JSON.stringify({
    type: `${DOCS}#${code.toLowerCase()}`,
    title: spec.title,
    status: spec.status,
    detail,
    code,
    hint: spec.hint,
  });
  service.metrics.rejectedRequests.inc({ tenant: '', code });
  socket.end(
    `HTTP/1.1 ${spec.status} ${STATUS_CODES[spec.status]}\r\nContent-Type: application/problem+json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

/**
 * Connections whose last request was answered before its body had all arrived; Node reads (and
 * drops) the rest, so a hang-up there ends a request that already has its answer and its count.
 */
const answeredEarly = new WeakSet<object>();

/** Fastify's own errors, in the catalogue's terms. */
function fromFastify(err: Error & { code?: string; statusCode?: number }): SluiceError {
  if (err instanceof SluiceError) return err;
  const as = (code: ErrorCode, message = err.message): SluiceError => new SluiceError(code, message);
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return as('SLUICE_ERR_BODY_TOO_LARGE', 'the body is larger than limits.body_bytes');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return as('SLUICE_ERR_UNSUPPORTED_MEDIA_TYPE');
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return as('SLUICE_ERR_BODY_MALFORMED');
  }
  // The upstream pass-through (@fastify/reply-from): the legacy service did not answer.
  if (err.code?.startsWith('FST_REPLY_FROM_') || err.code?.startsWith('UND_ERR_'))
    return as('SLUICE_ERR_UPSTREAM', `the upstream did not answer: ${err.message}`);
  if (err.statusCode === 400) return as('SLUICE_ERR_BAD_REQUEST');
  if (err.statusCode === 413) return as('SLUICE_ERR_BODY_TOO_LARGE');
  if (err.statusCode === 415) return as('SLUICE_ERR_UNSUPPORTED_MEDIA_TYPE');
  if (err.statusCode === 503) return as('SLUICE_ERR_SHUTTING_DOWN');
  return new SluiceError('SLUICE_ERR_INTERNAL', 'the request failed inside the service', { cause: err });
}

/** An instant as epoch ms, from an RFC 3339 time or a number of milliseconds. */
function instant(name: string, v: unknown): number | undefined {
  if (v === undefined || v === '') return undefined;
  const s = String(v);
  const ms = /^-?\d+$/.test(s) ? Number(s) : Date.parse(s);
  if (!Number.isFinite(ms))
    throw new SluiceError(
      'SLUICE_ERR_BAD_REQUEST',
      `${name}=${JSON.stringify(s)} is not an RFC 3339 time or epoch milliseconds`,
    );
  return ms;
}

function limitOf(v: unknown, fallback: number, max: number): number {
  if (v === undefined || v === '') return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > max)
    throw new SluiceError('SLUICE_ERR_BAD_REQUEST', `limit must be an integer from 1 to ${max}`);
  return n;
}

function encodeCursor(v: unknown): string {
  return Buffer.from(JSON.stringify(v)).toString('base64url');
}

function decodeCursor(v: unknown): unknown {
  if (v === undefined || v === '') return undefined;
  try {
    return JSON.parse(Buffer.from(String(v), 'base64url').toString('utf8')) as unknown;
  } catch {
    throw new SluiceError('SLUICE_ERR_BAD_REQUEST', 'cursor is not one this API returned');
  }
}

/** Bytes read past the limit before giving up on a body (then the connection is cut). */
const DRAIN_MAX = 64 * 1024 * 1024;

/**
 * Reads a body up to `limit` bytes. A longer one is read to its end and discarded (up to
 * DRAIN_MAX more), so that its client, still uploading, receives the 413: closing the socket
 * early, as Fastify's own limit does, leaves most clients with EPIPE instead of an answer.
 */
function readBody(
  payload: NodeJS.ReadableStream,
  limit: number,
  done: (err: Error | null, body?: Buffer) => void,
): void {
  const chunks: Buffer[] = [];
  let size = 0;
  let finished = false;
  // Node's own requestTimeout did not cut a body that stalled once its headers were in (measured:
  // still open after 45 s with requestTimeout 30 s), so the deadline is kept here.
  const deadline = setTimeout(
    () =>
      finish(
        new SluiceError(
          'SLUICE_ERR_BODY_TIMEOUT',
          `the body did not arrive within ${BODY_DEADLINE_MS / 1000} s (${size} bytes came)`,
        ),
      ),
    BODY_DEADLINE_MS,
  );
  const finish = (err: Error | null, body?: Buffer): void => {
    if (finished) return;
    finished = true;
    clearTimeout(deadline);
    done(err, body);
  };
  payload.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size <= limit) chunks.push(chunk);
    else if (chunks.length > 0) chunks.length = 0;
    if (size > limit + DRAIN_MAX) {
      finish(
        new SluiceError('SLUICE_ERR_BODY_TOO_LARGE', `the body is larger than limits.body_bytes (${limit})`),
      );
      (payload as NodeJS.ReadableStream & { destroy(): void }).destroy();
    }
  });
  payload.on('end', () => {
    if (size > limit)
      finish(
        new SluiceError('SLUICE_ERR_BODY_TOO_LARGE', `the body is larger than limits.body_bytes (${limit})`),
      );
    else finish(null, Buffer.concat(chunks, size));
  });
  payload.on('error', (err: Error & { code?: string }) =>
    finish(
      // Node's word for a client that hung up mid-body: not a failure of the service.
      err.code === 'ECONNRESET' || err.message === 'aborted'
        ? new SluiceError(
            'SLUICE_ERR_CLIENT_ABORTED',
            `the client closed the connection after ${size} bytes of the body`,
          )
        : err,
    ),
  );
}

/** A request body must have arrived this long after it started (docs/operations.md). */
const BODY_DEADLINE_MS = 30_000;

/** The Idempotency-Key header: 1 to 255 visible ASCII characters, or none. */
function idempotencyKeyOf(req: FastifyRequest): string | undefined {
  const v = req.headers['idempotency-key'];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !/^[\x21-\x7e]{1,255}$/.test(v))
    throw new SluiceError(
      'SLUICE_ERR_BAD_REQUEST',
      'Idempotency-Key must be 1 to 255 visible ASCII characters, sent once',
    );
  return v;
}

export function buildApp(service: ServiceHandle): FastifyInstance {
  const { limits } = service.config;
  const app = Fastify({
    loggerInstance: service.log as FastifyBaseLogger,
    // Two log lines per request would cost more than the request; errors are logged below.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: limits.bodyBytes,
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
    // While draining, the routes answer 503 problem documents themselves (with Retry-After).
    return503OnClosing: false,
    // A client that trickles its headers cannot hold a request (or a shutdown) open for long; its
    // body has a deadline of its own (readBody). Node checks every connectionsCheckingInterval
    // (30 s by default, so up to 60 s went by): once a second.
    requestTimeout: 30_000,
    http: { connectionsCheckingInterval: 1_000 },
    forceCloseConnections: 'idle',
    clientErrorHandler: (err, socket) => clientError(service, err, socket),
  });

  // Bodies stay raw bytes: the http source decodes them (and decides what is malformed).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req, payload, done) => readBody(payload, limits.bodyBytes, done));

  app.decorateRequest('tenant', undefined);
  app.decorateRequest('startedAt', 0);
  app.decorateRequest('release', undefined);
  app.addHook('onRequest', async (req, reply) => {
    req.startedAt = performance.now();
    reply.header('x-request-id', req.id);
  });
  // While draining, every answer closes its connection, so kept-alive clients let go.
  app.addHook('onSend', async (_req, reply) => {
    if (service.state === 'draining') reply.header('connection', 'close');
  });
  app.addHook('onResponse', async (req, reply) => {
    if (!req.raw.complete) answeredEarly.add(req.raw.socket);
    else answeredEarly.delete(req.raw.socket);
    service.metrics.requests.observe(
      { method: req.method, route: req.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) },
      (performance.now() - req.startedAt) / 1000,
    );
  });

  app.setErrorHandler((error, req, reply) => {
    const err = fromFastify(error as Error & { code?: string; statusCode?: number });
    const status = (ERRORS[err.code] as { status?: number }).status ?? 500;
    // Load shedding and draining are expected answers, not failures worth a stack trace.
    if (err.code === 'SLUICE_ERR_CLIENT_ABORTED')
      req.log.info({ code: err.code, reqId: req.id }, err.message);
    else if (status >= 500 && status !== 503 && err.code !== 'SLUICE_ERR_UPSTREAM')
      req.log.error({ err: error, reqId: req.id }, err.message);
    // Shedding answers many requests a second exactly when CPU is short: counted, not logged.
    else if ((status === 503 && err.code !== 'SLUICE_ERR_OVERLOADED') || err.code === 'SLUICE_ERR_UPSTREAM')
      req.log.warn({ code: err.code, reqId: req.id }, err.message);
    else req.log.debug({ code: err.code, reqId: req.id }, err.message);
    service.metrics.rejectedRequests.inc({ tenant: req.tenant?.config.id ?? '', code: err.code });
    // The rest of a late body is not waited for: the connection goes with the answer.
    if (err.code === 'SLUICE_ERR_BODY_TIMEOUT') reply.header('connection', 'close');
    if (
      err.code === 'SLUICE_ERR_OVERLOADED' ||
      err.code === 'SLUICE_ERR_TENANT_OVERLOADED' ||
      err.code === 'SLUICE_ERR_SHUTTING_DOWN' ||
      err.code === 'SLUICE_ERR_STORE' ||
      err.code === 'SLUICE_ERR_UNAVAILABLE'
    )
      reply.header('retry-after', '1');
    return problem(reply, err);
  });
  app.setNotFoundHandler((req, reply) => {
    service.metrics.rejectedRequests.inc({ tenant: '', code: 'SLUICE_ERR_NOT_FOUND' });
    return problem(
      reply,
      new SluiceError('SLUICE_ERR_NOT_FOUND', `no route ${req.method} ${req.url.split('?')[0]}`),
    );
  });

  app.register(swagger, openApiOptions);
  // @fastify/swagger documents the routes added once it has loaded: they come in a plugin after it.
  app.register(async (api) => routes(api, service));
  const { upstream } = service.config;
  // Every request to a route sluice does not serve goes to the legacy service as it came: method,
  // path, query, headers and the body, streamed (the plugin's own body parser, in its scope only),
  // and its answer comes back as it was, status included. sluice's routes are more specific than
  // the proxy's `/*`, so they always win (docs/service.md, "In front of an existing service").
  if (upstream)
    app.register(httpProxy, {
      upstream: upstream.url,
      prefix: '/',
      websocket: false,
      httpMethods: ['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS'],
    });
  return app;
}

/**
 * The routes of the API. Their schemas only document them (route-schemas.ts): Fastify validates
 * and serializes nothing with them, so checks and answers are the handlers' own.
 */
function routes(app: FastifyInstance, service: ServiceHandle): void {
  const { limits } = service.config;
  const tenantOf = (req: FastifyRequest): TenantHandle => {
    const tenant = service.authenticate(req.headers.authorization);
    if (!tenant)
      throw new SluiceError(
        'SLUICE_ERR_UNAUTHORIZED',
        req.headers.authorization ? 'the API key is not valid' : 'no Authorization: Bearer header',
      );
    req.tenant = tenant;
    return tenant;
  };
  const pipelineOf = (req: FastifyRequest): PipelineHandle => {
    const tenant = tenantOf(req);
    const name = (req.params as PipelineParams).pipeline;
    const runtime = tenant.pipelines.get(name);
    // The same answer whether the pipeline does not exist or belongs to another tenant.
    if (!runtime) throw new SluiceError('SLUICE_ERR_NOT_FOUND', `no pipeline ${JSON.stringify(name)}`);
    return runtime;
  };

  app.get('/healthz', { schema: schemas.getHealth }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: schemas.getReadiness }, async (_req, reply) => {
    const { ready, body } = await service.readiness();
    if (ready) return body;
    return reply.code(503).header('retry-after', '1').send(body);
  });
  app.get('/metrics', { schema: schemas.getMetrics }, async (_req, reply) => {
    reply.type(service.metrics.registry.contentType);
    return service.metricsText();
  });
  app.get('/openapi.json', { schema: schemas.getOpenApi }, async () => app.swagger());
  dashboardRoutes(app, service, tenantOf);

  /**
   * Before the body is read: authenticates and finds the pipeline (401 and 404 cost nothing of the
   * budgets), refuses when the service or the tenant's share of it is full, or stopping; otherwise
   * counts the body against limits.in_flight_bytes from now until the answer, so bodies being
   * uploaded are bounded too. A body without Content-Length counts as the largest allowed.
   */
  const admitIngest = async (req: FastifyRequest): Promise<void> => {
    // The handler looks the pipeline up again once the body is in: a reload meanwhile may have
    // replaced it (or revoked the key), and the live one is what must take the request.
    pipelineOf(req);
    const tenant = req.tenant!.config.id;
    const length = Number(req.headers['content-length']);
    const declared =
      Number.isFinite(length) && length >= 0 ? Math.min(length, limits.bodyBytes) : limits.bodyBytes;
    const refusal = service.admit(declared, tenant);
    if (refusal) throw refusal;
    req.release = service.track(declared, tenant);
  };
  const release = async (req: FastifyRequest): Promise<void> => req.release?.();
  app.addHook('onResponse', release);
  app.addHook('onRequestAbort', release);

  app.post<{ Params: PipelineParams }>(
    '/v1/pipelines/:pipeline/events',
    { onRequest: admitIngest, schema: schemas.ingestEvents },
    async (req, reply) => {
      const runtime = pipelineOf(req);
      const raw = (req.body as Buffer | undefined) ?? Buffer.alloc(0);
      const idempotencyKey = idempotencyKeyOf(req);
      {
        const format = bodyFormat(req.headers['content-type']);
        if (!format)
          throw new SluiceError(
            'SLUICE_ERR_UNSUPPORTED_MEDIA_TYPE',
            `Content-Type ${JSON.stringify(req.headers['content-type'] ?? '')} is not application/json or application/x-ndjson`,
          );
        const encoding = String(req.headers['content-encoding'] ?? 'identity').toLowerCase();
        if (encoding !== 'identity' && encoding !== 'gzip' && encoding !== 'x-gzip')
          throw new SluiceError(
            'SLUICE_ERR_UNSUPPORTED_MEDIA_TYPE',
            `Content-Encoding ${encoding} is not gzip`,
          );
        const gzip = encoding !== 'identity';
        const body = gzip ? await inflate(raw, limits.bodyBytes) : raw;
        // No bytes at all is a client's mistake in either format (an empty NDJSON body was a 202).
        // A blank line is a record, a `parse` dead letter, as in a file: the workload has them.
        if (format === 'ndjson' && body.length === 0)
          throw new SluiceError('SLUICE_ERR_BODY_MALFORMED', 'the body is empty');
        const bounds = format === 'json' ? await jsonBounds(body) : null;
        const records = recordCount(body, bounds);
        // Bounded before any record is parsed: what a body costs grows with its records, not only
        // its bytes (3 MB of `[{},{},…]` took 25 s and 2.7 GB to process and answer).
        if (records > limits.bodyRecords)
          throw new SluiceError(
            'SLUICE_ERR_TOO_MANY_RECORDS',
            `the body holds ${records} records, more than limits.body_records (${limits.bodyRecords})`,
          );
        // A reload may have swapped the tenant and its pipelines while the body was decoded:
        // ingest into the live ones, never into a replaced pipeline whose state was handed over.
        const tenant = service.tenant(req.tenant!.config.id);
        const current = tenant?.pipelines.get(runtime.spec.name);
        if (!tenant || !current)
          throw new SluiceError('SLUICE_ERR_NOT_FOUND', `no pipeline ${JSON.stringify(runtime.spec.name)}`);
        // From here to ingest nothing awaits: two retries of one request cannot both get through.
        if (idempotencyKey !== undefined) {
          const prior = current.answered(idempotencyKey);
          if (prior) {
            const answer = await prior;
            return reply.code(202).header('idempotent-replayed', 'true').send(answer);
          }
        }
        const taken = tenant.limiter.take(records, body.length);
        // Awaited only when the limiter is remote (Redis): a local verdict keeps this path
        // synchronous, which the idempotency check above relies on.
        const verdict = taken instanceof Promise ? await taken : taken;
        if (verdict.decidedBy === 'unavailable')
          throw new SluiceError(
            'SLUICE_ERR_UNAVAILABLE',
            'the shared rate limits (Redis) are unreachable and runtime.redis.on_error is reject',
          );
        if (!verdict.ok) {
          if (verdict.tooBig)
            throw new SluiceError(
              'SLUICE_ERR_RATE_LIMITED',
              `the request holds more ${verdict.limit} than the tenant's whole burst allows; split it`,
              { hint: 'Send smaller requests; the burst is the rate times limits.burst.' },
            );
          reply.header('retry-after', String(verdict.retryAfter));
          throw new SluiceError(
            'SLUICE_ERR_RATE_LIMITED',
            `tenant ${tenant.config.id} is over its ${verdict.limit} rate; retry in ${verdict.retryAfter} s`,
          );
        }
        const readAt = performance.now();
        const { answer, replayed } = await current.ingest(
          { raw, gzip, body, bounds, format },
          { requestId: req.id, receivedMs: Date.now(), idempotencyKey },
        );
        service.metrics.ingestToDurable.observe(
          { tenant: tenant.config.id, pipeline: runtime.spec.name },
          (performance.now() - readAt) / 1000,
        );
        if (replayed) reply.header('idempotent-replayed', 'true');
        return reply.code(202).send(answer);
      }
    },
  );

  app.get<{ Params: PipelineParams; Querystring: Record<string, string> }>(
    '/v1/pipelines/:pipeline/windows',
    { schema: schemas.listWindows },
    async (req) => {
      const runtime = pipelineOf(req);
      const { from, to, limit, cursor, output, ...filters } = req.query;
      const w =
        output === undefined ? runtime.windowed[0] : runtime.windowed.find((x) => x.output === output);
      if (!w)
        throw new SluiceError(
          runtime.windowed.length === 0 ? 'SLUICE_ERR_NOT_FOUND' : 'SLUICE_ERR_BAD_REQUEST',
          runtime.windowed.length === 0
            ? `pipeline ${runtime.spec.name} has no window step`
            : `output=${JSON.stringify(output)} is not a window output; this pipeline has ${runtime.windowed.map((x) => x.output).join(', ')}`,
        );
      for (const key of Object.keys(filters))
        if (!w.keys.includes(key))
          throw new SluiceError(
            'SLUICE_ERR_BAD_REQUEST',
            `unknown parameter ${JSON.stringify(key)}; filters are the window's group_by fields: ${w.keys.join(', ') || '(none)'}`,
          );
      const after = decodeCursor(cursor) as [number, string] | undefined;
      if (
        after !== undefined &&
        !(Array.isArray(after) && typeof after[0] === 'number' && typeof after[1] === 'string')
      )
        throw new SluiceError('SLUICE_ERR_BAD_REQUEST', 'cursor is not one this API returned');
      const page = await runtime.windows({
        output: w,
        fromMs: instant('from', from),
        toMs: instant('to', to),
        keys: filters,
        limit: limitOf(limit, 100, 10_000),
        after,
      });
      return { items: page.items, next_cursor: page.next ? encodeCursor(page.next) : null };
    },
  );

  app.get<{ Params: PipelineParams; Querystring: Record<string, string> }>(
    '/v1/pipelines/:pipeline/dead-letters',
    { schema: schemas.listDeadLetters },
    async (req) => {
      const runtime = pipelineOf(req);
      const { reason, from, to, limit, cursor, ...rest } = req.query;
      const unknown = Object.keys(rest);
      if (unknown.length > 0)
        throw new SluiceError(
          'SLUICE_ERR_BAD_REQUEST',
          `unknown parameter ${JSON.stringify(unknown[0])}; use reason, from, to, limit, cursor`,
        );
      const after = decodeCursor(cursor) ?? 0;
      if (typeof after !== 'number')
        throw new SluiceError('SLUICE_ERR_BAD_REQUEST', 'cursor is not one this API returned');
      const page = await runtime.deadLetters({
        reason: reason || undefined,
        fromMs: instant('from', from),
        toMs: instant('to', to),
        limit: limitOf(limit, 100, 10_000),
        after,
      });
      return { items: page.items, next_cursor: page.next !== undefined ? encodeCursor(page.next) : null };
    },
  );

  app.get<{ Params: PipelineParams; Querystring: Record<string, string> }>(
    '/v1/pipelines/:pipeline/tap',
    { schema: schemas.tapPipeline },
    async (req, reply) => {
      const runtime = pipelineOf(req);
      const { step, limit, seconds, ...rest } = req.query;
      const unknown = Object.keys(rest);
      if (unknown.length > 0)
        throw new SluiceError(
          'SLUICE_ERR_BAD_REQUEST',
          `unknown parameter ${JSON.stringify(unknown[0])}; use step, limit, seconds`,
        );
      const max = limitOf(limit, 100, 10_000);
      const secs = seconds === undefined || seconds === '' ? 60 : Number(seconds);
      if (!Number.isFinite(secs) || secs <= 0 || secs > 3600)
        throw new SluiceError(
          'SLUICE_ERR_BAD_REQUEST',
          `seconds ${JSON.stringify(seconds)} is not between 0 and 3600`,
        );
      const out = new PassThrough();
      let sent = 0;
      let done = false;
      let stop: (() => Promise<void>) | undefined = undefined;
      let name = step || '';
      const end = (): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        void stop?.();
        out.end();
      };
      const timer = setTimeout(end, secs * 1000);
      const tapped = await runtime
        .tap(step || undefined, (records) => {
          for (let i = 0; i < records.length && sent < max && !done; i++, sent++)
            out.write(JSON.stringify({ step: name, record: records[i] }) + '\n');
          if (sent >= max) end();
        })
        .catch((err: unknown) => {
          clearTimeout(timer);
          throw err;
        });
      name = tapped.step;
      stop = tapped.stop;
      // The answer ends (limit, time) or the client hangs up: either way the tap stops.
      reply.raw.once('close', end);
      // The first line says what is tapped, so a client knows at once that it is.
      out.write(
        JSON.stringify({ tap: { pipeline: runtime.spec.name, step: name, limit: max, seconds: secs } }) +
          '\n',
      );
      return reply.type('application/x-ndjson').header('cache-control', 'no-store').send(out);
    },
  );

  app.post<{ Params: PipelineParams }>(
    '/v1/pipelines/:pipeline/dead-letters/replay',
    { onRequest: admitIngest, schema: schemas.replayDeadLetters },
    async (req, reply) => {
      const runtime = pipelineOf(req);
      const raw = (req.body as Buffer | undefined) ?? Buffer.alloc(0);
      let q: Record<string, unknown>;
      try {
        q = raw.length === 0 ? {} : (JSON.parse(raw.toString('utf8')) as Record<string, unknown>);
      } catch (err) {
        throw new SluiceError('SLUICE_ERR_BODY_MALFORMED', `the body is not JSON: ${(err as Error).message}`);
      }
      if (q === null || typeof q !== 'object' || Array.isArray(q))
        throw new SluiceError('SLUICE_ERR_BODY_MALFORMED', 'the body must be a JSON object');
      const allowed = ['ids', 'reason', 'from', 'to', 'limit'];
      const unknown = Object.keys(q).filter((k) => !allowed.includes(k));
      if (unknown.length > 0)
        throw new SluiceError(
          'SLUICE_ERR_BAD_REQUEST',
          `unknown field ${JSON.stringify(unknown[0])}; use ${allowed.join(', ')}`,
        );
      const ids = q.ids;
      if (
        ids !== undefined &&
        !(Array.isArray(ids) && ids.length <= 10_000 && ids.every((x) => Number.isSafeInteger(x)))
      )
        throw new SluiceError(
          'SLUICE_ERR_BAD_REQUEST',
          'ids must be an array of at most 10000 dead-letter ids',
        );
      if (q.reason !== undefined && typeof q.reason !== 'string')
        throw new SluiceError('SLUICE_ERR_BAD_REQUEST', 'reason must be a string');
      // The records replayed at once are bounded like a request body.
      const result = await runtime.replay(
        {
          ids: ids as number[] | undefined,
          reason: q.reason as string | undefined,
          fromMs: instant('from', q.from),
          toMs: instant('to', q.to),
          limit: limitOf(q.limit, 1000, 10_000),
          maxBytes: limits.bodyBytes,
        },
        { requestId: req.id, receivedMs: Date.now() },
      );
      await result.durable;
      return reply.code(200).send({ ...result.answer, skipped: result.skipped });
    },
  );
}
