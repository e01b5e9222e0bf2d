/**
 * The OpenAPI 3.1 description of the HTTP API, served at /openapi.json (docs/http-api.md is the
 * same API for people). @fastify/swagger generates it from the routes' schemas (route-schemas.ts)
 * and what is said here of the whole API. test/openapi.test.ts checks it against a real server.
 */
import { readFileSync } from 'node:fs';
import type {
  FastifyDynamicSwaggerOptions,
  SwaggerTransform,
  SwaggerTransformObject,
} from '@fastify/swagger';
import { COMPONENT_SCHEMAS, ROUTE_SCHEMAS, type RouteSchema } from './route-schemas.ts';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

const DOCS = 'https://github.com/sluice-dev/sluice/blob/main/docs';

/**
 * Hands @fastify/swagger a route's documentation-only schemas (route-schemas.ts says why Fastify
 * must not see them) where it reads them: `params`, `querystring`, `headers`, `body`, `response`.
 */
const fromDocumented: SwaggerTransform = ({ schema, url }) => {
  const { documented, ...annotations } = (schema ?? {}) as Partial<RouteSchema>;
  // Routes without a documented schema are not sluice's API (the upstream pass-through's `/*`).
  if (!documented) return { schema: { hide: true }, url };
  return { schema: { ...annotations, ...documented }, url };
};

const routeSchemas: Record<string, RouteSchema> = ROUTE_SCHEMAS;

/**
 * @fastify/swagger makes a request body of its content alone, always required: the route schema
 * says whether it is, and what else to know about it.
 */
const withRequestBodies: SwaggerTransformObject = (document) => {
  // Swagger 2 documents are not made here.
  if (!('openapiObject' in document)) return document.swaggerObject;
  const { openapiObject } = document;
  for (const item of Object.values(openapiObject.paths ?? {}))
    for (const operation of Object.values(item ?? {}) as { operationId?: string; requestBody?: object }[]) {
      const body = routeSchemas[operation.operationId ?? '']?.documented.body;
      if (body && operation.requestBody)
        operation.requestBody = {
          ...operation.requestBody,
          description: body.description,
          required: body.required,
        };
    }
  return openapiObject;
};

export const openApiOptions: FastifyDynamicSwaggerOptions = {
  openapi: {
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
      { name: 'pipelines', description: "The tenant's pipelines and their live counts." },
      { name: 'operations', description: 'Metrics, health, this document. No key needed.' },
    ],
    security: [{ apiKey: [] }],
    components: {
      securitySchemes: {
        apiKey: {
          type: 'http',
          scheme: 'bearer',
          description:
            "`Authorization: Bearer <key>` with one of the tenant's API keys. The key decides the tenant; a tenant sees only its own pipelines.",
        },
      },
      schemas: COMPONENT_SCHEMAS,
    },
  },
  // OpenAPI 3.1 schemas are JSON Schema 2020-12, which has `const`.
  convertConstToEnum: false,
  transform: fromDocumented,
  transformObject: withRequestBodies,
};
