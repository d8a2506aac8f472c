import { randomBytes } from 'node:crypto';
import { access, mkdir, readdir, readFile, readlink, realpath, rename, rm, rmdir, symlink, writeFile } from 'node:fs/promises';
import { unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { CancelledError, InternalError, TsbuildError } from '@tsbuild/errors';
import { digestHex, parseDigest } from '@tsbuild/oci';
import type { Digest } from '@tsbuild/oci';
import { exists } from '@tsbuild/store';
import { mountsUnder } from './mountinfo.ts';
import { ownerAlive, ownerToken, parseOwnerToken, runCommand, selfOwner } from './proc.ts';
import type { Owner } from './proc.ts';
import { candidateDrivers, flagBytes, inUserNamespace } from './driver.ts';
import type { OverlayDriver } from './driver.ts';
import { MergedLayers } from './merged.ts';
import { OverlayMounter, unmount } from './mount.ts';
import { OverlayActive } from './active.ts';
import type { ActiveOwner } from './active.ts';
import type { Active, LowerFormat, PrepareOptions, Snapshotter, SnapshotterOptions, SnapshotInfo } from './types.ts';

/**
 * On-disk layout under the snapshotter root. Directory names are short on purpose: overlay
 * lowerdir lists are passed as paths relative to the root, and the whole mount option string
 * must fit in one page.
 *
 *   keys/<chain hex>  symlink to ../l/<id>: the chain ID → layer dir map (one atomic symlink each)
 *   l/<id>/fs         committed layer contents (an overlay upper dir or an extracted tar)
 *   l/<id>/meta.json  { chainId, parent, owner }
 *   f/<id>            the merged view of the chain ending at layer <id>, for chains too deep to mount
 *   a/<owner>-<rand>  an active snapshot: u (upper), w (overlay work), r (mounted rootfs)
 *   t/<owner>-<rand>  scratch space for fills, flattening and removal
 *   o/<owner>-<rand>  an empty file while a process has the snapshotter open (crash detection)
 *   e                 an always-empty lower dir for snapshots of scratch
 *   driver            how this root's overlays are mounted (overlay, overlay-userxattr or
 *                     fuse-overlayfs): found by trying on the first mount, then kept, since the
 *                     layer dirs hold that driver's opaque markers
 */

interface Meta {
  chainId: Digest;
  parent: Digest | undefined;
  id: string;
}

const ID_RE = /^[0-9a-z]{1,12}$/;
/*
 * A writable snapshot is mounted `volatile` and skips overlayfs's syncs: fsync inside a RUN (dpkg
 * fsyncs every file it unpacks) returns at once, and unmounting does not flush the whole upper
 * dir (1.2 s for a COPY of 50,000 files). Crash safety does not rest on them: a snapshot that a
 * crash leaves behind is discarded by recovery, and only the layer blob, written through the
 * store's fsynced ingest, is kept.
 */

function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

function notFound(chainId: Digest): TsbuildError {
  return new TsbuildError('SNAPSHOT_NOT_FOUND', `snapshot ${chainId} does not exist`, {
    hint: 'the layer cache was pruned or is damaged; rebuild without the cache',
  });
}

export async function openSnapshotter(opts: SnapshotterOptions): Promise<Snapshotter> {
  await mkdir(opts.root, { recursive: true });
  const root = await realpath(opts.root);
  const owner = await selfOwner();
  await Promise.all(['keys', 'l', 'f', 'a', 't', 'e', 'o'].map((d) => mkdir(join(root, d), { recursive: true })));
  const s = new OverlaySnapshotter(root, owner, opts.maxLowerLayers ?? 500, opts.maxOptionBytes ?? 4095, await OverlayMounter.open(root, owner, opts.maxOptionBytes ?? 4095));
  await s.init();
  return s;
}

/** The open markers of this process's snapshotters, removed by one exit hook. */
const openMarkers = new Set<string>();

function removeOpenMarkers(): void {
  for (const m of openMarkers) {
    try {
      unlinkSync(m);
    } catch {
      // Already gone (an opener that judged this process dead took it): nothing to undo.
    }
  }
  openMarkers.clear();
}

class OverlaySnapshotter implements Snapshotter, ActiveOwner {
  private next = 0;
  private readonly inflight = new Map<Digest, Promise<void>>();
  /** Publishes in progress in this process: their layer dirs briefly have no key. */
  private publishing = 0;
  private readonly flattening = new Map<string, Promise<string>>();
  /** Layer ids mounted as lowers by this process's active snapshots, with use counts. */
  private readonly inUse = new Map<string, number>();

  private readonly opaqueXattr = inUserNamespace() ? 'user.overlay.opaque' : 'trusted.overlay.opaque';

  get lowerFormat(): LowerFormat {
    return { opaqueXattr: this.opaqueXattr, whiteoutFiles: this.driver === 'fuse-overlayfs' };
  }
  constructor(
    readonly root: string,
    private readonly owner: Owner,
    private readonly maxLayers: number,
    private readonly maxOptionBytes: number,
    private readonly mounter: OverlayMounter,
  ) {}

  private get driver(): OverlayDriver | undefined {
    return this.mounter.driver;
  }

  /** Option bytes beyond the lowerdir list, for whichever driver the mount will use. */
  private get flagBytes(): number {
    return Math.max(...(this.driver ? [this.driver] : candidateDrivers()).map(flagBytes));
  }

  async init(): Promise<void> {
    for (const name of await readdir(join(this.root, 'l'))) {
      if (ID_RE.test(name)) this.next = Math.max(this.next, parseInt(name, 36) + 1);
    }
    await this.recover();
    await this.markOpen();
  }

  /**
   * Leaves `o/<owner>-<random>` while this process has the snapshotter open, removed when
   * the process exits. A marker whose owner is dead means a process was killed with the store
   * open, perhaps between a layer's rename and its key: only then does opening walk every layer.
   */
  private async markOpen(): Promise<void> {
    const marker = join(this.root, 'o', `${ownerToken(this.owner)}-${randomBytes(4).toString('hex')}`);
    await writeFile(marker, '');
    if (openMarkers.size === 0) process.once('exit', removeOpenMarkers);
    openMarkers.add(marker);
  }

  private keyPath(chainId: Digest): string {
    return join(this.root, 'keys', digestHex(parseDigest(chainId)));
  }

  private async idOf(chainId: Digest): Promise<string | undefined> {
    let target: string;
    try {
      target = await readlink(this.keyPath(chainId));
    } catch (e) {
      if (errCode(e) === 'ENOENT') return undefined;
      throw e;
    }
    const id = target.slice('../l/'.length);
    if (!target.startsWith('../l/') || !ID_RE.test(id)) {
      throw new TsbuildError('SNAPSHOT_CORRUPT', `snapshot index entry for ${chainId} is damaged (${target})`, {
        hint: `remove ${this.root} to reset the layer cache`,
      });
    }
    return id;
  }

  /** Layer metadata read before: a layer dir's meta.json never changes once the dir is published. */
  private readonly metas = new Map<Digest, Meta>();

  private async meta(chainId: Digest): Promise<Meta | undefined> {
    const known = this.metas.get(chainId);
    if (known) {
      // Still this layer if its key names the same dir and the dir is there (another process may
      // have removed it since, or a person deleted it by hand).
      const [target, present] = await Promise.all([
        readlink(this.keyPath(chainId)).catch(() => undefined),
        access(join(this.root, 'l', known.id, 'meta.json')).then(() => true, () => false),
      ]);
      if (target === `../l/${known.id}` && present) return known;
      this.metas.delete(chainId);
    }
    const m = await this.readMeta(chainId);
    if (m) this.metas.set(chainId, m);
    return m;
  }

  private async readMeta(chainId: Digest): Promise<Meta | undefined> {
    const id = await this.idOf(chainId);
    if (id === undefined) return undefined;
    let raw: string;
    try {
      raw = await readFile(join(this.root, 'l', id, 'meta.json'), 'utf8');
    } catch (e) {
      // A key whose layer vanished (removal interrupted) counts as absent.
      if (errCode(e) === 'ENOENT') return undefined;
      throw e;
    }
    const m = JSON.parse(raw) as { chainId?: string; parent?: string | null };
    // A stale key (its dir deleted by hand, the id reused since) does not name this layer.
    if (m.chainId !== chainId) return undefined;
    return { chainId, parent: m.parent ? parseDigest(m.parent) : undefined, id };
  }

  async has(chainId: Digest): Promise<boolean> {
    return (await this.meta(chainId)) !== undefined;
  }

  async get(chainId: Digest): Promise<SnapshotInfo | undefined> {
    const m = await this.meta(chainId);
    return m && { chainId, parent: m.parent, dir: join(this.root, 'l', m.id, 'fs') };
  }

  /** The chain from `top` down to its base layer, newest first. */
  private async chain(top: Digest | undefined): Promise<Meta[]> {
    const out: Meta[] = [];
    const seen = new Set<Digest>();
    for (let cur = top; cur !== undefined; ) {
      if (seen.has(cur)) throw new TsbuildError('SNAPSHOT_CORRUPT', `snapshot chain of ${top} loops at ${cur}`);
      seen.add(cur);
      const m = await this.meta(cur);
      if (!m) throw notFound(cur);
      out.push(m);
      cur = m.parent;
    }
    return out;
  }

  private async tempDir(): Promise<string> {
    const dir = join(this.root, 't', `${ownerToken(this.owner)}-${randomBytes(4).toString('hex')}`);
    await mkdir(dir);
    return dir;
  }

  /** Renames a prepared `{fs, meta.json}` dir to a fresh l/<id>, then claims the key. */
  private async publish(dir: string, chainId: Digest, parent: Digest | undefined): Promise<void> {
    this.publishing++;
    try {
      await this.publishUnlocked(dir, chainId, parent);
    } finally {
      this.publishing--;
    }
  }

  private async publishUnlocked(dir: string, chainId: Digest, parent: Digest | undefined): Promise<void> {
    await writeFile(join(dir, 'meta.json'), JSON.stringify({ chainId, parent: parent ?? null, owner: this.owner }));
    let id: string;
    for (;;) {
      id = (this.next++).toString(36);
      try {
        // Fails with ENOTEMPTY/EEXIST when another process took this id: layer dirs are never empty.
        await rename(dir, join(this.root, 'l', id));
        break;
      } catch (e) {
        if (errCode(e) !== 'ENOTEMPTY' && errCode(e) !== 'EEXIST') throw e;
      }
    }
    try {
      await symlink(`../l/${id}`, this.keyPath(chainId));
    } catch (e) {
      if (errCode(e) !== 'EEXIST') throw e;
      if (await this.has(chainId)) {
        // Another build published the same layer first; ours is a duplicate.
        await this.discard(join(this.root, 'l', id));
        return;
      }
      // A key whose layer dir is gone (deleted by hand) would block this layer forever: replace it.
      const link = join(this.root, 't', `${ownerToken(this.owner)}-${randomBytes(4).toString('hex')}.lnk`);
      await symlink(`../l/${id}`, link);
      await rename(link, this.keyPath(chainId));
    }
  }

  /** Atomically moves `path` out of sight, then deletes it. */
  private async discard(path: string): Promise<void> {
    const trash = await this.tempDir();
    try {
      await rename(path, join(trash, 'x'));
    } catch (e) {
      if (errCode(e) !== 'ENOENT') throw e;
    }
    await this.removeTree(trash);
  }

  /** Deletes a transient tree, but never through a mount that is still there. */
  private async removeTree(dir: string): Promise<void> {
    const mounted = await mountsUnder(dir);
    for (const mp of mounted) await unmount(mp);
    if (mounted.length > 0 && (await mountsUnder(dir)).length > 0) {
      throw new TsbuildError('SNAPSHOT_BUSY', `cannot remove ${dir}: something is still mounted below it`);
    }
    await rm(dir, { recursive: true, force: true });
  }

  unpack(chainId: Digest, parent: Digest | undefined, fill: (dir: string) => Promise<void>): Promise<void> {
    parseDigest(chainId);
    const running = this.inflight.get(chainId);
    if (running) return running;
    const p = this.doUnpack(chainId, parent, fill).finally(() => this.inflight.delete(chainId));
    this.inflight.set(chainId, p);
    return p;
  }

  private async doUnpack(chainId: Digest, parent: Digest | undefined, fill: (dir: string) => Promise<void>): Promise<void> {
    if (await this.has(chainId)) return;
    if (parent !== undefined && !(await this.has(parent))) throw notFound(parent);
    // The fill writes whiteouts as the driver reads them: it must be known first.
    if (this.driver === undefined && candidateDrivers().length > 1) await this.probeDriver();
    const dir = await this.tempDir();
    try {
      await mkdir(join(dir, 'fs'), { mode: 0o755 });
      await fill(join(dir, 'fs'));
      if (await this.has(chainId)) return;
      await this.publish(dir, chainId, parent);
    } finally {
      await this.removeTree(dir);
    }
  }

  async prepare(parent: Digest | undefined, opts: PrepareOptions = {}): Promise<Active> {
    if (opts.signal?.aborted) throw new CancelledError();
    const chain = await this.chain(parent);
    const name = `${ownerToken(this.owner)}-${randomBytes(4).toString('hex')}`;
    const rel = `a/${name}`;
    const upper = { upper: `${rel}/u`, work: `${rel}/w` };
    const reserved = `,upperdir=${upper.upper},workdir=${upper.work},,volatile`.length + this.flagBytes;
    const lowers = chain.length === 0 ? ['e'] : await this.lowerDirs(chain, reserved);
    const dir = join(this.root, rel);
    await mkdir(dir);
    await Promise.all(['u', 'w', 'r'].map((d) => mkdir(join(dir, d), { mode: 0o755 })));
    const used = chain.map((m) => m.id);
    for (const id of used) this.inUse.set(id, (this.inUse.get(id) ?? 0) + 1);
    try {
      if (opts.signal?.aborted) throw new CancelledError();
      await this.mounter.mount({ lowers, upper }, join(dir, 'r'));
    } catch (e) {
      this.unuse(used);
      await this.removeTree(dir);
      throw e;
    }
    return new OverlayActive(this, dir, parent, used, lowers.map((l) => join(this.root, l)));
  }

  async merged(top: Digest): Promise<MergedLayers | undefined> {
    if (this.lowerFormat.whiteoutFiles) return undefined;
    const chain = await this.chain(top);
    const view = new MergedLayers(chain.map((m) => join(this.root, 'l', m.id, 'fs')), this.opaqueXattr);
    return view.usable() ? view : undefined;
  }

  unuse(ids: readonly string[]): void {
    for (const id of ids) {
      const n = (this.inUse.get(id) ?? 1) - 1;
      if (n <= 0) this.inUse.delete(id);
      else this.inUse.set(id, n);
    }
  }

  /** Called by OverlayActive.commit once unmounted. */
  async commitDir(dir: string, chainId: Digest, parent: Digest | undefined): Promise<string> {
    parseDigest(chainId);
    try {
      if (!(await this.has(chainId))) {
        await Promise.all([rm(join(dir, 'w'), { recursive: true, force: true }), rmdir(join(dir, 'r')), rename(join(dir, 'u'), join(dir, 'fs'))]);
        await this.publish(dir, chainId, parent);
      }
    } finally {
      await this.removeTree(dir);
    }
    const info = await this.get(chainId);
    if (!info) throw notFound(chainId);
    return info.dir;
  }

  async removeActive(dir: string): Promise<void> {
    await this.removeTree(dir);
  }

  /**
   * Lower dir paths (relative to the root), newest first, for a chain. When the chain is deeper
   * than one overlay mount allows, its oldest part is replaced by a flattened copy.
   */
  private async lowerDirs(chain: Meta[], reservedBytes: number, reservedLayers = 0): Promise<string[]> {
    const paths = chain.map((m) => `l/${m.id}/fs`);
    const budget = this.maxOptionBytes - 'lowerdir='.length - reservedBytes;
    const maxLayers = this.maxLayers - reservedLayers;
    if (paths.length <= maxLayers && paths.join(':').length <= budget) return paths;
    // Keep as many of the newest layers as fit next to one flattened dir for the rest.
    const oldest = chain[chain.length - 1];
    if (!oldest) throw new InternalError('empty chain has no lower dirs');
    const flatLen = `:f/${oldest.id}`.length + 8;
    let keep = 0;
    let len = 0;
    while (keep < chain.length - 1 && keep + 1 < maxLayers) {
      const add = (paths[keep] ?? '').length + 1;
      if (len + add + flatLen > budget) break;
      len += add;
      keep++;
    }
    if (keep === 0) throw new InternalError(`overlay limits (${this.maxLayers} layers, ${this.maxOptionBytes} bytes) leave no room`);
    // Flatten in fixed-size blocks counted from the base, so that the children of a deep image
    // reuse one flattened dir instead of each copying a slightly different prefix.
    const block = Math.max(1, Math.floor(maxLayers / 2));
    const flatCount = Math.min(chain.length - 1, Math.ceil((chain.length - keep) / block) * block);
    keep = chain.length - flatCount;
    const flat = await this.flattened(chain.slice(keep));
    return [...paths.slice(0, keep), flat];
  }

  /** f/<id of chain[0]>: the merged contents of the whole chain, made once and cached. */
  private flattened(chain: Meta[]): Promise<string> {
    const top = chain[0];
    if (!top) throw new InternalError('cannot flatten an empty chain');
    if (chain.length === 1) return Promise.resolve(`l/${top.id}/fs`);
    const rel = `f/${top.id}`;
    const running = this.flattening.get(rel);
    if (running) return running;
    const p = this.doFlatten(chain, rel).finally(() => this.flattening.delete(rel));
    this.flattening.set(rel, p);
    return p;
  }

  private async doFlatten(chain: Meta[], rel: string): Promise<string> {
    const target = join(this.root, rel);
    if (await exists(target)) return rel;
    const tmp = await this.tempDir();
    try {
      const lowers = await this.lowerDirs(chain, this.flagBytes + ':e,'.length, 1);
      const mnt = join(tmp, 'm');
      const out = join(tmp, 'out');
      await mkdir(mnt);
      await mkdir(out);
      // A lower-only overlay needs two lowers; the empty dir changes nothing.
      await this.mounter.mount({ lowers: [...lowers, 'e'] }, mnt);
      try {
        // The merged view already applies whiteouts and opaque dirs and hides overlay's xattrs.
        const r = await runCommand('cp', ['-a', '--', `${mnt}/.`, out]);
        if (r.code !== 0) throw new TsbuildError('SNAPSHOT_FLATTEN', `flattening ${chain.length} layers failed: ${r.stderr.trim()}`);
      } finally {
        await unmount(mnt);
      }
      try {
        await rename(out, target);
      } catch (e) {
        if (errCode(e) !== 'ENOTEMPTY' && errCode(e) !== 'EEXIST') throw e;
      }
    } finally {
      await this.removeTree(tmp);
    }
    return rel;
  }

  /** Finds the driver with a throwaway mount, when a layer must be unpacked before anything is mounted. */
  private async probeDriver(): Promise<void> {
    const dir = await this.tempDir();
    try {
      for (const d of ['u', 'w', 'm']) await mkdir(join(dir, d));
      const rel = `t/${dir.slice(dir.lastIndexOf('/') + 1)}`;
      await this.mounter.mount({ lowers: ['e'], upper: { upper: `${rel}/u`, work: `${rel}/w` } }, join(dir, 'm'));
      await unmount(join(dir, 'm'));
    } finally {
      await this.removeTree(dir);
    }
  }

  async list(): Promise<SnapshotInfo[]> {
    const out: SnapshotInfo[] = [];
    for (const hex of await readdir(join(this.root, 'keys'))) {
      if (!/^[a-f0-9]{64}$/.test(hex)) continue;
      const info = await this.get(`sha256:${hex}`);
      if (info) out.push(info);
    }
    return out;
  }

  async remove(chainId: Digest): Promise<Digest[]> {
    const all = await this.list();
    const doomed = new Set<Digest>([chainId]);
    // Descendants are useless without their ancestor; collect them to a fixed point.
    for (let grew = true; grew; ) {
      grew = false;
      for (const s of all) {
        if (!doomed.has(s.chainId) && s.parent !== undefined && doomed.has(s.parent)) {
          doomed.add(s.chainId);
          grew = true;
        }
      }
    }
    const present = [...doomed].filter((d) => all.some((s) => s.chainId === d));
    for (const d of present) {
      const m = await this.meta(d);
      if (m && this.inUse.has(m.id)) {
        throw new TsbuildError('SNAPSHOT_IN_USE', `snapshot ${d} is mounted by a running step and cannot be removed`);
      }
    }
    for (const d of present) await this.removeOne(d);
    return present;
  }

  private async removeOne(chainId: Digest): Promise<void> {
    this.metas.delete(chainId);
    const id = await this.idOf(chainId);
    if (id === undefined) return;
    // Key first: once it is gone nobody starts using the dir, and a crash leaves only garbage.
    await rm(this.keyPath(chainId), { force: true });
    await this.discard(join(this.root, 'f', id));
    await this.discard(join(this.root, 'l', id));
  }

  async prune(keep: Set<Digest>): Promise<Digest[]> {
    const all = await this.list();
    const byChain = new Map(all.map((s) => [s.chainId, s]));
    const kept = new Set<Digest>();
    for (const k of keep) {
      for (let cur: Digest | undefined = k; cur !== undefined && !kept.has(cur); cur = byChain.get(cur)?.parent) {
        kept.add(cur);
      }
    }
    const removed: Digest[] = [];
    for (const s of all) {
      if (kept.has(s.chainId)) continue;
      const m = await this.meta(s.chainId);
      if (m && this.inUse.has(m.id)) continue;
      await this.removeOne(s.chainId);
      removed.push(s.chainId);
    }
    await this.sweepLayers();
    return removed;
  }

  /**
   * Removes what dead processes left in the active and temporary areas. Only when one died with
   * the store open (its open marker or a transient dir is still there) can a layer dir be without
   * its key, so only then are the layers swept; `prune` sweeps them always.
   */
  async recover(): Promise<void> {
    let crashed = false;
    for (const area of ['a', 't', 'o']) {
      for (const name of await readdir(join(this.root, area))) {
        const owner = parseOwnerToken(name);
        // Names that are not ours to judge (no owner) are left alone.
        if (!owner || (await ownerAlive(owner))) continue;
        crashed = true;
        await this.removeTree(join(this.root, area, name));
      }
    }
    if (crashed) await this.sweepLayers();
  }

  /** Removes layer dirs no key points to (a publish or removal cut short) and orphaned flattenings. */
  private async sweepLayers(): Promise<void> {
    for (const id of await readdir(join(this.root, 'l'))) {
      if (!ID_RE.test(id)) continue;
      let meta: { chainId?: string; owner?: Owner };
      try {
        meta = JSON.parse(await readFile(join(this.root, 'l', id, 'meta.json'), 'utf8')) as typeof meta;
      } catch {
        continue;
      }
      if (typeof meta.chainId !== 'string' || !/^sha256:[a-f0-9]{64}$/.test(meta.chainId)) continue;
      const linked = await this.idOf(meta.chainId as Digest).catch(() => undefined);
      if (linked === id) continue;
      // Its creator may be between the rename and the key symlink right now.
      if (meta.owner && (await ownerAlive(meta.owner))) {
        const mine = meta.owner.pid === this.owner.pid && meta.owner.start === this.owner.start;
        if (!mine || this.publishing > 0) continue;
      }
      await this.discard(join(this.root, 'l', id));
    }
    for (const id of await readdir(join(this.root, 'f'))) {
      if (!(await exists(join(this.root, 'l', id)))) await this.discard(join(this.root, 'f', id));
    }
  }
}
