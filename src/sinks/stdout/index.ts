/** `stdout`: NDJSON on standard output, for piping into other tools. */
import { once } from 'node:events';
import { ndjson } from '../../core/encode.ts';
import type { SinkSpec } from '../../core/types.ts';

export interface StdoutSinkConfig {
  type: 'stdout';
}

export const stdoutSink: SinkSpec<StdoutSinkConfig> = {
  type: 'stdout',
  description:
    'Writes NDJSON to standard output (written as it comes: a failed run may have printed part of it).',
  schema: { type: 'object', properties: {} },
  encoder: () => ndjson,
  open: async () => ({
    async write(encoded: string) {
      if (!process.stdout.write(encoded)) await once(process.stdout, 'drain');
    },
    async commit() {},
    async abort() {},
  }),
  describe: () => 'standard output',
  capabilities: {
    service: {
      allowed: false,
      reason: "would write into the service's log stream",
      hint: 'Use a file or sqlite sink in pipelines that `sluice serve` runs.',
    },
  },
};
