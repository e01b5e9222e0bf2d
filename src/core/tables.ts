/**
 * Lookup tables, loaded once on the main thread into SharedArrayBuffers and read in place by every
 * worker: a 50,000-row table costs its memory once, not once per thread.
 *
 * Layout: an open-addressing index of row numbers, the keys as UTF-16 code units (compared with
 * `charCodeAt`, no decoding), and per column one dictionary id per row. Dictionary entries are
 * JSON texts decoded lazily per worker, so low-cardinality columns (a tier, a region) decode once
 * and lookups allocate nothing.
 */
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { parse as parseCsv } from 'csv-parse/sync';
import { SluiceError } from '../errors.ts';
import { capacityFor, hashString } from './hash.ts';
import type { Rec } from './types.ts';

export type ColumnType = 'string' | 'number' | 'integer' | 'boolean' | 'json';

export interface TableConfig {
  path: string;
  format?: 'csv' | 'json';
  key: string;
  types?: Record<string, ColumnType>;
}

/** Everything a worker needs to read a table; structured-clones without copying the buffers. */
export interface SharedTableData {
  name: string;
  key: string;
  columns: string[];
  rows: number;
  slots: SharedArrayBuffer;
  keyOffsets: SharedArrayBuffer;
  keyChars: SharedArrayBuffer;
  values: SharedArrayBuffer[];
  dictOffsets: SharedArrayBuffer[];
  dictChars: SharedArrayBuffer[];
}

const sab = (length: number, bytes: number): SharedArrayBuffer =>
  new SharedArrayBuffer(Math.max(1, length) * bytes);
const sharedInt32 = (length: number): Int32Array<SharedArrayBuffer> => new Int32Array(sab(length, 4));
const sharedUint32 = (length: number): Uint32Array<SharedArrayBuffer> => new Uint32Array(sab(length, 4));
const sharedUint16 = (length: number): Uint16Array<SharedArrayBuffer> => new Uint16Array(sab(length, 2));

function packStrings(strings: string[]): { offsets: SharedArrayBuffer; chars: SharedArrayBuffer } {
  let total = 0;
  for (const s of strings) total += s.length;
  const offsets = sharedUint32(strings.length + 1);
  const chars = sharedUint16(total);
  let at = 0;
  strings.forEach((s, i) => {
    offsets[i] = at;
    for (let j = 0; j < s.length; j++) chars[at + j] = s.charCodeAt(j);
    at += s.length;
  });
  offsets[strings.length] = at;
  return { offsets: offsets.buffer, chars: chars.buffer };
}

function convert(value: unknown, type: ColumnType | undefined, where: () => string): unknown {
  if (type === undefined || typeof value !== 'string') return value;
  switch (type) {
    case 'string':
      return value;
    case 'number':
    case 'integer': {
      const n = Number(value);
      if (value.trim() === '' || !Number.isFinite(n) || (type === 'integer' && !Number.isInteger(n))) {
        throw new SluiceError(
          'SLUICE_ERR_TABLE_LOAD',
          `${where()}: "${value}" is not ${type === 'integer' ? 'an integer' : 'a number'}`,
        );
      }
      return n;
    }
    case 'boolean':
      if (value === 'true') return true;
      if (value === 'false') return false;
      throw new SluiceError('SLUICE_ERR_TABLE_LOAD', `${where()}: "${value}" is not true or false`);
    case 'json':
      try {
        return JSON.parse(value) as unknown;
      } catch {
        throw new SluiceError('SLUICE_ERR_TABLE_LOAD', `${where()}: "${value}" is not JSON`);
      }
  }
}

function readRows(name: string, config: TableConfig): Rec[] {
  const format = config.format ?? (extname(config.path).toLowerCase() === '.json' ? 'json' : 'csv');
  let text: string;
  try {
    text = readFileSync(config.path, 'utf8');
  } catch (err) {
    throw new SluiceError(
      'SLUICE_ERR_TABLE_LOAD',
      `table "${name}": cannot read ${config.path}: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  try {
    if (format === 'csv')
      return parseCsv(text, { columns: true, skip_empty_lines: true, bom: true }) as Rec[];
    const data = JSON.parse(text) as unknown;
    if (Array.isArray(data)) return data as Rec[];
    if (data !== null && typeof data === 'object') {
      // An object keyed by the lookup key: {"USD": {...}, ...}.
      return Object.entries(data as Record<string, Rec>).map(([k, row]) => ({ [config.key]: k, ...row }));
    }
    throw new Error('expected an array of objects or an object of objects');
  } catch (err) {
    if (err instanceof SluiceError) throw err;
    throw new SluiceError(
      'SLUICE_ERR_TABLE_LOAD',
      `table "${name}": ${config.path} is not valid ${format}: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
}

/** Loads a table file into shared memory. Runs once, on the main thread. */
export function loadTable(name: string, config: TableConfig): SharedTableData {
  const rows = readRows(name, config);
  const columns: string[] = [];
  for (const row of rows)
    for (const c of Object.keys(row)) if (c !== config.key && !columns.includes(c)) columns.push(c);

  const capacity = capacityFor(rows.length * 2);
  const slots = sharedInt32(capacity);
  const keys: string[] = [];
  const dicts = columns.map(() => new Map<string, number>());
  const values = columns.map(() => sharedInt32(rows.length));

  rows.forEach((row, r) => {
    const where = (): string => `table "${name}" (${config.path}) row ${r + 1}`;
    const rawKey = row[config.key];
    if (rawKey === undefined || rawKey === null || rawKey === '') {
      throw new SluiceError('SLUICE_ERR_TABLE_LOAD', `${where()}: no value for key column "${config.key}"`);
    }
    const key = String(rawKey);
    let slot = hashString(key) & (capacity - 1);
    while (slots[slot] !== 0) {
      if (keys[slots[slot]! - 1] === key)
        throw new SluiceError('SLUICE_ERR_TABLE_LOAD', `${where()}: duplicate key "${key}"`);
      slot = (slot + 1) & (capacity - 1);
    }
    slots[slot] = r + 1;
    keys.push(key);
    columns.forEach((c, ci) => {
      const v = convert(row[c], config.types?.[c], () => `${where()} column "${c}"`);
      if (v === undefined || v === null) {
        values[ci]![r] = -1;
        return;
      }
      const json = JSON.stringify(v);
      let id = dicts[ci]!.get(json);
      if (id === undefined) {
        id = dicts[ci]!.size;
        dicts[ci]!.set(json, id);
      }
      values[ci]![r] = id;
    });
  });

  const packedKeys = packStrings(keys);
  const packedDicts = dicts.map((d) => packStrings([...d.keys()]));
  return {
    name,
    key: config.key,
    columns,
    rows: rows.length,
    slots: slots.buffer,
    keyOffsets: packedKeys.offsets,
    keyChars: packedKeys.chars,
    values: values.map((v) => v.buffer),
    dictOffsets: packedDicts.map((d) => d.offsets),
    dictChars: packedDicts.map((d) => d.chars),
  };
}

/** A worker's read-only view of a shared table. */
export class Table {
  readonly name: string;
  readonly columns: readonly string[];
  readonly size: number;
  readonly #mask: number;
  readonly #slots: Int32Array;
  readonly #keyOffsets: Uint32Array;
  readonly #keyChars: Uint16Array;
  readonly #values: Int32Array[];
  readonly #dictOffsets: Uint32Array[];
  readonly #dictChars: Uint16Array[];
  readonly #decoded: unknown[][];

  constructor(data: SharedTableData) {
    this.name = data.name;
    this.columns = data.columns;
    this.size = data.rows;
    this.#slots = new Int32Array(data.slots);
    this.#mask = this.#slots.length - 1;
    this.#keyOffsets = new Uint32Array(data.keyOffsets);
    this.#keyChars = new Uint16Array(data.keyChars);
    this.#values = data.values.map((b) => new Int32Array(b));
    this.#dictOffsets = data.dictOffsets.map((b) => new Uint32Array(b));
    this.#dictChars = data.dictChars.map((b) => new Uint16Array(b));
    this.#decoded = data.columns.map(() => []);
  }

  /** Row number of `key`, or -1. */
  find(key: string): number {
    const chars = this.#keyChars;
    const offsets = this.#keyOffsets;
    let slot = hashString(key) & this.#mask;
    for (;;) {
      const entry = this.#slots[slot]!;
      if (entry === 0) return -1;
      const row = entry - 1;
      const start = offsets[row]!;
      if (offsets[row + 1]! - start === key.length) {
        let i = 0;
        while (i < key.length && chars[start + i] === key.charCodeAt(i)) i++;
        if (i === key.length) return row;
      }
      slot = (slot + 1) & this.#mask;
    }
  }

  /** Index of a column, or -1. */
  column(name: string): number {
    return this.columns.indexOf(name);
  }

  /** The value of `column` (an index from {@link column}) in `row`; null when the cell is empty. */
  value(row: number, column: number): unknown {
    const id = this.#values[column]![row]!;
    if (id < 0) return null;
    const cache = this.#decoded[column]!;
    let v = cache[id];
    if (v === undefined) {
      const offsets = this.#dictOffsets[column]!;
      const text = String.fromCharCode.apply(
        null,
        this.#dictChars[column]!.subarray(offsets[id]!, offsets[id + 1]!) as unknown as number[],
      );
      v = JSON.parse(text) as unknown;
      cache[id] = v;
    }
    return v;
  }

  /** The row for `key` as a new object, or undefined. Convenient; `find` + `value` allocate nothing. */
  get(key: string): Readonly<Rec> | undefined {
    const row = this.find(key);
    if (row < 0) return undefined;
    const out: Rec = {};
    for (let c = 0; c < this.columns.length; c++) out[this.columns[c]!] = this.value(row, c);
    return out;
  }
}

export type TableSet = Readonly<Record<string, Table>>;

export function attachTables(data: readonly SharedTableData[]): TableSet {
  const set: Record<string, Table> = Object.create(null) as Record<string, Table>;
  for (const d of data) set[d.name] = new Table(d);
  return set;
}
