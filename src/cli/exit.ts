/** Exit codes of the `sluice` command line, and how an error is shown and mapped to one. */
import { SluiceError } from '../errors.ts';

export const EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const;

export function exitCodeOf(err: unknown): number {
  if (err instanceof SluiceError) {
    if (err.code === 'SLUICE_ERR_INTERRUPTED') return EXIT.interrupted;
    return err.category === 'usage' || err.category === 'config' ? EXIT.usage : EXIT.failed;
  }
  return EXIT.failed;
}

export function report(err: unknown): void {
  if (err instanceof SluiceError) process.stderr.write(err.format() + '\n');
  else process.stderr.write(`error[SLUICE_ERR_WORKER_FAILED]: ${(err as Error)?.stack ?? String(err)}\n`);
}
