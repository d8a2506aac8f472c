/**
 * Running containers from inside a user namespace (tsbuild without root, or root in a rootless
 * container): runc is root there but owns no host resources. Its state goes under tsbuild's own
 * state dir, /sys is bind-mounted rather than mounted anew (a sysfs mount needs the network
 * namespace's owner), and cgroup limits apply only where a writable cgroup v2 subtree has been
 * delegated.
 */
import { constants as fsc } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Limits } from './spec.ts';

let userns: boolean | undefined;

/** Whether this process runs in a user namespace other than the initial one (whose map is `0 0 4294967295`). */
export function inUserNamespace(): boolean {
  if (userns === undefined) {
    let text = '';
    try {
      text = readFileSync('/proc/self/uid_map', 'utf8');
    } catch {
      // No /proc: behave as the initial namespace.
    }
    const lines = text.trim().split('\n').map((l) => l.trim().split(/\s+/).join(' '));
    userns = text !== '' && !(lines.length === 1 && lines[0] === '0 0 4294967295');
  }
  return userns;
}

/**
 * The runtime's state dir when none is named: its default (/run/runc) as root; in a user
 * namespace, where /run/runc belongs to the real root, a dir under tsbuild's state dir.
 */
export function defaultRuntimeRoot(stateDir: string): string | undefined {
  return inUserNamespace() ? join(stateDir, 'runc') : undefined;
}

/** Whether the limits tsbuild sets (memory, CPU quota, process count) can be applied, and if not, why. */
export type LimitSupport = { usable: true } | { usable: false; reason: string };

const CGROUP = '/sys/fs/cgroup';
let support: Promise<LimitSupport> | undefined;

/**
 * Root sets cgroup limits as it always has. In a user namespace they need a cgroup v2 subtree
 * that is delegated to this user (writable, as systemd's Delegate=yes makes it) and hands the
 * memory, cpu and pids controllers down to the cgroups the runtime makes in it.
 */
export function cgroupLimitSupport(): Promise<LimitSupport> {
  return (support ??= (async (): Promise<LimitSupport> => {
    if (!inUserNamespace()) return { usable: true };
    const v2 = await readFile(join(CGROUP, 'cgroup.controllers'), 'utf8').catch(() => undefined);
    if (v2 === undefined) {
      return { usable: false, reason: 'this machine uses cgroup v1 (or a hybrid of v1 and v2), which is never delegated to an ordinary user' };
    }
    const own = /^0::(.*)$/m.exec(await readFile('/proc/self/cgroup', 'utf8').catch(() => ''))?.[1];
    if (own === undefined) return { usable: false, reason: 'the cgroup of this process is not in the cgroup v2 hierarchy' };
    const dir = join(CGROUP, own);
    try {
      await access(dir, fsc.W_OK);
      await access(join(dir, 'cgroup.subtree_control'), fsc.W_OK);
    } catch {
      return { usable: false, reason: `the cgroup ${own} is not delegated to this user (it is not writable)` };
    }
    const handed = (await readFile(join(dir, 'cgroup.subtree_control'), 'utf8').catch(() => '')).split(/\s+/);
    const missing = ['memory', 'cpu', 'pids'].filter((c) => !handed.includes(c));
    if (missing.length > 0) {
      return { usable: false, reason: `the delegated cgroup ${own} does not hand the ${missing.join(', ')} controller${missing.length > 1 ? 's' : ''} to its children (cgroup.subtree_control)` };
    }
    return { usable: true };
  })());
}

export function hasLimits(l: Limits | undefined): boolean {
  return l !== undefined && (l.memory !== undefined || l.cpuQuota !== undefined || l.cpuPeriod !== undefined || l.pidsLimit !== undefined);
}

/** The one warning for limits that cannot be applied here, or undefined when they can (or none were asked for). */
export async function unappliedLimits(l: Limits | undefined): Promise<string | undefined> {
  if (!hasLimits(l)) return undefined;
  const s = await cgroupLimitSupport();
  return s.usable ? undefined : `--memory, --cpus and --pids-limit are not applied: ${s.reason}`;
}
