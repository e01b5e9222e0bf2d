/**
 * `sluice serve` with the payments pipeline for two tenants, `flood` and `light`, for the overload
 * and slow-client benchmarks: started with the tests' own helpers, and removed (process and
 * directory) whatever way the benchmark ends.
 */
import { rmSync } from 'node:fs';
import { PAYMENTS, tempDir } from '../test/helpers.ts';
import { startServer, writeServiceConfig } from '../test/serve-helpers.ts';
import type { RunningServer } from './measure.ts';

export const PIPELINE = 'payments';

/** What to do at exit whatever happens: the benchmark's processes add theirs too. */
export const cleanups = new Set<() => void>();
process.on('exit', () => {
  for (const c of cleanups) c();
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => process.exit(130));

export async function startTwoTenants(
  prefix: string,
  keys: { flood: string; light: string },
): Promise<RunningServer> {
  const dir = tempDir(prefix);
  const tenant = (key: string): { keys: string[]; pipelines: Record<string, string> } => ({
    keys: [key],
    pipelines: { [PIPELINE]: PAYMENTS },
  });
  const server = await startServer(
    writeServiceConfig(dir, { flood: tenant(keys.flood), light: tenant(keys.light) }),
  );
  let alive = true;
  void server.exited.then(() => (alive = false));
  const cleanup = (): void => {
    if (alive) server.proc.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  };
  cleanups.add(cleanup);
  return {
    url: server.url,
    pid: server.proc.pid!,
    tail: () => server.output().trim().split('\n').slice(-5).join('\n'),
    stop: async () => {
      const started = performance.now();
      const r = await server.stop();
      cleanup();
      cleanups.delete(cleanup);
      return { ...r, ms: performance.now() - started };
    },
  };
}
