/**
 * docs/service.md documents every key of the service config schema, with its default, and no key
 * the schema does not have; its full example is a valid config.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse } from 'yaml';
import { serviceSchema } from '../src/service/config.ts';
import { ROOT } from './helpers.ts';

interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  additionalProperties?: Schema | boolean;
  items?: Schema;
  default?: unknown;
}

interface Key {
  /** As the docs write it: `tenants.<tenant>.api_keys[].sha256`. */
  path: string;
  schema: Schema;
}

/**
 * Every key of the schema, depth first. A map's entries (`additionalProperties`) are named after
 * the map in the singular (`tenants.<tenant>`), array items get `[]`.
 */
function keysOf(schema: Schema, prefix = '', mapName = ''): Key[] {
  const keys: Key[] = [];
  const at = (name: string): string => (prefix === '' ? name : `${prefix}.${name}`);
  for (const [name, child] of Object.entries(schema.properties ?? {})) {
    keys.push({ path: at(name), schema: child });
    keys.push(...keysOf(child, at(name), name));
  }
  if (typeof schema.additionalProperties === 'object') {
    const entry = at(`<${mapName.replace(/s$/, '')}>`);
    keys.push({ path: entry, schema: schema.additionalProperties });
    keys.push(...keysOf(schema.additionalProperties, entry));
  }
  if (schema.items) keys.push(...keysOf(schema.items, `${prefix}[]`));
  return keys;
}

const doc = readFileSync(join(ROOT, 'docs', 'service.md'), 'utf8');
const keys = keysOf(serviceSchema as unknown as Schema);

/** The rows of the reference table, by the key in their first column. */
function referenceRows(): Map<string, string> {
  const start = doc.indexOf('\n## Reference\n');
  assert.ok(start >= 0, 'docs/service.md has no "## Reference" section');
  const end = doc.indexOf('\n## ', start + 1);
  const rows = new Map<string, string>();
  for (const line of doc.slice(start, end < 0 ? undefined : end).split('\n')) {
    const m = /^\| `([^`]+)` +\|/.exec(line);
    if (m) rows.set(m[1]!, line);
  }
  return rows;
}

describe('docs/service.md', () => {
  it('walks the whole schema', () => {
    const paths = keys.map((k) => k.path);
    for (const expected of [
      'listen.port',
      'tenants.<tenant>.api_keys[].sha256',
      'tenants.<tenant>.pipelines.<pipeline>',
    ])
      assert.ok(paths.includes(expected), expected);
  });

  it('documents every key of the service config, with its default', () => {
    const rows = referenceRows();
    for (const key of keys) {
      const row = rows.get(key.path);
      assert.ok(row, `\`${key.path}\` is not in the reference table of docs/service.md`);
      if (key.schema.default !== undefined)
        assert.ok(
          row.includes(`\`${String(key.schema.default)}\``),
          `the row of \`${key.path}\` does not give its default \`${String(key.schema.default)}\``,
        );
    }
  });

  it('documents no key the schema does not have', () => {
    const known = new Set(keys.map((k) => k.path));
    for (const path of referenceRows().keys())
      assert.ok(known.has(path), `\`${path}\` is not a key of the schema`);
  });

  it('its full example is a valid service config', () => {
    const start = doc.indexOf('\n## Full example\n');
    assert.ok(start >= 0, 'docs/service.md has no "## Full example" section');
    const block = /```yaml\n([\s\S]*?)```/.exec(doc.slice(start));
    assert.ok(block, 'no yaml block under "## Full example"');
    const validate = new Ajv2020({
      allErrors: true,
      strict: true,
      strictRequired: false,
      allowUnionTypes: true,
    }).compile(serviceSchema);
    const example = parse(block[1]!) as Record<string, unknown>;
    assert.ok(validate(example), JSON.stringify(validate.errors));
    // Every top-level key appears in the example, so it shows the whole shape.
    assert.deepEqual(Object.keys(example).sort(), Object.keys(serviceSchema.properties).sort());
  });
});
