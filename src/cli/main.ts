/**
 * The `sluice` command line. Exit codes: 0 ok, 1 the run failed, 2 usage or config error,
 * 130 interrupted (Ctrl-C).
 */
import { Command, CommanderError, InvalidArgumentError } from 'commander';
import { readFileSync } from 'node:fs';
import { ERRORS } from '../errors.ts';
import { EXIT, exitCodeOf, report } from './exit.ts';
import type { RunFlags } from './run.ts';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a whole number ≥ 0');
  return n;
}

function byteSize(value: string): number {
  const m = /^(\d+)\s*(k|kb|kib|m|mb|mib)?$/i.exec(value.trim());
  if (!m) throw new InvalidArgumentError('expected a size such as 512k or 4m');
  const unit = (m[2] ?? '').toLowerCase();
  return Number(m[1]) * (unit.startsWith('k') ? 1024 : unit.startsWith('m') ? 1024 * 1024 : 1);
}

/**
 * A command's module is imported when the command runs, not at start: importing every command with
 * the components they use (Fastify, Pino, prom-client, ioredis, NATS, postgres, better-sqlite3)
 * made `sluice --version` take 0.80 s and 89 MiB, and every worker thread of `sluice run` paid
 * for the sinks' clients too.
 */
function lazily<A extends unknown[]>(
  load: () => Promise<(...args: A) => Promise<number>>,
): (...args: A) => Promise<number> {
  return async (...args) => (await load())(...args);
}

const lazy = {
  run: async (pipeline: string, flags: RunFlags): Promise<number> => {
    // The workers load their modules while this thread loads its own and the pipeline.
    (await import('../core/prestart.ts')).prestartWorkers(flags.input, flags.workers);
    return (await import('./run.ts')).runCommand(pipeline, flags);
  },
  check: lazily(async () => (await import('./check.ts')).checkCommand),
  test: lazily(async () => (await import('./test.ts')).testCommand),
  demo: lazily(async () => (await import('./demo.ts')).demoCommand),
  serve: lazily(async () => (await import('./serve.ts')).serveCommand),
  keysNew: lazily(async () => (await import('./keys.ts')).keysNewCommand),
  keysHash: lazily(async () => (await import('./keys.ts')).keysHashCommand),
  tap: lazily(async () => (await import('./tap.ts')).tapCommand),
  top: lazily(async () => (await import('./top.ts')).topCommand),
};

/**
 * Every command and its options (test/readme.test.ts checks the README's commands against it); an
 * action hands its exit code to `exit`.
 */
export function commandLine(exit: (code: number) => void): Command {
  const program = new Command();
  const action =
    <A extends unknown[]>(fn: (...args: A) => Promise<number>) =>
    async (...args: A): Promise<void> => {
      exit(await fn(...args));
    };

  program
    .name('sluice')
    .description(
      'Stream and batch processor for JSON events: declarative pipelines, all cores, exact results.',
    )
    .version(pkg.version)
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  program
    .command('run')
    .description('Run a pipeline over an input file (NDJSON or a JSON array, gzip detected) using all cores.')
    .argument('<pipeline>', 'pipeline file (YAML or JSON)')
    .option('-i, --input <path>', 'input file, or - for standard input (not for a nats source)')
    .option('-o, --out <dir>', 'directory for the outputs', 'out')
    .option(
      '-w, --workers <n>',
      'worker threads (default: one per core, or the main thread for a file under 32 MiB; 0 runs on the main thread)',
      positiveInt,
    )
    .option('--chunk-size <bytes>', 'bytes of input per batch handed to a worker (default: 131072)', byteSize)
    .option(
      '--in-flight <n>',
      'batches queued per worker (more smooths stalls, fewer uses less memory)',
      positiveInt,
    )
    .option('--no-progress', 'no progress bar, even on a terminal')
    .option('--json', 'print the final summary as JSON on stdout')
    .action(action(lazy.run));

  program
    .command('check')
    .description('Validate a pipeline: config, schemas, modules and tables, without running it.')
    .argument('<pipeline>', 'pipeline file')
    .action(action(lazy.check));

  program
    .command('test')
    .description('Run the fixture cases beside a pipeline and diff the outputs against the expected ones.')
    .argument('<pipeline>', 'pipeline file')
    .option('--cases <file>', 'test file (default: <pipeline>.tests.yaml or tests/*.yaml beside it)')
    .action(action(lazy.test));

  program
    .command('schema')
    .description("Print the pipeline config's JSON Schema (for editor completion).")
    .action(
      action(async () => {
        await import('../components.ts');
        const { pipelineSchema } = await import('../core/schema.ts');
        process.stdout.write(JSON.stringify(pipelineSchema(), null, 2) + '\n');
        return EXIT.ok;
      }),
    );

  program
    .command('serve')
    .description(
      'Run the multi-tenant HTTP service; without a config, a demo tenant with the payments pipeline and its store under ./data.',
    )
    .argument('[config]', 'service config (YAML or JSON)')
    .option('--host <address>', 'listen address (overrides the config)')
    .option('--port <n>', 'listen port (overrides the config)', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 65535)
        throw new InvalidArgumentError('expected a port number');
      return n;
    })
    .option('--data <dir>', 'store directory for the embedded defaults', 'data')
    .option('--log-level <level>', 'fatal, error, warn, info, debug or trace', 'info')
    .action(action(lazy.serve));

  program
    .command('top')
    .description(
      'Live rates of a running sluice serve, from its /metrics: records/s per pipeline, latency, dead letters, threads.',
    )
    .option('--url <url>', 'the service', 'http://127.0.0.1:8080')
    .option('--interval <duration>', 'time between two reads', '2s')
    .option('--iterations <n>', 'stop after this many screens (default: until Ctrl-C)', positiveInt)
    .action(action(lazy.top));

  program
    .command('tap')
    .description('Records leaving a step of a pipeline in a running sluice serve, live, one JSON line each.')
    .argument('<pipeline>', "the pipeline's name")
    .option('--step <id>', "the step's id (default: the last step)")
    .option('--url <url>', 'the service', 'http://127.0.0.1:8080')
    .option('--key <key>', "an API key of the pipeline's tenant (default: $SLUICE_API_KEY)")
    .option('--limit <n>', 'stop after this many records', positiveInt, 100)
    .option('--seconds <duration>', 'stop after this long', '60s')
    .action(action(lazy.tap));

  program
    .command('demo')
    .description('Generate a sample of payment events and run the payments example over it.')
    .option('--events <n>', 'events to generate', positiveInt, 50_000)
    .option('-o, --out <dir>', 'directory for the sample and the results', 'out/demo')
    .action(action(lazy.demo));

  const keys = program
    .command('keys')
    .description('Make API keys for the service config, which keeps only their SHA-256.');
  keys
    .command('new')
    .description("Print a new random API key, once, with its SHA-256 and the line for a tenant's api_keys.")
    .option('--name <name>', "what the key is for (the api_keys entry's name)")
    .option('--json', 'print {key, sha256, api_key} as JSON on stdout')
    .action(action(lazy.keysNew));
  keys
    .command('hash')
    .description('Print the SHA-256 of a key read from standard input (so it stays out of shell history).')
    .action(action(lazy.keysHash));

  return program;
}

export async function main(argv: string[]): Promise<number> {
  let code: number = EXIT.ok;
  const program = commandLine((c) => (code = c));
  try {
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (
        err.code === 'commander.helpDisplayed' ||
        err.code === 'commander.version' ||
        err.code === 'commander.help'
      )
        return EXIT.ok;
      // Commander has printed what is wrong; add the catalogue code and what to do.
      process.stderr.write(`  code: SLUICE_ERR_USAGE\n  help: ${ERRORS.SLUICE_ERR_USAGE.hint}\n`);
      return EXIT.usage;
    }
    report(err);
    return exitCodeOf(err);
  }
}
