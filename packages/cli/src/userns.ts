/**
 * Rootless operation: an ordinary user's tsbuild re-executes itself in a new user and mount
 * namespace where it is root. Inside, uid 0 is the user's own uid and 1..N are the user's
 * subordinate ids (/etc/subuid, /etc/subgid), mapped by the setuid newuidmap/newgidmap helpers,
 * so the store, snapshotter and executor run unchanged: overlay mounts, chown to any image owner
 * and runc all work within those ids. Files the build writes are owned by the user (uid 0 inside)
 * or by the user's subordinate ids.
 */
import type * as ChildProcess from 'node:child_process';
import { accessSync, constants as fsc, readFileSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Duplex } from 'node:stream';
import { userInfo } from 'node:os';
import { TsbuildError } from '@tsbuild/errors';
import { resolveRoot } from '@tsbuild/store';
import { commandIndex } from './argv.ts';

/** Loaded on first use: only an ordinary user's command starts the namespace's helpers. */
const childProcess = (): typeof ChildProcess => process.getBuiltinModule('node:child_process');

/** Set in the re-executed process, which checks that it is root in its namespace. */
const NS_ENV = 'TSBUILD_USERNS';
/** The fd on which the shell in the new namespace says it is there, then waits for the id maps. */
const SYNC_FD = 3;
/**
 * Runs in the new namespace before tsbuild does: it says so, waits until the parent has written
 * the id maps, then execs. tsbuild must be exec'd after the maps exist: a process exec'd while
 * its uid is unmapped loses the namespace's capabilities, and keeps them only as uid 0.
 */
const WAIT_FOR_MAPS = 'printf r >&3 && IFS= read -r go <&3 && [ "$go" = g ] && exec "$0" "$@" 3>&-';

/** Commands that never touch the store, mounts or containers: they run as the user, as they are. */
const AS_USER = new Set(['check', 'login', 'logout']);

/** One subordinate id range of /etc/subuid or /etc/subgid. */
export interface IdRange {
  start: number;
  count: number;
}

/** One line of a uid_map or gid_map: `inside outside count`. */
export interface IdMapping {
  inside: number;
  outside: number;
  count: number;
}

/** Who the ranges belong to: a line names its owner by login name or by numeric uid. */
export interface Owner {
  name: string | undefined;
  uid: number;
}

/** Every range `/etc/subuid`-format text gives `owner`, in file order. */
export function subordinateRanges(text: string, owner: Owner): IdRange[] {
  const out: IdRange[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const [who, start, count] = line.split(':');
    if (who === undefined || start === undefined || count === undefined) continue;
    if (who !== owner.name && who !== String(owner.uid)) continue;
    const s = Number(start);
    const c = Number(count);
    if (!Number.isSafeInteger(s) || !Number.isSafeInteger(c) || s < 0 || c <= 0) continue;
    out.push({ start: s, count: c });
  }
  return out;
}

/**
 * The namespace's map: 0 is the user's own id, then each subordinate range in turn from 1 on.
 * A range holding the user's own id would map it twice; that part is left out.
 */
export function namespaceMap(own: number, ranges: readonly IdRange[]): IdMapping[] {
  const out: IdMapping[] = [{ inside: 0, outside: own, count: 1 }];
  let next = 1;
  const add = (start: number, count: number): void => {
    if (count <= 0) return;
    out.push({ inside: next, outside: start, count });
    next += count;
  };
  for (const r of ranges) {
    if (own >= r.start && own < r.start + r.count) {
      add(r.start, own - r.start);
      add(own + 1, r.start + r.count - own - 1);
    } else add(r.start, r.count);
  }
  return out;
}

/** The end of the highest range any user has, for a suggestion that overlaps none of them. */
function freeStart(...texts: string[]): number {
  let end = 100000;
  for (const text of texts) {
    for (const line of text.split('\n')) {
      const [, start, count] = line.trim().split(':');
      const e = Number(start) + Number(count);
      if (Number.isSafeInteger(e) && e > end) end = e;
    }
  }
  return end;
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** An executable named `name` on PATH (the helpers are looked up as the shell would). */
function onPath(name: string, path = process.env.PATH ?? ''): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (!dir.startsWith('/')) continue;
    const p = join(dir, name);
    try {
      accessSync(p, fsc.X_OK);
      if (statSync(p).isFile()) return p;
    } catch {
      continue;
    }
  }
  return undefined;
}

function ownerOf(uid: number): Owner {
  try {
    return { name: userInfo().username, uid };
  } catch {
    // No passwd entry (an arbitrary uid in a container): lines may still name the uid.
    return { name: undefined, uid };
  }
}

/** Whether this invocation runs a command that needs root's powers (and so the namespace). */
export function needsNamespace(argv: readonly string[]): boolean {
  if (argv.some((a) => a === '--help' || a === '-h' || a === '--version')) return false;
  const at = commandIndex(argv);
  if (at < 0) return false;
  return !AS_USER.has(argv[at] as string);
}

/** Why user namespaces cannot be made here, read from the sysctls that switch them off. */
function disabledReason(read: (path: string) => string | undefined): TsbuildError | undefined {
  const max = read('/proc/sys/user/max_user_namespaces')?.trim();
  if (max === '0') {
    return new TsbuildError('USERNS_DISABLED', 'user namespaces are disabled on this machine (user.max_user_namespaces = 0), and tsbuild needs one to build without root', {
      hint: 'as root: sysctl -w user.max_user_namespaces=15000 (and set it in /etc/sysctl.d to keep it), or run tsbuild as root',
    });
  }
  if (read('/proc/sys/kernel/unprivileged_userns_clone')?.trim() === '0') {
    return new TsbuildError('USERNS_DISABLED', 'unprivileged user namespaces are disabled on this machine (kernel.unprivileged_userns_clone = 0), and tsbuild needs one to build without root', {
      hint: 'as root: sysctl -w kernel.unprivileged_userns_clone=1 (and set it in /etc/sysctl.d to keep it), or run tsbuild as root',
    });
  }
  return undefined;
}

export interface NamespacePlan {
  unshare: string;
  sh: string;
  newuidmap: string;
  newgidmap: string;
  uidMap: IdMapping[];
  gidMap: IdMapping[];
}

/**
 * What entering the namespace takes, or the error that says what is missing: user namespaces,
 * subordinate ids for this user, or the uidmap helpers.
 */
export interface NamespaceOptions {
  uid: number;
  gid: number;
  /** Defaults: the login name of this process's user, $PATH, /etc/subuid, /etc/subgid, and /proc/sys read as files. */
  name?: string;
  path?: string;
  subuid?: string;
  subgid?: string;
  readSysctl?: (path: string) => string | undefined;
}

export function planNamespace(opts: NamespaceOptions): NamespacePlan {
  const disabled = disabledReason(opts.readSysctl ?? readText);
  if (disabled) throw disabled;
  const owner = opts.name !== undefined ? { name: opts.name, uid: opts.uid } : ownerOf(opts.uid);
  const who = owner.name ?? String(opts.uid);
  const subuidText = opts.subuid ?? readText('/etc/subuid') ?? '';
  const subgidText = opts.subgid ?? readText('/etc/subgid') ?? '';
  const uids = subordinateRanges(subuidText, owner);
  const gids = subordinateRanges(subgidText, owner);
  if (uids.length === 0 || gids.length === 0) {
    const start = freeStart(subuidText, subgidText);
    const range = `${start}-${start + 65535}`;
    const missing = uids.length === 0 && gids.length === 0 ? '/etc/subuid and /etc/subgid' : uids.length === 0 ? '/etc/subuid' : '/etc/subgid';
    throw new TsbuildError('NO_SUBORDINATE_IDS', `${who} has no subordinate ids in ${missing}: building without root maps the image's users to them`, {
      hint: `as root: usermod --add-subuids ${range} --add-subgids ${range} ${who}`,
    });
  }
  const newuidmap = onPath('newuidmap', opts.path);
  const newgidmap = onPath('newgidmap', opts.path);
  if (!newuidmap || !newgidmap) {
    throw new TsbuildError('NO_NEWUIDMAP', `${!newuidmap ? 'newuidmap' : 'newgidmap'} was not found on PATH: building without root needs it to map ${who}'s subordinate ids`, {
      hint: 'install the uidmap package (apt-get install uidmap; dnf install shadow-utils), or run tsbuild as root',
    });
  }
  const unshare = onPath('unshare', opts.path);
  const sh = onPath('sh', opts.path);
  if (!unshare || !sh) {
    throw new TsbuildError('NO_UNSHARE', `${!unshare ? 'unshare' : 'sh'} was not found on PATH: building without root needs it to make a user namespace`, {
      hint: `install ${!unshare ? 'util-linux' : 'a POSIX shell'}, or run tsbuild as root`,
    });
  }
  return { unshare, sh, newuidmap, newgidmap, uidMap: namespaceMap(opts.uid, uids), gidMap: namespaceMap(opts.gid, gids) };
}

function mapArgs(pid: number, map: readonly IdMapping[]): string[] {
  return [String(pid), ...map.flatMap((m) => [String(m.inside), String(m.outside), String(m.count)])];
}

/**
 * Runs this same command in the namespace and resolves to its exit code. The child signals
 * when it is in its new namespace; its maps are written then, and it goes on once told to.
 */
export function runInNamespace(argv: readonly string[], plan: NamespacePlan): Promise<number> {
  const env: NodeJS.ProcessEnv = { ...process.env, [NS_ENV]: '1' };
  // Root in the namespace would default to /var/lib/tsbuild: keep the user's own default.
  if (!env.TSBUILD_ROOT) env.TSBUILD_ROOT = resolveRoot({});
  const script = process.argv[1];
  if (script === undefined) throw new TsbuildError('USERNS', 'cannot tell which script to run again in the user namespace');
  const child = childProcess().spawn(plan.unshare, ['--user', '--mount', '--propagation', 'private', '--', plan.sh, '-c', WAIT_FOR_MAPS, process.execPath, ...process.execArgv, script, ...argv], {
    env,
    stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
  });
  // The terminal sends ^C to the whole process group: the child handles it and exits.
  const forward = (sig: NodeJS.Signals) => () => void child.kill(sig);
  const onInt = (): void => {};
  const onTerm = forward('SIGTERM');
  const onHup = forward('SIGHUP');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  process.on('SIGHUP', onHup);
  return new Promise<number>((resolve, reject) => {
    let ready = false;
    let failure: TsbuildError | undefined;
    const sync = child.stdio[SYNC_FD] as Duplex;
    sync.on('error', () => {});
    sync.once('data', () => {
      ready = true;
      const pid = child.pid as number;
      for (const [tool, map] of [[plan.newuidmap, plan.uidMap], [plan.newgidmap, plan.gidMap]] as const) {
        const r = childProcess().spawnSync(tool, mapArgs(pid, map), { encoding: 'utf8' });
        if (r.status !== 0) {
          const cap = tool === plan.newuidmap ? 'CAP_SETUID' : 'CAP_SETGID';
          const why = (r.stderr || r.error?.message || `exit ${r.status}`).trim();
          failure = new TsbuildError('USERNS_MAP', `${tool} could not map the subordinate ids: ${why}`, {
            hint: `check ${tool === plan.newuidmap ? '/etc/subuid' : '/etc/subgid'}, that ${tool} is setuid root or has the ${cap.toLowerCase()} file capability, and, in a container, that ${cap} is among its capabilities (it is by default) and privilege escalation is allowed`,
          });
          child.kill('SIGKILL');
          return;
        }
      }
      sync.end('g\n');
    });
    child.once('error', (e) => reject(new TsbuildError('USERNS', `cannot start ${plan.unshare}: ${e.message}`, { cause: e })));
    child.once('close', (code, signal) => {
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      process.off('SIGHUP', onHup);
      if (failure) return reject(failure);
      if (!ready) {
        return reject(
          new TsbuildError('USERNS', `cannot create a user namespace (unshare exited with ${signal ?? code})`, {
            hint: 'unprivileged user namespaces may be restricted here (sysctls user.max_user_namespaces, kernel.unprivileged_userns_clone, kernel.apparmor_restrict_unprivileged_userns; a seccomp profile that blocks unshare in a container; a chroot, where the kernel refuses a new user namespace)',
          }),
        );
      }
      resolve(code ?? 128 + (signal ? signalNumber(signal) : 0));
    });
  });
}

function signalNumber(signal: NodeJS.Signals): number {
  return { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 }[signal as string] ?? 1;
}

/** In the re-executed process: checks that it is root in its namespace. Does nothing in any other process. */
export function joinNamespace(): void {
  if (process.env[NS_ENV] === undefined) return;
  delete process.env[NS_ENV];
  if (process.getuid?.() !== 0) {
    throw new TsbuildError('USERNS', `the user namespace was made, but tsbuild is uid ${process.getuid?.()} in it, not 0`);
  }
}

/** Whether an ordinary user's invocation must be re-executed in a user namespace first. */
export function wantsNamespace(argv: readonly string[]): boolean {
  return typeof process.getuid === 'function' && process.getuid() !== 0 && needsNamespace(argv);
}

/** Enters the namespace and runs the command there; resolves to its exit code. */
export function rootless(argv: readonly string[]): Promise<number> {
  const plan = planNamespace({ uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 });
  return runInNamespace(argv, plan);
}
