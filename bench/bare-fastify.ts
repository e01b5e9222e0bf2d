/**
 * The ceiling for bench/http.ts: the Fastify that `sluice serve` runs on, with nothing to do. The
 * same route, the same raw-bytes body parser and body limit, no logger, no hooks; it reads each
 * body, discards it and answers 202 with a small JSON object, as sluice's answer to a clean
 * request is. Prints `{"url": ...}` once listening; SIGTERM closes it.
 *
 * Usage: node bare-fastify.js (bench/http.ts bundles and starts it)
 */
import Fastify from 'fastify';

const app = Fastify({ logger: false, bodyLimit: 10 * 1024 * 1024 });
app.removeAllContentTypeParsers();
app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
app.post('/v1/pipelines/:pipeline/events', async (_req, reply) =>
  reply.code(202).send({ accepted: 1, duplicates: 0, rejected: [] }),
);

const url = await app.listen({ host: '127.0.0.1', port: 0 });
process.stdout.write(`${JSON.stringify({ url })}\n`);
process.on('SIGTERM', () => void app.close().then(() => process.exit(0)));
