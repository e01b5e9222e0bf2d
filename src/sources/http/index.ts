/**
 * `http`: events POSTed to `sluice serve`. One request body is one chunk: a JSON object, a JSON
 * array of objects, or NDJSON, optionally gzip. Records are decoded exactly as the file source
 * decodes them (a bad record is a dead letter; the rest of the body goes on); only a body that
 * cannot be cut into records at all is refused as a whole.
 */
import { Readable } from 'node:stream';
import { gunzip } from 'node:zlib';
import { promisify } from 'node:util';
import { SluiceError } from '../../errors.ts';
import type { Chunk, SourceDecoder, SourceSpec } from '../../core/types.ts';
import { DEFAULT_MAX_RECORD, countLines, decoderFor } from '../file/decoder.ts';
import { jsonArrayChunks } from '../file/reader.ts';

export interface HttpSourceConfig {
  type: 'http';
  max_record_bytes?: number;
}

const gunzipAsync = promisify(gunzip);

const NDJSON_TYPES = new Set([
  'application/x-ndjson',
  'application/ndjson',
  'application/jsonl',
  'application/x-jsonlines',
  'application/jsonlines',
]);

export type BodyFormat = 'json' | 'ndjson';

/** The format a Content-Type names, or undefined when it names none sluice reads. */
export function bodyFormat(contentType: string | undefined): BodyFormat | undefined {
  const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (type === 'application/json' || type.endsWith('+json')) return 'json';
  if (NDJSON_TYPES.has(type)) return 'ndjson';
  return undefined;
}

/** Decompresses a gzip body, refusing to inflate it beyond `maxBytes`. */
export async function inflate(body: Buffer, maxBytes: number): Promise<Buffer> {
  try {
    return await gunzipAsync(body, { maxOutputLength: maxBytes });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ERR_BUFFER_TOO_LARGE' || e instanceof RangeError)
      throw new SluiceError(
        'SLUICE_ERR_BODY_TOO_LARGE',
        `the body inflates to more than ${maxBytes} bytes (limits.body_bytes)`,
      );
    throw new SluiceError(
      'SLUICE_ERR_BODY_MALFORMED',
      `the body is not a complete gzip stream (${e.message}); it looks truncated or corrupt`,
    );
  }
}

const isSpace = (c: number): boolean => c === 32 || c === 10 || c === 13 || c === 9;

/** [start, end) byte offsets of every record of a JSON body, as the JSON decoder wants them. */
export async function jsonBounds(body: Buffer): Promise<Int32Array> {
  let first = 0;
  while (first < body.length && isSpace(body[first]!)) first++;
  if (first === body.length) throw new SluiceError('SLUICE_ERR_BODY_MALFORMED', 'the body is empty');
  const c = body[first]!;
  if (c === 123) {
    // One object: its own record. Whether it is valid JSON is the decoder's to say, per record.
    let last = body.length;
    while (last > first && isSpace(body[last - 1]!)) last--;
    return Int32Array.of(first, last);
  }
  if (c !== 91)
    throw new SluiceError(
      'SLUICE_ERR_BODY_MALFORMED',
      `a JSON body must be an object or an array of objects, but byte ${first} is ${JSON.stringify(String.fromCharCode(c))}`,
    );
  const parts: Int32Array[] = [];
  try {
    for await (const chunk of jsonArrayChunks(Readable.from([body]), Infinity, 'the body'))
      parts.push(chunk.bounds ?? new Int32Array(0));
  } catch (err) {
    if (err instanceof SluiceError) throw new SluiceError('SLUICE_ERR_BODY_MALFORMED', err.message);
    throw err;
  }
  return parts.length === 1 ? parts[0]! : Int32Array.from(parts.flatMap((p) => [...p]));
}

/** Records in a body, without parsing: as the decoder will count them. */
export function recordCount(body: Buffer, bounds: Int32Array | null): number {
  return bounds ? bounds.length / 2 : countLines(body);
}

/** The chunk a decoded body is, for the pipeline and for replay from the log alike. */
export function bodyChunk(body: Buffer, bounds: Int32Array | null): Chunk {
  return bounds ? { bytes: body, bounds } : { bytes: body };
}

/** NDJSON chunks have no bounds; JSON ones do. */
class HttpDecoder implements SourceDecoder {
  readonly #ndjson: SourceDecoder;
  readonly #json: SourceDecoder;

  constructor(maxRecord: number) {
    this.#ndjson = decoderFor('ndjson', maxRecord);
    this.#json = decoderFor('json', maxRecord);
  }

  decode(chunk: Chunk, ctx: Parameters<SourceDecoder['decode']>[1]): ReturnType<SourceDecoder['decode']> {
    return (chunk.bounds ? this.#json : this.#ndjson).decode(chunk, ctx);
  }
}

export const httpSource: SourceSpec<HttpSourceConfig> = {
  type: 'http',
  description:
    'Events POSTed to `sluice serve` (a JSON object, a JSON array or NDJSON, optionally gzip); `sluice serve` uses it for every pipeline it runs.',
  schema: {
    type: 'object',
    properties: {
      max_record_bytes: {
        type: 'integer',
        minimum: 1024,
        default: DEFAULT_MAX_RECORD,
        description: 'A longer record becomes a too_large dead letter.',
      },
    },
  },
  indexed: () => true,
  // `sluice run` refuses it in open(), with or without --input.
  readsInput: false,
  open: async () => {
    throw new SluiceError(
      'SLUICE_ERR_USAGE',
      'an http source receives its events from `sluice serve`; `sluice run` reads files',
      { hint: 'Run the pipeline with `sluice serve`, or give it a `file` source for `sluice run`.' },
    );
  },
  decoder: (config) => new HttpDecoder(config.max_record_bytes ?? DEFAULT_MAX_RECORD),
};
