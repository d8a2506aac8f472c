import type * as ChildProcess from 'node:child_process';
import { readFile, mkdir } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { TsbuildError, redactSecrets } from '@tsbuild/errors';
import { writeFileAtomic } from '@tsbuild/store';

/** Loaded on first use: only a credential helper needs it. */
const childProcess = (): typeof ChildProcess => process.getBuiltinModule('node:child_process');

/** A user name and password, or an OAuth2 refresh token (`identitytoken` in config.json). */
export type Credentials = { username: string; password: string } | { username?: string; identityToken: string };

/** Looks up the credentials for a registry host (as written in references: `docker.io`, `host:5000`). */
export type CredentialSource = (registry: string) => Promise<Credentials | undefined>;

export interface DockerConfigOptions {
  /** Directory holding config.json; defaults to `$DOCKER_CONFIG`, then `~/.docker`. */
  configDir?: string | undefined;
  /** Environment for `DOCKER_CONFIG`, `HOME` and the helpers' `PATH` (defaults to process.env). */
  env?: NodeJS.ProcessEnv | undefined;
}

interface AuthEntry {
  auth?: string;
  username?: string;
  password?: string;
  identitytoken?: string;
}

interface DockerConfigFile {
  auths?: Record<string, AuthEntry>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
  [key: string]: unknown;
}

const HUB_KEY = 'https://index.docker.io/v1/';
const HUB_NAMES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

export function dockerConfigPath(opts: DockerConfigOptions = {}): string {
  const env = opts.env ?? process.env;
  const dir = opts.configDir ?? env['DOCKER_CONFIG'] ?? join(env['HOME'] ?? homedir(), '.docker');
  return join(dir, 'config.json');
}

/** `https://index.docker.io/v1/`, `http://host:5000/v2`, `host:5000` → the host the key means. */
function keyHost(key: string): string {
  const host = key.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '');
  return HUB_NAMES.has(host) ? 'docker.io' : host;
}

/** The server name config.json and credential helpers use for a registry. */
function serverKey(registry: string): string {
  return keyHost(registry) === 'docker.io' ? HUB_KEY : registry;
}

async function readConfig(path: string): Promise<DockerConfigFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new TsbuildError('DOCKER_CONFIG', `cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
  try {
    const parsed = JSON.parse(text) as unknown;
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not a JSON object');
    return parsed as DockerConfigFile;
  } catch (e) {
    throw new TsbuildError('DOCKER_CONFIG', `${path} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
}

function helperFor(cfg: DockerConfigFile, registry: string): string | undefined {
  const host = keyHost(registry);
  for (const [key, helper] of Object.entries(cfg.credHelpers ?? {})) {
    if (keyHost(key) === host && helper) return helper;
  }
  return cfg.credsStore || undefined;
}

function entryFor(cfg: DockerConfigFile, registry: string): AuthEntry | undefined {
  const host = keyHost(registry);
  for (const [key, entry] of Object.entries(cfg.auths ?? {})) {
    if (keyHost(key) === host) return entry;
  }
  return undefined;
}

function fromEntry(entry: AuthEntry, path: string): Credentials | undefined {
  if (entry.identitytoken) return { identityToken: entry.identitytoken, ...(entry.username ? { username: entry.username } : {}) };
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) throw new TsbuildError('DOCKER_CONFIG', `${path}: an "auth" value is not base64 of user:password`);
    return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  }
  if (entry.username && entry.password !== undefined) return { username: entry.username, password: entry.password };
  return undefined;
}

/** Runs `docker-credential-<name> <action>` with `input` on stdin. */
async function runHelper(name: string, action: 'get' | 'store' | 'erase', input: string, env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new TsbuildError('CREDENTIAL_HELPER', `invalid credential helper name ${JSON.stringify(name)}`);
  const program = `docker-credential-${name}`;
  return new Promise((resolve, reject) => {
    const child = childProcess().spawn(program, [action], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e) => {
      const hint = (e as NodeJS.ErrnoException).code === 'ENOENT' ? `install ${program} or remove it from config.json` : undefined;
      reject(new TsbuildError('CREDENTIAL_HELPER', `cannot run ${program}: ${e.message}`, { cause: e, ...(hint ? { hint } : {}) }));
    });
    child.on('close', (code) => resolve({ code: code ?? 1, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') }));
    child.stdin.on('error', () => {
      // A helper that exits without reading stdin is judged by its exit code.
    });
    child.stdin.end(input);
  });
}

async function helperGet(name: string, registry: string, env: NodeJS.ProcessEnv): Promise<Credentials | undefined> {
  const r = await runHelper(name, 'get', serverKey(registry), env);
  if (r.code !== 0) {
    if (/credentials not found/i.test(r.stdout + r.stderr)) return undefined;
    const why = redactSecrets((r.stderr || r.stdout).trim()).slice(0, 200);
    throw new TsbuildError('CREDENTIAL_HELPER', `docker-credential-${name} get ${registry} failed (exit ${r.code})${why ? `: ${why}` : ''}`);
  }
  let parsed: { Username?: unknown; Secret?: unknown };
  try {
    parsed = JSON.parse(r.stdout) as typeof parsed;
  } catch {
    throw new TsbuildError('CREDENTIAL_HELPER', `docker-credential-${name} get ${registry} printed something that is not JSON`);
  }
  const user = typeof parsed.Username === 'string' ? parsed.Username : '';
  const secret = typeof parsed.Secret === 'string' ? parsed.Secret : '';
  if (!secret) return undefined;
  // Helpers mark an OAuth2 refresh token with this user name.
  if (user === '<token>') return { identityToken: secret };
  return { username: user, password: secret };
}

/** Reads credentials the way the docker CLI does: credHelpers[host], then credsStore, then auths. */
export function dockerConfigCredentials(opts: DockerConfigOptions = {}): CredentialSource {
  return async (registry) => {
    const path = dockerConfigPath(opts);
    const cfg = await readConfig(path);
    const env = opts.env ?? process.env;
    const helper = helperFor(cfg, registry);
    if (helper !== undefined) {
      const got = await helperGet(helper, registry, env);
      if (got !== undefined) return got;
    }
    const entry = entryFor(cfg, registry);
    return entry === undefined ? undefined : fromEntry(entry, path);
  };
}

/** Writes config.json through a temp file and rename, so a crash never leaves it half written. */
async function writeConfig(path: string, cfg: DockerConfigFile): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  // It holds passwords: readable by its owner only, from the moment it exists.
  await writeFileAtomic(path, `${JSON.stringify(cfg, null, '\t')}\n`, dirname(path), { mode: 0o600 });
}

function dropEntries(cfg: DockerConfigFile, registry: string): boolean {
  const host = keyHost(registry);
  let removed = false;
  for (const key of Object.keys(cfg.auths ?? {})) {
    if (keyHost(key) === host && cfg.auths) {
      delete cfg.auths[key];
      removed = true;
    }
  }
  return removed;
}

/** Saves verified credentials: into the configured helper if there is one, else into `auths`. */
export async function storeCredentials(registry: string, username: string, password: string, opts: DockerConfigOptions = {}): Promise<void> {
  const path = dockerConfigPath(opts);
  const cfg = await readConfig(path);
  const helper = helperFor(cfg, registry);
  if (helper !== undefined) {
    const input = JSON.stringify({ ServerURL: serverKey(registry), Username: username, Secret: password });
    const r = await runHelper(helper, 'store', input, opts.env ?? process.env);
    if (r.code !== 0) throw new TsbuildError('CREDENTIAL_HELPER', `docker-credential-${helper} store ${registry} failed (exit ${r.code})`);
    // A plain-text copy left from an older login would shadow nothing but still leak.
    if (dropEntries(cfg, registry)) await writeConfig(path, cfg);
    return;
  }
  dropEntries(cfg, registry);
  cfg.auths = { ...(cfg.auths ?? {}), [serverKey(registry)]: { auth: Buffer.from(`${username}:${password}`).toString('base64') } };
  await writeConfig(path, cfg);
}

/** Forgets a registry's credentials; false when there were none. */
export async function removeCredentials(registry: string, opts: DockerConfigOptions = {}): Promise<boolean> {
  const path = dockerConfigPath(opts);
  const cfg = await readConfig(path);
  let removed = false;
  const helper = helperFor(cfg, registry);
  if (helper !== undefined) {
    const r = await runHelper(helper, 'erase', serverKey(registry), opts.env ?? process.env);
    if (r.code === 0) removed = true;
  }
  if (dropEntries(cfg, registry)) {
    removed = true;
    await writeConfig(path, cfg);
  }
  return removed;
}
