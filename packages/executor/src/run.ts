import type * as ChildProcess from 'node:child_process';

/** Loaded on first use: a build that runs nothing (everything cached) never starts a process. */
const childProcess = (): typeof ChildProcess => process.getBuiltinModule('node:child_process');
import { constants as osConstants } from 'node:os';
import { lstat, mkdir, readdir, readFile, realpath, rm, rmdir, unlink, utimes, writeFile } from 'node:fs/promises';
import { isAbsolute, join, posix, resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { CancelledError, TsbuildError } from '@tsbuild/errors';
import { isUnderProc, mkdirInRoot, resolveInRoot } from './rootpath.ts';
import { UsageCgroup } from './usage.ts';
import type { Usage } from './usage.ts';
import { globalArgs, newContainerId, runCommand, runtimeInfo } from './runtime.ts';
import { cgroupLimitSupport, defaultRuntimeRoot, inUserNamespace, lockedMountFlags, rootlessStartHint } from './rootless.ts';
import { buildSpec, RLIM_INFINITY, RLIMIT_TYPES, specJson } from './spec.ts';
import type { Limits, Rlimit, SpecMount } from './spec.ts';

export type RunMount =
  | {
      type: 'bind';
      /** Host path (trusted: chosen by tsbuild, not by the Dockerfile). */
      source: string;
      /** Absolute path in the container. */
      destination: string;
      readonly?: boolean;
    }
  | { type: 'tmpfs'; destination: string; /** bytes */ size?: number; /** e.g. 0o1777 */ mode?: number };

export interface RunUser {
  uid: number;
  gid: number;
  additionalGids?: number[];
}

export interface RunOptions {
  /** Absolute host path of the container's root filesystem (e.g. a snapshot's rootfs). */
  rootfs: string;
  /** Program and arguments; the program is looked up in the container's PATH. */
  args: string[];
  /** `KEY=value` strings. A default PATH is added when none is given. */
  env?: string[];
  /**
   * Working directory in the container, default `/`. Created (mode 0755, root-owned) if it does
   * not exist, since the runtime cannot start in a missing directory; it then stays in the rootfs.
   */
  cwd?: string;
  /** Default root (0:0). */
  user?: RunUser;
  /** Default `tsbuild`. */
  hostname?: string;
  /** `none`: a private network namespace with only `lo`; `host` (default): the host's network. */
  network?: 'none' | 'host';
  /** Extra `/etc/hosts` entries. */
  extraHosts?: { host: string; ip: string }[];
  /**
   * Bind-mount generated `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` (default true).
   * While they are mounted a process cannot remove `/etc` (as under Docker); callers that must
   * let a step replace `/etc` wholesale turn them off.
   */
  etcFiles?: boolean;
  mounts?: RunMount[];
  limits?: Limits;
  /** setrlimit values of the process (`--ulimit`); unnamed ones are inherited from this process. */
  rlimits?: Rlimit[];
  /** Size of `/dev/shm` in bytes (default 64 MiB). */
  shmSize?: number;
  stdout?: Writable;
  stderr?: Writable;
  /** OCI runtime name (looked up in PATH) or path; default `runc`. */
  runtime?: string;
  /** The runtime's state dir (`--root`); the runtime's default when omitted. */
  runtimeRoot?: string;
  /** Host directory for bundles; each run uses (and removes) a subdirectory. */
  stateDir: string;
  /** Aborting kills the container; `run` then rejects with CancelledError. */
  signal?: AbortSignal;
}

export interface RunResult {
  exitCode: number;
  /** Set when the process died of a signal (inferred from an exit code of 128+N, as Docker does). */
  signal?: string;
  /** CPU time and peak memory of the container's processes, where cgroups can be read. */
  usage?: Usage;
}

/** Files the runtime bind-mounts over the rootfs; they must never end up in a layer. */
const RUNTIME_PATHS = ['/etc', '/etc/hosts', '/etc/hostname', '/etc/resolv.conf', '/proc', '/dev', '/sys'];

const SIGNAL_NAMES = new Map(Object.entries(osConstants.signals).map(([name, n]) => [n, name]));

function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

function badInput(message: string): TsbuildError {
  return new TsbuildError('BAD_RUN', message);
}

function containerPath(p: string, what: string): string {
  if (!p.startsWith('/')) throw badInput(`${what} ${JSON.stringify(p)} must be an absolute path`);
  return posix.normalize(p);
}

interface Stubs {
  /** In-container paths (resolved) the runtime may create as mount points, which do not exist yet. */
  missing: string[];
  /** Times of the existing directories those would be created in, to put back afterwards. */
  parentTimes: Map<string, { atime: number; mtime: number }>;
}

async function recordStubs(root: string, paths: string[]): Promise<Stubs> {
  const all = new Set<string>();
  for (const p of paths) {
    const parts = p.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) all.add(`/${parts.slice(0, i).join('/')}`);
  }
  const missing = new Set<string>();
  const parentTimes = new Map<string, { atime: number; mtime: number }>();
  for (const p of all) {
    const resolved = await resolveInRoot(root, p);
    try {
      await lstat(root + resolved);
    } catch (e) {
      if (errCode(e) !== 'ENOENT' && errCode(e) !== 'ENOTDIR') throw e;
      missing.add(resolved);
      const parent = posix.dirname(resolved);
      try {
        const st = await lstat(root + parent, { bigint: true });
        if (st.isDirectory()) {
          parentTimes.set(parent, { atime: Number(st.atimeNs) / 1e9, mtime: Number(st.mtimeNs) / 1e9 });
        }
      } catch (e2) {
        if (errCode(e2) !== 'ENOENT' && errCode(e2) !== 'ENOTDIR') throw e2;
      }
    }
  }
  return { missing: [...missing], parentTimes };
}

/**
 * Removes the empty files and directories the runtime created as mount points and restores the
 * times of the directories they were made in, so that the directory is unchanged in the layer.
 */
async function removeStubs(root: string, stubs: Stubs): Promise<void> {
  for (const p of [...stubs.missing].sort((a, b) => b.length - a.length)) {
    const host = root + (await resolveInRoot(root, p));
    let st;
    try {
      st = await lstat(host);
    } catch {
      continue;
    }
    if (st.isFile() && st.size === 0) await unlink(host);
    else if (st.isDirectory() && (await readdir(host)).length === 0) await rmdir(host);
  }
  for (const [dir, t] of stubs.parentTimes) {
    const host = root + (await resolveInRoot(root, dir));
    await utimes(host, t.atime, t.mtime).catch(() => undefined);
  }
}

function hostsFile(hostname: string, extra: { host: string; ip: string }[]): string {
  const lines = [
    `127.0.0.1\tlocalhost ${hostname}`,
    '::1\tlocalhost ip6-localhost ip6-loopback',
    ...extra.map((e) => `${e.ip}\t${e.host}`),
  ];
  return `${lines.join('\n')}\n`;
}

function checkLine(what: string, v: string): string {
  if (/[\n\0]/.test(v)) throw badInput(`${what} ${JSON.stringify(v)} contains a newline or NUL`);
  return v;
}

/** Runs one process in a fresh container and returns its exit status. */
export async function run(given: RunOptions): Promise<RunResult> {
  const runtimeRoot = given.runtimeRoot ?? defaultRuntimeRoot(given.stateDir);
  const opts: RunOptions = runtimeRoot === undefined ? given : { ...given, runtimeRoot };
  if (opts.signal?.aborted) throw new CancelledError();
  if (opts.args.length === 0 || opts.args[0] === '') throw badInput('no program to run');
  const rt = await runtimeInfo(opts.runtime ?? 'runc');
  const rootfs = resolve(opts.rootfs);
  const network = opts.network ?? 'host';
  const hostname = checkLine('hostname', opts.hostname ?? 'tsbuild');
  const user = opts.user ?? { uid: 0, gid: 0 };
  for (const id of [user.uid, user.gid, ...(user.additionalGids ?? [])]) {
    if (!Number.isInteger(id) || id < 0 || id > 0xfffffffe) throw badInput(`invalid user or group id ${id}`);
  }
  for (const e of opts.env ?? []) {
    if (!/^[^=\0]+=/.test(e) || e.includes('\0')) throw badInput(`environment entry ${JSON.stringify(e)} is not KEY=value`);
  }

  // CVE-2024-21626: a cwd under /proc (directly or through a symlink in the image) can reach a
  // host directory through a leaked fd. Refused whatever the runtime version.
  const cwd = await resolveInRoot(rootfs, containerPath(opts.cwd ?? '/', 'working directory'));
  if (isUnderProc(cwd)) {
    throw new TsbuildError('UNSAFE_CWD', `working directory ${opts.cwd} resolves to ${cwd}, inside /proc`, {
      hint: 'a working directory under /proc can escape the container (CVE-2024-21626)',
    });
  }
  const program = opts.args[0] ?? '';
  if (!rt.fixesCve202421626 && program.startsWith('/') && isUnderProc(await resolveInRoot(rootfs, program))) {
    throw new TsbuildError('UNSAFE_PROGRAM', `refusing to run ${program}: a program under /proc can escape ${rt.name} ${rt.version}`, {
      hint: 'upgrade runc to 1.1.12 or later (CVE-2024-21626)',
    });
  }

  if (opts.shmSize !== undefined && (!Number.isSafeInteger(opts.shmSize) || opts.shmSize <= 0)) throw badInput(`invalid /dev/shm size ${opts.shmSize}`);
  await checkRlimits(opts.rlimits ?? []);

  const mounts: SpecMount[] = [];
  const mountPoints: string[] = [];
  for (const m of opts.mounts ?? []) {
    const dest = containerPath(m.destination, 'mount target');
    if (dest === '/' || isUnderProc(dest) || isUnderProc(await resolveInRoot(rootfs, dest))) {
      throw badInput(`cannot mount over ${dest}`);
    }
    mountPoints.push(dest);
    if (m.type === 'bind') {
      if (!isAbsolute(m.source)) throw badInput(`bind mount source ${m.source} must be absolute`);
      mounts.push({ destination: dest, type: 'bind', source: m.source, options: ['rbind', m.readonly ? 'ro' : 'rw'] });
    } else {
      const options = ['nosuid', 'nodev', `mode=${(m.mode ?? 0o755).toString(8)}`];
      if (m.size !== undefined) options.push(`size=${m.size}`);
      mounts.push({ destination: dest, type: 'tmpfs', source: 'tmpfs', options });
    }
  }

  for (const e of opts.extraHosts ?? []) checkLine('host entry', `${e.ip} ${e.host}`);
  const rootless = inUserNamespace();
  const id = newContainerId();
  const bundle = join(resolve(opts.stateDir), id);
  // The bundle, the usage cgroup and the rootfs's stubs do not depend on each other: each is a few
  // file system round trips, made at the same time (a RUN step pays them all before its process).
  const makeBundle = (async () => {
    await mkdir(opts.stateDir, { recursive: true });
    await mkdir(bundle, { mode: 0o700 });
    const resolv = network === 'host' ? await readFile('/etc/resolv.conf', 'utf8').catch(() => '') : '';
    await Promise.all([
      writeFile(join(bundle, 'resolv.conf'), resolv, { mode: 0o644 }),
      writeFile(join(bundle, 'hosts'), hostsFile(hostname, opts.extraHosts ?? []), { mode: 0o644 }),
      writeFile(join(bundle, 'hostname'), `${hostname}\n`, { mode: 0o644 }),
    ]);
  })();
  // Around the runtime's cgroup, so what the container used can be read after it is gone.
  const makeUsage = UsageCgroup.create(id);
  const makeStubs = (async () => {
    await mkdirInRoot(rootfs, cwd);
    return recordStubs(rootfs, [...RUNTIME_PATHS, ...mountPoints]);
  })();
  // In a user namespace only a delegated cgroup v2 subtree takes limits (the builder warns once).
  const cgroupsOk = rootless ? cgroupLimitSupport().then((c) => c.usable) : Promise.resolve(true);
  const [made, usageMade, stubsMade, cgroupsMade] = await Promise.allSettled([makeBundle, makeUsage, makeStubs, cgroupsOk]);
  const usage = usageMade.status === 'fulfilled' ? usageMade.value : undefined;
  const stubs: Stubs = stubsMade.status === 'fulfilled' ? stubsMade.value : { missing: [], parentTimes: new Map() };
  let ranToEnd = false;
  try {
    for (const r of [made, usageMade, stubsMade, cgroupsMade]) if (r.status === 'rejected') throw r.reason;
    const cgroups = cgroupsMade.status === 'fulfilled' && cgroupsMade.value;
    const etcMounts: SpecMount[] = (opts.etcFiles === false ? [] : ['resolv.conf', 'hosts', 'hostname']).map((f) => ({
      destination: `/etc/${f}`,
      type: 'bind',
      source: join(bundle, f),
      options: ['rbind', 'ro'],
    }));
    const allMounts = [...etcMounts, ...mounts];
    if (rootless) {
      const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
      for (const m of allMounts) {
        if (m.type !== 'bind' || !m.options?.includes('ro')) continue;
        const locked = lockedMountFlags(await realpath(m.source).catch(() => m.source), mountinfo);
        m.options = [...m.options, ...locked.filter((f) => !m.options?.includes(f))];
      }
    }
    const spec = buildSpec({
      rootfs,
      args: opts.args,
      env: opts.env ?? [],
      cwd,
      uid: user.uid,
      gid: user.gid,
      additionalGids: user.additionalGids ?? [],
      hostname,
      network,
      mounts: allMounts,
      // A rootless runc fails on a named cgroup it cannot make, but goes on without one it picked.
      cgroupsPath: usage?.runtimePath ?? (cgroups ? `tsbuild/${id}` : undefined),
      limits: cgroups ? (opts.limits ?? {}) : {},
      rootless,
      ...(opts.rlimits ? { rlimits: opts.rlimits } : {}),
      ...(opts.shmSize !== undefined ? { shmSize: opts.shmSize } : {}),
    });
    await writeFile(join(bundle, 'config.json'), specJson(spec));
    const result = await runContainer(rt.path, id, bundle, opts);
    ranToEnd = true;
    const used = await usage?.read();
    return used ? { ...result, usage: used } : result;
  } finally {
    // `runc run` deletes the container when its process ran to the end (whatever its exit code);
    // every other way out (abort, a runtime that failed to start it) needs an explicit delete.
    if (!ranToEnd) await runCommand(rt.path, [...globalArgs(opts), 'delete', '--force', id]).catch(() => undefined);
    const cleaned = await Promise.allSettled([usage?.remove(), removeStubs(rootfs, stubs), rm(bundle, { recursive: true, force: true })]);
    for (const r of cleaned) if (r.status === 'rejected') throw r.reason;
  }
}

/** `/proc/self/limits` row names, by OCI rlimit type. */
const LIMIT_ROWS: Record<string, string> = {
  RLIMIT_CPU: 'Max cpu time', RLIMIT_FSIZE: 'Max file size', RLIMIT_DATA: 'Max data size', RLIMIT_STACK: 'Max stack size',
  RLIMIT_CORE: 'Max core file size', RLIMIT_RSS: 'Max resident set', RLIMIT_NPROC: 'Max processes', RLIMIT_NOFILE: 'Max open files',
  RLIMIT_MEMLOCK: 'Max locked memory', RLIMIT_AS: 'Max address space', RLIMIT_LOCKS: 'Max file locks', RLIMIT_SIGPENDING: 'Max pending signals',
  RLIMIT_MSGQUEUE: 'Max msgqueue size', RLIMIT_NICE: 'Max nice priority', RLIMIT_RTPRIO: 'Max realtime priority', RLIMIT_RTTIME: 'Max realtime timeout',
};
const CAP_SYS_RESOURCE = 24;

function limitText(n: bigint): string {
  return n === RLIM_INFINITY ? 'unlimited' : String(n);
}

/**
 * Refuses, before the container starts, an rlimit the runtime would fail to set: a soft limit
 * above its hard limit, or a hard limit above this process's own when raising it needs
 * CAP_SYS_RESOURCE, which this process lacks (root in a container often does), or open files
 * beyond the kernel's fs.nr_open.
 */
export async function checkRlimits(limits: readonly Rlimit[]): Promise<void> {
  if (limits.length === 0) return;
  const [limitsText, status, nrOpen] = await Promise.all([
    readFile('/proc/self/limits', 'utf8').catch(() => ''),
    readFile('/proc/self/status', 'utf8').catch(() => ''),
    readFile('/proc/sys/fs/nr_open', 'utf8').catch(() => ''),
  ]);
  const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  const canRaise = capEff !== undefined && ((BigInt(`0x${capEff}`) >> BigInt(CAP_SYS_RESOURCE)) & 1n) === 1n;
  const seen = new Set<string>();
  for (const l of limits) {
    const name = l.type.replace(/^RLIMIT_/, '').toLowerCase();
    const shown = `ulimit ${name}=${limitText(l.soft)}:${limitText(l.hard)}`;
    if (!RLIMIT_TYPES.includes(l.type)) throw badInput(`unknown rlimit type ${JSON.stringify(l.type)}`);
    if (seen.has(l.type)) throw badInput(`${shown}: ${name} is limited twice`);
    seen.add(l.type);
    for (const v of [l.soft, l.hard]) if (v < 0n || v > RLIM_INFINITY) throw badInput(`${shown}: ${v} is out of range`);
    if (l.soft > l.hard) throw badInput(`${shown}: the soft limit is above the hard limit`);
    if (l.type === 'RLIMIT_NOFILE' && /^\d+\s*$/.test(nrOpen) && l.hard > BigInt(nrOpen.trim())) {
      throw new TsbuildError('RLIMIT', `${shown}: the kernel allows at most ${nrOpen.trim()} open files (fs.nr_open)`, { hint: `ask for at most nofile=${nrOpen.trim()}` });
    }
    const rowName = LIMIT_ROWS[l.type];
    const row = rowName === undefined ? null : new RegExp(`^${rowName}\\s+(\\S+)\\s+(\\S+)`, 'm').exec(limitsText);
    const hardNow = row?.[2] === undefined ? undefined : row[2] === 'unlimited' ? RLIM_INFINITY : /^\d+$/.test(row[2]) ? BigInt(row[2]) : undefined;
    if (!canRaise && hardNow !== undefined && l.hard > hardNow) {
      throw new TsbuildError('RLIMIT', `${shown}: the hard limit here is ${limitText(hardNow)}, and raising it needs CAP_SYS_RESOURCE, which tsbuild's process does not have`, {
        hint: `ask for at most ${name}=${limitText(hardNow)} (a process may lower its limits, never raise its hard limit without that capability)`,
      });
    }
  }
}

async function runContainer(runtime: string, id: string, bundle: string, opts: RunOptions): Promise<RunResult> {
  if (opts.signal?.aborted) throw new CancelledError();
  const log = join(bundle, 'runtime.log');
  const args = [...globalArgs(opts), '--log', log, '--log-format', 'json', 'run', '--bundle', bundle, id];
  const child = childProcess().spawn(runtime, args, {
    cwd: bundle,
    stdio: ['ignore', opts.stdout ? 'pipe' : 'ignore', opts.stderr ? 'pipe' : 'ignore'],
  });
  if (opts.stdout) child.stdout?.pipe(opts.stdout, { end: false });
  if (opts.stderr) child.stderr?.pipe(opts.stderr, { end: false });

  let exited = false;
  let aborted = false;
  const onAbort = () => {
    aborted = true;
    void (async () => {
      // The container may not exist yet; keep trying until `runc run` returns.
      for (let i = 0; !exited; i++) {
        await runCommand(runtime, [...globalArgs(opts), 'kill', id, 'KILL']);
        if (i === 50) child.kill('SIGKILL');
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
  };
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  let code: number | null;
  try {
    code = await new Promise<number | null>((res, rej) => {
      child.once('error', rej);
      child.once('close', (c) => res(c));
    });
  } finally {
    exited = true;
    opts.signal?.removeEventListener('abort', onAbort);
  }
  if (aborted) throw new CancelledError();
  const exitCode = code ?? 137;
  if (exitCode !== 0) {
    const failure = await runtimeFailure(log);
    if (failure !== undefined) {
      const hint = rootlessStartHint(failure);
      throw new TsbuildError('RUNTIME_START', `cannot run ${JSON.stringify(opts.args[0])}: ${failure}`, hint === undefined ? {} : { hint });
    }
  }
  const sig = exitCode > 128 ? SIGNAL_NAMES.get(exitCode - 128) : undefined;
  return sig === undefined ? { exitCode } : { exitCode, signal: sig };
}

/** The runtime's own error (as opposed to the process failing), from its JSON log. */
async function runtimeFailure(log: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(log, 'utf8');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const entry = JSON.parse(line) as { level?: string; msg?: string };
      if (entry.level === 'error' || entry.level === 'fatal') {
        return (entry.msg ?? 'the runtime failed').replace(/^runc run failed: /, '');
      }
    } catch {
      continue;
    }
  }
  return undefined;
}
