/**
 * What one request costs the pipeline thread's engine, without HTTP, threads or the store: the
 * payments pipeline's StreamPipeline.process over single-event chunks and over 100-event chunks,
 * in CPU µs per chunk and per event, beside JSON.parse alone. Run: npm run bench:chunk [-- --events N]
 * (PER_CHUNK=1,10,100 picks the chunk sizes).
 */
import { parseArgs } from 'node:util';
import '../src/components.ts';
import { loadPipeline } from '../src/core/config.ts';
import { prepare } from '../src/core/engine.ts';
import { StreamPipeline } from '../src/core/stream.ts';
import { sampleEvents } from '../src/cli/demo.ts';
import { bodyChunk } from '../src/sources/http/index.ts';

const { values } = parseArgs({ options: { events: { type: 'string', default: '60000' } } });
const events = Number(values.events);
const pipeline = loadPipeline(new URL('../examples/payments/pipeline.yaml', import.meta.url).pathname);
const lines = [...sampleEvents(events, 7)];

async function measure(perChunk: number): Promise<{ chunkUs: number; eventUs: number }> {
  const stream = await StreamPipeline.create(await prepare(pipeline));
  const chunks: Buffer[] = [];
  for (let i = 0; i < lines.length; i += perChunk)
    chunks.push(Buffer.from(lines.slice(i, i + perChunk).join('\n') + '\n'));
  const start = process.cpuUsage();
  for (const c of chunks) stream.process(bodyChunk(c, null));
  const used = process.cpuUsage(start);
  const us = used.user + used.system;
  return { chunkUs: us / chunks.length, eventUs: us / lines.length };
}

const sizes = (process.env.PER_CHUNK ?? '1,100').split(',').map(Number);
for (const perChunk of sizes) {
  const r = await measure(perChunk);
  console.log(
    `${String(perChunk).padStart(3)} events/chunk: ${r.chunkUs.toFixed(1)} µs CPU per chunk, ${r.eventUs.toFixed(2)} µs per event`,
  );
}

// The floor in the same run (after the pipeline, warmed up like it): only JSON.parse of each line, what any JSON service pays.
const floorStart = process.cpuUsage();
for (const line of lines) {
  try {
    JSON.parse(line);
  } catch {
    // The sample has broken lines on purpose; the pipeline makes dead letters of them.
  }
}
const floor = process.cpuUsage(floorStart);
console.log(
  `JSON.parse alone: ${((floor.user + floor.system) / lines.length).toFixed(2)} µs per event (the floor)`,
);
