import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, stat, writeFile, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TsbuildError } from '@tsbuild/errors';
import { dockerConfigCredentials, dockerConfigPath, removeCredentials, storeCredentials } from './credentials.ts';

async function setup(t: { after(fn: () => Promise<void>): void }, config?: unknown): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'tsbuild-cred-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  if (config !== undefined) await writeFile(join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}

const b64 = (s: string): string => Buffer.from(s).toString('base64');

test('config path: DOCKER_CONFIG, then HOME/.docker', () => {
  assert.equal(dockerConfigPath({ env: { DOCKER_CONFIG: '/x/y', HOME: '/h' } }), '/x/y/config.json');
  assert.equal(dockerConfigPath({ env: { HOME: '/h' } }), '/h/.docker/config.json');
  assert.equal(dockerConfigPath({ configDir: '/c', env: { DOCKER_CONFIG: '/x' } }), '/c/config.json');
});

test('auths: base64 auth, username/password, identitytoken, Docker Hub key forms', async (t) => {
  const dir = await setup(t, {
    auths: {
      'https://index.docker.io/v1/': { auth: b64('hubuser:hub:pass') },
      'http://reg.example.com:5000/v2/': { username: 'u', password: 'p' },
      'ghcr.io': { identitytoken: 'refresh-xyz', username: 'tok' },
      'empty.example': {},
    },
  });
  const creds = dockerConfigCredentials({ configDir: dir, env: {} });
  assert.deepEqual(await creds('docker.io'), { username: 'hubuser', password: 'hub:pass' });
  assert.deepEqual(await creds('reg.example.com:5000'), { username: 'u', password: 'p' });
  assert.deepEqual(await creds('ghcr.io'), { identityToken: 'refresh-xyz', username: 'tok' });
  assert.equal(await creds('empty.example'), undefined);
  assert.equal(await creds('other.example'), undefined);
});

test('no config file means no credentials; a broken one is a clear error', async (t) => {
  const dir = await setup(t);
  assert.equal(await dockerConfigCredentials({ configDir: dir, env: {} })('docker.io'), undefined);
  await writeFile(join(dir, 'config.json'), '{not json');
  await assert.rejects(dockerConfigCredentials({ configDir: dir, env: {} })('docker.io'), (e: unknown) => e instanceof TsbuildError && e.message.includes('config.json is not valid JSON'));
});

/** A docker-credential-<name> script on PATH that serves one host and logs what it was asked. */
async function helper(dir: string, name: string): Promise<string> {
  const log = join(dir, `${name}.log`);
  const script = `#!/bin/sh
read -r input || true
echo "$1 $input" >> ${log}
case "$1" in
  get)
    case "$input" in
      reg.example.com) echo '{"ServerURL":"reg.example.com","Username":"helper-user","Secret":"helper-secret"}' ;;
      https://index.docker.io/v1/) echo '{"ServerURL":"https://index.docker.io/v1/","Username":"<token>","Secret":"hub-refresh"}' ;;
      *) echo "credentials not found in native keychain"; exit 1 ;;
    esac ;;
  store|erase) exit 0 ;;
esac
`;
  const path = join(dir, `docker-credential-${name}`);
  await writeFile(path, script);
  await chmod(path, 0o755);
  return log;
}

test('credHelpers and credsStore through docker-credential-<name> get', async (t) => {
  const dir = await setup(t, {
    credHelpers: { 'reg.example.com': 'per' },
    credsStore: 'store',
    auths: { 'fallback.example': { auth: b64('f:g') } },
  });
  const perLog = await helper(dir, 'per');
  const storeLog = await helper(dir, 'store');
  const env = { PATH: `${dir}:${process.env['PATH'] ?? ''}` };
  const creds = dockerConfigCredentials({ configDir: dir, env });
  assert.deepEqual(await creds('reg.example.com'), { username: 'helper-user', password: 'helper-secret' });
  assert.deepEqual(await creds('docker.io'), { identityToken: 'hub-refresh' });
  // Not found in the store: the plain auths entry still counts.
  assert.deepEqual(await creds('fallback.example'), { username: 'f', password: 'g' });
  assert.match(await readFile(perLog, 'utf8'), /^get reg\.example\.com$/m);
  assert.match(await readFile(storeLog, 'utf8'), /^get https:\/\/index\.docker\.io\/v1\/$/m);
});

test('a missing helper is a clear error', async (t) => {
  const dir = await setup(t, { credsStore: 'nonexistent-tsbuild-helper' });
  await assert.rejects(dockerConfigCredentials({ configDir: dir, env: { PATH: dir } })('x.example'), /cannot run docker-credential-nonexistent-tsbuild-helper/);
});

test('store writes auths atomically with mode 0600 and keeps other settings; remove forgets', async (t) => {
  const dir = await setup(t, { auths: { 'old.example': { auth: b64('a:b') } }, psFormat: 'table', detachKeys: 'ctrl-x' });
  await storeCredentials('docker.io', 'me', 'pw', { configDir: dir, env: {} });
  await storeCredentials('reg.example.com:5000', 'u2', 'p2', { configDir: dir, env: {} });
  const file = join(dir, 'config.json');
  assert.equal((await stat(file)).mode & 0o777, 0o600);
  const cfg = JSON.parse(await readFile(file, 'utf8')) as { auths: Record<string, { auth: string }>; psFormat: string };
  assert.equal(cfg.psFormat, 'table');
  assert.deepEqual(Object.keys(cfg.auths).sort(), ['https://index.docker.io/v1/', 'old.example', 'reg.example.com:5000']);
  assert.equal(Buffer.from(cfg.auths['https://index.docker.io/v1/']!.auth, 'base64').toString(), 'me:pw');
  assert.deepEqual(await dockerConfigCredentials({ configDir: dir, env: {} })('docker.io'), { username: 'me', password: 'pw' });
  assert.deepEqual((await readdir(dir)).filter((f) => f.endsWith('.tmp')), []);

  assert.equal(await removeCredentials('docker.io', { configDir: dir, env: {} }), true);
  assert.equal(await removeCredentials('docker.io', { configDir: dir, env: {} }), false);
  assert.equal(await dockerConfigCredentials({ configDir: dir, env: {} })('docker.io'), undefined);
  assert.ok(await dockerConfigCredentials({ configDir: dir, env: {} })('old.example'));
});

test('with a helper configured, store and erase go to the helper and no plain-text copy stays', async (t) => {
  const dir = await setup(t, { credHelpers: { 'reg.example.com': 'per' }, auths: { 'reg.example.com': { auth: b64('old:old') } } });
  const log = await helper(dir, 'per');
  const env = { PATH: `${dir}:${process.env['PATH'] ?? ''}` };
  await storeCredentials('reg.example.com', 'u', 'p', { configDir: dir, env });
  const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as { auths: object };
  assert.deepEqual(cfg.auths, {});
  assert.match(await readFile(log, 'utf8'), /^store \{"ServerURL":"reg\.example\.com","Username":"u","Secret":"p"\}$/m);
  assert.equal(await removeCredentials('reg.example.com', { configDir: dir, env }), true);
  assert.match(await readFile(log, 'utf8'), /^erase reg\.example\.com$/m);
});
