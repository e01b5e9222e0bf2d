/**
 * The pipeline config's JSON Schema, composed from the registry: one discriminated branch per
 * component type. The same schema validates configs at load time and is published as
 * schema/pipeline.schema.json for editor completion (`sluice schema` prints it).
 */
import { registry } from './registry.ts';

type Schema = Record<string, unknown>;

export const SCHEMA_ID = 'https://github.com/sluice-dev/sluice/schema/pipeline.schema.json';

const ID_PATTERN = '^[A-Za-z_][A-Za-z0-9_-]*$';

function branch(
  type: string,
  description: string,
  options: Schema,
  extra: Schema,
  requiredExtra: string[] = [],
): Schema {
  const props = (options.properties ?? {}) as Schema;
  const required = (options.required ?? []) as string[];
  return {
    type: 'object',
    description,
    additionalProperties: false,
    required: ['type', ...requiredExtra, ...required],
    properties: { type: { const: type }, ...extra, ...props },
  };
}

function discriminated(branches: Schema[]): Schema {
  const types = branches.map((b) => ((b.properties as Schema).type as { const: string }).const);
  return {
    type: 'object',
    discriminator: { propertyName: 'type' },
    required: ['type'],
    properties: { type: { enum: types } },
    oneOf: branches,
  };
}

export function pipelineSchema(): Schema {
  const id = {
    type: 'string',
    pattern: ID_PATTERN,
    description: 'Name of the step; also the default name of its output.',
  };
  const input = {
    type: 'string',
    description: 'Output this sink writes: a route name, a window step id, `out` or `dead`.',
  };

  const sources = [...registry.sources.values()].map((s) => branch(s.type, s.description, s.schema, {}));
  const steps = [...registry.transforms.values()].map((t) =>
    branch(t.type, t.description, t.schema as Schema, { id }),
  );
  const sinks = [...registry.sinks.values()].map((s) =>
    branch(s.type, s.description, s.schema, { input }, ['input']),
  );
  const deadSinks = [...registry.sinks.values()].map((s) => branch(s.type, s.description, s.schema, {}));

  const defs: Record<string, unknown> = {};
  for (const t of registry.transforms.values()) Object.assign(defs, t.definitions ?? {});

  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: SCHEMA_ID,
    title: 'sluice pipeline',
    description: 'A sluice pipeline: one source, ordered steps, sinks subscribed to named outputs.',
    type: 'object',
    additionalProperties: false,
    required: ['source', 'steps'],
    properties: {
      $schema: { type: 'string', description: 'Schema URL or path, for editors.' },
      name: {
        type: 'string',
        pattern: ID_PATTERN,
        description: 'Pipeline name (defaults to the file name).',
      },
      description: { type: 'string' },
      source: discriminated(sources),
      tables: {
        type: 'object',
        description: 'Lookup tables loaded once and shared by every worker.',
        propertyNames: { pattern: ID_PATTERN },
        additionalProperties: {
          type: 'object',
          additionalProperties: false,
          required: ['path', 'key'],
          properties: {
            path: { type: 'string', description: 'CSV or JSON file, relative to the pipeline file.' },
            format: {
              enum: ['csv', 'json'],
              description: 'Defaults from the file extension (.json → json, else csv).',
            },
            key: { type: 'string', description: 'Column holding the lookup key; keys must be unique.' },
            types: {
              type: 'object',
              description: 'Convert CSV text columns: string (default), number, integer, boolean, json.',
              additionalProperties: { enum: ['string', 'number', 'integer', 'boolean', 'json'] },
            },
          },
        },
      },
      steps: { type: 'array', items: discriminated(steps) },
      sinks: {
        type: 'object',
        description: 'Sinks by id; each subscribes to one output.',
        propertyNames: { pattern: ID_PATTERN },
        additionalProperties: discriminated(sinks),
      },
      dead_letters: {
        ...discriminated(deadSinks),
        description:
          'Where records that fail go (default: file dead-letters.ndjson in the output directory).',
      },
      dead_letters_per: {
        enum: ['record', 'line'],
        default: 'record',
        description:
          'One dead letter per failed record (default), or one per input line however many of its fanned-out records failed.',
      },
      summary: {
        type: 'object',
        additionalProperties: false,
        required: ['path', 'counters'],
        description: 'A JSON file of chosen run counters written at the end of `sluice run`.',
        properties: {
          path: { type: 'string', description: 'Relative to the output directory.' },
          counters: {
            type: 'object',
            description:
              'Field name → counter, or counters joined by `+` (e.g. `dead.parse + dead.invalid`).',
            additionalProperties: {
              type: 'string',
              pattern: '^\\s*[A-Za-z0-9_.-]+(\\s*\\+\\s*[A-Za-z0-9_.-]+)*\\s*$',
            },
          },
        },
      },
    },
    $defs: defs,
  };
}
