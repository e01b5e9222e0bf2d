/** The optional summary file: chosen run counters, written atomically at the end of a run. */
import { rename, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { SummaryConfig } from './config.ts';
import { makeDirectoryAsync } from './paths.ts';

/** Evaluates `a + b + c` over counters; a counter never incremented is 0. */
export function summarize(config: SummaryConfig, counters: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [field, expr] of Object.entries(config.counters)) {
    out[field] = expr.split('+').reduce((sum, name) => sum + (counters[name.trim()] ?? 0), 0);
  }
  return out;
}

export async function writeSummary(
  config: SummaryConfig,
  counters: Record<string, number>,
  outDir: string,
): Promise<void> {
  const path = resolve(outDir, config.path);
  await makeDirectoryAsync(dirname(path), 'the summary directory');
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(summarize(config, counters), null, 2) + '\n');
  await rename(tmp, path);
}
