/**
 * `sluice keys new` and `sluice keys hash`: API keys for the service config, which keeps only their
 * SHA-256 (docs/service.md, "API keys"). `hash` reads the key from standard input, so that it never
 * lands in the shell's history.
 */
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { stringify } from 'yaml';
import { SluiceError } from '../errors.ts';
import { sha256 } from '../service/config.ts';

export interface KeysNewFlags {
  name?: string;
  json?: boolean;
}

/** One `api_keys` entry of a tenant in the service config. */
interface ApiKeyEntry {
  sha256: string;
  name?: string;
}

export async function keysNewCommand(flags: KeysNewFlags): Promise<number> {
  const key = `sk_${randomBytes(32).toString('base64url')}`;
  const entry: ApiKeyEntry = { sha256: sha256(key).toString('hex') };
  if (flags.name !== undefined) entry.name = flags.name;
  if (flags.json) {
    process.stdout.write(JSON.stringify({ key, sha256: entry.sha256, api_key: entry }) + '\n');
    return 0;
  }
  // The yaml package quotes the name where YAML needs it to stay a string.
  const line = stringify(entry, { collectionStyle: 'flow', lineWidth: 0 }).trimEnd();
  process.stdout.write(
    [
      `key     ${key}`,
      `sha256  ${entry.sha256}`,
      '',
      'Give the key to the client: it is shown only this once, and the service keeps only its hash.',
      'Add the hash to the tenant in the service config (kill -HUP reloads a running service):',
      '',
      '    api_keys:',
      `      - ${line}`,
      '',
    ].join('\n'),
  );
  return 0;
}

export async function keysHashCommand(): Promise<number> {
  const key = (await readStdin()).trim();
  if (key === '') throw new SluiceError('SLUICE_ERR_KEY_INVALID', 'no key on standard input: it was empty');
  // The service reads `Authorization: Bearer <key>` up to the first white space.
  if (/\s/.test(key))
    throw new SluiceError(
      'SLUICE_ERR_KEY_INVALID',
      'the key on standard input contains white space or several lines; a key is one word',
    );
  process.stdout.write(sha256(key).toString('hex') + '\n');
  return 0;
}

/** All of a pipe or file; from a terminal, the first line, after a prompt. */
async function readStdin(): Promise<string> {
  if (process.stdin.isTTY) {
    process.stderr.write('Paste the key and press Enter: ');
    const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
    for await (const line of lines) {
      lines.close();
      return line;
    }
    return '';
  }
  let text = '';
  for await (const chunk of process.stdin.setEncoding('utf8')) text += chunk as string;
  return text;
}
