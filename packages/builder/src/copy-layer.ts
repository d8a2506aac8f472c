/**
 * COPY and ADD without an overlay: computes the changeset the overlay upper dir would hold after
 * `copyInto` (copy.ts) over the parent filesystem, and writes it as a layer tar straight from the
 * sources. Nothing is copied to disk and nothing is read back: each source file is read once, while
 * the tar is written.
 *
 * The plan mirrors `copyInto` rule for rule (destination rules, the image's symlinks along the
 * destination followed inside the root, missing parents created 0755, existing directories
 * keeping or taking metadata, --chown, --chmod, --parents, hardlinks, kept ownership and xattrs),
 * and mirrors overlayfs for what `copyInto` does not decide: every ancestor of a changed entry is
 * copied up with its lower metadata and xattrs, a directory in which a name is created or
 * replaced gets the time of the copy as its mtime, and copy-up alone keeps a directory's times.
 * The archive follows @tsbuild/layer's `diff` (entries in the byte order of their paths with `/`
 * after directories, hardlinks as links to the first path of their inode in that order), so both
 * ways give the same bytes. copy-layer.test.ts checks the two against each other.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CancelledError, InternalError } from '@tsbuild/errors';
import { compareUtf8, readXattrs, secureJoin, writeEntries } from '@tsbuild/layer';
import type { LayerEntry, TarHeader, WriteEntriesOptions, WriteEntriesResult } from '@tsbuild/layer';
import type { Writable } from 'node:stream';
import { applyChmod } from './chmod.ts';
import type { Owner } from './chown.ts';
import { cleanRel } from './context.ts';
import type { BuildContext, SourceEntry, SourceMatch } from './context.ts';
import { CopyError, keepXattr } from './copy.ts';
import type { CopyOptions } from './copy.ts';

const ROOT_OWNER: Owner = { uid: 0, gid: 0 };
const SURROGATE = /[\ud800-\udfff]/;

/** What the changeset records of one inode (shared by the paths of a hardlink group). */
interface Inode {
  mode: number;
  uid: number;
  gid: number;
  /** Whole seconds. */
  mtime: number;
  xattrs: Map<string, Buffer> | undefined;
  /** A regular file's source: where its bytes are and what the walk saw of it. */
  source: SourceEntry | undefined;
  size: number;
}

interface Node {
  kind: 'dir' | 'file' | 'symlink';
  ino: Inode;
  linkTarget: string | undefined;
  /** A directory that exists in the parent filesystem: names below it may exist there too. */
  lower: boolean;
  kids: Map<string, Node> | undefined;
}

/** An entry as the merged filesystem shows it: in the changeset, or only in the parent. */
type Found = { upper: Node; lower?: undefined } | { upper?: undefined; lower: fs.Stats };

interface DirFixup {
  node: Node;
  stat: fs.BigIntStats;
}

/** Called for each regular file the archive will read; may return an observer of its bytes. */
export type BodyObserver = (source: SourceEntry) => ((chunk: Buffer, last: boolean) => void) | undefined;

export interface LayerWriteOptions extends WriteEntriesOptions {
  /** Sees the bytes of the files as the archive reads them. */
  observe?: BodyObserver;
}

function secondsOf(st: fs.BigIntStats): number {
  const ns = st.mtimeNs;
  return Number(ns >= 0n ? ns / 1_000_000_000n : -((-ns + 999_999_999n) / 1_000_000_000n));
}

function splitRel(rel: string): string[] {
  return rel === '' ? [] : rel.split('/');
}

function dirOf(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
}

function baseOf(rel: string): string {
  return rel.slice(rel.lastIndexOf('/') + 1);
}

function join(rel: string, name: string): string {
  return rel === '' ? name : rel + '/' + name;
}

/** `/`-prefixed, as error messages name paths in the image. */
function shown(rel: string): string {
  return '/' + rel;
}

/**
 * The changeset of one COPY/ADD step, built by one or more `copy` calls (staged heredocs and
 * downloads first, then the sources, as the step runs them), then written by `write`.
 */
export class CopyLayerPlan {
  /** Entries written, as `copyInto` counts them. */
  count = 0;
  private readonly root: Node;
  /** Every directory of the changeset by path: entries come in walk order, so most lookups start at their parent. */
  private readonly dirs = new Map<string, Node>();
  private readonly lower: ParentTree | undefined;
  private readonly now: number;

  /**
   * `parent`: the parent filesystem, as a directory (a read-only view) or a tree read another way
   * (the parent's layers merged without a mount), or undefined for an empty one (COPY --link, FROM
   * scratch). `now`: the mtime, in seconds, of directories the copy creates or adds names to (the
   * moment the copy runs).
   */
  constructor(parent: string | ParentTree | undefined, opts: { now?: number } = {}) {
    this.lower = typeof parent === 'string' ? new DirTree(fs.realpathSync(parent)) : parent;
    this.now = opts.now ?? Math.floor(Date.now() / 1000);
    const ino: Inode = { mode: 0o755, uid: 0, gid: 0, mtime: this.now, xattrs: undefined, source: undefined, size: 0 };
    this.root = { kind: 'dir', ino, linkTarget: undefined, lower: this.lower !== undefined, kids: new Map() };
    this.dirs.set('', this.root);
  }

  // -------------------------------------------------------------------------------------------
  // The merged view: the changeset over the parent

  private lowerStat(rel: string): fs.Stats | undefined {
    return (this.lower as ParentTree).lstat(rel);
  }

  /** lstat of `rel` as the merged filesystem would answer it. */
  private lookup(rel: string): Found | undefined {
    if (rel !== '') {
      const parent = this.dirs.get(dirOf(rel));
      if (parent !== undefined) {
        const kid = (parent.kids as Map<string, Node>).get(baseOf(rel));
        if (kid !== undefined) return { upper: kid };
        if (!parent.lower) return undefined;
        // The parent is a directory of the parent filesystem too: one lstat answers.
        const st = this.lowerStat(rel);
        return st === undefined ? undefined : { lower: st };
      }
    }
    const parts = splitRel(rel);
    let node = this.root;
    for (let i = 0; i < parts.length; i++) {
      const kid = node.kids?.get(parts[i] as string);
      if (kid !== undefined) {
        node = kid;
        continue;
      }
      if (node.kind !== 'dir' || !node.lower) return undefined;
      // Below the changeset: the parent's own entries. Every component is checked, so a path
      // never passes through a symlink of the parent.
      let cur = parts.slice(0, i).join('/');
      let st: fs.Stats | undefined;
      for (let j = i; j < parts.length; j++) {
        if (st !== undefined && !st.isDirectory()) return undefined;
        cur = join(cur, parts[j] as string);
        st = this.lowerStat(cur);
        if (st === undefined) return undefined;
      }
      return { lower: st as fs.Stats };
    }
    return { upper: node };
  }

  private isDir(f: Found | undefined): boolean {
    return f !== undefined && (f.upper ? f.upper.kind === 'dir' : f.lower.isDirectory());
  }

  /** The changeset's node of an existing directory, copying it (and its ancestors) up from the parent. */
  private upperDir(rel: string): Node {
    const known = this.dirs.get(rel);
    if (known !== undefined) return known;
    let node = this.root;
    let cur = '';
    for (const part of splitRel(rel)) {
      cur = join(cur, part);
      let kid = node.kids?.get(part);
      if (kid === undefined) {
        const st = node.lower ? this.lowerStat(cur) : undefined;
        if (st === undefined || !st.isDirectory()) throw new InternalError(`copy plan: ${shown(cur)} is not a directory of the parent`);
        kid = {
          kind: 'dir',
          ino: {
            mode: st.mode & 0o7777,
            uid: st.uid,
            gid: st.gid,
            mtime: Math.floor(st.mtimeMs / 1000),
            xattrs: readXattrs((this.lower as ParentTree).host(cur) as string, (_p, name) => !isOverlayXattr(name)),
            source: undefined,
            size: 0,
          },
          linkTarget: undefined,
          lower: true,
          kids: new Map(),
        };
        (node.kids as Map<string, Node>).set(part, kid);
        this.dirs.set(cur, kid);
      } else if (kid.kind !== 'dir') {
        throw new InternalError(`copy plan: ${shown(cur)} is not a directory`);
      }
      node = kid;
    }
    return node;
  }

  /** Puts `node` at `rel` (creating or replacing a name, which sets the directory's mtime). */
  private place(rel: string, node: Node): void {
    const parent = this.upperDir(dirOf(rel));
    (parent.kids as Map<string, Node>).set(baseOf(rel), node);
    parent.ino.mtime = this.now;
  }

  private newDir(rel: string, mode: number, owner: Owner): Node {
    const node: Node = {
      kind: 'dir',
      ino: { mode, uid: owner.uid, gid: owner.gid, mtime: this.now, xattrs: undefined, source: undefined, size: 0 },
      linkTarget: undefined,
      lower: false,
      kids: new Map(),
    };
    this.place(rel, node);
    this.dirs.set(rel, node);
    return node;
  }

  /**
   * Resolves an image path as `secureJoin` over the root with `followLast` does: the parent's
   * symlinks are followed inside the root. The changeset holds no symlink on such a path when a
   * copy resolves its destination (sources are written after it), which the check makes sure of.
   */
  private resolve(rel: string): string {
    let out: string;
    const lower = this.lower;
    if (lower === undefined) out = cleanRel(rel);
    else out = secureJoin('/', rel, { followLast: true, symlinkTarget: (r) => lower.symlinkTarget(r) }).slice(1);
    let node: Node | undefined = this.root;
    for (const part of splitRel(out)) {
      node = node.kids?.get(part);
      if (node === undefined) break;
      if (node.kind === 'symlink') throw new InternalError(`copy plan: ${shown(out)} passes through a symlink the step wrote`);
    }
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // copyInto, rule for rule

  /**
   * What `copyInto(ctx, matches, rootfs, dest, opts)` would do to the overlay, done to the plan.
   * `walks[i]`, when given, is `ctx.walk(matches[i])` already done (for the cache key).
   */
  async copy(
    ctx: BuildContext,
    matches: readonly SourceMatch[],
    dest: string,
    opts: CopyOptions,
    walks?: readonly (readonly SourceEntry[])[],
  ): Promise<void> {
    const op = new CopyOp(this, ctx, opts);
    op.checkCancel();
    if (matches.length === 0) return;
    const destIsDir = opts.parents === true || dest === '' || dest === '.' || dest.endsWith('/') || dest.endsWith('/.');
    const imageDest = dest.startsWith('/') ? dest : path.posix.join(opts.workdir || '/', dest);
    const rel = cleanRel(imageDest);
    const sources = new Set(matches.map((m) => m.source));
    if (!destIsDir && (matches.length > 1 || sources.size > 1)) {
      if (!this.isDir(this.lookup(this.resolve(rel)))) {
        throw new CopyError(
          `when using COPY with more than one source file, the destination must be a directory and end with a / (got "${dest}")`,
        );
      }
    }
    op.mkdirAll(destIsDir ? rel : cleanRel(path.posix.dirname(rel)));
    const destRel = this.resolve(rel);
    for (let i = 0; i < matches.length; i++) {
      const match = matches[i] as SourceMatch;
      const entries = walks?.[i] ?? ctx.walk(match);
      if (opts.parents) await op.copyWithParents(match, entries, destRel);
      else await op.copyMatch(match, entries, destRel);
    }
    op.finish();
  }

  /** For CopyOp: the pieces of the merged view it works with. */
  get view(): PlanView {
    return {
      lookup: (rel) => this.lookup(rel),
      isDir: (f) => this.isDir(f),
      resolve: (rel) => this.resolve(rel),
      place: (rel, node) => this.place(rel, node),
      newDir: (rel, mode, owner) => this.newDir(rel, mode, owner),
      upperDir: (rel) => this.upperDir(rel),
    };
  }

  // -------------------------------------------------------------------------------------------
  // The archive

  /** The changeset as layer entries, in archive order, made as the archive is written. */
  *entries(observe?: BodyObserver): Generator<LayerEntry> {
    const first = new Map<Inode, string>();
    const stack: { kids: SortedKid[]; i: number; prefix: string }[] = [{ kids: sortedKids(this.root), i: 0, prefix: '' }];
    while (stack.length > 0) {
      const top = stack[stack.length - 1] as (typeof stack)[number];
      const kid = top.kids[top.i++];
      if (kid === undefined) {
        stack.pop();
        continue;
      }
      const { name, node } = kid;
      const p = top.prefix + name;
      const ino = node.ino;
      const header: TarHeader = { path: p, type: 'file', mode: ino.mode, uid: ino.uid, gid: ino.gid, mtime: ino.mtime, size: 0 };
      if (ino.xattrs && ino.xattrs.size > 0) header.xattrs = ino.xattrs;
      if (node.kind === 'dir') {
        header.path = p + '/';
        header.type = 'dir';
        yield { header };
        stack.push({ kids: sortedKids(node), i: 0, prefix: p + '/' });
        continue;
      }
      const linked = first.get(ino);
      if (linked !== undefined) {
        header.type = 'hardlink';
        header.linkpath = linked;
        yield { header };
        continue;
      }
      first.set(ino, p);
      if (node.kind === 'symlink') {
        header.type = 'symlink';
        header.mode = 0o777;
        header.linkpath = node.linkTarget as string;
        yield { header };
        continue;
      }
      const source = ino.source as SourceEntry;
      header.size = ino.size;
      const entry: LayerEntry = { header, body: source.abs };
      const onBody = observe?.(source);
      if (onBody) entry.onBody = onBody;
      yield entry;
    }
  }

  /** Writes the changeset to `out` as a layer tar (and ends `out`). */
  write(out: Writable, opts: LayerWriteOptions = {}): Promise<WriteEntriesResult> {
    const { observe, ...wopts } = opts;
    return writeEntries(this.entries(observe), out, wopts);
  }
}

interface PlanView {
  lookup(rel: string): Found | undefined;
  isDir(f: Found | undefined): boolean;
  resolve(rel: string): string;
  place(rel: string, node: Node): void;
  newDir(rel: string, mode: number, owner: Owner): Node;
  upperDir(rel: string): Node;
}

/** One `copyInto` call: Copier of copy.ts, acting on the plan instead of the disk. */
class CopyOp {
  private readonly links = new Map<string, string>();
  private readonly dirs: DirFixup[] = [];
  private readonly v: PlanView;

  constructor(
    private readonly plan: CopyLayerPlan,
    private readonly ctx: BuildContext,
    private readonly opts: CopyOptions,
  ) {
    this.v = plan.view;
  }

  checkCancel(): void {
    if (this.opts.signal?.aborted) throw new CancelledError('copy cancelled', { cause: this.opts.signal.reason });
  }

  mkdirAll(rel: string): void {
    const target = this.v.resolve(rel);
    const owner = this.opts.chown ?? ROOT_OWNER;
    let cur = '';
    for (const part of splitRel(target)) {
      cur = join(cur, part);
      const found = this.v.lookup(cur);
      if (found === undefined) {
        this.v.newDir(cur, 0o755, owner);
        this.plan.count++;
      } else if (!this.v.isDir(found)) {
        throw new CopyError(`cannot create directory ${shown(target)}: ${shown(cur)} is not a directory`);
      }
    }
  }

  async copyMatch(match: SourceMatch, entries: readonly SourceEntry[], destRel: string): Promise<void> {
    const destFound = this.v.lookup(destRel);
    if (match.kind === 'dir') {
      if (destFound === undefined) this.mkdirAll(destRel);
      else if (!this.v.isDir(destFound)) throw new CopyError(`cannot copy to non-directory: ${shown(destRel)}`);
      await this.copyEntries(entries, 1, destRel);
      return;
    }
    const target = this.v.isDir(destFound) ? join(destRel, path.posix.basename(match.path)) : destRel;
    await this.copyEntries(entries, 0, target);
  }

  async copyWithParents(match: SourceMatch, entries: readonly SourceEntry[], destRel: string): Promise<void> {
    const underPivot = match.pivot !== '' && (match.path === match.pivot || match.path.startsWith(match.pivot + '/'));
    const relPath = underPivot ? match.path.slice(match.pivot.length).replace(/^\//, '') : match.path;
    const parts = relPath === '' ? [] : relPath.split('/');
    let target = destRel;
    for (let i = 0; i < parts.length - 1; i++) {
      target = join(target, parts[i] as string);
      const srcDir = secureJoin(this.ctx.root, [match.pivot, ...parts.slice(0, i + 1)].join('/'), { followLast: true });
      const found = this.v.lookup(target);
      if (found === undefined) {
        const node = this.v.newDir(target, 0o700, ROOT_OWNER);
        this.plan.count++;
        this.dirs.push({ node, stat: fs.statSync(srcDir, { bigint: true }) });
      } else if (!this.v.isDir(found)) {
        throw new CopyError(`cannot copy to non-directory: ${shown(target)}`);
      }
    }
    if (parts.length > 0) target = join(target, parts[parts.length - 1] as string);
    if (target === destRel && match.kind === 'dir') {
      await this.copyEntries(entries, 1, destRel);
      return;
    }
    await this.copyEntries(entries, 0, target);
  }

  private async copyEntries(entries: readonly SourceEntry[], from: number, target: string): Promise<void> {
    for (let i = from; i < entries.length; i++) {
      if ((i & 1023) === 0) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        this.checkCancel();
      }
      const e = entries[i] as SourceEntry;
      this.copyEntry(e, e.rel === '' ? target : join(target, e.rel));
    }
  }

  private sourceXattrs(e: SourceEntry): Map<string, Buffer> | undefined {
    return this.opts.keepOwnership ? readXattrs(e.abs, keepXattr) : undefined;
  }

  private copyEntry(e: SourceEntry, to: string): void {
    const existing = this.v.lookup(to);
    if (e.kind === 'dir') {
      let node: Node;
      if (existing === undefined) {
        node = this.v.newDir(to, 0o700, ROOT_OWNER);
        this.plan.count++;
      } else if (!this.v.isDir(existing)) {
        throw new CopyError(`cannot copy to non-directory: ${shown(to)}`);
      } else {
        // Changing an existing directory's metadata copies it up, xattrs and all.
        node = this.v.upperDir(to);
      }
      this.dirs.push({ node, stat: e.stat });
      const attrs = this.sourceXattrs(e);
      if (attrs) node.ino.xattrs = new Map([...(node.ino.xattrs ?? []), ...attrs]);
      return;
    }
    if (this.v.isDir(existing)) throw new CopyError(`cannot replace directory ${shown(to)} with a file`);
    this.plan.count++;
    if (e.kind === 'symlink') {
      const node: Node = { kind: 'symlink', ino: this.meta(e.stat, 'symlink', this.sourceXattrs(e)), linkTarget: e.linkTarget as string, lower: false, kids: undefined };
      this.v.place(to, node);
      return;
    }
    if (e.stat.nlink > 1n) {
      const key = `${e.stat.dev}:${e.stat.ino}`;
      const first = this.links.get(key);
      if (first !== undefined) {
        const found = this.v.lookup(first);
        if (!found?.upper || found.upper.kind !== 'file') throw new CopyError(`cannot link ${shown(to)} to ${shown(first)}: it is no longer a file of this copy`);
        this.v.place(to, { kind: 'file', ino: found.upper.ino, linkTarget: undefined, lower: false, kids: undefined });
        return;
      }
      this.links.set(key, to);
    }
    const ino = this.meta(e.stat, 'file', this.sourceXattrs(e));
    ino.source = e;
    ino.size = Number(e.stat.size);
    this.v.place(to, { kind: 'file', ino, linkTarget: undefined, lower: false, kids: undefined });
  }

  /** applyMeta of copy.ts: the owner, mode and mtime an entry ends up with. */
  private meta(st: fs.BigIntStats, kind: 'file' | 'dir' | 'symlink', xattrs: Map<string, Buffer> | undefined): Inode {
    const owner = this.owner(st);
    let mode = 0o777;
    if (kind !== 'symlink') {
      const m = Number(st.mode);
      mode = this.opts.chmod ? applyChmod(m, this.opts.chmod, kind === 'dir') & 0o7777 : m & 0o7777;
    }
    return { mode, uid: owner.uid, gid: owner.gid, mtime: secondsOf(st), xattrs, source: undefined, size: 0 };
  }

  private owner(st: fs.BigIntStats): Owner {
    return this.opts.chown ?? (this.opts.keepOwnership ? { uid: Number(st.uid), gid: Number(st.gid) } : ROOT_OWNER);
  }

  /** Directory metadata last, in the order copy.ts applies it (the first fixup of a directory wins). */
  finish(): void {
    for (let i = this.dirs.length - 1; i >= 0; i--) {
      const { node, stat } = this.dirs[i] as DirFixup;
      const m = this.meta(stat, 'dir', undefined);
      node.ino.mode = m.mode;
      node.ino.uid = m.uid;
      node.ino.gid = m.gid;
      node.ino.mtime = m.mtime;
    }
  }
}

interface SortedKid {
  name: string;
  node: Node;
}

/**
 * A directory's entries in diff's order: by the bytes of their names, with `/` after directories.
 * Without surrogate pairs, UTF-16 order is that order and needs no encoding.
 */
function sortedKids(dir: Node): SortedKid[] {
  const kids: (SortedKid & { key: string; plain: boolean })[] = [];
  for (const [name, node] of dir.kids as Map<string, Node>) {
    const key = node.kind === 'dir' ? name + '/' : name;
    kids.push({ key, plain: !SURROGATE.test(key), name, node });
  }
  return kids.sort((a, b) => (a.plain && b.plain ? (a.key < b.key ? -1 : a.key > b.key ? 1 : 0) : compareUtf8(a.key, b.key)));
}

/**
 * The parent filesystem a COPY is planned over, asked by paths relative to its root ('' is the
 * root). It is never asked through a symlink: the plan checks every component.
 */
export interface ParentTree {
  lstat(rel: string): fs.Stats | undefined;
  /** The host path of the entry `lstat` found at `rel` (for its xattrs). */
  host(rel: string): string | undefined;
  /** The target of `rel` if it is a symlink. */
  symlinkTarget(rel: string): string | undefined;
}

/** A parent filesystem that is one directory of the host (a mounted view). */
class DirTree implements ParentTree {
  constructor(private readonly root: string) {}
  host(rel: string): string {
    return rel === '' ? this.root : `${this.root}/${rel}`;
  }
  lstat(rel: string): fs.Stats | undefined {
    return lstatOrUndefined(this.host(rel));
  }
  symlinkTarget(rel: string): string | undefined {
    return this.lstat(rel)?.isSymbolicLink() ? fs.readlinkSync(this.host(rel)) : undefined;
  }
}

/** What overlayfs (as root or in a user namespace) and fuse-overlayfs keep for themselves, as diff leaves it out. */
function isOverlayXattr(name: string): boolean {
  return name.startsWith('trusted.overlay.') || name.startsWith('user.overlay.') || name.startsWith('user.fuseoverlayfs.');
}

function lstatOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(p, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}
