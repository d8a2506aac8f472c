/**
 * The build cache beyond one machine: reading the caches `--cache-from` names (each a map from
 * step key to result), and writing what a build did to the caches `--cache-to` names, with the
 * layers the image uses and, with `mounts=true`, the contents of its cache mounts.
 */
import { readdir, rm } from 'node:fs/promises';
import { TsbuildError } from '@tsbuild/errors';
import { apply, compress, decompress, diff } from '@tsbuild/layer';
import { layerCompression } from '@tsbuild/oci';
import type { Digest, HistoryEntry } from '@tsbuild/oci';
import type { ClientOptions } from '@tsbuild/registry';
import type { Store } from '@tsbuild/store';
import { loadGha, loadLocal, loadRegistry, saveGha, saveLocal, saveRegistry } from './backends.ts';
import type { BackendContext, LoadedDocument } from './backends.ts';
import type { CacheDocument, CacheEntry, CacheLayer, CacheMountEntry } from './format.ts';
import type { GhaCacheClient } from './gha.ts';
import { recordOrigins } from './origins.ts';
import type { Origin } from './origins.ts';
import { describeCache } from './spec.ts';
import type { CacheExport, CacheImport } from './spec.ts';

export interface RemoteCacheOptions {
  store: Store;
  registry?: ClientOptions;
  gha?: GhaCacheClient | undefined;
  signal?: AbortSignal | undefined;
  /** Told about what was left alone: an unreadable cache, an oversized mount. */
  warn?: (message: string) => void;
}

function context(o: RemoteCacheOptions): BackendContext {
  return { store: o.store, registry: o.registry ?? {}, gha: o.gha, signal: o.signal };
}

/** A step result found in a remote cache. */
export interface RemoteHit {
  entry: CacheEntry;
  /** Which `--cache-from` had it. */
  source: string;
}

interface Loaded extends LoadedDocument {
  source: string;
  records: Map<string, CacheEntry>;
  mounts: Map<string, CacheMountEntry>;
}

/** The caches a build reads, in `--cache-from` order: for each step the first that has it wins. */
export class RemoteCaches {
  private constructor(
    private readonly caches: Loaded[],
    private readonly store: Store,
  ) {}

  static empty(store: Store): RemoteCaches {
    return new RemoteCaches([], store);
  }

  /** Reads every cache; one that is missing or cannot be read is a warning, and the build goes on without it. */
  static async load(specs: readonly CacheImport[], o: RemoteCacheOptions): Promise<RemoteCaches> {
    const ctx = context(o);
    const loaded = await Promise.all(
      specs.map(async (spec): Promise<Loaded | undefined> => {
        const source = describeCache(spec);
        try {
          const got = spec.type === 'registry' ? await loadRegistry(spec.ref, ctx) : spec.type === 'local' ? await loadLocal(spec.src, spec.tag) : await loadGha(spec.scope, ctx);
          if (!got) {
            o.warn?.(`cache ${source} not found: building without it`);
            return undefined;
          }
          return {
            ...got,
            source,
            records: new Map(got.doc.records.map((r) => [r.key, r])),
            mounts: new Map(got.doc.mounts.map((m) => [m.name, m])),
          };
        } catch (e) {
          if (o.signal?.aborted) throw e;
          o.warn?.(`cache ${source} cannot be read, building without it: ${e instanceof Error ? e.message : String(e)}`);
          return undefined;
        }
      }),
    );
    return new RemoteCaches(loaded.filter((l): l is Loaded => l !== undefined), o.store);
  }

  get size(): number {
    return this.caches.length;
  }

  /**
   * The first cache's result for `key`, made usable: its layer becomes a lazy blob of the store
   * (the compressed blob is known to be `diffId` and where it is). `skip` names keys found to lie.
   */
  async lookup(key: string, skip: ReadonlySet<string> = new Set()): Promise<RemoteHit | undefined> {
    if (skip.has(key)) return undefined;
    for (const c of this.caches) {
      const entry = c.records.get(key);
      if (!entry) continue;
      if (entry.layer) await adopt(this.store, entry.layer, c.origin);
      return { entry, source: c.source };
    }
    return undefined;
  }

  /** The first cache's contents of the cache mount `name`. */
  async mount(name: string): Promise<{ entry: CacheMountEntry; source: string } | undefined> {
    for (const c of this.caches) {
      const entry = c.mounts.get(name);
      if (!entry) continue;
      await adopt(this.store, entry.layer, c.origin);
      return { entry, source: c.source };
    }
    return undefined;
  }
}

/** Makes a cached layer a lazy blob of the store: nothing is downloaded until something reads it. */
async function adopt(store: Store, layer: CacheLayer, origin: Origin): Promise<void> {
  const algo = layerCompression(layer.blob.mediaType);
  if (algo !== 'none') await store.recordCompressed(layer.diffId, algo, layer.blob);
  await recordOrigins(store, [layer.blob], origin);
}

/** Fills an empty cache-mount directory from a cached layer; a layer that lies leaves it empty. */
export async function restoreMount(store: Store, entry: CacheMountEntry, dir: string, o: { signal?: AbortSignal | undefined; warn?: (m: string) => void } = {}): Promise<boolean> {
  try {
    const stats = await apply(decompress(await store.openBlob(entry.layer.blob.digest, { signal: o.signal })), dir, { signal: o.signal });
    if (stats.diffId !== entry.layer.diffId) throw new TsbuildError('CACHE_MISMATCH', `it unpacks to ${stats.diffId}, not the ${entry.layer.diffId} the cache recorded`);
    return true;
  } catch (e) {
    if (o.signal?.aborted) throw e;
    o.warn?.(`cache mount "${entry.id}" was not restored: ${e instanceof Error ? e.message : String(e)}`);
    for (const n of await readdir(dir).catch(() => [] as string[])) await rm(`${dir}/${n}`, { recursive: true, force: true });
    return false;
  }
}

/** What a build did, as the cache exporter needs it. */
export interface BuildRecord {
  key: string;
  parent: string | undefined;
  created: string;
  history?: HistoryEntry;
  config?: Record<string, unknown>;
  layer?: { diffId: Digest; size: number };
}

export interface ExportInput {
  /** Every step the build ran or found in a cache. */
  records: readonly BuildRecord[];
  /** The key of the final image's last step: mode=min exports its chain of parents. */
  finalKey: string;
  /** Cache mounts the build used: name (directory) → id as written, and where the directory is. */
  mounts: readonly { name: string; id: string; dir: string }[];
  sourceDateEpoch?: number | undefined;
}

export interface ExportReport {
  target: string;
  records: number;
  mounts: number;
  /** Blobs sent, and blobs the destination had already (or got by a cross-repository mount). */
  uploaded: number;
  skipped: number;
}

/** The records of the image's own steps (mode=min), or of every step (mode=max). */
function selectRecords(input: ExportInput, mode: 'min' | 'max'): BuildRecord[] {
  if (mode === 'max') return [...input.records];
  const byKey = new Map(input.records.map((r) => [r.key, r]));
  const out: BuildRecord[] = [];
  for (let r = byKey.get(input.finalKey); r; r = r.parent !== undefined ? byKey.get(r.parent) : undefined) {
    out.push(r);
    byKey.delete(r.key);
  }
  return out;
}

async function compressedLayer(store: Store, layer: { diffId: Digest; size: number }, algo: 'gzip' | 'zstd', signal: AbortSignal | undefined): Promise<CacheLayer> {
  const blob = await store.compressedBlob(layer.diffId, algo, (src, sink) => compress(src, sink, { algorithm: algo, signal }).then(() => {}), { signal });
  return { diffId: layer.diffId, size: layer.size, blob };
}

/** Builds the document a cache export writes; layers are compressed once and shared with pushes. */
export async function cacheDocument(
  input: ExportInput,
  spec: Pick<CacheExport, 'mode' | 'compression' | 'mounts' | 'mountsMaxSize'>,
  o: RemoteCacheOptions,
): Promise<CacheDocument> {
  const records: CacheEntry[] = [];
  for (const r of selectRecords(input, spec.mode)) {
    const e: CacheEntry = { key: r.key, parent: r.parent, created: r.created };
    if (r.history) e.history = r.history;
    if (r.config && Object.keys(r.config).length > 0) e.config = r.config;
    if (r.layer) e.layer = await compressedLayer(o.store, r.layer, spec.compression, o.signal);
    records.push(e);
  }
  const mounts: CacheMountEntry[] = [];
  if (spec.mounts) {
    for (const m of input.mounts) {
      const layer = await mountLayer(o.store, m.dir, input.sourceDateEpoch, o.signal);
      if (layer.size <= 1024) continue; // an empty tar: nothing worth carrying
      if (spec.mountsMaxSize !== undefined && layer.size > spec.mountsMaxSize) {
        o.warn?.(`cache mount "${m.id}" is ${mib(layer.size)}, more than mounts-max-size (${mib(spec.mountsMaxSize)}): left out of the cache`);
        continue;
      }
      mounts.push({ name: m.name, id: m.id, layer: await compressedLayer(o.store, layer, spec.compression, o.signal) });
    }
  }
  return { tsbuildCache: 1, records, mounts };
}

function mib(n: number): string {
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** A cache mount's contents as a deterministic layer in the store (sorted, mtimes clamped like image layers). */
async function mountLayer(store: Store, dir: string, epoch: number | undefined, signal: AbortSignal | undefined): Promise<{ diffId: Digest; size: number }> {
  const w = store.blobWriter();
  try {
    const r = await diff(dir, w.stream, { signal, sourceDateEpoch: epoch });
    await w.commit({ digest: r.diffId, size: r.size });
    return r;
  } catch (e) {
    await w.abort().catch(() => {});
    throw e;
  }
}

/** Writes the build's cache to every `--cache-to` but inline (which travels with the pushed image). */
export async function exportCaches(specs: readonly CacheExport[], input: ExportInput, o: RemoteCacheOptions): Promise<ExportReport[]> {
  const ctx = context(o);
  const reports: ExportReport[] = [];
  for (const spec of specs) {
    if (spec.type === 'inline') continue;
    const target = describeCache(spec);
    try {
      const doc = await cacheDocument(input, spec, o);
      const counts: { uploaded: number; existed: number; mounted?: number } =
        spec.type === 'registry' ? await saveRegistry(spec.ref, doc, ctx) : spec.type === 'local' ? await saveLocal(spec.dest, spec.tag, doc, ctx) : await saveGha(spec.scope, doc, ctx);
      const skipped = counts.existed + (counts.mounted ?? 0);
      reports.push({ target, records: doc.records.length, mounts: doc.mounts.length, uploaded: counts.uploaded, skipped });
    } catch (e) {
      if (o.signal?.aborted) throw e;
      const message = `exporting the cache to ${target} failed: ${e instanceof Error ? e.message : String(e)}`;
      if (!spec.ignoreError) {
        throw new TsbuildError('CACHE_EXPORT', message, { cause: e, hint: 'add ignore-error=true to --cache-to to make this a warning' });
      }
      o.warn?.(message);
    }
  }
  return reports;
}
