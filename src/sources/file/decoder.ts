/**
 * Worker half of the file source: bytes → records. A chunk is decoded to text once (bytes that
 * are not UTF-8 become U+FFFD), then each line is sliced and parsed with JSON.parse. A line that
 * does not parse becomes a `parse` dead letter; JSON that is not an object, an `invalid` one.
 */
import type { Batch, Chunk, DecodedChunk, Rec, SourceDecoder, StepContext } from '../../core/types.ts';

function textOf(bytes: Uint8Array, start = 0, end = bytes.length): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset + start, end - start).toString('utf8');
}

function describeValue(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : `a ${typeof v}`;
}

/** Parses lines[from..] into `batch`; returns the index of a line that threw, or -1 when done. */
function parseLines(
  text: string,
  starts: Int32Array,
  ends: Int32Array,
  from: number,
  n: number,
  batch: Batch,
  ctx: StepContext,
): number {
  let i = from;
  try {
    for (; i < n; i++) {
      const value = JSON.parse(text.slice(starts[i]!, ends[i]!)) as unknown;
      if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
        batch.records.push(value as Rec);
        batch.pos.push(i);
      } else {
        ctx.dead(i, 'invalid', `not a JSON object: the line is ${describeValue(value)}`, { pointer: '' });
      }
    }
    return -1;
  } catch (err) {
    const empty = starts[i] === ends[i] || text.slice(starts[i]!, ends[i]!).trim() === '';
    ctx.dead(i, 'parse', empty ? 'empty line' : `not JSON: ${(err as Error).message}`);
    return i;
  }
}

class NdjsonDecoder implements SourceDecoder {
  decode(chunk: Chunk, ctx: StepContext): DecodedChunk {
    if (chunk.oversize !== undefined) return oversized(chunk, ctx);
    const text = textOf(chunk.bytes);
    // Line boundaries: a trailing newline ends the last line; it does not start an empty one.
    let n = 0;
    for (let at = text.indexOf('\n'); at >= 0; at = text.indexOf('\n', at + 1)) n++;
    if (text.length > 0 && text.charCodeAt(text.length - 1) !== 10) n++;
    const starts = new Int32Array(n);
    const ends = new Int32Array(n);
    let p = 0;
    for (let i = 0; i < n; i++) {
      let e = text.indexOf('\n', p);
      if (e < 0) e = text.length;
      starts[i] = p;
      ends[i] = e > p && text.charCodeAt(e - 1) === 13 ? e - 1 : e;
      p = e + 1;
    }
    const batch: Batch = { records: [], pos: [] };
    let from = 0;
    while (from < n) {
      const failed = parseLines(text, starts, ends, from, n, batch, ctx);
      if (failed < 0) break;
      from = failed + 1;
    }
    return {
      batch,
      recordCount: n,
      lineCount: n,
      lineOf: (pos) => pos,
      raw: (pos) => text.slice(starts[pos]!, ends[pos]!),
    };
  }
}

function oversized(chunk: Chunk, ctx: StepContext): DecodedChunk {
  const prefix = textOf(chunk.bytes);
  ctx.dead(
    0,
    'too_large',
    `the record is ${chunk.oversize} bytes or more, above max_record_bytes; only its first ${chunk.bytes.length} bytes are kept`,
  );
  return {
    batch: { records: [], pos: [] },
    recordCount: 1,
    lineCount: 1,
    lineOf: () => 0,
    raw: () => prefix,
  };
}

class JsonArrayDecoder implements SourceDecoder {
  decode(chunk: Chunk, ctx: StepContext): DecodedChunk {
    const bytes = chunk.bytes;
    const bounds = chunk.bounds ?? new Int32Array(0);
    const n = bounds.length / 2;
    const texts: string[] = new Array<string>(n);
    const lines = new Int32Array(n);
    let line = 0;
    let at = 0;
    for (let i = 0; i < n; i++) {
      const start = bounds[2 * i]!;
      for (; at < start; at++) if (bytes[at] === 10) line++;
      lines[i] = line;
      texts[i] = textOf(bytes, start, bounds[2 * i + 1]!);
    }
    let lineCount = line;
    for (; at < bytes.length; at++) if (bytes[at] === 10) lineCount++;
    const batch: Batch = { records: [], pos: [] };
    const starts = new Int32Array(n);
    const ends = new Int32Array(n);
    // Reuse the line parser over the element texts joined virtually: parse each text directly.
    for (let i = 0; i < n; i++) ends[i] = texts[i]!.length;
    for (let i = 0; i < n; i++) {
      const failed = parseLines(texts[i]!, starts, ends, i, i + 1, batch, ctx);
      if (failed >= 0) continue;
    }
    return { batch, recordCount: n, lineCount, lineOf: (pos) => lines[pos]!, raw: (pos) => texts[pos]! };
  }
}

export function decoderFor(format: 'ndjson' | 'json' | undefined): SourceDecoder {
  return format === 'json' ? new JsonArrayDecoder() : new NdjsonDecoder();
}
