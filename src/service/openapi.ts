/** The OpenAPI 3.1 description of the HTTP API, served at /openapi.json. */
export function openApiDocument(): Record<string, unknown> {
  return { openapi: '3.1.0', info: { title: 'sluice', version: '0.1.0' }, paths: {} };
}
