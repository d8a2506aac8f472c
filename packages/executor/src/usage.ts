/**
 * What a container cost: CPU seconds and peak memory, read from a cgroup tsbuild makes around the
 * runtime's own. The runtime removes its cgroup when the container exits, but the usage it
 * charged stays counted in the parent (cgroup accounting is hierarchical in v1 and v2), so the
 * parent is read after the run and then removed, at no extra runtime call.
 */
import { mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface Usage {
  cpuSeconds: number;
  /** Undefined where the kernel keeps no peak (cgroup v2 before Linux 5.19). */
  memoryPeakBytes: number | undefined;
}

const ROOT = '/sys/fs/cgroup';

/** Paths of one cgroup in the hierarchies that account CPU and memory. */
interface Hierarchies {
  version: 1 | 2;
  cpu: string;
  memory: string;
  /** This cgroup in every hierarchy. */
  all: string[];
}

/** The process's own cgroup in a hierarchy (`/proc/self/cgroup`), so nested builds stay nested. */
async function ownCgroups(): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const text = await readFile('/proc/self/cgroup', 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    for (const c of (m[1] as string).split(',')) out.set(c, m[2] as string);
  }
  return out;
}

interface Layout {
  version: 1 | 2;
  cpuBase: string;
  memoryBase: string;
  /** Every hierarchy the runtime makes the container's cgroup in (its parents are left to remove). */
  allBases: string[];
}

let layout: Promise<Layout | undefined> | undefined;

/** Where CPU and memory are accounted on this machine, or undefined when tsbuild cannot write there. */
function accounting(): Promise<Layout | undefined> {
  return (layout ??= (async () => {
    const own = await ownCgroups();
    // cgroup v2 with its controllers at the root: one unified hierarchy.
    if ((await readFile(join(ROOT, 'cgroup.controllers'), 'utf8').catch(() => undefined)) !== undefined) {
      const base = join(ROOT, own.get('') ?? '/');
      return { version: 2, cpuBase: base, memoryBase: base, allBases: [base] };
    }
    // v1 (also the "hybrid" layout: a unified hierarchy without controllers beside the v1 ones).
    const allBases: string[] = [];
    for (const name of await readdir(ROOT).catch(() => [] as string[])) {
      const key = name === 'unified' ? '' : name.startsWith('name=') ? name : name.split(',')[0] ?? name;
      const inner = own.get(key) ?? own.get(`name=${name}`) ?? '/';
      allBases.push(join(ROOT, name, inner));
    }
    for (const cpu of ['cpu,cpuacct', 'cpuacct']) {
      const cpuRoot = join(ROOT, cpu);
      if ((await readFile(join(cpuRoot, 'cpuacct.usage'), 'utf8').catch(() => undefined)) === undefined) continue;
      return { version: 1, cpuBase: join(cpuRoot, own.get('cpuacct') ?? '/'), memoryBase: join(ROOT, 'memory', own.get('memory') ?? '/'), allBases };
    }
    return undefined;
  })());
}

/**
 * A cgroup to run one container under. `runtimePath` is the cgroupsPath to give the runtime (a
 * child of this one); `read` gives the usage once the container has exited; `remove` deletes it.
 */
export class UsageCgroup {
  private constructor(
    private readonly h: Hierarchies,
    readonly runtimePath: string,
  ) {}

  /** Undefined where cgroups cannot be written (an unprivileged user without a delegated subtree). */
  static async create(id: string): Promise<UsageCgroup | undefined> {
    const a = await accounting();
    if (!a) return undefined;
    const rel = join('tsbuild', id);
    const h: Hierarchies = { version: a.version, cpu: join(a.cpuBase, rel), memory: join(a.memoryBase, rel), all: a.allBases.map((b) => join(b, rel)) };
    try {
      await Promise.all([...new Set([h.cpu, h.memory])].map((dir) => mkdir(dir, { recursive: true })));
      if (h.version === 2) {
        // Children get the controllers their parents hand down; a peak needs the memory controller.
        for (const dir of [join(a.memoryBase, 'tsbuild'), h.memory]) {
          await writeFile(join(dir, 'cgroup.subtree_control'), '+memory +cpu +pids').catch(() => undefined);
        }
      }
    } catch {
      return undefined;
    }
    // The runtime's cgroupsPath is relative to the same base as this one's.
    return new UsageCgroup(h, `${rel}/c`);
  }

  async read(): Promise<Usage | undefined> {
    try {
      if (this.h.version === 1) {
        const [usage, max] = await Promise.all([
          readFile(join(this.h.cpu, 'cpuacct.usage'), 'utf8'),
          readFile(join(this.h.memory, 'memory.max_usage_in_bytes'), 'utf8').catch(() => ''),
        ]);
        const cpu = Number(usage.trim()) / 1e9;
        const peak = Number(max.trim());
        return { cpuSeconds: cpu, memoryPeakBytes: Number.isFinite(peak) && peak > 0 ? peak : undefined };
      }
      const [stat, max] = await Promise.all([
        readFile(join(this.h.cpu, 'cpu.stat'), 'utf8'),
        readFile(join(this.h.memory, 'memory.peak'), 'utf8').catch(() => ''),
      ]);
      const usec = Number(/^usage_usec (\d+)$/m.exec(stat)?.[1] ?? NaN);
      const peak = Number(max.trim());
      if (!Number.isFinite(usec)) return undefined;
      return { cpuSeconds: usec / 1e6, memoryPeakBytes: Number.isFinite(peak) && peak > 0 ? peak : undefined };
    } catch {
      return undefined;
    }
  }

  /** Removes this cgroup (the runtime has removed its child by now); failures are left for cleanup. */
  async remove(): Promise<void> {
    await Promise.all(
      this.h.all.map(async (dir) => {
        await rmdir(join(dir, 'c')).catch(() => undefined);
        await rmdir(dir).catch(() => undefined);
      }),
    );
  }
}
