/**
 * `lookup`: enriches records from a table declared under `tables:`. The table lives in shared
 * memory; a lookup hashes the key and compares it in place, allocating nothing.
 */
import type { Table } from '../../core/tables.ts';
import { fieldReader } from '../../core/fields.ts';
import { mergeFields } from '../../core/field-check.ts';
import type { ComponentExtras } from '../../core/registry.ts';
import { SluiceError } from '../../errors.ts';
import type { Batch, MapStep, Rec, StepContext, TransformSpec } from '../../core/types.ts';

export interface LookupConfig {
  type: 'lookup';
  table: string;
  /** Record field holding the key; dots reach into nested objects (`user.id`). */
  key: string;
  /** Record field to set ← table column. */
  fields: Record<string, string>;
  /** Values for the fields when no row matches (default null). */
  default?: Record<string, unknown>;
  /** What a record without a matching row does: keep it with defaults, drop it, or dead-letter it. */
  on_missing?: 'default' | 'drop' | 'dead';
}

class LookupStep implements MapStep {
  readonly kind = 'map';
  readonly #table: Table;
  readonly #key: (r: Rec) => unknown;
  readonly #keyName: string;
  readonly #fields: string[];
  readonly #columns: number[];
  readonly #defaults: unknown[];
  readonly #onMissing: NonNullable<LookupConfig['on_missing']>;
  readonly #dropCounter: string;

  constructor(config: LookupConfig, table: Table, stepId: string) {
    this.#table = table;
    this.#key = fieldReader(config.key);
    this.#keyName = config.key;
    this.#fields = Object.keys(config.fields);
    this.#columns = this.#fields.map((f) => {
      const column = config.fields[f]!;
      const c = table.column(column);
      if (c < 0) {
        throw new SluiceError(
          'SLUICE_ERR_TABLE_LOAD',
          `lookup: table "${table.name}" has no column "${column}"`,
          {
            hint: `Columns of ${table.name}: ${table.columns.join(', ')}.`,
          },
        );
      }
      return c;
    });
    this.#defaults = this.#fields.map((f) => config.default?.[f] ?? null);
    this.#onMissing = config.on_missing ?? 'default';
    this.#dropCounter = `dropped.${stepId}`;
  }

  run(input: Batch, ctx: StepContext): Batch {
    const table = this.#table;
    const fields = this.#fields;
    const columns = this.#columns;
    const keep = this.#onMissing === 'default';
    const records: Rec[] = keep ? input.records : [];
    const pos: number[] = keep ? input.pos : [];
    for (let i = 0; i < input.records.length; i++) {
      const r = input.records[i]!;
      const k = this.#key(r);
      const row =
        typeof k === 'string' ? table.find(k) : k === undefined || k === null ? -1 : table.find(String(k));
      if (row >= 0) {
        for (let f = 0; f < fields.length; f++) r[fields[f]!] = table.value(row, columns[f]!);
      } else if (keep) {
        for (let f = 0; f < fields.length; f++) r[fields[f]!] = this.#defaults[f];
        continue;
      } else if (this.#onMissing === 'drop') {
        ctx.count(this.#dropCounter);
        continue;
      } else {
        ctx.dead(
          input.pos[i]!,
          'missing',
          `no row in table "${table.name}" for ${this.#keyName} = ${JSON.stringify(k)}`,
        );
        continue;
      }
      if (!keep) {
        records.push(r);
        pos.push(input.pos[i]!);
      }
    }
    return { records, pos };
  }
}

export const lookupTransform: TransformSpec<LookupConfig> & ComponentExtras<LookupConfig> = {
  type: 'lookup',
  description: 'Sets record fields from a lookup table row found by a key field.',
  schema: {
    type: 'object',
    required: ['table', 'key', 'fields'],
    properties: {
      table: { type: 'string', description: 'Name of a table under `tables:`.' },
      key: {
        type: 'string',
        description: 'Record field holding the key (dots reach into objects, e.g. user.id).',
      },
      fields: {
        type: 'object',
        minProperties: 1,
        additionalProperties: { type: 'string' },
        description: 'Record field to set → table column to take it from.',
      },
      default: { type: 'object', description: 'Values for those fields when no row matches (default null).' },
      on_missing: {
        enum: ['default', 'drop', 'dead'],
        default: 'default',
        description: 'What happens to a record with no matching row.',
      },
    },
  },
  tables: (config) => [config.table],
  knownFields: (config, before) =>
    before && mergeFields(before, Object.fromEntries(Object.keys(config.fields).map((f) => [f, true]))),
  readsFields: (config) => [
    {
      option: ['key'],
      field: config.key,
      without: {
        default: 'gets the default values',
        drop: 'is dropped',
        dead: 'becomes a `missing` dead letter',
      }[config.on_missing ?? 'default'],
    },
  ],
  create: (config, env) => new LookupStep(config, env.tables[config.table]!, env.stepId),
};
