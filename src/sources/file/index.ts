import type { SourceSpec } from '../../core/types.ts';
import { decoderFor } from './decoder.ts';
import { openFile, type FileSourceConfig } from './reader.ts';

/** `file`: NDJSON or a JSON array from a file or stdin (`-`), gzip detected by content. */
export const fileSource: SourceSpec<FileSourceConfig> = {
  type: 'file',
  description:
    'Reads NDJSON (one record per line) or a JSON array from a file or standard input; gzip is detected from the content.',
  schema: {
    type: 'object',
    properties: {
      format: {
        enum: ['ndjson', 'json'],
        default: 'ndjson',
        description: 'ndjson: one JSON object per line. json: one top-level array of objects.',
      },
      max_record_bytes: {
        type: 'integer',
        minimum: 1024,
        default: 16777216,
        description: 'A longer record becomes a too_large dead letter instead of being held in memory.',
      },
    },
  },
  indexed: (config) => config.format === 'json',
  open: openFile,
  decoder: (config) => decoderFor(config.format, config.max_record_bytes),
};
