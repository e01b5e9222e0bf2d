/**
 * The floor for bench/overload.ts: the least any server could do under the same flood. A bare
 * node:http server on 127.0.0.1 that refuses every request of tenant `flood` with 503 and
 * Retry-After as soon as its headers are in (its body is drained, unread), and answers each of
 * tenant `light`'s single events with 202 after reading and parsing it. Nothing is validated,
 * stored or queued, so the latencies it gets on this machine, with the same load generators on the
 * same cores, are a lower bound for `sluice serve`'s: where the floor misses a target, no server
 * design can meet it here.
 *
 * Prints `{"url": ...}` once listening; SIGTERM closes it.
 *
 * Usage: node --import tsx bench/floor-server.ts '{"flood":"<key>","light":"<key>"}'
 */
import { createServer } from 'node:http';

const keys = JSON.parse(process.argv[2] ?? '{}') as { flood: string; light: string };
const flood = `Bearer ${keys.flood}`;
const light = `Bearer ${keys.light}`;
const REFUSAL = JSON.stringify({
  type: 'https://sluice.dev/errors/SLUICE_ERR_OVERLOADED',
  title: 'refused by the floor server',
  status: 503,
});

const server = createServer((req, res) => {
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
    req.resume();
    return;
  }
  const auth = req.headers.authorization;
  if (auth === flood) {
    res.writeHead(503, { 'content-type': 'application/problem+json', 'retry-after': '1' }).end(REFUSAL);
    req.resume();
    return;
  }
  if (auth !== light) {
    res.writeHead(401).end();
    req.resume();
    return;
  }
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    try {
      JSON.parse(Buffer.concat(chunks).toString('utf8'));
      res
        .writeHead(202, { 'content-type': 'application/json' })
        .end('{"accepted":1,"duplicates":0,"rejected":[]}');
    } catch {
      res.writeHead(400).end();
    }
  });
});
server.listen(0, '127.0.0.1', () => {
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  process.stdout.write(`${JSON.stringify({ url: `http://127.0.0.1:${port}` })}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
