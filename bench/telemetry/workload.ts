/**
 * The telemetry workload's files for bench/batch.ts: the generated reports and sites table in
 * bench/.data/, and the example pipeline (examples/telemetry/pipeline.yaml) as it is, except that
 * its table is the generated one and its schema and module are named by absolute paths, written
 * beside them as JSON (a pipeline file may be YAML or JSON).
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { generateTelemetry, sitesCsv } from './generate.ts';

export interface TelemetryFiles {
  input: string;
  sites: string;
  schema: string;
  pipeline: string;
}

interface PipelineFile {
  tables: Record<string, { path: string }>;
  steps: { schema?: unknown; module?: unknown }[];
}

/** Generates the seed's reports once (later runs reuse them) and writes the table and pipeline. */
export function telemetryFiles(
  root: string,
  dataDir: string,
  seed: number,
  lines: number,
  log: (msg: string) => void,
): TelemetryFiles {
  mkdirSync(dataDir, { recursive: true });
  const input = join(dataDir, `telemetry-seed${seed}-${lines}.ndjson`);
  if (!existsSync(input)) {
    log(`generating ${lines.toLocaleString('en-US')} telemetry lines into ${input} ...`);
    generateTelemetry({ seed, lines, out: input });
  }
  const sites = join(dataDir, 'telemetry-sites.csv');
  writeFileSync(sites, sitesCsv());

  const example = join(root, 'examples', 'telemetry');
  const config = parseYaml(readFileSync(join(example, 'pipeline.yaml'), 'utf8')) as PipelineFile;
  config.tables.sites!.path = sites;
  for (const step of config.steps) {
    if (typeof step.schema === 'string') step.schema = resolve(example, step.schema);
    if (typeof step.module === 'string') step.module = resolve(example, step.module);
  }
  const pipeline = join(dataDir, 'telemetry-pipeline.json');
  writeFileSync(pipeline, JSON.stringify(config, null, 2) + '\n');
  return { input, sites, schema: join(example, 'report.schema.json'), pipeline };
}
