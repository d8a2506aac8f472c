import { randomBytes } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { InternalError, TsbuildError } from '@tsbuild/errors';
import { mountsUnder } from './mountinfo.ts';
import { ownerToken, runCommand } from './proc.ts';
import type { Owner } from './proc.ts';
import { candidateDrivers, DRIVERS, inUserNamespace, overlayOptions } from './driver.ts';
import type { OverlayDriver, OverlaySpec } from './driver.ts';

/**
 * Mounts the overlays of one snapshotter root. The driver (overlay, overlay-userxattr or
 * fuse-overlayfs) is found by the first mount that succeeds and then kept in `<root>/driver`,
 * since the layer dirs hold that driver's opaque markers.
 */
export class OverlayMounter {
  /** Found by the first mount (or read from `driver`), then used for every mount. */
  private detecting: Promise<void> | undefined;

  private constructor(
    private readonly root: string,
    private readonly owner: Owner,
    private readonly maxOptionBytes: number,
    private found: OverlayDriver | undefined,
  ) {}

  static async open(root: string, owner: Owner, maxOptionBytes: number): Promise<OverlayMounter> {
    return new OverlayMounter(root, owner, maxOptionBytes, await savedDriver(root));
  }

  /** The driver in use, once known. */
  get driver(): OverlayDriver | undefined {
    return this.found;
  }

  async mount(spec: OverlaySpec, mountPoint: string): Promise<void> {
    if (this.found === undefined && this.detecting) await this.detecting.catch(() => undefined);
    const driver = this.found;
    if (driver !== undefined) {
      const failure = await this.tryMount(driver, spec, mountPoint);
      if (failure !== undefined) throw mountError(mountPoint, [failure]);
      return;
    }
    // The first mount finds the driver: each candidate in turn, the first that mounts is kept.
    const detect = (async () => {
      const failures: string[] = [];
      for (const d of candidateDrivers()) {
        const failure = await this.tryMount(d, spec, mountPoint);
        if (failure === undefined) {
          await this.save(d);
          return;
        }
        failures.push(failure);
      }
      throw mountError(mountPoint, failures);
    })();
    this.detecting = detect;
    try {
      await detect;
    } finally {
      if (this.found === undefined) this.detecting = undefined;
    }
  }

  private async save(d: OverlayDriver): Promise<void> {
    this.found = d;
    const tmp = join(this.root, 't', `${ownerToken(this.owner)}-${randomBytes(4).toString('hex')}.driver`);
    await writeFile(tmp, `${d}\n`);
    await rename(tmp, join(this.root, 'driver'));
  }

  /** Mounts with one driver; the failure's text, or undefined once mounted. */
  private async tryMount(driver: OverlayDriver, spec: OverlaySpec, mountPoint: string): Promise<string | undefined> {
    const options = overlayOptions(driver, spec);
    if (driver !== 'fuse-overlayfs' && options.length > this.maxOptionBytes) {
      throw new InternalError(`overlay options are ${options.length} bytes, over the ${this.maxOptionBytes} limit`);
    }
    // Relative lowerdir paths are resolved against the mount command's cwd: the root.
    const r =
      driver === 'fuse-overlayfs'
        ? await runCommand('fuse-overlayfs', ['-o', options, mountPoint], { cwd: this.root }).catch((e: NodeJS.ErrnoException) => ({
            code: 127,
            stdout: '',
            stderr: e.code === 'ENOENT' ? 'fuse-overlayfs is not installed' : e.message,
          }))
        : await runCommand('mount', ['-n', '-t', 'overlay', 'overlay', '-o', options, mountPoint], { cwd: this.root });
    if (r.code === 0) return undefined;
    const text = r.stderr.trim().split('\n').filter((l) => !/^\s*dmesg\(1\)|unknown argument ignored/.test(l)).join(' ').trim();
    return `${driver}: ${text || `exit ${r.code}`}`;
  }
}

/** The driver this root's layers were made for, if one was found before; refuses a root made for another kind of namespace. */
async function savedDriver(root: string): Promise<OverlayDriver | undefined> {
  let text: string;
  try {
    text = (await readFile(join(root, 'driver'), 'utf8')).trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const driver = DRIVERS.find((d) => d === text);
  if (driver === undefined) {
    throw new TsbuildError('SNAPSHOT_CORRUPT', `${join(root, 'driver')} names an unknown overlay driver ${JSON.stringify(text)}`, {
      hint: `remove ${root} to reset the layer cache`,
    });
  }
  if (!candidateDrivers().includes(driver)) {
    const made = driver === 'overlay' ? 'by root' : 'in a user namespace (without root)';
    const now = inUserNamespace() ? 'in a user namespace' : 'as root';
    throw new TsbuildError('SNAPSHOT_DRIVER', `the snapshots in ${root} were made ${made} for ${driver}, and cannot be mounted ${now}`, {
      hint: 'use another --root (or TSBUILD_ROOT) for each way of running tsbuild',
    });
  }
  return driver;
}

/** Why overlays cannot be mounted here, with what each driver said. */
function mountError(mountPoint: string, failures: readonly string[]): TsbuildError {
  const hint = inUserNamespace()
    ? 'without root, overlayfs needs Linux 5.11 or later and a tsbuild root on a filesystem it accepts as upper dir (ext4, xfs, btrfs, tmpfs; not overlayfs, as a container\'s own root is: use a volume), or fuse-overlayfs with a usable /dev/fuse'
    : 'tsbuild must run as root on a kernel with overlayfs, on a filesystem overlay accepts (not overlay or NFS)';
  return new TsbuildError('SNAPSHOT_MOUNT', `mounting overlay at ${mountPoint} failed: ${failures.join('; ')}`, { hint });
}

/** Unmounts `mountPoint` if it is a mount; a busy mount is detached lazily rather than leaked. */
export async function unmount(mountPoint: string): Promise<void> {
  for (let attempt = 0; attempt < 5; attempt++) {
    if ((await mountsUnder(mountPoint)).every((m) => m !== mountPoint)) return;
    const r = await runCommand('umount', ['-n', mountPoint]);
    // Unmounted; whoever deletes the tree below checks that nothing else is mounted there.
    if (r.code === 0) return;
    if (!/busy/i.test(r.stderr)) {
      throw new TsbuildError('SNAPSHOT_UNMOUNT', `unmounting ${mountPoint} failed: ${r.stderr.trim()}`);
    }
    await new Promise((res) => setTimeout(res, 50 * (attempt + 1)));
  }
  const r = await runCommand('umount', ['-n', '-l', mountPoint]);
  if (r.code !== 0) throw new TsbuildError('SNAPSHOT_UNMOUNT', `unmounting ${mountPoint} failed: ${r.stderr.trim()}`);
}
