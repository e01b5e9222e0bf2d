/** JSON encoding for sinks, safe for BigInt values (written as decimal strings). */
import type { Rec } from './types.ts';

function bigintReplacer(_key: string, value: unknown): unknown {
  return typeof value === 'bigint' ? value.toString() : value;
}

/**
 * `JSON.stringify`, but a record holding a BigInt is encoded with a replacer instead of throwing.
 * The replacer costs ~2× per record, so it is only used for the records that need it.
 */
export function stringify(value: unknown): string {
  try {
    return JSON.stringify(value);
  } catch (err) {
    if (err instanceof TypeError && /BigInt/i.test(err.message)) return JSON.stringify(value, bigintReplacer);
    throw err;
  }
}

/** Records as NDJSON text, one per line, each line ending in `\n`. */
export function ndjson(records: readonly Rec[]): string {
  let out = '';
  for (let i = 0; i < records.length; i++) out += stringify(records[i]) + '\n';
  return out;
}
