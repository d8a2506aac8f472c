/**
 * Running containers from inside a user namespace (tsbuild without root, or root in a rootless
 * container): runc is root there but owns no host resources. Its state goes under tsbuild's own
 * state dir, /sys is bind-mounted rather than mounted anew (a sysfs mount needs the network
 * namespace's owner), and cgroup limits apply only where a writable cgroup v2 subtree has been
 * delegated.
 */
import { constants as fsc } from 'node:fs';
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Limits } from './spec.ts';

// One answer for the whole process, from the lowest package that needs it.
import { inUserNamespace } from '@tsbuild/layer';
export { inUserNamespace };

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

/** Per-mount flags a user namespace may not clear on a mount it did not make (the kernel locks them). */
const LOCKABLE = ['nosuid', 'nodev', 'noexec', 'noatime', 'nodiratime', 'strictatime'];

/**
 * The locked flags of the mount holding `path`, which a read-only bind of it must repeat: the
 * runtime remounts such a bind to make it read-only, and in a user namespace that remount fails
 * (EPERM) if it would clear a flag the original mount has, as a volume's nosuid,nodev.
 */
export function lockedMountFlags(path: string, mountinfo: string): string[] {
  let best: { point: string; flags: string[] } | undefined;
  for (const line of mountinfo.split('\n')) {
    const fields = line.split(' ');
    const point = fields[4]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    const opts = fields[5];
    if (point === undefined || opts === undefined) continue;
    const under = point === '/' || path === point || path.startsWith(point.endsWith('/') ? point : `${point}/`);
    // The last of equally deep mounts is the one on top.
    if (under && (best === undefined || point.length >= best.point.length)) best = { point, flags: opts.split(',') };
  }
  return LOCKABLE.filter((f) => best?.flags.includes(f));
}

/**
 * What a container that refused to start in a user namespace most likely lacks, from the
 * runtime's error: the settings a container running tsbuild needs (deploy/kubernetes/job.yaml).
 */
export function rootlessStartHint(failure: string): string | undefined {
  if (!inUserNamespace()) return undefined;
  if (/mount(ing)? "?proc"? .*operation not permitted/i.test(failure)) {
    return 'a new /proc cannot be mounted where the one above is masked: in a container, unmask /proc (Kubernetes: securityContext.procMount: Unmasked; podman: --security-opt unmask=ALL)';
  }
  if (/(sethostname|operation not permitted)/i.test(failure) && !/mount/i.test(failure)) {
    return 'a seccomp profile may block what a container needs to start (sethostname, unshare, mount): run tsbuild with seccomp unconfined (Kubernetes: seccompProfile: Unconfined; podman: --security-opt seccomp=unconfined)';
  }
  if (/mount.*permission denied/i.test(failure)) {
    return 'an AppArmor profile may deny mounts: run tsbuild unconfined (Kubernetes: appArmorProfile: Unconfined; podman: --security-opt apparmor=unconfined)';
  }
  return undefined;
}
