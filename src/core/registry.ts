/**
 * The one registry of components, by kind and name. The core looks components up here and knows
 * nothing else about them; src/components.ts is the single place that registers the built-ins.
 */
import type { FieldRead, KnownFields, SinkSpec, SourceSpec, TransformSpec } from './types.ts';

/** What a component may add about its config beyond its interface. */
export interface ComponentExtras<C = unknown> {
  /** Option keys holding file paths, resolved against the pipeline file's directory at load time. */
  readonly paths?: readonly string[];
  /** For paths nested deeper than a top-level option: returns the config with them resolved. */
  resolvePaths?(config: C, resolve: (path: string) => string): C;
  /** Schemas the component's schema references as `#/$defs/<name>`. */
  readonly definitions?: Record<string, Record<string, unknown>>;
  /**
   * Checks beyond the schema (a duration that does not parse, a hop longer than the window).
   * The loader reports a problem at the option's line and column.
   */
  check?(config: C): ConfigProblem | undefined;
  /**
   * For `sluice check`'s field warnings (field-check.ts): the fields records are known to have
   * after this step, from those known before it (undefined: not known). A step without it may add
   * any field, so fields read after it are not checked.
   */
  knownFields?(config: C, before: KnownFields | undefined): KnownFields | undefined;
  /** Fields the step reads from every record, for `sluice check` to look for in `knownFields`. */
  readsFields?(config: C): FieldRead[];
}

export interface ConfigProblem {
  /** The option at fault, relative to the component (e.g. `hop`). */
  key: string;
  message: string;
  hint?: string;
}

// Specs are stored type-erased: each component validates its own config through its schema, so
// the registry can hand it `unknown` options safely.
/* eslint-disable @typescript-eslint/no-explicit-any */
export type AnySourceSpec = SourceSpec<any> & ComponentExtras<any>;
export type AnyTransformSpec = TransformSpec<any> & ComponentExtras<any>;
export type AnySinkSpec = SinkSpec<any> & ComponentExtras<any>;
/* eslint-enable @typescript-eslint/no-explicit-any */

class Registry {
  readonly sources = new Map<string, AnySourceSpec>();
  readonly transforms = new Map<string, AnyTransformSpec>();
  readonly sinks = new Map<string, AnySinkSpec>();

  source<C>(spec: SourceSpec<C> & ComponentExtras<C>): void {
    this.#add(this.sources, spec as AnySourceSpec);
  }

  transform<C>(spec: TransformSpec<C> & ComponentExtras<C>): void {
    this.#add(this.transforms, spec as AnyTransformSpec);
  }

  sink<C>(spec: SinkSpec<C> & ComponentExtras<C>): void {
    this.#add(this.sinks, spec as AnySinkSpec);
  }

  #add<T extends { type: string }>(map: Map<string, T>, spec: T): void {
    if (map.has(spec.type)) throw new Error(`component type "${spec.type}" is registered twice`);
    map.set(spec.type, spec);
  }
}

export const registry = new Registry();
