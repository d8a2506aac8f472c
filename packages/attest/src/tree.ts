/**
 * Reading an image's filesystem, which is hostile: every path is resolved inside the root (a
 * symlink to /etc/shadow means the image's /etc/shadow), files are opened without following a
 * last symlink and only when they are regular files, sizes and the total read are bounded, and
 * nothing here throws for what the tree holds: problems become warnings.
 */
import { closeSync, constants, fstatSync, lstatSync, openSync, opendirSync, readSync } from 'node:fs';
import type { Dirent } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { secureJoin } from '@tsbuild/layer';

export interface TreeLimits {
  /** Largest single file read (default 256 MiB: a 64 MiB dpkg status is fine, a 2 GiB file is refused). */
  maxFileBytes?: number;
  /** Bytes read from the tree in all (default 2 GiB). */
  maxTotalBytes?: number;
  /** Directory entries the walk visits in all (default 2,000,000). */
  maxEntries?: number;
  /** Directory depth the walk descends to (default 64). */
  maxDepth?: number;
  /** Warnings kept (default 1,000); the rest are counted. */
  maxWarnings?: number;
}

const DEFAULTS = {
  maxFileBytes: 256 * 1024 * 1024,
  maxTotalBytes: 2 * 1024 * 1024 * 1024,
  maxEntries: 2_000_000,
  maxDepth: 64,
  maxWarnings: 1000,
};

/** Top-level directories that hold no packages and may be enormous or special (a live /proc). */
const SKIP_TOP = new Set(['proc', 'sys', 'dev']);

export class Tree {
  readonly root: string;
  readonly limits: Required<TreeLimits>;
  private readonly warningList: string[] = [];
  private dropped = 0;
  private bytesRead = 0;

  constructor(root: string, limits: TreeLimits = {}) {
    this.root = resolvePath(root);
    this.limits = {
      maxFileBytes: limits.maxFileBytes ?? DEFAULTS.maxFileBytes,
      maxTotalBytes: limits.maxTotalBytes ?? DEFAULTS.maxTotalBytes,
      maxEntries: limits.maxEntries ?? DEFAULTS.maxEntries,
      maxDepth: limits.maxDepth ?? DEFAULTS.maxDepth,
      maxWarnings: limits.maxWarnings ?? DEFAULTS.maxWarnings,
    };
  }

  warn(message: string): void {
    if (this.warningList.length < this.limits.maxWarnings) this.warningList.push(message);
    else this.dropped++;
  }

  warnings(): string[] {
    return this.dropped > 0 ? [...this.warningList, `${this.dropped} more warnings not shown`] : [...this.warningList];
  }

  /** The host path of an image path, every symlink resolved inside the root; undefined (with a warning) when it cannot be. */
  resolve(imagePath: string): string | undefined {
    try {
      return secureJoin(this.root, imagePath, { followLast: true });
    } catch (e) {
      this.warn(`${imagePath}: ${(e as Error).message}`);
      return undefined;
    }
  }

  /**
   * The bytes of an image file, or undefined when it is missing (silently, unless `required`),
   * not a regular file, too large, or unreadable (with a warning). `hostPath` skips the resolve
   * for files the walk found (it never follows symlinks).
   */
  read(imagePath: string, opts: { hostPath?: string; required?: boolean } = {}): Buffer | undefined {
    const host = opts.hostPath ?? this.resolve(imagePath);
    if (host === undefined) return undefined;
    let fd: number;
    try {
      // O_NOFOLLOW: the resolved path's last component must not have become a symlink; O_NONBLOCK: a FIFO must not hang the scan.
      fd = openSync(host, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if ((code === 'ENOENT' || code === 'ENOTDIR') && !opts.required) return undefined;
      this.warn(`${imagePath}: cannot open (${code ?? (e as Error).message})`);
      return undefined;
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) {
        this.warn(`${imagePath}: not a regular file, skipped`);
        return undefined;
      }
      if (st.size > this.limits.maxFileBytes) {
        this.warn(`${imagePath}: ${st.size} bytes is more than the ${this.limits.maxFileBytes} read from one file, skipped`);
        return undefined;
      }
      if (this.bytesRead + st.size > this.limits.maxTotalBytes) {
        this.warn(`${imagePath}: skipped, the scan already read ${this.bytesRead} of its ${this.limits.maxTotalBytes} bytes`);
        return undefined;
      }
      // One byte more than the size it claims, to notice a file that grows while it is read.
      const buf = Buffer.allocUnsafe(st.size + 1);
      let n = 0;
      while (n < buf.length) {
        const got = readSync(fd, buf, n, buf.length - n, null);
        if (got === 0) break;
        n += got;
      }
      this.bytesRead += n;
      if (n > st.size) {
        this.warn(`${imagePath}: grew while it was read, skipped`);
        return undefined;
      }
      return buf.subarray(0, n);
    } catch (e) {
      this.warn(`${imagePath}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      return undefined;
    } finally {
      closeSync(fd);
    }
  }

  text(imagePath: string, opts: { hostPath?: string; required?: boolean } = {}): string | undefined {
    return this.read(imagePath, opts)?.toString('utf8');
  }

  /** Names of the regular files (symlinks resolved inside the root) in an image directory, sorted; [] when missing. */
  listFiles(imageDir: string): { name: string; imagePath: string }[] {
    const host = this.resolve(imageDir);
    if (host === undefined) return [];
    const names: string[] = [];
    try {
      if (!lstatSync(host, { throwIfNoEntry: false })?.isDirectory()) return [];
      const dir = opendirSync(host);
      try {
        for (let e = dir.readSync(); e !== null; e = dir.readSync()) {
          if (names.length >= this.limits.maxEntries) {
            this.warn(`${imageDir}: more than ${this.limits.maxEntries} entries, the rest skipped`);
            break;
          }
          names.push(e.name);
        }
      } finally {
        dir.closeSync();
      }
    } catch (e) {
      this.warn(`${imageDir}: cannot list (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      return [];
    }
    return names.sort().map((name) => ({ name, imagePath: `${imageDir.replace(/\/+$/, '')}/${name}` }));
  }

  /**
   * Walks the whole tree without following symlinks, calling `visit` for every regular file with
   * its image path (`/usr/lib/…`) and host path. Skips /proc, /sys and /dev; stops at the entry
   * and depth limits with a warning. Directories are visited in name order, so the walk is the
   * same every time. Yields to the event loop now and then so `signal` can stop it.
   */
  async walk(visit: (imagePath: string, hostPath: string, name: string) => void, signal?: AbortSignal): Promise<void> {
    const stack: { host: string; image: string; depth: number }[] = [{ host: this.root, image: '', depth: 0 }];
    let entries = 0;
    let dirs = 0;
    while (stack.length > 0) {
      if ((++dirs & 0xff) === 0) {
        // Sync reads are fastest for many small files; yield now and then so a signal can stop the walk.
        await new Promise<void>((resolve) => setImmediate(resolve));
        signal?.throwIfAborted();
      }
      const { host, image, depth } = stack.pop()!;
      const list: Dirent[] = [];
      try {
        const dir = opendirSync(host);
        try {
          for (let e = dir.readSync(); e !== null; e = dir.readSync()) {
            if (++entries > this.limits.maxEntries) break;
            list.push(e);
          }
        } finally {
          dir.closeSync();
        }
      } catch (e) {
        this.warn(`${image || '/'}: cannot list (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
        continue;
      }
      if (entries > this.limits.maxEntries) {
        this.warn(`the tree has more than ${this.limits.maxEntries} entries: the package scan stopped there`);
        return;
      }
      list.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
      const subdirs: { host: string; image: string; depth: number }[] = [];
      for (const e of list) {
        const childImage = `${image}/${e.name}`;
        const childHost = `${host === '/' ? '' : host}/${e.name}`;
        let kind: 'file' | 'dir' | 'other';
        if (e.isFile()) kind = 'file';
        else if (e.isDirectory()) kind = 'dir';
        else if (e.isSymbolicLink() || e.isFIFO() || e.isSocket() || e.isBlockDevice() || e.isCharacterDevice()) kind = 'other';
        else {
          // The filesystem did not say (DT_UNKNOWN): ask, without following.
          const st = lstatSync(childHost, { throwIfNoEntry: false });
          kind = st?.isFile() ? 'file' : st?.isDirectory() ? 'dir' : 'other';
        }
        if (kind === 'dir') {
          if (depth === 0 && SKIP_TOP.has(e.name)) continue;
          if (depth + 1 > this.limits.maxDepth) {
            this.warn(`${childImage}: deeper than ${this.limits.maxDepth} directories, not scanned`);
            continue;
          }
          subdirs.push({ host: childHost, image: childImage, depth: depth + 1 });
        } else if (kind === 'file') {
          visit(childImage, childHost, e.name);
        }
      }
      for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
    }
  }
}
