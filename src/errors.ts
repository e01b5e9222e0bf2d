/**
 * The one error catalogue. Every failure that reaches a user carries a stable code from here, a
 * message saying what happened and a hint saying what to do. docs/errors.md documents every code
 * and every dead-letter reason; test/errors.test.ts fails when the two disagree.
 */

export interface ErrorSpec {
  /**
   * What kind of failure: decides the CLI exit code (usage/config → 2, everything else → 1).
   * `request` errors are answers of `sluice serve` to one HTTP request.
   */
  readonly category: 'usage' | 'config' | 'input' | 'runtime' | 'test' | 'request';
  readonly title: string;
  readonly hint: string;
  /** HTTP status when the service answers with this error (RFC 9457 problem details). */
  readonly status?: number;
}

export const ERRORS = {
  SLUICE_ERR_USAGE: {
    category: 'usage',
    title: 'Invalid command line',
    hint: 'Run `sluice --help` or `sluice <command> --help` for the options.',
  },
  SLUICE_ERR_KEY_INVALID: {
    category: 'usage',
    title: '`sluice keys hash` read no key, or more than one word',
    hint: 'Pipe exactly one key into it, e.g. `sluice keys hash < key.txt`; a key is one word without spaces.',
  },
  SLUICE_ERR_CONFIG_NOT_FOUND: {
    category: 'config',
    title: 'Pipeline file not found',
    hint: 'Check the path; it is resolved from the current directory.',
  },
  SLUICE_ERR_CONFIG_SYNTAX: {
    category: 'config',
    title: 'Pipeline file is not valid YAML or JSON',
    hint: 'Fix the syntax at the position shown; YAML indentation must be consistent.',
  },
  SLUICE_ERR_CONFIG_UNKNOWN_KEY: {
    category: 'config',
    title: 'Unknown key in pipeline config',
    hint: 'Remove the key or correct its spelling; schema/pipeline.schema.json lists every allowed key.',
  },
  SLUICE_ERR_CONFIG_INVALID: {
    category: 'config',
    title: 'Invalid value in pipeline config',
    hint: 'Change the value to what the message asks for; docs/config.md describes every option.',
  },
  SLUICE_ERR_CONFIG_REFERENCE: {
    category: 'config',
    title: 'Pipeline config refers to something that does not exist',
    hint: 'Define the table, output or file it names, or correct the name.',
  },
  SLUICE_ERR_MODULE_LOAD: {
    category: 'config',
    title: 'A TypeScript module referenced by the pipeline could not be compiled or loaded',
    hint: 'Fix the compile error shown; the module path is relative to the pipeline file.',
  },
  SLUICE_ERR_MODULE_EXPORT: {
    category: 'config',
    title: 'A module does not export the function the pipeline names',
    hint: 'Export the function (default export or the name given by `export:`).',
  },
  SLUICE_ERR_SCHEMA_COMPILE: {
    category: 'config',
    title: 'A JSON Schema used by a validate step is not valid',
    hint: 'Fix the schema; sluice compiles JSON Schema 2020-12 with Ajv in strict mode.',
  },
  SLUICE_ERR_TABLE_LOAD: {
    category: 'config',
    title: 'A lookup table could not be loaded',
    hint: 'Check the path, the format (csv or json) and that the key column exists in every row.',
  },
  SLUICE_ERR_INPUT_NOT_FOUND: {
    category: 'usage',
    title: 'Input file not found or not readable',
    hint: 'Check the --input path and that this user may read it, or pass `-` to read standard input.',
  },
  SLUICE_ERR_INPUT_CORRUPT: {
    category: 'input',
    title: 'Input could not be read to the end (for example a truncated gzip file)',
    hint: 'Re-fetch or re-compress the input; no output was written, so the run can simply be repeated.',
  },
  SLUICE_ERR_PATH_UNWRITABLE: {
    category: 'usage',
    title: 'A directory could not be created or written',
    hint: "Give a path this user can create and write (--out, --data, store.path or the sink's path), or create the directory and set its owner first.",
  },
  SLUICE_ERR_SINK_WRITE: {
    category: 'runtime',
    title: 'A sink could not write its output',
    hint: 'Check the output directory exists, is writable and has free space.',
  },
  SLUICE_ERR_WORKER_FAILED: {
    category: 'runtime',
    title: 'A worker thread failed',
    hint: 'This is a bug in sluice or in a custom module outside its per-record function; please report it with the message.',
  },
  SLUICE_ERR_INTERRUPTED: {
    category: 'runtime',
    title: 'Run interrupted',
    hint: 'Outputs were not written; run the command again.',
  },
  SLUICE_ERR_TEST_FAILED: {
    category: 'test',
    title: 'Pipeline test cases failed',
    hint: 'Read the diff: `-` lines are expected, `+` lines are what the pipeline produced.',
  },
  SLUICE_ERR_TEST_FIXTURE: {
    category: 'config',
    title: 'A pipeline test file is invalid',
    hint: 'Each case needs `name`, `input` and `expect`; see docs/testing.md.',
  },
  SLUICE_ERR_SERVICE_START: {
    category: 'runtime',
    title: 'The service could not start',
    hint: 'Read the message: usually the listen address is taken or the store directory is not writable.',
  },
  SLUICE_ERR_STORE_LOCKED: {
    category: 'runtime',
    title: 'Another service is running on this store',
    hint: 'Stop the process the message names, or give this service a store of its own (`store.path`, or `--data` without a config). A killed process leaves no lock behind: there is nothing to delete.',
  },
  SLUICE_ERR_STORE: {
    category: 'runtime',
    title: 'The store could not be read or written',
    status: 503,
    hint: 'Check the disk under the store path (space, permissions). Nothing that was not acknowledged was kept; retry the request.',
  },
  SLUICE_ERR_UNAUTHORIZED: {
    category: 'request',
    title: 'Missing or unknown API key',
    status: 401,
    hint: 'Send `Authorization: Bearer <key>` with a key configured for your tenant.',
  },
  SLUICE_ERR_NOT_FOUND: {
    category: 'request',
    title: 'No such pipeline or route',
    status: 404,
    hint: 'Check the pipeline name in the URL; a tenant sees only its own pipelines.',
  },
  SLUICE_ERR_BAD_REQUEST: {
    category: 'request',
    title: 'Invalid request parameters',
    status: 400,
    hint: 'docs/http-api.md and /openapi.json describe every parameter.',
  },
  SLUICE_ERR_HEADERS_TOO_LARGE: {
    category: 'request',
    title: "The request's headers are too large",
    status: 431,
    hint: 'Send less than 16 KiB of headers.',
  },
  SLUICE_ERR_BODY_MALFORMED: {
    category: 'request',
    title: 'The request body could not be read as events',
    status: 400,
    hint: 'Send one JSON object, a JSON array of objects, or NDJSON; gzip needs `Content-Encoding: gzip` and a complete stream.',
  },
  SLUICE_ERR_BODY_TOO_LARGE: {
    category: 'request',
    title: 'The request body is larger than the limit',
    status: 413,
    hint: 'Split the events into several requests below `limits.body_bytes` (after decompression too).',
  },
  SLUICE_ERR_TOO_MANY_RECORDS: {
    category: 'request',
    title: 'The request body holds more records than the limit',
    status: 413,
    hint: 'Split the events into several requests of at most `limits.body_records` records (NDJSON lines count, blank ones too).',
  },
  SLUICE_ERR_CLIENT_ABORTED: {
    category: 'request',
    title: 'The client closed the connection before its body was complete',
    status: 400,
    hint: 'Nothing to do on the service: the request was not processed, and the client, gone, sees no answer. Many of them mean producers time out too early or a proxy cuts uploads.',
  },
  SLUICE_ERR_BODY_TIMEOUT: {
    category: 'request',
    title: 'The request body did not arrive in time',
    status: 408,
    hint: 'Send the whole body within 30 s of its start; split large uploads into smaller requests.',
  },
  SLUICE_ERR_UNSUPPORTED_MEDIA_TYPE: {
    category: 'request',
    title: 'Unsupported Content-Type or Content-Encoding',
    status: 415,
    hint: 'Use application/json or application/x-ndjson, optionally with Content-Encoding: gzip.',
  },
  SLUICE_ERR_RATE_LIMITED: {
    category: 'request',
    title: "The tenant's rate limit is exhausted",
    status: 429,
    hint: 'Retry after the number of seconds in Retry-After, or ask for higher limits.',
  },
  SLUICE_ERR_OVERLOADED: {
    category: 'request',
    title: 'The service is behind and sheds load',
    status: 503,
    hint: 'Retry after the number of seconds in Retry-After; nothing of this request was accepted.',
  },
  SLUICE_ERR_TENANT_OVERLOADED: {
    category: 'request',
    title: "The tenant sends more than its share of the service's capacity",
    status: 429,
    hint: 'Retry after the number of seconds in Retry-After, or send less at once; nothing of this request was accepted.',
  },
  SLUICE_ERR_SHUTTING_DOWN: {
    category: 'request',
    title: 'The service is shutting down',
    status: 503,
    hint: 'Retry, against another instance or after the restart; nothing of this request was accepted.',
  },
  SLUICE_ERR_UNAVAILABLE: {
    category: 'request',
    title: 'A service sluice depends on is unreachable',
    status: 503,
    hint: 'Retry after the number of seconds in Retry-After, with the same Idempotency-Key (a request whose publish timed out may have been stored). Operators: check NATS, PostgreSQL and Redis (see /readyz).',
  },
  SLUICE_ERR_UPSTREAM: {
    category: 'request',
    title: 'The upstream service did not answer',
    status: 502,
    hint: 'The request was for the service behind sluice (upstream.url), which is unreachable or timed out. Operators: check that service; the routes sluice serves itself are not affected.',
  },
  SLUICE_ERR_TAP_REFUSED: {
    category: 'runtime',
    title: '`sluice tap`: the service refused',
    hint: "Check --key (a key of the pipeline's tenant), the pipeline's name and --step; the message has the service's own code.",
  },
  SLUICE_ERR_SERVICE_UNREACHABLE: {
    category: 'runtime',
    title: 'The service could not be read',
    hint: 'Check --url (scheme, host and port of sluice serve) and that the service runs; /metrics needs no key.',
  },
  SLUICE_ERR_CONNECT: {
    category: 'runtime',
    title: 'Could not connect to NATS, PostgreSQL or Redis',
    hint: 'Check the URL in the runtime section, that the server runs and accepts this client, and for NATS that JetStream is enabled (nats-server -js).',
  },
  SLUICE_ERR_INTERNAL: {
    category: 'request',
    title: 'Internal error',
    status: 500,
    hint: 'This is a bug; the log line with the same request id has the details. Nothing of this request was accepted.',
  },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** Where in a config file an error is. */
export interface SourceLocation {
  file: string;
  line?: number;
  column?: number;
  /** Key path inside the document, e.g. `steps[2].window.size`. */
  path?: string;
}

/**
 * Refusals a loaded service answers thousands of times a second, which no one debugs by their stack:
 * made without one. Capturing it cost ~12 µs a refusal under Fastify's hooks, 2.5% of the HTTP
 * thread at 3x capacity (bench:overload, 2026-12-06).
 */
const WITHOUT_STACK: ReadonlySet<ErrorCode> = new Set([
  'SLUICE_ERR_OVERLOADED',
  'SLUICE_ERR_TENANT_OVERLOADED',
  'SLUICE_ERR_RATE_LIMITED',
  'SLUICE_ERR_UNAUTHORIZED',
]);

export class SluiceError extends Error {
  readonly code: ErrorCode;
  readonly hint: string;
  readonly location: SourceLocation | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options: { hint?: string; location?: SourceLocation; cause?: unknown } = {},
  ) {
    const limit = Error.stackTraceLimit;
    if (WITHOUT_STACK.has(code)) Error.stackTraceLimit = 0;
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    Error.stackTraceLimit = limit;
    this.name = 'SluiceError';
    this.code = code;
    this.hint = options.hint ?? ERRORS[code].hint;
    this.location = options.location;
  }

  get category(): ErrorSpec['category'] {
    return ERRORS[this.code].category;
  }

  /** Multi-line, compiler-style rendering for terminals. */
  format(): string {
    const lines = [`error[${this.code}]: ${this.message}`];
    const loc = this.location;
    if (loc) {
      let where = loc.file;
      if (loc.line !== undefined) where += `:${loc.line}:${loc.column ?? 1}`;
      lines.push(`  --> ${where}`);
      if (loc.path) lines.push(`  at: ${loc.path}`);
    }
    lines.push(`  help: ${this.hint}`);
    return lines.join('\n');
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, hint: this.hint, location: this.location };
  }
}

/**
 * Reasons a record becomes a dead letter. Steps may add their own (a transform's `reject(reason)`),
 * but these are the ones sluice itself produces.
 */
export const DEAD_LETTER_REASONS = {
  parse: 'The input line is not JSON (or is empty).',
  invalid:
    'The record does not satisfy the JSON Schema of a validate step, or a transform rejected it as invalid.',
  late: 'The event time falls in a window that was already closed by the watermark (older than the allowed lateness).',
  error: 'A custom function threw an exception for this record.',
  too_large:
    'The input record is longer than the source allows (`max_record_bytes`); only its beginning is kept.',
  missing: 'A lookup step configured with `on_missing: dead` found no row for the record.',
} as const;

export type DeadLetterReason = keyof typeof DEAD_LETTER_REASONS;
