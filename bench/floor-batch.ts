/**
 * The floor for bench/batch.ts: what reading, JSON.parse and Ajv alone cost on all cores, with
 * nothing else. The main thread reads the input in 512 KiB chunks of whole lines (sluice's chunk
 * size) and hands them round robin to one worker thread per core (at most four chunks waiting per
 * worker); each worker decodes every line on its own, parses it with JSON.parse, validates it
 * with Ajv against --schema, counts it and drops it. No transform, lookup, dedupe, window or
 * output: any pipeline that parses with JSON.parse and validates with Ajv spends at least this,
 * so a target below it cannot be reached by changes to the rest.
 *
 * Usage: node floor-batch.mjs --input FILE --schema FILE [--workers N]
 */
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';

// ajv-formats is CommonJS; under NodeNext its default import is the module object.
const addFormats = addFormatsModule as unknown as typeof addFormatsModule.default;

const CHUNK = 512 * 1024;
const WAITING_PER_WORKER = 4;

interface Counts {
  lines: number;
  valid: number;
}

function workerMain(schemaPath: string): void {
  const ajv = new Ajv2020({ allErrors: false });
  addFormats(ajv, { mode: 'fast' });
  const validate = ajv.compile(JSON.parse(readFileSync(schemaPath, 'utf8')) as object);
  parentPort!.on('message', (bytes: Uint8Array) => {
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const counts: Counts = { lines: 0, valid: 0 };
    let start = 0;
    for (let end = buf.indexOf(10); start < buf.length; end = buf.indexOf(10, start)) {
      if (end < 0) end = buf.length;
      counts.lines++;
      try {
        if (validate(JSON.parse(buf.toString('utf8', start, end)))) counts.valid++;
      } catch {
        // A line that is not JSON: counted, not valid.
      }
      start = end + 1;
    }
    parentPort!.postMessage(counts);
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      input: { type: 'string' },
      schema: { type: 'string' },
      workers: { type: 'string', default: String(availableParallelism()) },
      out: { type: 'string' },
    },
  });
  if (!values.input || !values.schema) {
    console.error('usage: floor-batch --input FILE --schema FILE [--workers N]');
    process.exit(2);
  }
  const n = Math.max(1, Number(values.workers));
  const workers = Array.from(
    { length: n },
    () => new Worker(new URL(import.meta.url), { workerData: { schema: values.schema } }),
  );
  const total: Counts = { lines: 0, valid: 0 };
  const waiting = new Array<number>(n).fill(0);
  let wake: (() => void) | undefined;
  for (const [i, w] of workers.entries())
    w.on('message', (c: Counts) => {
      total.lines += c.lines;
      total.valid += c.valid;
      waiting[i]!--;
      wake?.();
    });
  const fd = openSync(values.input, 'r');
  let carry = Buffer.alloc(0);
  let next = 0;
  for (;;) {
    const buf = Buffer.allocUnsafeSlow(CHUNK + carry.length);
    carry.copy(buf);
    const read = readSync(fd, buf, carry.length, CHUNK, null);
    const filled = carry.length + read;
    const cut = read === 0 ? filled : buf.lastIndexOf(10, filled - 1) + 1;
    carry = Buffer.from(buf.subarray(cut, filled));
    if (cut > 0) {
      while (waiting[next]! >= WAITING_PER_WORKER) await new Promise<void>((r) => (wake = r));
      waiting[next]!++;
      const chunk = new Uint8Array(buf.buffer, 0, cut);
      workers[next]!.postMessage(chunk, [buf.buffer as ArrayBuffer]);
      next = (next + 1) % n;
    }
    if (read === 0 && carry.length === 0) break;
  }
  closeSync(fd);
  while (waiting.some((x) => x > 0)) await new Promise<void>((r) => (wake = r));
  await Promise.all(workers.map((w) => w.terminate()));
  console.error(`floor: ${total.lines} lines, ${total.valid} valid, ${n} workers`);
}

if (isMainThread) await main();
else workerMain((workerData as { schema: string }).schema);
