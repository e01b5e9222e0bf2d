import { accessSync, constants, mkdirSync, statSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { SluiceError } from '../errors.ts';

/**
 * Creates a directory and the missing ones above it, or throws SLUICE_ERR_PATH_UNWRITABLE naming
 * the path and why. `what` says which path it is (`--out`, `the store`, …) for the message.
 *
 * Not `mkdirSync(dir, { recursive: true })`: on Node 20–24 it loops forever at 100% CPU when a
 * parent exists but refuses the child with ENOENT (`--out /proc/nope` hung `sluice run`); the
 * promise version does the same. Creating one level at a time, each error is an error.
 */
export function makeDirectory(dir: string, what: string): void {
  const missing: string[] = [];
  let at = resolve(dir);
  for (;;) {
    const kind = kindOf(at);
    if (kind === 'dir') break;
    if (kind === 'other') throw unwritable(dir, what, `${at} exists and is not a directory`);
    missing.unshift(at);
    const parent = dirname(at);
    if (parent === at) break;
    at = parent;
  }
  for (const path of missing) {
    try {
      mkdirSync(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && kindOf(path) === 'dir') continue;
      throw unwritable(dir, what, describe(err, path), err);
    }
  }
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (err) {
    throw unwritable(dir, what, describe(err, dir), err);
  }
}

/** makeDirectory for the directory a file goes in. */
export function makeParentDirectory(file: string, what: string): void {
  makeDirectory(dirname(resolve(file)), what);
}

/** The async form for code that must not block its event loop on a slow disk. */
export async function makeDirectoryAsync(dir: string, what: string): Promise<void> {
  // One level that already exists is the common case and costs one call.
  try {
    await mkdir(dir);
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST' && kindOf(dir) === 'dir') return;
  }
  makeDirectory(dir, what);
}

function kindOf(path: string): 'dir' | 'other' | 'none' {
  try {
    return statSync(path).isDirectory() ? 'dir' : 'other';
  } catch {
    return 'none';
  }
}

function describe(err: unknown, path: string): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EACCES' || code === 'EPERM') return `permission denied on ${path}`;
  if (code === 'EROFS') return `${path} is on a read-only file system`;
  if (code === 'ENOSPC') return `no space left for ${path}`;
  if (code === 'ENOENT') return `${path} cannot be created here`;
  return `${path}: ${(err as Error).message}`;
}

function unwritable(dir: string, what: string, why: string, cause?: unknown): SluiceError {
  return new SluiceError('SLUICE_ERR_PATH_UNWRITABLE', `cannot create or write ${what} ${dir}: ${why}`, {
    cause,
  });
}
