/**
 * Loading a pipeline file: YAML or JSON, validated against the registry-composed JSON Schema,
 * every error pointing at file, line, column and key path, then resolved into a plain object that
 * workers receive as is.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, extname, isAbsolute, resolve } from 'node:path';
import { Ajv2020, type ErrorObject, type Options } from 'ajv/dist/2020.js';
import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';
import { SluiceError, type SourceLocation } from '../errors.ts';
import { registry, type ComponentExtras } from './registry.ts';
import { pipelineSchema } from './schema.ts';
import type { TableConfig } from './tables.ts';
import type { ModuleRef } from './types.ts';

export interface ComponentConfig {
  type: string;
  [option: string]: unknown;
}

export interface ResolvedStep {
  id: string;
  type: string;
  config: ComponentConfig;
}

export interface ResolvedSink {
  id: string;
  type: string;
  input: string;
  config: ComponentConfig;
}

export interface SummaryConfig {
  path: string;
  counters: Record<string, string>;
}

/** A validated pipeline with absolute paths; plain data, sent to workers as is. */
export interface ResolvedPipeline {
  file: string;
  dir: string;
  name: string;
  source: ComponentConfig;
  tables: Record<string, TableConfig>;
  steps: ResolvedStep[];
  sinks: ResolvedSink[];
  summary: SummaryConfig | undefined;
  /**
   * `line`: a line whose fanned-out records fail gives one dead letter (the first failure, with
   * `records`, how many of its records failed), because the line is what a producer can resend.
   */
  deadLettersPer: 'record' | 'line';
  modules: ModuleRef[];
  /** Every output a sink may subscribe to. */
  outputs: string[];
}

/** The output every record reaching the end of the steps goes to. */
export const MAIN_OUTPUT = 'out';
/** The dead-letter output. */
export const DEAD_OUTPUT = 'dead';

export type PathSegment = string | number;

function formatPath(path: readonly PathSegment[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`;
  return out || '(top level)';
}

function pointerToPath(pointer: string): PathSegment[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = dp[0]!;
    dp[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = dp[j]!;
      dp[j] = Math.min(dp[j]! + 1, dp[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return dp[b.length]!;
}

/** The candidate nearest to a misspelt word, if one is near enough. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

/** Finds where a key path is in the YAML document, optionally pointing at a key rather than its value. */
export class Locator {
  readonly #doc: Document;
  readonly #lines: LineCounter;
  readonly #file: string;

  constructor(file: string, doc: Document, lines: LineCounter) {
    this.#file = file;
    this.#doc = doc;
    this.#lines = lines;
  }

  at(path: readonly PathSegment[], key?: string): SourceLocation {
    let node: unknown = this.#doc.contents;
    let offset: number | undefined = (node as Node | null)?.range?.[0];
    const walk = key === undefined ? path : [...path, key];
    for (let i = 0; i < walk.length; i++) {
      const seg = walk[i]!;
      const isLast = i === walk.length - 1;
      if (isMap(node)) {
        const pair = node.items.find((p) => (isScalar(p.key) ? p.key.value : p.key) === seg);
        if (!pair) break;
        const target = key !== undefined && isLast ? pair.key : (pair.value ?? pair.key);
        offset = (target as Node | null)?.range?.[0] ?? offset;
        node = pair.value;
      } else if (isSeq(node) && typeof seg === 'number') {
        node = node.items[seg];
        offset = (node as Node | null)?.range?.[0] ?? offset;
      } else {
        break;
      }
    }
    const loc: SourceLocation = { file: this.#file, path: formatPath(walk) };
    if (offset !== undefined) {
      const { line, col } = this.#lines.linePos(offset);
      loc.line = line;
      loc.column = col;
    }
    return loc;
  }
}

type Validate = ReturnType<Ajv2020['compile']>;

/** The Ajv that judges pipeline files (and, with `extra.code`, writes their standalone validator). */
export const newPipelineAjv = (extra: Options = {}): Ajv2020 =>
  new Ajv2020({
    allErrors: true,
    strict: true,
    strictRequired: false,
    discriminator: true,
    allowUnionTypes: true,
    ...extra,
  });

/** Identifies a composed schema: the standalone validator is used only for the one it was built from. */
export const schemaHash = (schema: unknown): string =>
  createHash('sha256').update(JSON.stringify(schema)).digest('hex');

let validator: Validate | undefined;

/**
 * The pipeline schema's validator: the standalone one the build wrote (validator-build.ts) when it
 * was made from the schema the registry composes now, else compiled here.
 */
function schemaValidator(): Validate {
  if (validator) return validator;
  const schema = pipelineSchema();
  try {
    const built = createRequire(import.meta.url)('./pipeline-validator.cjs') as Validate & {
      default?: Validate;
      schemaHash?: string;
    };
    if (built.schemaHash === schemaHash(schema)) return (validator = built.default ?? built);
  } catch {
    // Not built (sources run through tsx): compile.
  }
  return (validator = newPipelineAjv().compile(schema));
}

/** Picks the most useful of Ajv's errors: unknown keys first, then the deepest. */
function bestError(errors: ErrorObject[]): ErrorObject {
  const unknown = errors.find((e) => e.keyword === 'additionalProperties');
  if (unknown) return unknown;
  // An unknown component type: the discriminator error carries the "did you mean".
  const discriminator = errors.find((e) => e.keyword === 'discriminator');
  if (discriminator) return discriminator;
  return [...errors].sort((a, b) => b.instancePath.length - a.instancePath.length)[0]!;
}

function schemaAt(
  path: readonly PathSegment[],
  data: unknown,
  root: Record<string, unknown>,
): Record<string, unknown> | undefined {
  // Resolve which schema branch applies at `path`, to list allowed keys in unknown-key errors.
  const deref = (s: Record<string, unknown> | undefined): Record<string, unknown> | undefined =>
    typeof s?.$ref === 'string'
      ? ((root.$defs as Record<string, Record<string, unknown>>)[s.$ref.replace('#/$defs/', '')] ?? s)
      : s;
  let schema: Record<string, unknown> | undefined = root;
  let value: unknown = data;
  for (const seg of path) {
    schema = deref(schema);
    if (!schema) return undefined;
    if (schema.oneOf && value && typeof value === 'object') {
      const type = (value as Record<string, unknown>).type;
      schema = (schema.oneOf as Record<string, unknown>[]).find(
        (b) => (b.properties as Record<string, { const?: unknown }>).type?.const === type,
      );
      if (!schema) return undefined;
    }
    const props = schema.properties as Record<string, Record<string, unknown>> | undefined;
    if (typeof seg === 'number') schema = schema.items as Record<string, unknown> | undefined;
    else schema = props?.[seg] ?? (schema.additionalProperties as Record<string, unknown> | undefined);
    value = (value as Record<string | number, unknown> | undefined)?.[seg];
  }
  schema = deref(schema);
  if (schema?.oneOf && value && typeof value === 'object') {
    const type = (value as Record<string, unknown>).type;
    schema = (schema.oneOf as Record<string, unknown>[]).find(
      (b) => (b.properties as Record<string, { const?: unknown }>).type?.const === type,
    );
  }
  return schema;
}

function schemaError(
  err: ErrorObject,
  data: unknown,
  locate: Locator,
  root: Record<string, unknown>,
): SluiceError {
  const path = pointerToPath(err.instancePath);
  if (err.keyword === 'additionalProperties') {
    const key = (err.params as { additionalProperty: string }).additionalProperty;
    const allowed = Object.keys((schemaAt(path, data, root)?.properties ?? {}) as object);
    const suggestion = closest(key, allowed);
    return new SluiceError(
      'SLUICE_ERR_CONFIG_UNKNOWN_KEY',
      `unknown key "${key}"${suggestion ? `; did you mean "${suggestion}"?` : ''}`,
      {
        hint: `${suggestion ? `Rename it to "${suggestion}", or remove it.` : 'Remove it.'} Allowed here: ${allowed.join(', ')}.`,
        location: locate.at(path, key),
      },
    );
  }
  if (err.keyword === 'discriminator') {
    const params = err.params as { error: string; tag: string; tagValue: unknown };
    const kind = path.includes('steps') ? 'step' : path[0] === 'source' ? 'source' : 'sink';
    const types = [
      ...(kind === 'step'
        ? registry.transforms
        : kind === 'source'
          ? registry.sources
          : registry.sinks
      ).keys(),
    ];
    if (params.error === 'mapping') {
      const suggestion = typeof params.tagValue === 'string' ? closest(params.tagValue, types) : undefined;
      return new SluiceError(
        'SLUICE_ERR_CONFIG_INVALID',
        `unknown ${kind} type ${JSON.stringify(params.tagValue)}${suggestion ? `; did you mean "${suggestion}"?` : ''}`,
        {
          hint: `Use one of: ${types.join(', ')}.`,
          location: locate.at([...path, 'type']),
        },
      );
    }
    return new SluiceError('SLUICE_ERR_CONFIG_INVALID', `"type" must be a string naming a ${kind}`, {
      hint: `Use one of: ${types.join(', ')}.`,
      location: locate.at(path),
    });
  }
  if (err.keyword === 'required') {
    const missing = (err.params as { missingProperty: string }).missingProperty;
    return new SluiceError('SLUICE_ERR_CONFIG_INVALID', `missing required key "${missing}"`, {
      hint: `Add "${missing}" here; docs/config.md describes it.`,
      location: { ...locate.at(path), path: formatPath([...path, missing]) },
    });
  }
  let message = `${err.message ?? 'is invalid'}`;
  if (err.keyword === 'enum')
    message = `must be one of ${(err.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
  if (err.keyword === 'const')
    message = `must be ${JSON.stringify((err.params as { allowedValue: unknown }).allowedValue)}`;
  return new SluiceError('SLUICE_ERR_CONFIG_INVALID', `${formatPath(path)} ${message}`, {
    location: locate.at(path),
  });
}

function resolveFrom(dir: string, p: string): string {
  return isAbsolute(p) ? p : resolve(dir, p);
}

/**
 * Reads, validates and resolves a pipeline file. Throws a {@link SluiceError} naming file, line,
 * column and key path for anything wrong.
 */
export function loadPipeline(file: string): ResolvedPipeline {
  const { abs, data, locate } = readConfigFile(file, {
    what: 'pipeline file',
    shape: 'a mapping with source, steps and sinks',
  });
  checkSchema(schemaValidator(), pipelineSchema(), data, locate);
  return resolvePipeline(abs, data as unknown as RawPipeline, locate);
}

/** A YAML or JSON config file read with positions, so later errors can name line and column. */
export interface ConfigFile {
  abs: string;
  data: Record<string, unknown>;
  locate: Locator;
}

export function readConfigFile(file: string, kind: { what: string; shape: string }): ConfigFile {
  const abs = resolve(file);
  if (!existsSync(abs)) {
    throw new SluiceError('SLUICE_ERR_CONFIG_NOT_FOUND', `${kind.what} ${file} does not exist`, {
      location: { file },
    });
  }
  const text = readFileSync(abs, 'utf8');
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const pos = e.linePos?.[0] ?? lines.linePos(e.pos[0]);
    throw new SluiceError('SLUICE_ERR_CONFIG_SYNTAX', e.message.split('\n')[0]!, {
      location: { file, ...(pos ? { line: pos.line, column: pos.col } : {}) },
    });
  }
  const data = doc.toJS() as unknown;
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new SluiceError('SLUICE_ERR_CONFIG_INVALID', `a ${kind.what} must be ${kind.shape}`, {
      location: { file, line: 1, column: 1 },
    });
  }
  return { abs, data: data as Record<string, unknown>, locate: new Locator(file, doc, lines) };
}

/** Throws the most useful schema error, with its position and a "did you mean" where one fits. */
export function checkSchema(
  validate: ReturnType<Ajv2020['compile']>,
  root: Record<string, unknown>,
  data: unknown,
  locate: Locator,
): void {
  if (!validate(data)) throw schemaError(bestError(validate.errors ?? []), data, locate, root);
}

interface RawPipeline {
  name?: string;
  source: ComponentConfig;
  tables?: Record<string, TableConfig>;
  steps: (ComponentConfig & { id?: string })[];
  sinks?: Record<string, ComponentConfig & { input: string }>;
  dead_letters?: ComponentConfig;
  dead_letters_per?: 'record' | 'line';
  summary?: SummaryConfig;
}

function resolvePaths(
  config: ComponentConfig,
  spec: ComponentExtras<ComponentConfig>,
  dir: string,
  at: PathSegment[],
  locate: Locator,
): ComponentConfig {
  let out = { ...config };
  if (spec.resolvePaths) out = spec.resolvePaths(out, (p) => resolveFrom(dir, p));
  for (const key of spec.paths ?? []) {
    const v = out[key];
    if (typeof v !== 'string') continue;
    const abs = resolveFrom(dir, v);
    if (!existsSync(abs)) {
      throw new SluiceError(
        'SLUICE_ERR_CONFIG_REFERENCE',
        `${key}: file ${v} does not exist (looked for ${abs})`,
        {
          hint: 'Paths in a pipeline file are relative to the pipeline file.',
          location: locate.at([...at, key]),
        },
      );
    }
    out[key] = abs;
  }
  return out;
}

function checkComponent(
  config: ComponentConfig,
  spec: ComponentExtras<ComponentConfig>,
  at: PathSegment[],
  locate: Locator,
): void {
  const problem = spec.check?.(config);
  if (!problem) return;
  throw new SluiceError('SLUICE_ERR_CONFIG_INVALID', `${problem.key}: ${problem.message}`, {
    hint: problem.hint,
    location: locate.at([...at, problem.key]),
  });
}

function resolvePipeline(abs: string, raw: RawPipeline, locate: Locator): ResolvedPipeline {
  const dir = dirname(abs);
  const tables: Record<string, TableConfig> = {};
  for (const [name, t] of Object.entries(raw.tables ?? {})) {
    const path = resolveFrom(dir, t.path);
    if (!existsSync(path)) {
      throw new SluiceError(
        'SLUICE_ERR_CONFIG_REFERENCE',
        `table "${name}": file ${t.path} does not exist (looked for ${path})`,
        {
          location: locate.at(['tables', name, 'path']),
        },
      );
    }
    tables[name] = { ...t, path };
  }

  const sourceSpec = registry.sources.get(raw.source.type)!;
  const source = resolvePaths(
    raw.source,
    sourceSpec as ComponentExtras<ComponentConfig>,
    dir,
    ['source'],
    locate,
  );

  const ids = new Set<string>();
  const typeCounts = new Map<string, number>();
  for (const s of raw.steps) typeCounts.set(s.type, (typeCounts.get(s.type) ?? 0) + 1);
  const typeSeen = new Map<string, number>();
  const modules: ModuleRef[] = [];
  const outputs = new Set<string>([MAIN_OUTPUT, DEAD_OUTPUT]);
  const steps: ResolvedStep[] = raw.steps.map((s, i) => {
    const at: PathSegment[] = ['steps', i];
    const n = (typeSeen.get(s.type) ?? 0) + 1;
    typeSeen.set(s.type, n);
    const id = s.id ?? (typeCounts.get(s.type) === 1 ? s.type : `${s.type}_${n}`);
    if (ids.has(id)) {
      throw new SluiceError('SLUICE_ERR_CONFIG_INVALID', `step id "${id}" is used twice`, {
        hint: 'Give each step a unique `id`.',
        location: locate.at([...at, 'id']),
      });
    }
    ids.add(id);
    const spec = registry.transforms.get(s.type)!;
    const { id: _id, ...rest } = s;
    const config = resolvePaths(
      rest as ComponentConfig,
      spec as ComponentExtras<ComponentConfig>,
      dir,
      at,
      locate,
    );
    checkComponent(config, spec as ComponentExtras<ComponentConfig>, at, locate);
    for (const t of spec.tables?.(config) ?? []) {
      if (!(t in tables)) {
        throw new SluiceError('SLUICE_ERR_CONFIG_REFERENCE', `table "${t}" is not defined`, {
          hint: `Define it under \`tables:\`${Object.keys(tables).length ? ` (defined: ${Object.keys(tables).join(', ')})` : ''}.`,
          location: locate.at([...at, 'table']),
        });
      }
    }
    for (const m of spec.modules?.(config) ?? []) modules.push(m);
    for (const o of spec.outputs?.(config, id) ?? []) {
      if (outputs.has(o)) {
        throw new SluiceError('SLUICE_ERR_CONFIG_INVALID', `output "${o}" is defined twice`, {
          hint: `Output names must be unique and not "${MAIN_OUTPUT}" or "${DEAD_OUTPUT}".`,
          location: locate.at(at),
        });
      }
      outputs.add(o);
    }
    return { id, type: s.type, config };
  });

  const sinks: ResolvedSink[] = Object.entries(raw.sinks ?? {}).map(([id, s]) => {
    if (!outputs.has(s.input)) {
      throw new SluiceError(
        'SLUICE_ERR_CONFIG_REFERENCE',
        `sink "${id}" reads output "${s.input}", which no step produces`,
        {
          hint: `Outputs of this pipeline: ${[...outputs].join(', ')}.`,
          location: locate.at(['sinks', id, 'input']),
        },
      );
    }
    const { input, ...config } = s;
    return { id, type: s.type, input, config: config as ComponentConfig };
  });
  const dead = raw.dead_letters ?? { type: 'file', path: 'dead-letters.ndjson' };
  sinks.push({ id: 'dead_letters', type: dead.type, input: DEAD_OUTPUT, config: dead });

  return {
    file: abs,
    dir,
    name: raw.name ?? basename(abs, extname(abs)).replace(/\.pipeline$/, ''),
    source,
    tables,
    steps,
    sinks,
    summary: raw.summary,
    deadLettersPer: raw.dead_letters_per ?? 'record',
    modules,
    outputs: [...outputs],
  };
}
