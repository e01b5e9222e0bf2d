import '../components.ts';
import { resolve } from 'node:path';
import { SingleBar } from 'cli-progress';
import { loadPipeline } from '../core/config.ts';
import { prepare, runPipeline, type Progress, type RunResult } from '../core/engine.ts';
import { stopUnusedWorkers } from '../core/prestart.ts';
import { registry } from '../core/registry.ts';
import { SluiceError } from '../errors.ts';
import { exitCodeOf, report } from './exit.ts';

export interface RunFlags {
  input?: string;
  out: string;
  workers?: number;
  chunkSize?: number;
  inFlight?: number;
  progress: boolean;
  json?: boolean;
}

const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

function progressBar(): { update(p: Progress): void; stop(): void } {
  let bar: SingleBar | undefined;
  return {
    update(p) {
      const total = p.totalBytes ?? 0;
      const rate = p.elapsedMs > 0 ? Math.round((p.records * 1000) / p.elapsedMs) : 0;
      const payload = {
        read: mb(p.bytesRead),
        size: total ? mb(total) : '?',
        rate: rate.toLocaleString('en-US'),
      };
      if (!bar) {
        bar = new SingleBar({
          format: total
            ? '{bar} {percentage}% | {read} of {size} | {rate} events/s | ETA {eta_formatted}'
            : '{read} read | {rate} events/s',
          stream: process.stderr,
          hideCursor: true,
          clearOnComplete: true,
          etaBuffer: 50,
        });
        bar.start(total || 1, 0, payload);
      }
      bar.update(total ? p.bytesRead : 0, payload);
    },
    stop() {
      bar?.stop();
    },
  };
}

export function formatSummary(result: RunResult): string {
  const c = result.counters;
  const records = c['input.records'] ?? 0;
  const seconds = result.elapsedMs / 1000;
  const lines = [
    `sluice: ${records.toLocaleString('en-US')} records in ${seconds.toFixed(2)} s (${Math.round(records / seconds).toLocaleString('en-US')} events/s, ${mb(result.bytesRead)} read, ${result.workers === 0 ? 'main thread' : `${result.workers} worker${result.workers === 1 ? '' : 's'}`}, peak RSS ${mb(result.peakRssBytes)})`,
  ];
  const outcomes = Object.entries(c).filter(([k]) => /^(dead|dropped|output)\./.test(k));
  for (const [k, v] of outcomes) lines.push(`  ${k.padEnd(28)} ${v.toLocaleString('en-US')}`);
  lines.push('outputs:');
  for (const s of result.sinks) lines.push(`  ${s.id.padEnd(14)} ${s.input.padEnd(12)} → ${s.target}`);
  return lines.join('\n');
}

export async function runCommand(pipelineFile: string, flags: RunFlags): Promise<number> {
  try {
    return await run(pipelineFile, flags);
  } finally {
    // Workers main.ts started for a run that ended before the engine took them.
    await stopUnusedWorkers();
  }
}

async function run(pipelineFile: string, flags: RunFlags): Promise<number> {
  const pipeline = loadPipeline(pipelineFile);
  const readsInput = registry.sources.get(pipeline.source.type)!.readsInput ?? true;
  if (readsInput && flags.input === undefined) {
    report(
      new SluiceError(
        'SLUICE_ERR_USAGE',
        `a ${pipeline.source.type} source reads --input: give a file, or - for standard input`,
      ),
    );
    return 2;
  }
  const prepared = await prepare(pipeline);
  const controller = new AbortController();
  let interrupts = 0;
  const onSignal = (): void => {
    // First Ctrl-C: stop cleanly and discard outputs. Second: leave at once.
    if (++interrupts > 1) process.exit(130);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const bar = flags.progress && process.stderr.isTTY ? progressBar() : undefined;
  try {
    const result = await runPipeline(prepared, {
      input: flags.input === undefined || flags.input === '-' ? (flags.input ?? '') : resolve(flags.input),
      outDir: resolve(flags.out),
      workers: flags.workers,
      chunkBytes: flags.chunkSize,
      inFlightPerWorker: flags.inFlight,
      signal: controller.signal,
      onProgress: bar?.update,
    });
    bar?.stop();
    if (flags.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    else process.stderr.write(formatSummary(result) + '\n');
    return 0;
  } catch (err) {
    bar?.stop();
    if (!(err instanceof SluiceError)) throw err;
    report(err);
    return exitCodeOf(err);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
