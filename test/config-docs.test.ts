/** docs/config.md describes every component type and every option the schema allows. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from './helpers.ts';

type Schema = {
  properties?: Record<string, Schema>;
  oneOf?: Schema[];
  items?: Schema;
  additionalProperties?: Schema | boolean;
  $defs?: Record<string, Schema>;
  const?: string;
};

const schema = JSON.parse(readFileSync(join(ROOT, 'schema', 'pipeline.schema.json'), 'utf8')) as Schema;
const doc = readFileSync(join(ROOT, 'docs', 'config.md'), 'utf8');

function branches(s: Schema | undefined): Schema[] {
  return s?.oneOf ?? [];
}

describe('docs/config.md', () => {
  const kinds: [string, Schema[]][] = [
    ['source', branches(schema.properties!.source)],
    ['step', branches(schema.properties!.steps!.items)],
    ['sink', branches(schema.properties!.sinks!.additionalProperties as Schema)],
  ];
  for (const [kind, list] of kinds) {
    for (const branch of list) {
      const type = branch.properties!.type!.const!;
      it(`documents the ${kind} "${type}" and each of its options`, () => {
        // Each kind has its own "## Sources/Steps/Sinks" part; `file` is both a source and a sink.
        const part = doc.indexOf(
          `\n## ${kind === 'step' ? 'Steps' : kind === 'source' ? 'Sources' : 'Sinks'}\n`,
        );
        assert.ok(part >= 0);
        const heading = doc.slice(part).search(new RegExp(`^### ${type}$`, 'm'));
        assert.ok(heading >= 0, `no "### ${type}" heading under the ${kind}s`);
        const start = part + heading;
        const end = doc.indexOf('\n### ', start + 1);
        const section = doc.slice(start, end < 0 ? undefined : end);
        for (const option of Object.keys(branch.properties!)) {
          if (['type', 'id', 'input'].includes(option)) continue;
          assert.ok(
            section.includes(`\`${option}\``),
            `option \`${option}\` of ${kind} ${type} is not documented in its section`,
          );
        }
      });
    }
  }

  it('documents every top-level key', () => {
    for (const key of Object.keys(schema.properties!)) assert.ok(doc.includes(`\`${key}\``), key);
  });
});
