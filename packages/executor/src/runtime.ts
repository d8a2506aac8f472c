import type * as ChildProcess from 'node:child_process';

/** Loaded on first use: a build that runs nothing (everything cached) never starts a process. */
const childProcess = (): typeof ChildProcess => process.getBuiltinModule('node:child_process');
import { constants } from 'node:fs';
import { access, rm, stat } from 'node:fs/promises';
import { basename, delimiter, join } from 'node:path';
import { TsbuildError } from '@tsbuild/errors';

export interface RuntimeInfo {
  /** Absolute path of the runtime binary. */
  path: string;
  /** Name the runtime reports (`runc`, `crun`, …). */
  name: string;
  /** `major.minor.patch`, or undefined if `--version` printed none. */
  version: string | undefined;
  /**
   * False for runc releases before 1.1.12, which leak a host directory fd into the container
   * (CVE-2024-21626); the executor then refuses /proc paths as the program too.
   */
  fixesCve202421626: boolean;
}

export interface RuntimeCommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function runCommand(cmd: string, args: readonly string[]): Promise<RuntimeCommandResult> {
  return new Promise((resolve, reject) => {
    const child = childProcess().spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

async function isExecutable(p: string): Promise<boolean> {
  try {
    await access(p, constants.X_OK);
    return (await stat(p)).isFile();
  } catch {
    return false;
  }
}

function notFound(runtime: string): TsbuildError {
  const name = basename(runtime);
  return new TsbuildError('RUNTIME_NOT_FOUND', `runtime '${runtime}' not found`, {
    hint: name === 'runc' ? 'apt-get install runc' : `install ${name} or pass the runtime's full path`,
  });
}

/** Finds a runtime given by name (searched in PATH plus the sbin dirs) or by path. */
export async function findRuntime(runtime: string): Promise<string> {
  if (runtime.includes('/')) {
    if (await isExecutable(runtime)) return runtime;
    throw notFound(runtime);
  }
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/sbin', '/sbin', '/usr/bin', '/bin'];
  for (const dir of dirs) {
    if (!dir.startsWith('/')) continue;
    const p = join(dir, runtime);
    if (await isExecutable(p)) return p;
  }
  throw notFound(runtime);
}

function atLeast(version: string, min: [number, number, number]): boolean {
  const parts = version.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const a = parts[i] ?? 0;
    const b = min[i] ?? 0;
    if (a !== b) return a > b;
  }
  return true;
}

const infoCache = new Map<string, Promise<RuntimeInfo>>();

/** Locates the runtime and reads its version (once per process). */
export function runtimeInfo(runtime = 'runc'): Promise<RuntimeInfo> {
  let p = infoCache.get(runtime);
  if (!p) {
    p = probe(runtime);
    infoCache.set(runtime, p);
    p.catch(() => infoCache.delete(runtime));
  }
  return p;
}

async function probe(runtime: string): Promise<RuntimeInfo> {
  const path = await findRuntime(runtime);
  const r = await runCommand(path, ['--version']);
  const m = /^(\S+) version v?(\d+\.\d+\.\d+)/m.exec(r.stdout);
  const name = m?.[1] ?? basename(path);
  const version = m?.[2];
  const fixesCve202421626 = name !== 'runc' || (version !== undefined && atLeast(version, [1, 1, 12]));
  return { path, name, version, fixesCve202421626 };
}

export interface RuntimeOptions {
  /** The runtime's state directory (`runc --root`); the runtime's default when omitted. */
  runtimeRoot?: string;
}

export function globalArgs(opts: RuntimeOptions): string[] {
  return opts.runtimeRoot === undefined ? [] : ['--root', opts.runtimeRoot];
}

const ID_PREFIX = 'tsbuild-';
let counter = 0;

/** `tsbuild-<pid>-<n>-<rand>`: the PID lets a later process tell whether the owner is gone. */
export function newContainerId(): string {
  return `${ID_PREFIX}${process.pid}-${counter++}-${Math.random().toString(36).slice(2, 8)}`;
}

export function ownerPid(id: string): number | undefined {
  const m = /^tsbuild-(\d+)-/.exec(id);
  return m ? Number(m[1]) : undefined;
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Kills and deletes a container, ignoring "does not exist". */
export async function destroyContainer(path: string, id: string, opts: RuntimeOptions): Promise<void> {
  await runCommand(path, [...globalArgs(opts), 'kill', id, 'KILL']);
  const r = await runCommand(path, [...globalArgs(opts), 'delete', '--force', id]);
  if (r.code !== 0 && !/does not exist|not found/i.test(r.stderr)) {
    throw new TsbuildError('RUNTIME', `deleting container ${id} failed: ${r.stderr.trim()}`);
  }
}

interface ListedContainer {
  id?: unknown;
  bundle?: unknown;
}

/**
 * Removes the containers that tsbuild processes which have since died left behind (their
 * `runc run` outlives them): kills them, deletes them, and removes their bundle dirs.
 * Returns the removed container ids.
 */
export async function cleanupContainers(runtime = 'runc', opts: RuntimeOptions = {}): Promise<string[]> {
  const { path } = await runtimeInfo(runtime);
  const r = await runCommand(path, [...globalArgs(opts), 'list', '--format', 'json']);
  if (r.code !== 0) throw new TsbuildError('RUNTIME', `${runtime} list failed: ${r.stderr.trim()}`);
  const listed = (JSON.parse(r.stdout.trim() || 'null') ?? []) as ListedContainer[];
  const removed: string[] = [];
  for (const c of listed) {
    if (typeof c.id !== 'string') continue;
    const pid = ownerPid(c.id);
    if (pid === undefined || pidAlive(pid)) continue;
    await destroyContainer(path, c.id, opts);
    // Only a bundle this executor made: a directory named after the container.
    if (typeof c.bundle === 'string' && c.bundle.startsWith('/') && basename(c.bundle) === c.id) {
      await rm(c.bundle, { recursive: true, force: true });
    }
    removed.push(c.id);
  }
  return removed;
}
