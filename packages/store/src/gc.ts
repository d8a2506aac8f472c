import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { MAX_MANIFEST_SIZE, isDigest, isIndexMediaType, isManifestMediaType, parseIndex, parseManifest, sniffMediaType } from '@tsbuild/oci';
import type { Digest } from '@tsbuild/oci';
import { errnoCode, fsyncDir } from './fsutil.ts';
import type { Store } from './store.ts';

export interface GcOptions {
  /** Extra blobs (and, for manifests/indexes, everything they reference) to keep. */
  keep?: Digest[];
  /** Blobs younger than this are kept: they may belong to a build that has not tagged yet. Default 0. */
  gracePeriodMs?: number;
  /** Temp files older than this are leftovers of dead processes. Default one hour. */
  tempMaxAgeMs?: number;
  signal?: AbortSignal;
}

export interface GcResult {
  removedBlobs: number;
  freedBytes: number;
  removedTempFiles: number;
}

/**
 * Mark and sweep. Roots: every index.json entry, `keep`, every meta entry's declared roots.
 * Compressed variants the store made of a reachable diff_id are reachable too, so a second push
 * does not compress again. Runs under the index lock so no tag changes under it.
 */
export async function collectGarbage(store: Store, opts: GcOptions): Promise<GcResult> {
  const reachable = new Set<Digest>();
  const queue: { digest: Digest; mediaType?: string }[] = [];
  for (const m of (await store.readIndex()).manifests) queue.push({ digest: m.digest, mediaType: m.mediaType });
  for (const d of opts.keep ?? []) queue.push({ digest: d });
  for (const ns of await store.metaNamespaces()) {
    if (ns === 'blobmap') continue;
    for (const d of await store.meta(ns).roots()) queue.push({ digest: d });
  }

  const visit = async (digest: Digest, mediaType: string | undefined): Promise<void> => {
    if (reachable.has(digest)) return;
    reachable.add(digest);
    if (!(await store.hasBlob(digest))) return;
    let mt = mediaType;
    let bytes: Buffer | undefined;
    if (!isManifestMediaType(mt) && !isIndexMediaType(mt)) {
      if (mt !== undefined) return;
      // A blob of unknown type is looked into only when it could be a manifest or an index.
      if ((await stat(store.blobPath(digest))).size > MAX_MANIFEST_SIZE) return;
      bytes = await store.readBlob(digest);
      mt = sniffMediaType(bytes);
    }
    if (isIndexMediaType(mt)) {
      for (const m of parseIndex(bytes ?? (await store.readBlob(digest)), { source: digest }).manifests) queue.push({ digest: m.digest, mediaType: m.mediaType });
    } else if (isManifestMediaType(mt)) {
      const m = parseManifest(bytes ?? (await store.readBlob(digest)), { source: digest });
      queue.push({ digest: m.config.digest, mediaType: m.config.mediaType });
      for (const l of m.layers) queue.push({ digest: l.digest, mediaType: l.mediaType });
    }
  };
  for (let item = queue.shift(); item; item = queue.shift()) {
    opts.signal?.throwIfAborted();
    await visit(item.digest, item.mediaType);
  }

  const map = store.blobMap();
  const mapKeys = await map.keys();
  for (const key of mapKeys) {
    const [algo, ...rest] = key.split(':');
    const diffId = rest.join(':');
    if ((algo === 'gzip' || algo === 'zstd') && isDigest(diffId) && reachable.has(diffId)) {
      const desc = (await map.get(key)) as { digest?: unknown } | undefined;
      if (isDigest(desc?.digest)) reachable.add(desc.digest);
    }
  }

  const result: GcResult = { removedBlobs: 0, freedBytes: 0, removedTempFiles: 0 };
  const now = Date.now();
  const grace = opts.gracePeriodMs ?? 0;
  for (const name of await readdir(store.blobsDir)) {
    const digest = `sha256:${name}`;
    if (isDigest(digest) && reachable.has(digest)) continue;
    const p = join(store.blobsDir, name);
    try {
      const s = await stat(p);
      if (grace > 0 && now - s.mtimeMs < grace) continue;
      await rm(p, { recursive: true, force: true });
      result.removedBlobs++;
      result.freedBytes += s.size;
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
    }
  }
  if (result.removedBlobs > 0) await fsyncDir(store.blobsDir);

  for (const key of mapKeys) {
    const v = await map.get(key);
    const target = key.startsWith('diffid:') ? key.slice('diffid:'.length) : (v as { digest?: unknown } | undefined)?.digest;
    if (!isDigest(target) || !(await store.available(target))) await map.delete(key);
  }

  const maxAge = opts.tempMaxAgeMs ?? 3600_000;
  for (const name of await readdir(store.ingestDir)) {
    const p = join(store.ingestDir, name);
    try {
      if (now - (await stat(p)).mtimeMs > maxAge) {
        await rm(p, { recursive: true, force: true });
        result.removedTempFiles++;
      }
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
    }
  }
  return result;
}
