/**
 * What each layer of an image adds, changes and removes, and how much of the image is bytes that
 * a later layer throws away: the figures dive (wagoodman/dive) reports, computed from the layer
 * tars alone. Each tar is streamed once; what is kept is one small node per path of the image
 * (its size, and the smallest size it ever had), never file contents, so memory grows with the
 * number of paths and not with the size of the layers.
 *
 * How the figures are defined (dive's, with the differences named):
 * - A layer's size is the sum of the sizes of the entries its tar holds (directories, symlinks,
 *   hardlinks, devices and whiteouts are 0), as dive sizes a layer; the total is their sum.
 * - Wasted bytes are the bytes of every copy of a path that a later layer replaces or removes
 *   (a path changed in three layers wastes its first two copies). dive's own "potential wasted
 *   space" also counts the copy that survives (it sums every copy of a path seen in two layers
 *   or more); the surviving copy is not waste, so it is not counted here.
 * - Efficiency is dive's score: the sum over paths of the smallest size each path ever had
 *   (a removal counts as size 0) divided by the sum of every size ever written; 1 when nothing
 *   was written. Unlike dive, a removed directory and what an opaque directory hides count as
 *   removals of every path beneath them (dive sizes a removed directory as one path and ignores
 *   opaque markers, so neither lowers its score).
 */
import { PassThrough, Writable } from 'node:stream';
import type { Readable } from 'node:stream';
import { RegistryError, UnsafeArchiveError, UsageError } from '@tsbuild/errors';
import { OPAQUE_MARKER, WHITEOUT_PREFIX, cleanArchivePath, decompress, readTar } from '@tsbuild/layer';
import type { Descriptor, Digest, ImageConfig } from '@tsbuild/oci';
import { RegistryClient, getConfig, parseReference, pullBlob } from '@tsbuild/registry';
import type { Reference } from '@tsbuild/registry';
import type { Store } from '@tsbuild/store';
import type { DistributionOptions } from './distribution.ts';

/** One entry a layer's tar writes. */
export interface LayerEntry {
  dir: boolean;
  /** Bytes of content: the file's size, 0 for anything that is not a regular file. */
  size: number;
}

/** What one layer's tar says on its own, before it is laid over the layers below. */
export interface LayerChangeset {
  /** Paths written (clean, relative, no leading `/`); a path written twice keeps its last entry, as applying does. */
  entries: Map<string, LayerEntry>;
  /** Paths named by `.wh.NAME` markers. */
  whiteouts: string[];
  /** Directories holding a `.wh..wh..opq` marker (`''` is the root). */
  opaque: string[];
  /** Sum of the entries' sizes. */
  size: number;
}

export interface ReadLayerOptions {
  signal?: AbortSignal | undefined;
}

/** Longer paths cannot be applied (the kernel's PATH_MAX), so a tar holding one is refused here too. */
const MAX_PATH = 4096;

/**
 * Reads one layer blob (plain, gzip or zstd tar) into its changeset. Bodies are skipped, not read
 * into memory. Hostile input is an UnsafeArchiveError: paths that climb out of the root, whiteouts
 * that name no file in their directory, paths no kernel could open.
 */
export async function readLayerChanges(blob: Readable, opts: ReadLayerOptions = {}): Promise<LayerChangeset> {
  const entries = new Map<string, LayerEntry>();
  const whiteouts: string[] = [];
  const opaque: string[] = [];
  const tar = decompress(blob, { signal: opts.signal });
  for await (const { header } of readTar(tar, { signal: opts.signal })) {
    if (Buffer.byteLength(header.path, 'utf8') > MAX_PATH) {
      throw new UnsafeArchiveError(`layer entry path is longer than ${MAX_PATH} bytes`, { entry: header.path.slice(0, 200) });
    }
    const parts = cleanArchivePath(header.path);
    const base = parts.at(-1);
    if (base === undefined) continue; // the root directory's own entry
    const parent = parts.slice(0, -1).join('/');
    if (base.startsWith(WHITEOUT_PREFIX)) {
      if (base === OPAQUE_MARKER) {
        opaque.push(parent);
        continue;
      }
      // `.wh..wh.*` other than the opaque marker is aufs bookkeeping (hardlink dirs), hiding nothing.
      if (base.startsWith(WHITEOUT_PREFIX + WHITEOUT_PREFIX)) continue;
      const victim = base.slice(WHITEOUT_PREFIX.length);
      if (victim === '' || victim === '.' || victim === '..') {
        throw new UnsafeArchiveError(`whiteout ${JSON.stringify(header.path)} does not name a file in its directory`, { entry: header.path });
      }
      whiteouts.push(parent === '' ? victim : `${parent}/${victim}`);
      continue;
    }
    const path = parts.join('/');
    entries.delete(path); // keep the map in tar order with the last entry winning
    entries.set(path, { dir: header.type === 'dir', size: header.type === 'file' ? header.size : 0 });
  }
  let size = 0;
  for (const e of entries.values()) size += e.size;
  return { entries, whiteouts, opaque, size };
}

/** One path a layer adds, changes or removes; `path` is absolute (`/app/data`). */
export interface PathChange {
  path: string;
  /** Added or changed: the size this layer gives it. Removed: the bytes removed (a directory's: everything under it). */
  size: number;
}

/** A layer laid over those below it. Each list is sorted biggest first, then by path. */
export interface LayerChanges {
  /** Paths the layers below did not have. */
  added: PathChange[];
  /** Paths the layers below had, written again (content, metadata or type). */
  changed: PathChange[];
  /**
   * Paths the layers below had that this layer hides: whiteouts, what an opaque directory hides,
   * a directory replaced by a file. Only the topmost removed path of a removed tree is listed.
   */
  removed: PathChange[];
  /** The layer's size (its entries' sizes summed). */
  size: number;
}

/** A path whose lower copies were replaced or removed. */
export interface WastedPath {
  path: string;
  /** Bytes of the copies that later layers replaced or removed. */
  bytes: number;
  /** How many such copies. */
  copies: number;
}

export interface LayerSummary {
  /** Sum of the layers' sizes (dive's "total image size"). */
  totalSize: number;
  /** Bytes of every copy of a path that a later layer replaced or removed. */
  wastedBytes: number;
  /** The paths that make up wastedBytes, most bytes first (paths that wasted 0 bytes are left out). */
  wasted: WastedPath[];
  /** dive's efficiency score, 0 to 1: smallest size of each path summed over every size written. */
  efficiency: number;
}

interface Node {
  size: number;
  dir: boolean;
  /** false: removed by a later layer; the node stays so its smallest size (0) is remembered. */
  present: boolean;
  /** The smallest size this path ever had (0 once it was removed). */
  min: number;
  children: Map<string, Node> | undefined;
}

interface Hidden {
  path: string;
  node: Node;
  /** Its size before this layer. */
  size: number;
}

const newNode = (dir: boolean, size: number): Node => ({ size, dir, present: true, min: size, children: undefined });

function bySize(a: PathChange, b: PathChange): number {
  return b.size - a.size || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
}

/** Layers laid one over another in order, bottom first, with each one's changes and the totals so far. */
export class LayerStack {
  private readonly root: Node = newNode(true, 0);
  private count = 0;
  private total = 0;
  private readonly waste = new Map<string, { bytes: number; copies: number }>();

  /** How many layers have been pushed. */
  get layers(): number {
    return this.count;
  }

  /** Lays the next layer over the stack and says what it added, changed and removed. */
  push(cs: LayerChangeset): LayerChanges {
    this.count++;
    this.total += cs.size;
    const added: PathChange[] = [];
    const changed: PathChange[] = [];

    // Everything is judged against the layers below before this one changes anything.
    const writes: { path: string; entry: LayerEntry }[] = [];
    for (const [path, entry] of cs.entries) {
      const lower = this.lookup(path);
      if (lower === undefined) added.push({ path: `/${path}`, size: entry.size });
      else {
        changed.push({ path: `/${path}`, size: entry.size });
        this.wasted(path, lower.size);
      }
      writes.push({ path, entry });
    }
    const hidden: Hidden[] = [];
    const seen = new Set<Node>();
    const hide = (path: string, node: Node, self: boolean): void => {
      // Iterative: a hostile tar may nest thousands of directories.
      const todo: { path: string; node: Node; self: boolean }[] = [{ path, node, self }];
      for (let t = todo.pop(); t !== undefined; t = todo.pop()) {
        if (t.self) {
          if (seen.has(t.node)) continue;
          seen.add(t.node);
          hidden.push({ path: t.path, node: t.node, size: t.node.size });
        }
        for (const [name, child] of t.node.children ?? []) {
          if (child.present) todo.push({ path: t.path === '' ? name : `${t.path}/${name}`, node: child, self: true });
        }
      }
    };
    for (const w of cs.whiteouts) {
      const n = this.lookup(w);
      if (n !== undefined) hide(w, n, true);
    }
    for (const o of cs.opaque) {
      const n = this.lookup(o);
      if (n?.dir) hide(o, n, false);
    }
    for (const { path, entry } of writes) {
      if (entry.dir) continue;
      const n = this.lookup(path);
      if (n?.dir) hide(path, n, false); // a file over a directory: applying removes what was in it
    }

    for (const h of hidden) h.node.present = false;
    const displaced: Hidden[] = [];
    for (const { path, entry } of writes) {
      const node = this.ensure(path, displaced);
      node.size = entry.size;
      node.dir = entry.dir;
      node.min = Math.min(node.min, entry.size);
      node.present = true;
    }
    // Hidden paths this layer did not write again (nor recreate as a parent of what it wrote) are gone.
    const gone = [...hidden.filter((h) => !h.node.present), ...displaced];
    for (const h of gone) {
      h.node.min = 0;
      this.wasted(h.path, h.size);
    }
    const removed = removedTrees(gone);
    added.sort(bySize);
    changed.sort(bySize);
    removed.sort(bySize);
    return { added, changed, removed, size: cs.size };
  }

  /** The totals over the layers pushed so far. */
  summary(): LayerSummary {
    let min = 0;
    const todo: Node[] = [this.root];
    for (let n = todo.pop(); n !== undefined; n = todo.pop()) {
      min += n.min;
      for (const c of n.children?.values() ?? []) todo.push(c);
    }
    const wasted: WastedPath[] = [];
    let wastedBytes = 0;
    for (const [path, w] of this.waste) {
      wastedBytes += w.bytes;
      wasted.push({ path: `/${path}`, bytes: w.bytes, copies: w.copies });
    }
    wasted.sort((a, b) => b.bytes - a.bytes || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    return { totalSize: this.total, wastedBytes, wasted, efficiency: this.total === 0 ? 1 : min / this.total };
  }

  private wasted(path: string, bytes: number): void {
    if (bytes <= 0) return;
    const w = this.waste.get(path);
    if (w) {
      w.bytes += bytes;
      w.copies++;
    } else this.waste.set(path, { bytes, copies: 1 });
  }

  /** The present node at `path` in the stack as it stands, if any. */
  private lookup(path: string): Node | undefined {
    let node = this.root;
    if (path === '') return node;
    for (const part of path.split('/')) {
      if (!node.dir) return undefined;
      const next = node.children?.get(part);
      if (next === undefined || !next.present) return undefined;
      node = next;
    }
    return node;
  }

  /**
   * The node for `path`, creating or reviving the directories above it (a tar may leave parents
   * out; applying creates them). A non-directory standing where a parent must be is replaced by
   * a directory, as applying would: it goes into `displaced`, to be reported and counted as removed.
   * A node created for `path` itself has no size yet (its smallest size is the first one written).
   */
  private ensure(path: string, displaced: Hidden[]): Node {
    let node = this.root;
    const parts = path.split('/');
    let at = '';
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      at = at === '' ? part : `${at}/${part}`;
      node.children ??= new Map();
      let next = node.children.get(part);
      const last = i === parts.length - 1;
      if (next === undefined) {
        next = newNode(!last, 0);
        if (last) next.min = Number.POSITIVE_INFINITY;
        node.children.set(part, next);
      } else if (!last && !(next.present && next.dir)) {
        if (next.present) displaced.push({ path: at, node: next, size: next.size });
        next.present = true;
        next.dir = true;
        next.size = 0;
        next.min = Math.min(next.min, 0);
      }
      node = next;
    }
    return node;
  }
}

/**
 * The removed paths grouped into trees: each group is a removed path whose parent was not removed,
 * sized by everything removed under it.
 */
function removedTrees(gone: Hidden[]): PathChange[] {
  const sorted = [...gone].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const groupOf = new Map<string, PathChange>();
  const out: PathChange[] = [];
  for (const h of sorted) {
    const slash = h.path.lastIndexOf('/');
    const parent = slash < 0 ? undefined : h.path.slice(0, slash);
    let group = parent === undefined ? undefined : groupOf.get(parent);
    if (group === undefined) {
      group = { path: `/${h.path}`, size: 0 };
      out.push(group);
    }
    group.size += h.size;
    groupOf.set(h.path, group);
  }
  return out;
}

/** One layer of an image with what it changed. */
export interface LayerReport extends LayerChanges {
  /** Position from the bottom, 0 being the base layer. */
  index: number;
  /** The layer blob's digest, as the manifest names it. */
  digest: Digest;
  /** The uncompressed tar's digest, from the config. */
  diffId: Digest | undefined;
  /** Bytes of the blob as stored or served (compressed or not). */
  blobSize: number;
  /** The history entry's created_by ('' when the image has no history for it). */
  createdBy: string;
  created: string | undefined;
}

/** The whole analysis: every layer read, bottom first, and the totals. */
export interface ImageLayerAnalysis extends LayerSummary {
  /** The image id (its config's digest). */
  id: Digest;
  layers: LayerReport[];
}

export interface AnalyzeLayersOptions {
  signal?: AbortSignal | undefined;
  /** Stop after this layer (counted from 0 at the bottom): what a layer changed needs only the layers below it. */
  through?: number | undefined;
  /** Layers read at the same time (they are laid over each other in order all the same). Default 3. */
  concurrency?: number | undefined;
}

/** Reads one layer blob into its changeset. */
export type LayerReader = (layer: Descriptor, signal: AbortSignal) => Promise<LayerChangeset>;

/** Analyzes the layers of an image given its config, its manifest's layers and a way to read them. */
export async function analyzeLayers(
  id: Digest,
  config: ImageConfig,
  layers: readonly Descriptor[],
  read: LayerReader,
  opts: AnalyzeLayersOptions = {},
): Promise<ImageLayerAnalysis> {
  const last = opts.through ?? layers.length - 1;
  if (opts.through !== undefined && (!Number.isInteger(last) || last < 0 || last >= layers.length)) {
    const range = layers.length === 0 ? 'none' : layers.length === 1 ? 'only layer 0' : `0 to ${layers.length - 1}, from the bottom`;
    throw new UsageError(`layer ${String(opts.through)} does not exist: the image has ${layers.length} layer${layers.length === 1 ? '' : 's'} (${range})`);
  }
  const entries = (config.history ?? []).filter((h) => h.empty_layer !== true);
  const ac = new AbortController();
  const onAbort = (): void => ac.abort(opts.signal?.reason);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const pending: (Promise<LayerChangeset> | undefined)[] = [];
  // One failure stops the other reads; it is the one reported, not the cancellations it caused.
  let failure: { error: unknown } | undefined;
  let next = 0;
  const start = (): void => {
    if (next > last) return;
    const i = next++;
    const p = read(layers[i]!, ac.signal);
    p.catch((error: unknown) => {
      failure ??= { error };
      ac.abort();
    });
    pending[i] = p;
  };
  try {
    for (let k = 0; k < Math.max(1, opts.concurrency ?? 3); k++) start();
    const stack = new LayerStack();
    const reports: LayerReport[] = [];
    for (let i = 0; i <= last; i++) {
      const cs = await pending[i]!;
      pending[i] = undefined;
      start();
      const d = layers[i]!;
      const h = entries[i];
      const c = stack.push(cs);
      reports.push({
        index: i,
        digest: d.digest,
        diffId: config.rootfs.diff_ids[i],
        blobSize: d.size,
        createdBy: h?.created_by ?? '',
        created: h?.created,
        size: c.size,
        added: c.added,
        changed: c.changed,
        removed: c.removed,
      });
    }
    const s = stack.summary();
    return { id, layers: reports, totalSize: s.totalSize, wastedBytes: s.wastedBytes, efficiency: s.efficiency, wasted: s.wasted };
  } catch (e) {
    ac.abort();
    await Promise.allSettled(pending.filter((p) => p !== undefined));
    throw failure?.error ?? e;
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

/** An image in the store; layers the store knows only by where to fetch them are fetched into it, as a pull would. */
export async function analyzeStoredImage(store: Store, ref: string, opts: AnalyzeLayersOptions = {}): Promise<ImageLayerAnalysis> {
  const img = await store.loadImage(ref);
  const manifest = await img.manifest();
  const config = await img.config();
  const read: LayerReader = async (d, signal) => readLayerChanges(await store.openBlob(d.digest, { signal }), { signal });
  return analyzeLayers(manifest.config.digest, config, manifest.layers, read, opts);
}

/**
 * An image in a registry, its layers streamed through the analysis and verified against their
 * digests on the way; nothing is written anywhere. A layer whose download is cut off is read
 * again from its first byte, and only a layer that verified counts.
 */
export async function analyzeRemoteImage(refText: string, opts: DistributionOptions & AnalyzeLayersOptions = {}): Promise<ImageLayerAnalysis> {
  const ref = parseReference(refText);
  const client = new RegistryClient(opts);
  try {
    const r = await getConfig(client, ref, { signal: opts.signal });
    for (const d of r.manifest.layers) {
      if (d.urls !== undefined && d.urls.length > 0) throw new RegistryError(`${ref.toString()}: layer ${d.digest} is a foreign layer (hosted elsewhere), which is not supported`);
    }
    const read: LayerReader = (d, signal) => streamRemoteLayer(client, ref, d, signal);
    return await analyzeLayers(r.manifest.config.digest, r.config, r.manifest.layers, read, opts);
  } finally {
    client.close();
  }
}

async function streamRemoteLayer(client: RegistryClient, ref: Reference, desc: Descriptor, signal: AbortSignal): Promise<LayerChangeset> {
  let result: LayerChangeset | undefined;
  await pullBlob(client, ref, desc, {
    has: async () => false,
    write: () => {
      const feed = new PassThrough();
      const reading = readLayerChanges(feed, { signal });
      // A layer that fails to parse still downloads to its end, so the failure is the parser's
      // own error and not a cut connection that would be retried.
      reading.catch(() => feed.destroy());
      const stream = new Writable({
        write(chunk: Buffer, _enc, cb) {
          if (feed.destroyed || feed.writableEnded || feed.write(chunk)) {
            cb();
            return;
          }
          const go = (): void => {
            feed.off('drain', go);
            feed.off('close', go);
            cb();
          };
          feed.on('drain', go);
          feed.on('close', go);
        },
        // No destroy(): this stream destroys itself once finished, while the parser may still be
        // reading what it was given; a failed download reaches the feed through abort().
        final(cb) {
          if (!feed.destroyed) feed.end();
          cb();
        },
      });
      return {
        stream,
        commit: async () => {
          result = await reading;
        },
        abort: async () => {
          feed.destroy();
          await reading.catch(() => undefined);
        },
      };
    },
  }, { signal });
  if (result === undefined) throw new RegistryError(`${ref.toString()}: layer ${desc.digest} was not read`);
  return result;
}
