/**
 * README.md works as written on a fresh clone, read from the top: every `sluice` command it shows
 * exists with the options it uses, every `npm` script exists, every repository file a command or
 * snippet names exists or is made by an earlier step, its config snippets load as sluice loads
 * them, its links resolve, and its TypeScript uses only what the package exports; the complete
 * example file type-checks and runs against the package as another project installs it.
 *
 * Paths that are the reader's own are written absolute (/path/to/…) or as <placeholders> and are
 * not checked. A snippet whose first line is a comment naming a file (`# sluice.yaml`,
 * `// report.ts: …`) is that whole file, saved by the reader where the README says.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { describe, it } from 'node:test';
import ts from 'typescript';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import type { Command, Option } from 'commander';
import type { SourceLocation } from '../dist/errors.js';
import { commandLine } from '../dist/cli/main.js';
import { loadPipeline } from '../dist/core/config.js';
import { loadServiceConfig } from '../dist/service/config.js';
import { ROOT, sampleInput, tempDir } from './helpers.ts';

const README = 'README.md';
const text = readFileSync(join(ROOT, README), 'utf8');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  scripts: Record<string, string>;
  files: string[];
};

interface Block {
  lang: string;
  /** 1-based README line of the block's first line of code. */
  line: number;
  code: string[];
  /** The prose between the previous block and this one. */
  prose: string;
}

interface Span {
  line: number;
  code: string;
}

/** The fenced code blocks, and the inline code spans of the prose, with their lines. */
function parseReadme(): { blocks: Block[]; spans: Span[]; prose: Span[] } {
  const blocks: Block[] = [];
  const spans: Span[] = [];
  const prose: Span[] = [];
  let open: Block | undefined;
  let since = '';
  text.split('\n').forEach((content, i) => {
    const fence = /^```(\S*)\s*$/.exec(content);
    if (fence && !open) {
      open = { lang: fence[1]!, line: i + 2, code: [], prose: since };
      since = '';
    } else if (fence && open) {
      blocks.push(open);
      open = undefined;
    } else if (open) open.code.push(content);
    else {
      since += content + '\n';
      prose.push({ line: i + 1, code: content });
      for (const m of content.matchAll(/`([^`]+)`/g)) spans.push({ line: i + 1, code: m[1]! });
    }
  });
  return { blocks, spans, prose };
}

const { blocks, spans, prose } = parseReadme();
const where = (line: number): string => `${README}:${line}`;

// A shell line: just enough of sh for the README's commands.

type Token = { word: string } | { op: string };

function lex(line: string): Token[] {
  const tokens: Token[] = [];
  let word = '';
  let inWord = false;
  const end = (): void => {
    if (inWord) tokens.push({ word });
    word = '';
    inWord = false;
  };
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    const two = line.slice(i, i + 2);
    const placeholder = c === '<' ? /^<[\w.|-]+>/.exec(line.slice(i))?.[0] : undefined;
    if (placeholder) {
      word += placeholder;
      inWord = true;
      i += placeholder.length - 1;
    } else if (c === "'" || c === '"') {
      const close = line.indexOf(c, i + 1);
      word += line.slice(i + 1, close < 0 ? undefined : close);
      inWord = true;
      i = close < 0 ? line.length : close;
    } else if (/\s/.test(c)) end();
    else if (c === '#' && !inWord) break;
    else if (['&&', '||', '$(', '>>'].includes(two)) {
      end();
      tokens.push({ op: two });
      i++;
    } else if ('|;()<>'.includes(c)) {
      end();
      tokens.push({ op: c });
    } else {
      word += c;
      inWord = true;
    }
  }
  end();
  return tokens;
}

interface SimpleCommand {
  words: string[];
  /** Files read with `<`, and written with `>`. */
  reads: string[];
  writes: string[];
}

/** The simple commands of a line, `$( … )` included; leading variable assignments dropped. */
function commandsOf(line: string): SimpleCommand[] {
  const commands: SimpleCommand[] = [];
  let current: SimpleCommand = { words: [], reads: [], writes: [] };
  let redirect: string | undefined;
  const flush = (): void => {
    while (current.words.length > 0 && /^\w+=/.test(current.words[0]!)) current.words.shift();
    if (current.words.length > 0 || current.writes.length > 0) commands.push(current);
    current = { words: [], reads: [], writes: [] };
  };
  for (const t of lex(line)) {
    if ('op' in t) {
      if (t.op === '<' || t.op === '>' || t.op === '>>') redirect = t.op;
      else flush();
    } else if (redirect) {
      (redirect === '<' ? current.reads : current.writes).push(t.word);
      redirect = undefined;
    } else current.words.push(t.word);
  }
  flush();
  return commands;
}

/** A block's lines with `\` continuations joined, each with its README line. */
function shellLines(block: Block): Span[] {
  const lines: Span[] = [];
  let pending: Span | undefined;
  block.code.forEach((content, i) => {
    const joined = pending ? `${pending.code} ${content}` : content;
    const at = pending?.line ?? block.line + i;
    if (/\\\s*$/.test(joined)) pending = { line: at, code: joined.replace(/\\\s*$/, '') };
    else {
      pending = undefined;
      lines.push({ line: at, code: joined });
    }
  });
  return lines;
}

// The `sluice` command line, as the binary builds it.

const program = commandLine(() => {});
const ALWAYS = new Set(['-h', '--help']);

interface SluiceCall {
  command: Command;
  /** The command's path, e.g. `keys new`. */
  path: string;
  /** Every option's value, defaults included, by its long name. */
  options: Record<string, string | boolean>;
  /** The options the line writes out. */
  given: Set<string>;
  args: string[];
}

/** Resolves `sluice …args` against the real command tree; a string says what is wrong. */
function parseSluice(args: string[]): SluiceCall | string {
  let command = program;
  const path: string[] = [];
  let at = 0;
  for (;;) {
    const subcommands = command.commands.filter((c) => c.name() !== 'help');
    const next = args[at];
    if (subcommands.length === 0 || next === undefined || !/^[a-z][\w-]*$/.test(next)) break;
    const sub = subcommands.find((c) => c.name() === next);
    if (!sub)
      return `\`${['sluice', ...path, next].join(' ')}\`: no such command; \`${['sluice', ...path].join(' ')}\` has ${subcommands.map((c) => c.name()).join(', ')}`;
    command = sub;
    path.push(next);
    at++;
  }
  const declared = command.options as readonly Option[];
  const options: Record<string, string | boolean> = {};
  for (const o of declared) if (o.defaultValue !== undefined && o.long) options[o.long] = o.defaultValue;
  const given = new Set<string>();
  const positional: string[] = [];
  for (; at < args.length; at++) {
    const arg = args[at]!;
    if (!arg.startsWith('-') || arg === '-') {
      positional.push(arg);
      continue;
    }
    const [flag, inline] = arg.split('=', 2) as [string, string | undefined];
    if (ALWAYS.has(flag) || (command === program && ['-V', '--version'].includes(flag))) continue;
    const option = declared.find((o) => o.long === flag || o.short === flag);
    if (!option)
      return `\`${['sluice', ...path].join(' ')}\` has no option ${flag}; it has ${declared.map((o) => o.long).join(', ') || 'none'}`;
    const name = option.long ?? flag;
    given.add(name);
    options[name] = option.required || option.optional ? (inline ?? args[++at] ?? '') : true;
  }
  return { command, path: path.join(' '), options, given, args: positional };
}

// What exists at each step of the walk-through.

/**
 * A relative path: no spaces, quotes, variables, globs, URLs or <placeholders>, and not absolute or
 * under ~ (the reader's own).
 */
const PATHLIKE = /^(?!-)[\w.@+-][\w./@~+-]*$/;
const FILE_EXTENSION = /\.(ya?ml|json|ndjson|gz|tgz|ts|js|mjs|csv|db|md|txt)$/;

function isRepositoryPath(word: string): boolean {
  return PATHLIKE.test(word) && (word.includes('/') || FILE_EXTENSION.test(word)) && !word.startsWith('..');
}

class Tree {
  /** Files and directories (ending in `/`) that earlier steps made. */
  readonly made: string[] = [];

  make(path: string): void {
    this.made.push(normalize(path));
  }

  /** Why `path` does not exist at this point of the README, or undefined when it does. */
  missing(path: string): string | undefined {
    const p = normalize(path).replace(/\/$/, '');
    const installed = /^node_modules\/sluice\/(.+)$/.exec(p);
    if (installed) {
      const inPackage = installed[1]!;
      if (!existsSync(join(ROOT, inPackage))) return `${inPackage} does not exist in the package`;
      if (!pkg.files.some((f) => inPackage === f || inPackage.startsWith(`${f}/`)))
        return `${inPackage} is not in package.json "files", so an installed package does not have it`;
      return undefined;
    }
    if (existsSync(join(ROOT, p))) return undefined;
    if (this.made.some((m) => (m.endsWith('/') ? p === m.slice(0, -1) || p.startsWith(m) : p === m)))
      return undefined;
    return `${p} does not exist, and no earlier step makes it${this.made.length ? ` (they make ${this.made.join(', ')})` : ''}`;
  }
}

/** What a sluice command writes, by its options' real defaults. */
const MAKES: Record<string, (call: SluiceCall) => string[]> = {
  demo: (c) => [`${String(c.options['--out'])}/events.ndjson`, `${String(c.options['--out'])}/results/`],
  run: (c) => [`${String(c.options['--out'])}/`],
  serve: (c) => (c.args.length === 0 ? [`${String(c.options['--data'])}/`] : []),
};
/** Options whose value is a directory the command makes, not a file it reads. */
const OUTPUT_OPTIONS = new Set(['--out', '--data']);

interface Problems {
  commands: string[];
  scripts: string[];
  paths: string[];
}

/** The package.json script an `npm …args` runs, if any. */
function scriptOf(args: string[]): string | undefined {
  if (args[0] === 'run') return args[1];
  return ['start', 'test', 'stop', 'restart'].includes(args[0]!) ? args[0] : undefined;
}

/** Follows one shell line: checks its commands against the tree, then records what they make. */
function walkShell(line: Span, tree: Tree, problems: Problems, depth = 0): void {
  for (const cmd of commandsOf(line.code)) {
    const [name, ...rest] = cmd.words;
    const at = where(line.line);
    const checkPath = (p: string): void => {
      if (!isRepositoryPath(p)) return;
      const why = tree.missing(p);
      if (why) problems.paths.push(`${at}: \`${line.code.trim()}\`: ${why}`);
    };
    cmd.reads.forEach(checkPath);
    let sluiceArgs: string[] | undefined;
    if (name === 'sluice') sluiceArgs = rest;
    else if (name === 'npx' && rest[0] === 'sluice') sluiceArgs = rest.slice(1);
    else if (name === 'node' && rest[0] === 'bin/sluice.js') sluiceArgs = rest.slice(1);

    if (sluiceArgs) {
      const call = parseSluice(sluiceArgs);
      if (typeof call === 'string') {
        problems.commands.push(`${at}: ${call}`);
        continue;
      }
      call.args.forEach(checkPath);
      for (const flag of call.given) {
        const value = call.options[flag];
        if (typeof value === 'string' && !OUTPUT_OPTIONS.has(flag)) checkPath(value);
      }
      for (const p of MAKES[call.path]?.(call) ?? []) tree.make(p);
    } else if (name === 'npm') {
      const script = scriptOf(rest);
      if (script === undefined) continue;
      const body = pkg.scripts[script];
      if (body === undefined) {
        problems.scripts.push(`${at}: \`npm ${rest.join(' ')}\`: package.json has no script "${script}"`);
        continue;
      }
      if (depth < 3) walkShell({ line: line.line, code: body }, tree, problems, depth + 1);
    } else {
      rest.forEach(checkPath);
      if (name === 'gzip') for (const f of rest.filter((w) => !w.startsWith('-'))) tree.make(`${f}.gz`);
    }
    cmd.writes.forEach((f) => tree.make(f));
  }
}

/** The file a block is, when its first line is a comment naming one. */
function wholeFile(block: Block): string | undefined {
  return /^(?:#|\/\/)\s*([\w./-]+\.\w+)(?::|\s*$)/.exec(block.code[0] ?? '')?.[1];
}

/** Walks the README from the top, as a reader on a fresh clone would. */
function walk(): Problems {
  const problems: Problems = { commands: [], scripts: [], paths: [] };
  const tree = new Tree();
  for (const block of blocks) {
    if (['sh', 'bash', 'shell', 'console'].includes(block.lang))
      for (const line of shellLines(block)) walkShell(line, tree, problems);
    else if (block.lang === 'ts' || block.lang === 'typescript')
      for (const [i, l] of block.code.entries())
        for (const m of l.matchAll(/'([^']+)'/g))
          if (isRepositoryPath(m[1]!) && (FILE_EXTENSION.test(m[1]!) || m[1]!.startsWith('node_modules/'))) {
            const why = tree.missing(m[1]!);
            if (why) problems.paths.push(`${where(block.line + i)}: ${why}`);
          }
    const file = wholeFile(block);
    if (file) tree.make(file);
  }
  // Inline code in the prose: its commands only, not its paths (prose names outputs before they exist).
  for (const span of spans) {
    for (const cmd of commandsOf(span.code.replace(/[[\]]/g, ''))) {
      const [first, ...rest] = cmd.words;
      const args =
        first === 'npx' && rest[0] === 'sluice' ? rest.slice(1) : first === 'sluice' ? rest : undefined;
      if (args) {
        const call = parseSluice(args);
        if (typeof call === 'string') problems.commands.push(`${where(span.line)}: ${call}`);
      } else if (first === 'npm') {
        const script = scriptOf(rest);
        if (script !== undefined && !(script in pkg.scripts))
          problems.scripts.push(
            `${where(span.line)}: \`${span.code}\`: package.json has no script "${script}"`,
          );
      }
    }
  }
  return problems;
}

const problems = walk();

/** A directory of links to every entry of `dir`, to load a snippet as if it were saved in `dir`. */
function shadowOf(dir: string): string {
  const shadow = tempDir('sluice-readme-');
  for (const entry of readdirSync(dir)) symlinkSync(join(dir, entry), join(shadow, entry));
  return shadow;
}

/** The YAML file a pipeline snippet comes from: the last one the prose before it names. */
function pipelineFileBefore(block: Block): string | undefined {
  const named = [...block.prose.matchAll(/([\w./-]+\.ya?ml)\b/g)].map((m) => m[1]!);
  return named.filter((p) => existsSync(join(ROOT, p))).pop();
}

describe('README.md', () => {
  it('shows only sluice commands and options that exist', () => {
    assert.deepEqual(problems.commands, [], problems.commands.join('\n'));
  });

  it('runs only npm scripts that package.json has', () => {
    assert.deepEqual(problems.scripts, [], problems.scripts.join('\n'));
  });

  it('names only repository files that exist, or that an earlier step makes', () => {
    assert.deepEqual(problems.paths, [], problems.paths.join('\n'));
  });

  it('has config snippets that load as sluice loads them', () => {
    const failures: string[] = [];
    let service: Record<string, unknown> | undefined;
    for (const block of blocks.filter((b) => b.lang === 'yaml' || b.lang === 'yml')) {
      const data = parseYaml(block.code.join('\n')) as Record<string, unknown>;
      let file: string;
      let load: (file: string) => unknown = loadServiceConfig;
      /** Whether the file is the block as written, so that its lines are the README's. */
      let verbatim = true;
      if ('tenants' in data) {
        service = data;
        file = join(shadowOf(ROOT), wholeFile(block) ?? 'sluice.yaml');
        writeFileSync(file, block.code.join('\n'));
      } else if ('source' in data || 'steps' in data) {
        const from = pipelineFileBefore(block);
        if (!from) {
          failures.push(`${where(block.line)}: the prose before a pipeline snippet names no file it is from`);
          continue;
        }
        file = join(shadowOf(join(ROOT, dirname(from))), 'readme-snippet.yaml');
        writeFileSync(file, block.code.join('\n'));
        load = loadPipeline;
      } else if (service) {
        // A part of the service config shown before it, e.g. its runtime section.
        file = join(shadowOf(ROOT), 'sluice.yaml');
        writeFileSync(file, stringifyYaml({ ...service, ...data }));
        verbatim = false;
      } else {
        failures.push(`${where(block.line)}: a YAML block that is neither a pipeline nor a service config`);
        continue;
      }
      try {
        load(file);
      } catch (err) {
        const e = err as { message: string; code?: string; hint?: string; location?: SourceLocation };
        const line = verbatim && e.location?.file === file ? e.location.line : undefined;
        failures.push(
          `${where(line === undefined ? block.line : block.line + line - 1)}: ${e.code ?? 'error'}: ${e.message}` +
            (e.location?.path ? ` (at ${e.location.path})` : '') +
            (e.hint ? `; ${e.hint}` : ''),
        );
      }
    }
    assert.deepEqual(failures, [], failures.join('\n'));
  });

  it('links only to files and headings that exist', () => {
    const failures: string[] = [];
    for (const { line, code } of prose)
      for (const m of code.matchAll(/\]\(([^)\s]+)\)/g)) {
        const [target, anchor] = m[1]!.split('#', 2) as [string, string | undefined];
        if (/^[a-z]+:/.test(target)) continue;
        const file = target === '' ? README : target;
        if (!existsSync(join(ROOT, file))) {
          failures.push(`${where(line)}: ${m[1]} does not exist`);
          continue;
        }
        if (anchor === undefined || !file.endsWith('.md')) continue;
        const slugs = [...readFileSync(join(ROOT, file), 'utf8').matchAll(/^#{1,6} (.+)$/gm)].map((h) =>
          h[1]!
            .toLowerCase()
            .replace(/[^\w\- ]/g, '')
            .replace(/ /g, '-'),
        );
        if (!slugs.includes(anchor)) failures.push(`${where(line)}: ${file} has no heading #${anchor}`);
      }
    assert.deepEqual(failures, [], failures.join('\n'));
  });

  it("imports from 'sluice' only what the package exports", () => {
    const index = readFileSync(join(ROOT, 'src', 'index.ts'), 'utf8');
    const exported = new Set(
      [...index.matchAll(/export (?:type )?\{([^}]*)\}/g)].flatMap((m) =>
        m[1]!
          .split(',')
          .map((n) =>
            n
              .trim()
              .replace(/^type /, '')
              .split(/\s+as\s+/)
              .pop()!,
          )
          .filter(Boolean),
      ),
    );
    const failures: string[] = [];
    for (const block of blocks.filter((b) => b.lang === 'ts' || b.lang === 'typescript')) {
      const source = block.code.join('\n');
      for (const m of source.matchAll(/import \{([^}]*)\} from 'sluice'/g))
        for (const raw of m[1]!
          .split(',')
          .map((n) => n.trim())
          .filter(Boolean)) {
          const name = raw.replace(/^type /, '').split(/\s+as\s+/)[0]!;
          if (!exported.has(name)) failures.push(`${where(block.line)}: 'sluice' does not export ${name}`);
        }
    }
    assert.deepEqual(failures, [], failures.join('\n'));
  });

  it('has a dependency example that type-checks and runs against the package as installed', async () => {
    const examples = blocks.filter((b) => (b.lang === 'ts' || b.lang === 'typescript') && wholeFile(b));
    assert.ok(
      examples.length > 0,
      'README.md has no complete TypeScript file (one that starts with `// name.ts`)',
    );
    for (const block of examples) {
      // Another project, with sluice (and tsx, to run TypeScript) in its node_modules.
      const project = tempDir('sluice-readme-project-');
      mkdirSync(join(project, 'node_modules'));
      symlinkSync(ROOT, join(project, 'node_modules', 'sluice'));
      writeFileSync(join(project, 'package.json'), JSON.stringify({ type: 'module', private: true }));
      const file = join(project, wholeFile(block)!);
      writeFileSync(file, block.code.join('\n') + '\n');

      // Runs while it type-checks: the two take about as long.
      const input = sampleInput(1000);
      const running = new Promise<{ code: number | null; out: string }>((resolve, reject) => {
        const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), file, input], {
          cwd: project,
        });
        let out = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (out += d.toString()));
        child.on('error', reject);
        child.on('close', (code) => resolve({ code, out }));
      });
      const compiler = ts.createProgram([file], {
        target: ts.ScriptTarget.ES2022,
        module: ts.ModuleKind.NodeNext,
        moduleResolution: ts.ModuleResolutionKind.NodeNext,
        lib: ['lib.es2022.d.ts'],
        types: ['node'],
        typeRoots: [join(ROOT, 'node_modules', '@types')],
        strict: true,
        skipLibCheck: true,
        noEmit: true,
      });
      const diagnostics = ts.getPreEmitDiagnostics(compiler).map((d) => {
        const at =
          d.file && d.start !== undefined ? d.file.getLineAndCharacterOfPosition(d.start) : undefined;
        const line = at && d.file?.fileName === file ? where(block.line + at.line) : (d.file?.fileName ?? '');
        return `${line}: ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
      });
      assert.deepEqual(
        diagnostics,
        [],
        `${where(block.line)} does not type-check:\n${diagnostics.join('\n')}`,
      );

      const ran = await running;
      assert.equal(ran.code, 0, `${where(block.line)}, run over ${input}:\n${ran.out}`);
      // The counters its comments show, over the same 1,000 events as `sluice demo --events 1000`.
      for (const [shown] of block.code.join('\n').matchAll(/'[\w.]+': \d+/g))
        assert.ok(ran.out.includes(shown), `${where(block.line)}: printed no ${shown}:\n${ran.out}`);
    }
  });
});
