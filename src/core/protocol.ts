/** Messages between the engine (main thread) and its processors (worker threads or inline). */
import type { ResolvedPipeline } from './config.ts';
import type { ModuleBundles } from './modules.ts';
import type { SharedTableData } from './tables.ts';
import type { Chunk, Rec } from './types.ts';
import { SluiceError, type ErrorCode } from '../errors.ts';

export type ToProcessor =
  | { t: 'init'; pipeline: ResolvedPipeline; bundles: ModuleBundles; tables: SharedTableData[] }
  | { t: 'chunk'; seq: number; chunk: Chunk }
  | {
      t: 'verdict';
      seq: number;
      group: number;
      firstLine: number;
      firstIndex: number;
      verdicts: Uint16Array | null;
      infos: unknown[];
    }
  | { t: 'command'; id: number; step: number; message: unknown }
  /** Copies of the records each of these steps passes on go out with `done` (`sluice tap`). */
  | { t: 'tap'; steps: string[] };

/** One output of one batch, encoded per subscribed sink. */
export interface EncodedOutput {
  count: number;
  bySink: Record<string, string>;
}

export type FromProcessor =
  | { t: 'ready' }
  | { t: 'failed'; error: SerializedError }
  | {
      t: 'payload';
      seq: number;
      group: number;
      count: number;
      recordCount: number;
      lineCount: number;
      payloads: unknown[];
    }
  | {
      t: 'done';
      seq: number;
      outputs: Record<string, EncodedOutput>;
      /** Only with ProcessorOptions.capture: every output's records, dead letters under `dead`. */
      records?: Record<string, Rec[]>;
      counters: Record<string, number>;
      /** Records after each tapped step, copied as they left it (at most TAP_SAMPLE per step). */
      taps?: Record<string, Rec[]>;
    }
  | { t: 'reply'; id: number; reply: unknown };

export interface SerializedError {
  name: string;
  message: string;
  code?: string;
  hint?: string;
  location?: unknown;
  stack?: string;
}

export function serializeError(err: unknown): SerializedError {
  const e = err as Error & { code?: string; hint?: string; location?: unknown };
  return {
    name: e?.name ?? 'Error',
    message: e?.message ?? String(err),
    code: e?.code,
    hint: e?.hint,
    location: e?.location,
    stack: e?.stack,
  };
}

/** A processor's error as a SluiceError: its own code if it had one, else a worker failure. */
export function deserializeError(e: SerializedError): SluiceError {
  if (e.code?.startsWith('SLUICE_ERR_')) {
    return new SluiceError(e.code as ErrorCode, e.message, { hint: e.hint, location: e.location as never });
  }
  return new SluiceError(
    'SLUICE_ERR_WORKER_FAILED',
    `${e.name}: ${e.message}${e.stack ? `\n${e.stack}` : ''}`,
  );
}
