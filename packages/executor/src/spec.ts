/**
 * The subset of the OCI runtime spec (config.json) tsbuild writes. Field names follow
 * https://github.com/opencontainers/runtime-spec/blob/main/config.md.
 */
export interface SpecMount {
  destination: string;
  type: string;
  source: string;
  options?: string[];
}

export interface RuntimeSpec {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: { uid: number; gid: number; additionalGids?: number[] };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: { bounding: string[]; effective: string[]; permitted: string[] };
    noNewPrivileges: boolean;
    rlimits?: { type: string; soft: number | bigint; hard: number | bigint }[];
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: SpecMount[];
  linux: {
    namespaces: { type: string }[];
    cgroupsPath?: string;
    resources: {
      devices: { allow: boolean; access: string }[];
      memory?: { limit: number };
      cpu?: { quota?: number; period?: number };
      pids?: { limit: number };
    };
    maskedPaths: string[];
    readonlyPaths: string[];
  };
}

/** Docker's default capability set. */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

const MASKED_PATHS = [
  '/proc/asound',
  '/proc/acpi',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
];

const READONLY_PATHS = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'];

export const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export interface Limits {
  /** Memory limit in bytes. */
  memory?: number;
  /** CFS quota in microseconds per period. */
  cpuQuota?: number;
  /** CFS period in microseconds. */
  cpuPeriod?: number;
  pidsLimit?: number;
}

/** One resource limit of the process (setrlimit), `type` as the OCI spec names it: `RLIMIT_NOFILE`. */
export interface Rlimit {
  type: string;
  /** A count or size; `RLIM_INFINITY` for no limit. */
  soft: bigint;
  hard: bigint;
}

/** "unlimited" in setrlimit terms (what `ulimit -n unlimited` asks for). */
export const RLIM_INFINITY = 2n ** 64n - 1n;

/** The rlimit types runc sets, as the OCI spec spells them. */
export const RLIMIT_TYPES: readonly string[] = [
  'RLIMIT_AS', 'RLIMIT_CORE', 'RLIMIT_CPU', 'RLIMIT_DATA', 'RLIMIT_FSIZE', 'RLIMIT_LOCKS', 'RLIMIT_MEMLOCK', 'RLIMIT_MSGQUEUE',
  'RLIMIT_NICE', 'RLIMIT_NOFILE', 'RLIMIT_NPROC', 'RLIMIT_RSS', 'RLIMIT_RTPRIO', 'RLIMIT_RTTIME', 'RLIMIT_SIGPENDING', 'RLIMIT_STACK',
];

export interface SpecInput {
  rootfs: string;
  args: string[];
  env: string[];
  cwd: string;
  uid: number;
  gid: number;
  additionalGids: number[];
  hostname: string;
  network: 'none' | 'host';
  /** Extra mounts after the standard ones (later mounts shadow earlier ones). */
  mounts: SpecMount[];
  /** Undefined: the runtime's own choice (a rootless runtime then skips cgroups it cannot make). */
  cgroupsPath: string | undefined;
  limits: Limits;
  /** Limits to set; every other one is inherited from tsbuild's own process. */
  rlimits?: Rlimit[];
  /** Size of `/dev/shm` in bytes (default 64 MiB, as Docker's). */
  shmSize?: number;
  /**
   * The runtime runs in a user namespace (tsbuild without root): /sys is bind-mounted from the
   * host, since mounting sysfs needs to own the network namespace, which a container sharing the
   * user's network does not. As `runc spec --rootless` does.
   */
  rootless?: boolean;
}

export function buildSpec(i: SpecInput): RuntimeSpec {
  // Like Docker: a non-root user starts with no effective or permitted capabilities; the
  // bounding set still limits what setuid binaries can gain.
  const caps = [...DEFAULT_CAPABILITIES];
  const userCaps = i.uid === 0 ? caps : [];
  const env = i.env.some((e) => e.startsWith('PATH=')) ? i.env : [DEFAULT_PATH, ...i.env];
  const namespaces = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }];
  // A fresh network namespace holds only the loopback device, which runc brings up.
  if (i.network === 'none') namespaces.push({ type: 'network' });
  const resources: RuntimeSpec['linux']['resources'] = { devices: [{ allow: false, access: 'rwm' }] };
  if (i.limits.memory !== undefined) resources.memory = { limit: i.limits.memory };
  if (i.limits.cpuQuota !== undefined || i.limits.cpuPeriod !== undefined) {
    resources.cpu = {};
    if (i.limits.cpuQuota !== undefined) resources.cpu.quota = i.limits.cpuQuota;
    if (i.limits.cpuPeriod !== undefined) resources.cpu.period = i.limits.cpuPeriod;
  }
  if (i.limits.pidsLimit !== undefined) resources.pids = { limit: i.limits.pidsLimit };
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: i.uid, gid: i.gid, ...(i.additionalGids.length > 0 ? { additionalGids: i.additionalGids } : {}) },
      args: i.args,
      env,
      cwd: i.cwd,
      capabilities: { bounding: caps, effective: userCaps, permitted: userCaps },
      noNewPrivileges: true,
      // Only the limits asked for: the others are inherited from this process, since a runtime
      // cannot raise a hard limit without CAP_SYS_RESOURCE (which root in a container may lack).
      ...(i.rlimits && i.rlimits.length > 0 ? { rlimits: i.rlimits.map((r) => ({ type: r.type, soft: r.soft, hard: r.hard })) } : {}),
    },
    root: { path: i.rootfs, readonly: false },
    hostname: i.hostname,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
      },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', i.shmSize !== undefined ? `size=${i.shmSize}` : 'size=65536k'] },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      i.rootless
        ? { destination: '/sys', type: 'bind', source: '/sys', options: ['rbind', 'nosuid', 'noexec', 'nodev', 'ro'] }
        : { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
      ...i.mounts,
    ],
    linux: {
      namespaces,
      ...(i.cgroupsPath !== undefined ? { cgroupsPath: i.cgroupsPath } : {}),
      resources,
      maskedPaths: MASKED_PATHS,
      readonlyPaths: READONLY_PATHS,
    },
  };
}

/**
 * config.json text. Rlimit values are 64-bit (`RLIM_INFINITY` is 2^64-1), beyond what a JSON
 * number read into a double can hold, so they are written as exact integer literals.
 */
export function specJson(spec: RuntimeSpec): string {
  return JSON.stringify(spec, (_k, v: unknown) => (typeof v === 'bigint' ? `\u0000big:${v}` : v)).replace(/"\\u0000big:(\d+)"/g, '$1');
}
