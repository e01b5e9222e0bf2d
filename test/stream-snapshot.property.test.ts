/**
 * The service's checkpoints: processing a stream in chunks, with the state snapshotted through
 * v8 serialization and restored into a fresh pipeline at random points, gives exactly what one
 * uninterrupted pipeline gives. Also: dedupe with `within` forgets keys only as documented.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { deserialize, serialize } from 'node:v8';
import fc from 'fast-check';
import '../dist/components.js';
import { loadPipeline } from '../dist/core/config.js';
import { prepare, type Prepared } from '../dist/core/engine.js';
import { StreamPipeline } from '../dist/core/stream.js';
import { tempDir } from './helpers.ts';

const MINUTE = 60_000;

function pipelineFile(dir: string, dedupe: string): string {
  const file = join(dir, 'pipeline.yaml');
  writeFileSync(
    file,
    `name: snap
source: { type: http }
steps:
  - ${dedupe}
  - type: window
    id: per_minute
    time_field: t
    size: 60s
    hop: 30s
    allowed_lateness: 30s
    group_by: [k]
    metrics:
      n: { op: count }
      total: { op: sum, field: v }
      users: { op: distinct, field: u }
      p50: { op: quantile, field: v, q: 0.5 }
sinks:
  out: { type: stdout, input: per_minute }
`,
  );
  return file;
}

async function prepared(dedupe: string): Promise<Prepared> {
  return prepare(loadPipeline(pipelineFile(tempDir('sluice-snap-'), dedupe)));
}

interface Ev {
  id: number;
  t: number;
  k: string;
  v: number;
  u: number;
}

const chunkOf = (events: Ev[]): { bytes: Buffer } => ({
  bytes: Buffer.from(events.map((e) => JSON.stringify(e)).join('\n') + '\n'),
});

/** Everything a run produced, in order: closed window rows, dead letters, duplicate counts. */
function collect(stream: StreamPipeline, chunk: { bytes: Buffer }, into: unknown[]): void {
  const r = stream.process(chunk);
  into.push({
    rows: r.outputs.get('per_minute') ?? [],
    dead: (r.outputs.get('dead') ?? []).map((d) => [d.index, d.reason]),
    duplicates: r.counters['dropped.duplicate'] ?? 0,
  });
}

const events = fc.array(
  fc.record({
    id: fc.integer({ min: 0, max: 60 }),
    t: fc.integer({ min: 0, max: 20 * MINUTE }),
    k: fc.constantFrom('a', 'b', 'c'),
    v: fc.integer({ min: -1000, max: 1000 }),
    u: fc.integer({ min: 0, max: 30 }),
  }),
  { minLength: 1, maxLength: 120 },
);

describe('stream checkpoints', () => {
  for (const dedupe of [
    'type: dedupe\n    key: id',
    'type: dedupe\n    key: id\n    time_field: t\n    within: 2m',
  ]) {
    it(`snapshot → v8 → restore at any cut equals one uninterrupted run (${dedupe.includes('within') ? 'expiring' : 'exact'} dedupe)`, async () => {
      const p = await prepared(dedupe);
      await fc.assert(
        fc.asyncProperty(events, fc.array(fc.nat(), { maxLength: 6 }), async (evs, cutsRaw) => {
          const cuts = [...new Set(cutsRaw.map((c) => c % evs.length))].sort((a, b) => a - b);
          const bounds = [0, ...cuts.filter((c) => c > 0), evs.length];
          const chunks = bounds.slice(1).map((end, i) => chunkOf(evs.slice(bounds[i], end)));

          const whole = await StreamPipeline.create(p);
          const expected: unknown[] = [];
          for (const c of chunks) collect(whole, c, expected);

          let stream = await StreamPipeline.create(p);
          const actual: unknown[] = [];
          for (const c of chunks) {
            collect(stream, c, actual);
            // A restart: the state goes through the store's encoding into a fresh pipeline.
            const state = deserialize(serialize(stream.snapshot()));
            stream = await StreamPipeline.create(p);
            stream.restore(state);
          }
          assert.deepEqual(actual, expected);
          assert.deepEqual(stream.preview(), whole.preview(), 'open windows differ after the last restore');
        }),
        { numRuns: 40 },
      );
    });
  }

  it('dedupe within: a repeat inside the horizon is a duplicate; one two generations later is not', async () => {
    const p = await prepared('type: dedupe\n    key: id\n    time_field: t\n    within: 10m');
    const s = await StreamPipeline.create(p);
    const dup = (evs: Partial<Ev>[]): number =>
      s.process(chunkOf(evs.map((e) => ({ k: 'a', v: 1, u: 1, ...e }) as Ev))).counters[
        'dropped.duplicate'
      ] ?? 0;
    assert.equal(dup([{ id: 1, t: 0 }]), 0);
    assert.equal(dup([{ id: 1, t: 9 * MINUTE }]), 1, 'same generation');
    assert.equal(dup([{ id: 2, t: 11 * MINUTE }]), 0);
    assert.equal(dup([{ id: 1, t: 19 * MINUTE }]), 1, 'next generation still remembers');
    assert.equal(dup([{ id: 3, t: 25 * MINUTE }]), 0);
    assert.equal(dup([{ id: 1, t: 25 * MINUTE }]), 0, 'two generations later the key is forgotten');
    assert.equal(
      dup([{ id: 2, t: 26 * MINUTE }]),
      1,
      'id 2 (generation 1) is still remembered in generation 2',
    );
  });

  it('dedupe within: a record without a valid time is an invalid dead letter', async () => {
    const p = await prepared('type: dedupe\n    key: id\n    time_field: t\n    within: 10m');
    const s = await StreamPipeline.create(p);
    const r = s.process({ bytes: Buffer.from('{"id":1,"k":"a","v":1,"u":1}\n') });
    const dead = r.outputs.get('dead') ?? [];
    assert.equal(dead.length, 1);
    assert.equal(dead[0]!.reason, 'invalid');
    assert.match(String(dead[0]!.detail), /dedupe time field t/);
  });
});
