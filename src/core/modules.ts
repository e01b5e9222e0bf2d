/**
 * User TypeScript modules referenced from a pipeline. The main thread compiles each one once with
 * esbuild (bundled, so the output runs from anywhere, on Node 20 without type stripping) into a
 * content-addressed file under the OS temp directory; every worker imports that same file.
 * Imports of `sluice` resolve to this package, so helpers and `reject()` are shared, not copied.
 */
import { createHash } from 'node:crypto';
import { writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Message } from 'esbuild';
import { SluiceError } from '../errors.ts';
import type { ModuleRef } from './types.ts';
import { makeDirectory } from './paths.ts';

const SLUICE_ENTRY = fileURLToPath(new URL('../index.js', import.meta.url));

/** Compiled module file per source path. */
export type ModuleBundles = Record<string, string>;

function describe(m: Message): string {
  const loc = m.location;
  return loc ? `${loc.file}:${loc.line}:${loc.column + 1}: ${m.text}` : m.text;
}

export async function compileModules(refs: readonly ModuleRef[]): Promise<ModuleBundles> {
  const out: ModuleBundles = {};
  if (refs.length === 0) return out;
  // Loaded on demand: only the main thread compiles, and only pipelines with modules need it.
  const { build } = await import('esbuild');
  const dir = join(tmpdir(), `sluice-modules-${process.getuid?.() ?? 'user'}`);
  makeDirectory(dir, 'the compiled-module cache');
  for (const path of new Set(refs.map((r) => r.path))) {
    let code: string;
    try {
      const result = await build({
        entryPoints: [path],
        bundle: true,
        write: false,
        format: 'esm',
        platform: 'node',
        target: 'node20',
        sourcemap: 'inline',
        logLevel: 'silent',
        // Bundled CommonJS dependencies call require(); give them one.
        banner: {
          js: "import { createRequire as __sluiceCreateRequire } from 'node:module'; const require = __sluiceCreateRequire(import.meta.url);",
        },
        plugins: [
          {
            name: 'sluice-self',
            setup(b) {
              b.onResolve({ filter: /^sluice$/ }, () => ({
                path: pathToFileURL(SLUICE_ENTRY).href,
                external: true,
              }));
            },
          },
        ],
      });
      code = result.outputFiles[0]!.text;
    } catch (err) {
      const errors = (err as { errors?: Message[] }).errors;
      const first = errors?.[0];
      throw new SluiceError(
        'SLUICE_ERR_MODULE_LOAD',
        `cannot compile ${relative(process.cwd(), path)}: ${first ? describe(first) : (err as Error).message}`,
        {
          location: {
            file: first?.location?.file ?? path,
            line: first?.location?.line,
            column: first?.location ? first.location.column + 1 : undefined,
          },
          cause: err,
        },
      );
    }
    const file = join(
      dir,
      `${createHash('sha256').update(path).update('\0').update(code).digest('hex').slice(0, 24)}.mjs`,
    );
    if (!existsSync(file)) writeFileSync(file, code);
    out[path] = file;
  }
  return out;
}

export type LoadedModules = Map<string, Record<string, unknown>>;

/** Imports compiled modules; run in each thread that executes steps. */
export async function importModules(bundles: ModuleBundles): Promise<LoadedModules> {
  const loaded: LoadedModules = new Map();
  for (const [path, file] of Object.entries(bundles)) {
    try {
      loaded.set(path, (await import(pathToFileURL(file).href)) as Record<string, unknown>);
    } catch (err) {
      throw new SluiceError(
        'SLUICE_ERR_MODULE_LOAD',
        `loading ${relative(process.cwd(), path)} failed: ${(err as Error).message}`,
        {
          location: { file: path },
          cause: err,
        },
      );
    }
  }
  return loaded;
}

export function exportedFunction(modules: LoadedModules, ref: ModuleRef): (...args: never[]) => unknown {
  const mod = modules.get(ref.path);
  const fn = mod?.[ref.export];
  if (typeof fn !== 'function') {
    const names = mod ? Object.keys(mod).filter((k) => typeof mod[k] === 'function') : [];
    throw new SluiceError(
      'SLUICE_ERR_MODULE_EXPORT',
      `${relative(process.cwd(), ref.path)} has no exported function "${ref.export}"`,
      {
        hint: names.length
          ? `Exported functions: ${names.join(', ')}. Name one with \`export:\`.`
          : 'Export a function, e.g. `export default function (event) { ... }`.',
        location: { file: ref.path },
      },
    );
  }
  return fn as (...args: never[]) => unknown;
}
