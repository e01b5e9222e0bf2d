/**
 * `file`: NDJSON or CSV, optionally gzip. Output goes to a temporary file beside the target and
 * is renamed into place only when the run succeeds, so an interrupted or failed run never leaves
 * a half-written file. In append mode (`sluice serve`) batches are added to the target itself
 * (gzip as one member per batch, which gzip readers concatenate) and fsynced at each commit.
 */
import { createWriteStream, existsSync, rmSync, statSync, truncateSync, type WriteStream } from 'node:fs';
import { open, rename } from 'node:fs/promises';
import { resolve } from 'node:path';
import { once } from 'node:events';
import { createGzip, type Gzip } from 'node:zlib';
import { SluiceError } from '../../errors.ts';
import { ndjson, stringify } from '../../core/encode.ts';
import type { Encoder, Rec, SinkEnv, SinkSpec, SinkWriter } from '../../core/types.ts';
import { makeParentDirectory } from '../../core/paths.ts';

export interface FileSinkConfig {
  type: 'file';
  path: string;
  format?: 'ndjson' | 'csv';
  gzip?: boolean;
  /** CSV columns, in order (required for csv). */
  columns?: string[];
}

function csvCell(v: unknown): string {
  if (v === undefined || v === null) return '';
  const s = typeof v === 'string' ? v : typeof v === 'object' ? stringify(v) : String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function csvEncoder(columns: readonly string[]): Encoder {
  return (records: Rec[]) => {
    let out = '';
    for (const r of records) {
      for (let c = 0; c < columns.length; c++) out += (c > 0 ? ',' : '') + csvCell(r[columns[c]!]);
      out += '\n';
    }
    return out;
  };
}

function targetOf(config: FileSinkConfig, env: SinkEnv): string {
  return resolve(env.outDir, config.path);
}

class FileWriter implements SinkWriter {
  readonly #target: string;
  readonly #tmp: string;
  /** Append mode: the target's size before this writer, to cut back to on abort. */
  readonly #appendFrom: number | undefined;
  #position: number | undefined;
  readonly #file: WriteStream;
  readonly #out: WriteStream | Gzip;
  #error: Error | undefined;
  /** Rejects on the first stream error, so a wait for 'drain' cannot hang on a dead stream. */
  readonly #failed: Promise<never>;

  constructor(
    target: string,
    gzip: boolean,
    header: string | undefined,
    append: SinkEnv['append'] | undefined,
  ) {
    this.#target = target;
    makeParentDirectory(target, 'the output directory');
    if (append) {
      let size = existsSync(target) ? statSync(target).size : 0;
      if (append.truncateTo !== undefined && size > append.truncateTo) {
        truncateSync(target, append.truncateTo);
        size = append.truncateTo;
      }
      this.#appendFrom = size;
      if (size > 0) header = undefined;
    }
    this.#tmp = append ? target : `${target}.${process.pid}.tmp`;
    this.#file = createWriteStream(this.#tmp, { flags: append ? 'a' : 'w' });
    this.#out = gzip ? createGzip() : this.#file;
    if (this.#out !== this.#file) this.#out.pipe(this.#file);
    this.#failed = new Promise<never>((_, reject) => {
      const onError = (e: Error): void => {
        this.#error ??= e;
        reject(e);
      };
      this.#file.on('error', onError);
      if (this.#out !== this.#file) this.#out.on('error', onError);
    });
    this.#failed.catch(() => {});
    if (header) this.#out.write(header);
  }

  #check(): void {
    if (this.#error)
      throw new SluiceError(
        'SLUICE_ERR_SINK_WRITE',
        `writing ${this.#target} failed: ${this.#error.message}`,
        { cause: this.#error },
      );
  }

  async write(encoded: string): Promise<void> {
    this.#check();
    if (!this.#out.write(encoded))
      await Promise.race([once(this.#out, 'drain'), this.#failed]).catch(() => {});
    this.#check();
  }

  async commit(): Promise<void> {
    this.#check();
    const closed = once(this.#file, 'close');
    this.#out.end();
    await Promise.race([closed, this.#failed]).catch(() => {});
    this.#check();
    if (this.#appendFrom !== undefined) {
      try {
        // Asynchronous: in a service this runs beside request handling, and an fsync can take
        // tens of milliseconds (bench:http measured stalls up to 486 ms with the sync calls).
        const handle = await open(this.#target, 'r+');
        try {
          await handle.sync();
          this.#position = (await handle.stat()).size;
        } finally {
          await handle.close();
        }
      } catch (err) {
        throw new SluiceError(
          'SLUICE_ERR_SINK_WRITE',
          `syncing ${this.#target} failed: ${(err as Error).message}`,
          {
            cause: err,
          },
        );
      }
      return;
    }
    try {
      await rename(this.#tmp, this.#target);
    } catch (err) {
      throw new SluiceError(
        'SLUICE_ERR_SINK_WRITE',
        `cannot put ${this.#target} in place: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }

  async abort(): Promise<void> {
    this.#out.destroy();
    this.#file.destroy();
    if (this.#appendFrom === undefined) rmSync(this.#tmp, { force: true });
    else if (existsSync(this.#target)) truncateSync(this.#target, this.#appendFrom);
  }

  /** Append mode: the target's size after commit, or, before it, where this writer started. */
  position(): number | undefined {
    return this.#position ?? this.#appendFrom;
  }
}

export const fileSink: SinkSpec<FileSinkConfig> = {
  type: 'file',
  description:
    'Writes NDJSON or CSV, optionally gzip-compressed; the file appears only when the run succeeds.',
  schema: {
    type: 'object',
    required: ['path'],
    properties: {
      path: { type: 'string', description: 'Output file, relative to the output directory (--out).' },
      format: { enum: ['ndjson', 'csv'], default: 'ndjson' },
      gzip: { type: 'boolean', default: false, description: 'Compress the output with gzip.' },
      columns: {
        type: 'array',
        items: { type: 'string' },
        minItems: 1,
        description: 'CSV columns, in order (required for csv).',
      },
    },
    if: { properties: { format: { const: 'csv' } }, required: ['format'] },
    then: { required: ['columns'] },
  },
  encoder: (config) => (config.format === 'csv' ? csvEncoder(config.columns ?? []) : ndjson),
  open: async (config, env) =>
    new FileWriter(
      targetOf(config, env),
      config.gzip ?? false,
      config.format === 'csv' ? (config.columns ?? []).map(csvCell).join(',') + '\n' : undefined,
      env.append,
    ),
  describe: (config, env) => targetOf(config, env),
};
