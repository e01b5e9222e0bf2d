/**
 * What both runtimes (embedded and cluster) share about a pipeline: its spec, and what they make
 * of a processed request the same way: the answer a producer gets, the identity of a window row,
 * and the body that replays dead letters.
 */
import { DEAD_OUTPUT, type ResolvedPipeline } from '../core/config.ts';
import type { Prepared } from '../core/engine.ts';
import { registry } from '../core/registry.ts';
import { recordCounts, type ChunkResult } from '../core/stream.ts';
import type { Rec, WindowedOutput } from '../core/types.ts';

export interface PipelineSpec {
  tenant: string;
  name: string;
  prepared: Prepared;
  /** Changes when the pipeline's files change (SIGHUP reloads only what changed). */
  fingerprint: string;
}

export interface Rejection {
  index: number;
  reason: string;
  detail: string;
  pointer?: string;
  /** With `dead_letters_per: line`: how many of the line's records failed. */
  records?: number;
}

/**
 * Counts in records: the body's lines plus what fan-out added. `accepted + duplicates` + the
 * records of `rejected` is always `records`.
 */
export interface IngestAnswer {
  records: number;
  accepted: number;
  duplicates: number;
  rejected: Rejection[];
  /** Rejections past ANSWER_REJECTIONS, counted instead of listed. */
  rejected_omitted?: { count: number; records: number; reasons: Record<string, number> };
}

/** A request body as it goes to the log: as received (maybe gzip), with JSON record bounds. */
export interface LoggedBody {
  raw: Buffer;
  gzip: boolean;
  /** The decoded body the pipeline reads. */
  body: Buffer;
  bounds: Int32Array | null;
}

/**
 * Rejections an answer lists one by one. A body of 100,000 bad records answered with every one
 * made a 90 MB answer (issue 13, finding 2); past this many, the answer counts the rest by reason,
 * and the dead letters themselves are all in the store.
 */
export const ANSWER_REJECTIONS = 100;

/** What a processed request gives: its accepted records, duplicates and rejections. */
export function ingestAnswer(result: ChunkResult): IngestAnswer {
  const letters = result.outputs.get(DEAD_OUTPUT) ?? [];
  const rejected = letters.slice(0, ANSWER_REJECTIONS).map((letter) => {
    const r: Rejection = {
      index: letter.index as number,
      reason: letter.reason as string,
      detail: letter.detail as string,
    };
    if (letter.pointer !== undefined) r.pointer = letter.pointer as string;
    if (letter.records !== undefined) r.records = letter.records as number;
    return r;
  });
  const { records, accepted, duplicates } = recordCounts(result);
  const answer: IngestAnswer = { records, accepted, duplicates, rejected };
  if (letters.length > ANSWER_REJECTIONS) {
    const omitted = { count: 0, records: 0, reasons: {} as Record<string, number> };
    for (let i = ANSWER_REJECTIONS; i < letters.length; i++) {
      const letter = letters[i]!;
      const reason = letter.reason as string;
      omitted.count++;
      omitted.records += (letter.records as number | undefined) ?? 1;
      omitted.reasons[reason] = (omitted.reasons[reason] ?? 0) + 1;
    }
    answer.rejected_omitted = omitted;
  }
  return answer;
}

/**
 * The body that replays dead letters (oldest first): one record per letter, cut by bounds so
 * records with newlines stay whole, up to `maxBytes` (at least one record). Letters that do not
 * hold their whole record are skipped, with why.
 */
export function replayBody(
  letters: { id: number | string; letter: string }[],
  maxBytes: number | undefined,
): { ids: number[]; body: Buffer; bounds: Int32Array; skipped: { id: number; reason: string }[] } {
  const ids: number[] = [];
  const parts: Buffer[] = [];
  const bounds: number[] = [];
  const skipped: { id: number; reason: string }[] = [];
  let at = 0;
  for (const l of letters) {
    const letter = JSON.parse(l.letter) as Rec;
    const id = Number(l.id);
    if (typeof letter.raw !== 'string' || letter.raw_truncated === true || letter.reason === 'too_large') {
      skipped.push({ id, reason: 'the dead letter does not hold the whole record' });
      continue;
    }
    const b = Buffer.from(letter.raw, 'utf8');
    if (maxBytes !== undefined && at + b.length > maxBytes && ids.length > 0) break;
    parts.push(b, Buffer.from('\n'));
    bounds.push(at, at + b.length);
    at += b.length + 1;
    ids.push(id);
  }
  return { ids, body: Buffer.concat(parts), bounds: Int32Array.from(bounds), skipped };
}

/** The outputs of a pipeline's window steps, with what identifies a row. */
export function windowedOutputs(pipeline: ResolvedPipeline): WindowedOutput[] {
  return pipeline.steps.flatMap((s) => {
    const w = registry.transforms.get(s.type)!.windowed?.(s.config, s.id);
    return w ? [w] : [];
  });
}

/** A window row's start as epoch ms. */
export function startMs(v: unknown): number {
  return typeof v === 'number' ? v : Date.parse(String(v));
}

/** A group_by value as the text a query filter compares with. */
export function keyText(v: unknown): string {
  return typeof v === 'string' ? v : JSON.stringify(v ?? null);
}

/** A window row's key within its start: its group_by values, as JSON. */
export function windowKey(row: Rec, w: WindowedOutput): string {
  return JSON.stringify(w.keys.map((k) => row[k] ?? null));
}
