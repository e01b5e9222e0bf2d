/**
 * `validate`: JSON Schema 2020-12 through Ajv, compiled once per worker. A record that fails is a
 * dead letter whose detail names the field (JSON pointer), the keyword and what was expected.
 */
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { parse as parseYaml } from 'yaml';
import { SluiceError } from '../../errors.ts';
import { mergeFields, type KnownFields } from '../../core/field-check.ts';
import type { ComponentExtras } from '../../core/registry.ts';
import type { Batch, MapStep, Rec, StepContext, TransformSpec } from '../../core/types.ts';

// ajv-formats is CommonJS; under NodeNext its default import is the module object.
const addFormats = addFormatsModule as unknown as typeof addFormatsModule.default;

export interface ValidateConfig {
  type: 'validate';
  /** A schema object, or a path to a .json/.yaml schema file. */
  schema: string | Record<string, unknown>;
  /** Dead-letter reason for failures (default `invalid`). */
  reason?: string;
}

function loadSchema(schema: ValidateConfig['schema']): { schema: Record<string, unknown>; file?: string } {
  if (typeof schema !== 'string') return { schema };
  try {
    const text = readFileSync(schema, 'utf8');
    const ext = extname(schema).toLowerCase();
    return {
      schema: (ext === '.yaml' || ext === '.yml' ? parseYaml(text) : JSON.parse(text)) as Record<
        string,
        unknown
      >,
      file: schema,
    };
  } catch (err) {
    throw new SluiceError(
      'SLUICE_ERR_SCHEMA_COMPILE',
      `cannot read schema ${schema}: ${(err as Error).message}`,
      { location: { file: schema }, cause: err },
    );
  }
}

export function compileSchema(config: ValidateConfig): ValidateFunction {
  const { schema, file } = loadSchema(config.schema);
  const ajv = new Ajv2020({ allErrors: false, strict: true, allowUnionTypes: true });
  addFormats(ajv, { mode: 'fast' });
  try {
    return ajv.compile(schema);
  } catch (err) {
    throw new SluiceError(
      'SLUICE_ERR_SCHEMA_COMPILE',
      `${file ?? 'inline schema'}: ${(err as Error).message}`,
      { location: file ? { file } : undefined, cause: err },
    );
  }
}

/** A dead-letter detail for Ajv's first error: pointer, keyword and a sentence a person can read. */
export function describeError(e: ErrorObject): { detail: string; pointer: string; keyword: string } {
  const at = e.instancePath;
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = (e.params as { additionalProperty: string }).additionalProperty;
      const pointer = `${at}/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`;
      return {
        pointer,
        keyword: e.keyword,
        detail: `unknown field ${JSON.stringify(key)}${at ? ` in ${at}` : ''}`,
      };
    }
    case 'required': {
      const key = (e.params as { missingProperty: string }).missingProperty;
      return { pointer: `${at}/${key}`, keyword: e.keyword, detail: `missing required field ${at}/${key}` };
    }
    case 'type':
      if (at === '') return { pointer: at, keyword: e.keyword, detail: `the record ${e.message}` };
      return { pointer: at, keyword: e.keyword, detail: `${at} ${e.message}` };
    case 'enum':
      return {
        pointer: at,
        keyword: e.keyword,
        detail: `${at || 'the record'} must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`,
      };
    default:
      return { pointer: at, keyword: e.keyword, detail: `${at || 'the record'} ${e.message}` };
  }
}

/** Keywords through which a record may hold fields that `properties` does not name. */
const OPEN_KEYWORDS = [
  '$ref',
  '$dynamicRef',
  'allOf',
  'anyOf',
  'oneOf',
  'if',
  'then',
  'else',
  'dependentSchemas',
  'patternProperties',
];

/**
 * The fields a schema names in `properties` (nested ones too), or undefined where it cannot say:
 * no `properties`, other fields allowed in so many words (`additionalProperties` or
 * `unevaluatedProperties` other than false), or schemas combined. An object schema without
 * `additionalProperties` lets other fields pass, but names the ones it expects: enough for
 * `sluice check` to warn.
 */
export function declaredFields(schema: unknown): KnownFields | undefined {
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) return undefined;
  const s = schema as Record<string, unknown>;
  const properties = s.properties;
  if (properties === null || typeof properties !== 'object' || Array.isArray(properties)) return undefined;
  for (const open of ['additionalProperties', 'unevaluatedProperties'])
    if (s[open] !== undefined && s[open] !== false) return undefined;
  if (OPEN_KEYWORDS.some((k) => k in s)) return undefined;
  const known: Record<string, KnownFields | true> = {};
  for (const [name, inner] of Object.entries(properties)) known[name] = declaredFields(inner) ?? true;
  return known;
}

class ValidateStep implements MapStep {
  readonly kind = 'map';
  readonly #validate: ValidateFunction;
  readonly #reason: string;

  constructor(config: ValidateConfig) {
    this.#validate = compileSchema(config);
    this.#reason = config.reason ?? 'invalid';
  }

  run(input: Batch, ctx: StepContext): Batch {
    const validate = this.#validate;
    const records: Rec[] = [];
    const pos: number[] = [];
    for (let i = 0; i < input.records.length; i++) {
      const r = input.records[i]!;
      if (validate(r)) {
        records.push(r);
        pos.push(input.pos[i]!);
      } else {
        const { detail, pointer, keyword } = describeError(validate.errors![0]!);
        ctx.dead(input.pos[i]!, this.#reason, detail, { pointer, keyword });
      }
    }
    return { records, pos };
  }
}

export const validateTransform: TransformSpec<ValidateConfig> & ComponentExtras<ValidateConfig> = {
  type: 'validate',
  description:
    'Validates records against a JSON Schema (2020-12); failures become dead letters with pointer, keyword and message.',
  paths: ['schema'],
  schema: {
    type: 'object',
    required: ['schema'],
    properties: {
      schema: {
        anyOf: [{ type: 'string' }, { type: 'object' }],
        description:
          'A JSON Schema object, or the path of a .json or .yaml file holding one (relative to the pipeline file).',
      },
      reason: {
        type: 'string',
        default: 'invalid',
        description: 'Dead-letter reason for records that fail.',
      },
    },
  },
  knownFields: (config, before) => {
    const { schema } = loadSchema(config.schema);
    const declared = declaredFields(schema);
    if (!declared) return undefined;
    // Without `additionalProperties: false`, the fields known before pass too.
    return before && schema.additionalProperties !== false ? mergeFields(before, declared) : declared;
  },
  create: (config) => new ValidateStep(config),
};
