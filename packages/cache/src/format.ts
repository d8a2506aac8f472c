/**
 * tsbuild's cache format: an OCI artifact manifest whose config maps each step key to its result
 * and whose layers are the very blobs the images use (see README.md). Everything read here comes
 * from a remote cache and is hostile: sizes are bounded, every field is checked, and a record
 * that does not parse is dropped rather than trusted.
 */
import { TsbuildError } from '@tsbuild/errors';
import { isDigest, MediaType } from '@tsbuild/oci';
import type { Descriptor, Digest, HistoryEntry } from '@tsbuild/oci';

export const CACHE_ARTIFACT_TYPE = 'application/vnd.tsbuild.cache.v1';
export const CACHE_CONFIG_MEDIA_TYPE = 'application/vnd.tsbuild.cache.config.v1+json';
/** The manifest annotation of an image that carries its own cache (`--cache-to type=inline`). */
export const INLINE_ANNOTATION = 'dev.tsbuild.cache.v1';
/** A cache document larger than this is refused. */
export const MAX_CACHE_DOCUMENT = 16 * 1024 * 1024;
const MAX_RECORDS = 100_000;

/** A layer as the cache knows it: its diff_id and uncompressed size, and the compressed blob that carries it. */
export interface CacheLayer {
  diffId: Digest;
  size: number;
  blob: Descriptor;
}

/** One step's result: enough to reuse it without running it. */
export interface CacheEntry {
  /** The step's key (hex sha256 of its parent key and inputs). */
  key: string;
  /** The key of the step (or FROM) it builds on. */
  parent: string | undefined;
  /** History `created` of the step, so a rebuild from cache gives the same image id. */
  created: string;
  /** The history entry the step adds (for inspection: the builder derives it again from the Dockerfile). */
  history?: HistoryEntry;
  /** The container-config fields the step changes, with their new values (for inspection). */
  config?: Record<string, unknown>;
  layer?: CacheLayer;
}

/** The contents of a `RUN --mount=type=cache` directory, as a layer. */
export interface CacheMountEntry {
  /** The mount's name in the local cache directory (a hash of its id). */
  name: string;
  /** The id as written (or the target path when none was given), for messages. */
  id: string;
  layer: CacheLayer;
}

export interface CacheDocument {
  /** Format version. */
  tsbuildCache: 1;
  records: CacheEntry[];
  mounts: CacheMountEntry[];
}

function bad(where: string, what: string): TsbuildError {
  return new TsbuildError('BAD_CACHE', `${where}: ${what}`, { hint: 'the cache is ignored where it does not parse; export it again with --cache-to' });
}

const KEY_RE = /^[0-9a-f]{64}$/;

function descriptorOf(v: unknown): Descriptor | undefined {
  if (v === null || typeof v !== 'object') return undefined;
  const d = v as Record<string, unknown>;
  if (typeof d.mediaType !== 'string' || !isDigest(d.digest) || !Number.isSafeInteger(d.size) || (d.size as number) < 0) return undefined;
  if (![MediaType.OciLayer, MediaType.OciLayerGzip, MediaType.OciLayerZstd, MediaType.DockerLayer, MediaType.DockerLayerGzip].includes(d.mediaType as never)) return undefined;
  return { mediaType: d.mediaType, digest: d.digest, size: d.size as number };
}

function layerOf(v: unknown): CacheLayer | undefined {
  if (v === null || typeof v !== 'object') return undefined;
  const l = v as Record<string, unknown>;
  const blob = descriptorOf(l.blob);
  if (!isDigest(l.diffId) || !Number.isSafeInteger(l.size) || (l.size as number) < 0 || !blob) return undefined;
  return { diffId: l.diffId, size: l.size as number, blob };
}

/** Parses and checks a cache document; records that do not parse are left out. */
export function parseCacheDocument(bytes: Buffer, where: string): CacheDocument {
  if (bytes.length > MAX_CACHE_DOCUMENT) throw bad(where, `the cache document is ${bytes.length} bytes, more than the ${MAX_CACHE_DOCUMENT} allowed`);
  let raw: unknown;
  try {
    raw = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw bad(where, `the cache document is not JSON: ${(e as Error).message}`);
  }
  return documentFrom(raw, where);
}

export function documentFrom(raw: unknown, where: string): CacheDocument {
  if (raw === null || typeof raw !== 'object') throw bad(where, 'the cache document is not a JSON object');
  const doc = raw as Record<string, unknown>;
  if (doc.tsbuildCache !== 1) throw bad(where, `unsupported cache format ${JSON.stringify(doc.tsbuildCache)}`);
  const records: CacheEntry[] = [];
  const rawRecords = Array.isArray(doc.records) ? doc.records.slice(0, MAX_RECORDS) : [];
  for (const r of rawRecords as unknown[]) {
    if (r === null || typeof r !== 'object') continue;
    const e = r as Record<string, unknown>;
    if (typeof e.key !== 'string' || !KEY_RE.test(e.key) || typeof e.created !== 'string' || Number.isNaN(Date.parse(e.created))) continue;
    if (e.parent !== undefined && (typeof e.parent !== 'string' || e.parent.length > 200)) continue;
    const entry: CacheEntry = { key: e.key, parent: e.parent as string | undefined, created: e.created };
    if (e.layer !== undefined) {
      const layer = layerOf(e.layer);
      if (!layer) continue;
      entry.layer = layer;
    }
    if (e.history !== null && typeof e.history === 'object') entry.history = e.history as HistoryEntry;
    if (e.config !== null && typeof e.config === 'object' && !Array.isArray(e.config)) entry.config = e.config as Record<string, unknown>;
    records.push(entry);
  }
  const mounts: CacheMountEntry[] = [];
  for (const m of (Array.isArray(doc.mounts) ? doc.mounts.slice(0, 1000) : []) as unknown[]) {
    if (m === null || typeof m !== 'object') continue;
    const e = m as Record<string, unknown>;
    const layer = layerOf(e.layer);
    if (typeof e.name !== 'string' || !/^[0-9a-f]{32}$/.test(e.name) || typeof e.id !== 'string' || !layer) continue;
    mounts.push({ name: e.name, id: e.id.slice(0, 4096), layer });
  }
  return { tsbuildCache: 1, records, mounts };
}

/** The document as stored: records and mounts sorted, so the same cache gives the same bytes. */
export function serializeCacheDocument(doc: CacheDocument): Buffer {
  const records = [...doc.records].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const mounts = [...doc.mounts].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return Buffer.from(JSON.stringify({ tsbuildCache: 1, records, mounts }));
}

/** Every blob a document names, each once, in a stable order. */
export function documentBlobs(doc: CacheDocument): Descriptor[] {
  const seen = new Map<string, Descriptor>();
  for (const l of [...doc.records.map((r) => r.layer), ...doc.mounts.map((m) => m.layer)]) {
    if (l && !seen.has(l.blob.digest)) seen.set(l.blob.digest, l.blob);
  }
  return [...seen.values()].sort((a, b) => (a.digest < b.digest ? -1 : 1));
}
