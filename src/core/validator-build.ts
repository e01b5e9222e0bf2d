/**
 * Build step (`npm run build`, after tsc): writes the pipeline schema's validator as standalone
 * code, dist/core/pipeline-validator.cjs, so that loading a pipeline does not compile the schema.
 * Compiling it took ~120 ms and ~15 MiB of every `sluice run`, `check` and `test` (a one-event
 * run: loading the config 180 ms of 640; ajv 103 ms of the profile).
 *
 * The file carries the hash of the schema it was made from; config.ts uses it only when the
 * registry still composes the same schema, and compiles the schema otherwise (tests that run the
 * sources through tsx, or a component changed without a build).
 */
import { writeFileSync } from 'node:fs';
import standaloneCode from 'ajv/dist/standalone/index.js';
import '../components.ts';
import { newPipelineAjv, schemaHash } from './config.ts';
import { pipelineSchema } from './schema.ts';

const schema = pipelineSchema();
const ajv = newPipelineAjv({ code: { source: true, esm: false } });
const code = standaloneCode.default(ajv, ajv.compile(schema));
const out = new URL('./pipeline-validator.cjs', import.meta.url);
writeFileSync(out, `${code}\nmodule.exports.schemaHash = ${JSON.stringify(schemaHash(schema))};\n`);
