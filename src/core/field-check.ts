/**
 * `sluice check`'s warnings about fields no record can have: a dedupe key or a window's time field
 * spelt wrong passes every other check, and then every record becomes a dead letter.
 *
 * What records hold is known only where a step says so (a validate step's JSON Schema with
 * `properties`), and stays known through steps that say how they change it (a lookup adds its
 * fields; filter, route, dedupe and window add none). A step that does not say, or that runs a
 * custom module, may add anything: fields read after it are not checked until the next validate.
 * So a warning means "this field is declared nowhere", never a guess.
 */
import type { PathSegment, ResolvedPipeline } from './config.ts';
import { closest } from './config.ts';
import { registry } from './registry.ts';
import type { FieldRead, KnownFields } from './types.ts';

export type { FieldRead, KnownFields };

export interface FieldWarning {
  /** Where the field is named: `['steps', 2, 'key', 2]`. */
  at: PathSegment[];
  message: string;
  hint: string;
}

/** Whether a dotted path (`user.id`) can be in a record with these fields. */
export function hasField(known: KnownFields, path: string): boolean {
  let node: KnownFields = known;
  for (const part of path.split('.')) {
    if (!Object.hasOwn(node, part)) return false;
    const inner = node[part]!;
    if (inner === true) return true;
    node = inner;
  }
  return true;
}

/** The fields of both; where both know an object's fields, those of both. */
export function mergeFields(a: KnownFields, b: KnownFields): KnownFields {
  const out: Record<string, KnownFields | true> = { ...a };
  for (const [name, inner] of Object.entries(b)) {
    const mine = out[name];
    out[name] =
      mine === undefined ? inner : mine === true || inner === true ? true : mergeFields(mine, inner);
  }
  return out;
}

/** Every path of a set of fields, parents first: `user`, `user.id`, `user.country`. */
function pathsOf(known: KnownFields, prefix = ''): string[] {
  return Object.entries(known).flatMap(([name, inner]) => [
    prefix + name,
    ...(inner === true ? [] : pathsOf(inner, `${prefix}${name}.`)),
  ]);
}

/** The fields each step reads that no record can have at that step. */
export function fieldWarnings(pipeline: ResolvedPipeline): FieldWarning[] {
  const warnings: FieldWarning[] = [];
  let known: KnownFields | undefined;
  /** The step whose declaration `known` starts from. */
  let declaredBy = '';
  pipeline.steps.forEach((step, i) => {
    const spec = registry.transforms.get(step.type);
    if (!spec) return;
    if (known) {
      const paths = pathsOf(known);
      for (const read of spec.readsFields?.(step.config) ?? []) {
        if (hasField(known, read.field)) continue;
        const suggestion = closest(read.field, paths);
        const at: PathSegment[] = ['steps', i, ...read.option];
        warnings.push({
          at,
          message: `step "${step.id}" reads field "${read.field}", which no record has here: the schema of step "${declaredBy}" does not declare it, and no step after it adds it`,
          hint: `A record without it ${read.without}.${suggestion ? ` Did you mean "${suggestion}"?` : ''} Fields here: ${listOf(paths)}.`,
        });
      }
    }
    const before = known;
    known = spec.modules?.(step.config).length ? undefined : spec.knownFields?.(step.config, before);
    if (known && !before) declaredBy = step.id;
  });
  return warnings;
}

function listOf(paths: string[]): string {
  const MAX = 30;
  return paths.length <= MAX ? paths.join(', ') : `${paths.slice(0, MAX).join(', ')}, …`;
}
