/** `sluice keys new` and `sluice keys hash`, run as the real binary, and a service that takes the key. */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { PAYMENTS, sluice, tempDir } from './helpers.ts';
import { paymentEvent, postEvents, sha256Hex, startServer } from './serve-helpers.ts';

interface NewKey {
  key: string;
  sha256: string;
  api_key: { sha256: string; name?: string };
}

const KEY = /^sk_[A-Za-z0-9_-]{43}$/;

async function newKey(args: string[] = []): Promise<NewKey> {
  const r = await sluice(['keys', 'new', '--json', ...args]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as NewKey;
}

/** What `sluice keys new` prints for people: the key, its hash, and the lines for the config. */
function parseHuman(stdout: string): { key: string; sha256: string; snippet: string } {
  const key = /^key {5}(\S+)$/m.exec(stdout)?.[1];
  const sha256 = /^sha256 {2}(\S+)$/m.exec(stdout)?.[1];
  const snippet = /^ {4}api_keys:\n {6}- \{.*\}$/m.exec(stdout)?.[0];
  assert.ok(key && sha256 && snippet, `unexpected output:\n${stdout}`);
  return { key, sha256, snippet };
}

const EVENT = JSON.stringify(paymentEvent());

describe('sluice keys new', () => {
  it('prints a random key and the SHA-256 of exactly that key', async () => {
    const [a, b] = await Promise.all([newKey(), newKey()]);
    for (const k of [a!, b!]) {
      assert.match(k.key, KEY);
      assert.equal(k.sha256, sha256Hex(k.key));
      assert.deepEqual(k.api_key, { sha256: k.sha256 });
    }
    assert.notEqual(a!.key, b!.key);
    assert.notEqual(a!.sha256, b!.sha256);
  });

  it('names the api_keys entry with --name', async () => {
    const k = await newKey(['--name', 'nightly batch']);
    assert.deepEqual(k.api_key, { sha256: sha256Hex(k.key), name: 'nightly batch' });
  });

  it('quotes a name in the api_keys line where YAML would read it as something else', async () => {
    const r = await sluice(['keys', 'new', '--name', 'true, for now: #1']);
    assert.equal(r.code, 0, r.stderr);
    const { snippet } = parseHuman(r.stdout);
    assert.deepEqual(parse(snippet), {
      api_keys: [{ sha256: parseHuman(r.stdout).sha256, name: 'true, for now: #1' }],
    });
  });

  it('prints the key, its hash and the lines for api_keys for people', async () => {
    const r = await sluice(['keys', 'new', '--name', 'checkout']);
    assert.equal(r.code, 0, r.stderr);
    const { key, sha256, snippet } = parseHuman(r.stdout);
    assert.match(key, KEY);
    assert.equal(sha256, sha256Hex(key));
    assert.ok(snippet.endsWith(`- { sha256: ${sha256}, name: checkout }`), snippet);
  });
});

describe('sluice keys hash', () => {
  it('prints the SHA-256 of the key on standard input, with or without a line end', async () => {
    const { key, sha256 } = await newKey();
    for (const input of [key, `${key}\n`, `  ${key}\r\n`]) {
      const r = await sluice(['keys', 'hash'], { input });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${sha256}\n`, JSON.stringify(input));
    }
  });

  for (const [what, input] of [
    ['an empty input', ''],
    ['white space only', ' \n'],
    ['two keys', 'sk_one\nsk_two\n'],
    ['a key with a space', 'sk_one two'],
  ] as const) {
    it(`rejects ${what} with SLUICE_ERR_KEY_INVALID and exit code 2`, async () => {
      const r = await sluice(['keys', 'hash'], { input });
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /^error\[SLUICE_ERR_KEY_INVALID\]: .*\n {2}help: /);
    });
  }
});

describe('a key from sluice keys new', () => {
  it('is accepted by a service whose config holds the printed lines, and checks pass', async () => {
    const r = await sluice(['keys', 'new', '--name', 'checkout']);
    assert.equal(r.code, 0, r.stderr);
    const { key, snippet } = parseHuman(r.stdout);
    const other = await newKey();

    const dir = tempDir('sluice-keys-');
    const config = join(dir, 'sluice.yaml');
    writeFileSync(
      config,
      [
        'listen: { host: 127.0.0.1, port: 0 }',
        `store: { path: ${JSON.stringify(join(dir, 'store', 'sluice.db'))} }`,
        'tenants:',
        '  acme:',
        snippet,
        `    pipelines: { payments: ${JSON.stringify(PAYMENTS)} }`,
        '',
      ].join('\n'),
    );
    const checked = await sluice(['check', config]);
    assert.equal(checked.code, 0, checked.stderr);
    assert.match(checked.stdout, /tenant acme: pipeline payments/);

    const server = await startServer(config);
    try {
      const accepted = await postEvents(server, 'payments', key, EVENT);
      assert.equal(accepted.status, 202, JSON.stringify(accepted.body));
      assert.deepEqual(accepted.body, { records: 1, accepted: 1, duplicates: 0, rejected: [] });
      const refused = await postEvents(server, 'payments', other.key, EVENT);
      assert.equal(refused.status, 401, JSON.stringify(refused.body));
    } finally {
      await server.stop();
    }
  });
});
