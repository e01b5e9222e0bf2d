/**
 * Request bodies for bench/http.ts: payments workload events (shared/workload), as single JSON
 * objects or as NDJSON batches, made unique without end. The workload holds a fixed number of
 * events; a benchmark that cycled through them would, after the first pass, measure the dedupe
 * and lateness paths (every id seen, every event late) instead of ingestion. So pass `c` of the
 * templates rewrites, in place and at the same length, the first four characters of every event
 * id (to pass `c` in Crockford base32) and the year of every `ts` (to 2026 + c): ids stay valid
 * and unique across passes, event time moves forward a year per pass, and within a pass the
 * workload's own duplicates, late events and invalid lines stay as they are.
 */
import { readFileSync } from 'node:fs';

const ID_PREFIX = Buffer.from('"id":"evt_');
const TS_PREFIX = Buffer.from('"ts":"2026-');
const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
const ID_CHAR = /^[0-9A-HJKMNP-TV-Z]$/;
/** Passes before the year would leave four digits (9999). */
const MAX_PASSES = 9999 - 2026;

export type BodyKind = 'single' | 'batch';

/** Where in a template the per-pass bytes go. */
interface Template {
  bytes: Buffer;
  /** Byte offsets of the 4 id characters to rewrite. */
  ids: number[];
  /** Byte offsets of the 4 year digits to rewrite. */
  years: number[];
}

function offsetsAfter(buf: Buffer, prefix: Buffer, accept: (at: number) => boolean): number[] {
  const found: number[] = [];
  for (let at = buf.indexOf(prefix); at >= 0; at = buf.indexOf(prefix, at + prefix.length)) {
    const start = at + prefix.length;
    if (accept(start)) found.push(start);
  }
  return found;
}

function templateOf(bytes: Buffer): Template {
  // Only well-formed ids (26 characters, closing quote): an invalid one must stay invalid.
  const ids = offsetsAfter(bytes, ID_PREFIX, (start) => {
    if (bytes[start + 26] !== 0x22) return false;
    for (let i = start; i < start + 26; i++) if (!ID_CHAR.test(String.fromCharCode(bytes[i]!))) return false;
    return true;
  });
  const years = offsetsAfter(bytes, TS_PREFIX, () => true).map((start) => start - 5);
  return { bytes, ids, years };
}

/**
 * Reads up to `maxLines` workload lines and cuts them into bodies: `single` is one event per body
 * (lines that are not a JSON object are left out, since a client would not send them as one
 * object), `batch` is `perBatch` consecutive lines as NDJSON, bad lines included.
 */
export function loadTemplates(file: string, kind: BodyKind, perBatch = 100, maxLines = Infinity): Template[] {
  let lines = readFileSync(file, 'utf8').split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  if (lines.length > maxLines) lines = lines.slice(0, maxLines);
  if (kind === 'single')
    return lines.filter((l) => l.startsWith('{')).map((l) => templateOf(Buffer.from(l, 'utf8')));
  const out: Template[] = [];
  for (let i = 0; i + perBatch <= lines.length; i += perBatch)
    out.push(templateOf(Buffer.from(lines.slice(i, i + perBatch).join('\n') + '\n', 'utf8')));
  return out;
}

/** An endless sequence of distinct bodies over a set of templates (see the file comment). */
export class BodySequence {
  readonly #templates: Template[];
  #next: number;

  constructor(templates: Template[], start = 0) {
    if (templates.length === 0) throw new Error('no request bodies: the workload file gave no lines');
    this.#templates = templates;
    this.#next = start;
  }

  /** Bodies handed out so far (including `start`). */
  get position(): number {
    return this.#next;
  }

  /** Body number `n`: a fresh Buffer, safe to hand to a client that keeps it. */
  body(n: number): Buffer {
    const count = this.#templates.length;
    const pass = Math.floor(n / count);
    if (pass > MAX_PASSES) throw new Error(`more than ${MAX_PASSES} passes over the templates`);
    const t = this.#templates[n - pass * count]!;
    const out = Buffer.allocUnsafe(t.bytes.length);
    t.bytes.copy(out);
    const code =
      CROCKFORD[(pass >> 15) & 31]! +
      CROCKFORD[(pass >> 10) & 31]! +
      CROCKFORD[(pass >> 5) & 31]! +
      CROCKFORD[pass & 31]!;
    const year = String(2026 + pass);
    for (const at of t.ids) out.write(code, at, 'latin1');
    for (const at of t.years) out.write(year, at, 'latin1');
    return out;
  }

  next(): Buffer {
    return this.body(this.#next++);
  }
}
