import fs from 'node:fs';
import path from 'node:path';
import { CancelledError, TsbuildError } from '@tsbuild/errors';
import { readXattrTree, secureJoin, writeXattrs } from '@tsbuild/layer';
import { applyChmod } from './chmod.ts';
import type { ModeSpec } from './chmod.ts';
import type { Owner } from './chown.ts';
import { cleanRel, lstatOrUndefined } from './context.ts';
import type { BuildContext, SourceEntry, SourceMatch } from './context.ts';

export interface CopyOptions {
  /** Owner of every copied entry and of every directory the copy creates. */
  chown?: Owner;
  chmod?: ModeSpec;
  /** `COPY --parents`: recreate each match's path below the destination (from its pivot). */
  parents?: boolean;
  /** The image's WORKDIR, for a relative destination. */
  workdir: string;
  /**
   * Keep the sources' uid/gid (when there is no `chown`) and their extended attributes, such as
   * file capabilities: for COPY --from another stage and unpacked archives. Context files are
   * copied as 0:0 without xattrs: host owners and labels mean nothing in the image.
   */
  keepOwnership?: boolean;
  signal?: AbortSignal;
}

export interface CopyResult {
  /** Entries written (files, links, directories). */
  entries: number;
}

const ROOT_OWNER: Owner = { uid: 0, gid: 0 };

export class CopyError extends TsbuildError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super('COPY', message, options);
  }
}

interface DirFixup {
  target: string;
  stat: fs.BigIntStats;
}

/**
 * Copies `matches` into the root filesystem at `rootfs` with Dockerfile COPY semantics:
 * a directory source copies its contents; a destination ending in `/` (or an existing
 * directory) receives sources by name; several sources need such a directory; missing parent
 * directories are created 0755 and owned by `chown` (root without it). Every destination path
 * resolves inside `rootfs`, so the image's symlinks cannot redirect a write outside it.
 */
export async function copyInto(
  ctx: BuildContext,
  matches: readonly SourceMatch[],
  rootfs: string,
  dest: string,
  opts: CopyOptions,
): Promise<CopyResult> {
  const root = fs.realpathSync(rootfs);
  const c = new Copier(root, opts);
  c.checkCancel();
  if (matches.length === 0) return { entries: 0 };
  const destIsDir = opts.parents === true || dest === '' || dest === '.' || dest.endsWith('/') || dest.endsWith('/.');
  const imageDest = dest.startsWith('/') ? dest : path.posix.join(opts.workdir || '/', dest);
  const rel = cleanRel(imageDest);
  const sources = new Set(matches.map((m) => m.source));
  if (!destIsDir && (matches.length > 1 || sources.size > 1)) {
    const existing = statOrUndefined(secureJoin(root, rel, { followLast: true }));
    if (!existing?.isDirectory()) {
      throw new CopyError(
        `when using COPY with more than one source file, the destination must be a directory and end with a / (got "${dest}")`,
      );
    }
  }
  c.mkdirAll(destIsDir ? rel : path.posix.dirname(rel));
  const destAbs = secureJoin(root, rel, { followLast: true });
  const xattrScans: Promise<Map<string, Map<string, Buffer>>>[] = [];
  try {
    for (const match of matches) {
      // The scan runs in another process while this thread copies.
      if (opts.keepOwnership) xattrScans.push(readXattrTree(match.realPath, { keep: keepXattr, signal: opts.signal }));
      const entries = ctx.walk(match);
      if (opts.parents) await c.copyWithParents(ctx, match, entries, destAbs);
      else await c.copyMatch(match, entries, destAbs);
    }
    c.finish();
  } catch (e) {
    await Promise.allSettled(xattrScans);
    throw e;
  }
  if (xattrScans.length > 0) {
    const writes: [string, Map<string, Buffer>][] = [];
    for (const table of await Promise.all(xattrScans)) {
      for (const [src, attrs] of table) {
        const to = c.targetOf(src);
        if (to !== undefined) writes.push([to, attrs]);
      }
    }
    await writeXattrs(writes, { signal: opts.signal });
  }
  return { entries: c.count };
}

/** overlayfs's and fuse-overlayfs's bookkeeping (an opaque marker would hide the lower layers) and host labels stay behind. */
export function keepXattr(_path: string, name: string): boolean {
  return !name.startsWith('trusted.overlay.') && !name.startsWith('user.overlay.') && !name.startsWith('user.fuseoverlayfs.') && name !== 'security.selinux';
}

function statOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.statSync(p, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}


class Copier {
  count = 0;
  private readonly links = new Map<string, string>();
  private readonly dirs: DirFixup[] = [];
  /** Source path → where it was written, for entries that carry their xattrs along. */
  private readonly targets = new Map<string, string>();
  private readonly root: string;
  private readonly opts: CopyOptions;

  constructor(root: string, opts: CopyOptions) {
    this.root = root;
    this.opts = opts;
  }

  targetOf(src: string): string | undefined {
    return this.targets.get(src);
  }

  private imagePath(abs: string): string {
    return abs === this.root ? '/' : abs.slice(this.root.length);
  }

  checkCancel(): void {
    if (this.opts.signal?.aborted) throw new CancelledError('copy cancelled', { cause: this.opts.signal.reason });
  }

  /** Creates `rel` and its missing parents (0755, `chown` or root), following the image's symlinks inside the root. */
  mkdirAll(rel: string): string {
    const target = secureJoin(this.root, rel, { followLast: true });
    const owner = this.opts.chown ?? ROOT_OWNER;
    let cur = this.root;
    for (const part of target.slice(this.root.length).split('/')) {
      if (part === '') continue;
      cur += '/' + part;
      const st = lstatOrUndefined(cur);
      if (st === undefined) {
        fs.mkdirSync(cur, 0o755);
        fs.chmodSync(cur, 0o755);
        fs.lchownSync(cur, owner.uid, owner.gid);
        this.count++;
      } else if (!st.isDirectory()) {
        throw new CopyError(`cannot create directory ${this.imagePath(target)}: ${this.imagePath(cur)} is not a directory`);
      }
    }
    return target;
  }

  async copyMatch(match: SourceMatch, entries: readonly SourceEntry[], destAbs: string): Promise<void> {
    const destSt = statOrUndefined(destAbs);
    if (match.kind === 'dir') {
      if (destSt === undefined) this.mkdirAll(destAbs.slice(this.root.length));
      else if (!destSt.isDirectory()) throw new CopyError(`cannot copy to non-directory: ${this.imagePath(destAbs)}`);
      await this.copyEntries(entries, 1, destAbs, true);
      return;
    }
    const target = destSt?.isDirectory() ? destAbs + '/' + path.posix.basename(match.path) : destAbs;
    await this.copyEntries(entries, 0, target, true);
  }

  async copyWithParents(ctx: BuildContext, match: SourceMatch, entries: readonly SourceEntry[], destAbs: string): Promise<void> {
    const underPivot = match.pivot !== '' && (match.path === match.pivot || match.path.startsWith(match.pivot + '/'));
    const relPath = underPivot ? match.path.slice(match.pivot.length).replace(/^\//, '') : match.path;
    const parts = relPath === '' ? [] : relPath.split('/');
    let target = destAbs;
    // Parents the pattern passed through get the metadata of their source directory when created.
    for (let i = 0; i < parts.length - 1; i++) {
      target += '/' + parts[i];
      const srcDir = secureJoin(ctx.root, [match.pivot, ...parts.slice(0, i + 1)].join('/'), { followLast: true });
      const st = lstatOrUndefined(target);
      if (st === undefined) {
        fs.mkdirSync(target, 0o700);
        this.count++;
        this.dirs.push({ target, stat: fs.statSync(srcDir, { bigint: true }) });
      } else if (!st.isDirectory()) {
        throw new CopyError(`cannot copy to non-directory: ${this.imagePath(target)}`);
      }
    }
    if (parts.length > 0) target += '/' + parts[parts.length - 1];
    if (target === destAbs && match.kind === 'dir') {
      await this.copyEntries(entries, 1, destAbs, true);
      return;
    }
    await this.copyEntries(entries, 0, target, true);
  }

  /** Copies entries[from..]; an entry with relative path `rel` lands at `target/rel`. */
  private async copyEntries(entries: readonly SourceEntry[], from: number, target: string, overwriteMeta: boolean): Promise<void> {
    for (let i = from; i < entries.length; i++) {
      if ((i & 1023) === 0) {
        // Synchronous calls are fastest for many small files; yielding now and then keeps
        // progress output and other stages moving.
        await new Promise<void>((resolve) => setImmediate(resolve));
        this.checkCancel();
      }
      const e = entries[i] as SourceEntry;
      this.copyEntry(e, e.rel === '' ? target : target + '/' + e.rel, overwriteMeta);
    }
  }

  private copyEntry(e: SourceEntry, to: string, overwriteMeta: boolean): void {
    const existing = lstatOrUndefined(to);
    if (e.kind === 'dir') {
      let created = false;
      if (existing === undefined) {
        fs.mkdirSync(to, 0o700);
        created = true;
        this.count++;
      } else if (!existing.isDirectory()) {
        throw new CopyError(`cannot copy to non-directory: ${this.imagePath(to)}`);
      }
      if (created || overwriteMeta) {
        this.dirs.push({ target: to, stat: e.stat });
        if (this.opts.keepOwnership) this.targets.set(e.abs, to);
      }
      return;
    }
    if (existing?.isDirectory()) throw new CopyError(`cannot replace directory ${this.imagePath(to)} with a file`);
    if (existing !== undefined) fs.unlinkSync(to);
    this.count++;
    if (this.opts.keepOwnership) this.targets.set(e.abs, to);
    if (e.kind === 'symlink') {
      fs.symlinkSync(e.linkTarget as string, to);
      this.applyMeta(to, e.stat, 'symlink');
      return;
    }
    if (e.stat.nlink > 1n) {
      const key = `${e.stat.dev}:${e.stat.ino}`;
      const first = this.links.get(key);
      if (first !== undefined) {
        this.targets.delete(e.abs);
        fs.linkSync(first, to);
        return;
      }
      this.links.set(key, to);
    }
    try {
      fs.copyFileSync(e.abs, to);
    } catch (err) {
      throw new CopyError(`cannot copy ${e.abs} to ${this.imagePath(to)}: ${(err as Error).message}`, { cause: err });
    }
    this.applyMeta(to, e.stat, 'file');
  }

  private applyMeta(to: string, st: fs.BigIntStats, kind: 'file' | 'dir' | 'symlink'): void {
    const owner = this.opts.chown ?? (this.opts.keepOwnership ? { uid: Number(st.uid), gid: Number(st.gid) } : ROOT_OWNER);
    // chown first: it clears set-id bits that chmod must then restore.
    fs.lchownSync(to, owner.uid, owner.gid);
    if (kind !== 'symlink') {
      const mode = Number(st.mode);
      const perm = this.opts.chmod ? applyChmod(mode, this.opts.chmod, kind === 'dir') & 0o7777 : mode & 0o7777;
      fs.chmodSync(to, perm);
    }
    fs.lutimesSync(to, Number(st.atimeNs) / 1e9, Number(st.mtimeNs) / 1e9);
  }

  /** Directory metadata last, deepest first, so writing their contents does not bump their mtimes. */
  finish(): void {
    for (let i = this.dirs.length - 1; i >= 0; i--) {
      const d = this.dirs[i] as DirFixup;
      this.applyMeta(d.target, d.stat, 'dir');
    }
  }
}
