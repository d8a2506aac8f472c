import { homedir } from 'node:os';
import { statSync } from 'node:fs';
import { mkdir, open, readFile, readdir, stat } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TsbuildError, UsageError } from '@tsbuild/errors';
import {
  ANNOTATION_REF_NAME,

  buildIndex,
  canonicalJson,
  digestHex,
  isIndexMediaType,
  isManifestMediaType,
  layerMediaType,
  parseDigest,
  parseIndex,
  sha256,
  sniffMediaType,
  formatPlatform,
  hostPlatform,
  platformMatches,
  MAX_JSON_BLOB_SIZE,
} from '@tsbuild/oci';
import type { Descriptor, Digest, Image, Index, Platform } from '@tsbuild/oci';
import { FileBlobWriter, checkExpected, touch } from './blob-writer.ts';
import type { BlobWriter, Expected } from './blob-writer.ts';
import { errnoCode, exists, tempName, writeFileAtomic } from './fsutil.ts';
import { withLock } from './lock.ts';
import type { LockOptions } from './lock.ts';
import { FileMetaStore } from './meta.ts';
import type { MetaOptions, MetaStore } from './meta.ts';
import { normalizeName, parseRef } from './refs.ts';
import { StoreImage } from './image.ts';
import { collectGarbage } from './gc.ts';
import type { GcOptions, GcResult } from './gc.ts';

export interface RootOptions {
  root?: string;
  env?: Record<string, string | undefined>;
  uid?: number;
}

/** Where the store lives: explicit root, then $TSBUILD_ROOT, then the system or per-user default. */
export function resolveRoot(opts: RootOptions = {}): string {
  const env = opts.env ?? process.env;
  if (opts.root) return resolvePath(opts.root);
  if (env.TSBUILD_ROOT) return resolvePath(env.TSBUILD_ROOT);
  const uid = opts.uid ?? process.getuid?.() ?? -1;
  if (uid === 0) return '/var/lib/tsbuild';
  const data = env.XDG_DATA_HOME || join(env.HOME || homedir(), '.local', 'share');
  return resolvePath(data, 'tsbuild');
}

export interface OpenStoreOptions {
  root?: string;
  /** How long to wait for another tsbuild process's lock before failing. */
  lockTimeoutMs?: number;
  signal?: AbortSignal;
}

export interface ImageEntry {
  name: string;
  descriptor: Descriptor;
}

export type CompressionAlgo = 'gzip' | 'zstd';

/** Streams the uncompressed tar (`src`) compressed into `sink`, ending `sink` when done. */
export type CompressFn = (src: Readable, sink: Writable) => Promise<void>;

const LAYOUT_VERSION = '1.0.0';
const ID_PREFIX_RE = /^(?:sha256:)?([0-9a-f]{12,64})$/;
/** Internal namespace for diff_id ⇄ compressed-blob mappings. */
const BLOBMAP_NS = 'blobmap';

/**
 * Brings blobs the store does not hold from where they are known to be: a registry an image was
 * pulled from lazily, a remote build cache. The store asks it when a blob it is asked to read is
 * missing; what it writes goes through the store's verified ingest like any other blob.
 */
export interface BlobFetcher {
  /** Whether `digest` can be fetched, without fetching it. */
  knows(digest: Digest): Promise<boolean>;
  /** Writes `digest` into the store; false when it is not known. A blob that does not match its digest is an error. */
  fetch(digest: Digest, opts: { signal?: AbortSignal | undefined }): Promise<boolean>;
}

/**
 * A local OCI image layout (`<root>/oci`) plus tsbuild's own areas beside it: `ingest/` for temp
 * files (same filesystem, so renames are atomic), `locks/`, and `meta/<namespace>/`.
 */
export class Store {
  readonly root: string;
  readonly layoutDir: string;
  readonly blobsDir: string;
  readonly ingestDir: string;
  readonly locksDir: string;
  readonly metaDir: string;
  private readonly indexFile: string;
  private readonly indexLock: string;
  private readonly lockOpts: LockOptions;
  private fetcher: BlobFetcher | undefined;
  private readonly fetching = new Map<Digest, Promise<boolean>>();

  constructor(root: string, opts: OpenStoreOptions = {}) {
    this.root = root;
    this.layoutDir = join(root, 'oci');
    this.blobsDir = join(this.layoutDir, 'blobs', 'sha256');
    this.ingestDir = join(root, 'ingest');
    this.locksDir = join(root, 'locks');
    this.metaDir = join(root, 'meta');
    this.indexFile = join(this.layoutDir, 'index.json');
    this.indexLock = join(this.locksDir, 'index.lock');
    this.lockOpts = {};
    if (opts.lockTimeoutMs !== undefined) this.lockOpts.timeoutMs = opts.lockTimeoutMs;
    if (opts.signal !== undefined) this.lockOpts.signal = opts.signal;
  }

  /** @internal creates the layout if missing and checks it if present. */
  async init(): Promise<void> {
    for (const d of [this.blobsDir, this.ingestDir, this.locksDir, this.metaDir]) await mkdir(d, { recursive: true });
    const layoutFile = join(this.layoutDir, 'oci-layout');
    let text: string | undefined;
    try {
      text = await readFile(layoutFile, 'utf8');
    } catch (e) {
      if (errnoCode(e) !== 'ENOENT') throw e;
    }
    if (text === undefined) {
      await writeFileAtomic(layoutFile, JSON.stringify({ imageLayoutVersion: LAYOUT_VERSION }), this.ingestDir);
    } else {
      let version: unknown;
      try {
        version = (JSON.parse(text) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
      } catch {
        version = undefined;
      }
      if (version !== LAYOUT_VERSION) {
        throw new TsbuildError('BAD_STORE', `${layoutFile} is not an OCI image layout version ${LAYOUT_VERSION}`);
      }
    }
    if (!(await exists(this.indexFile))) {
      await withLock(
        this.indexLock,
        async () => {
          if (!(await exists(this.indexFile))) await this.writeIndex(buildIndex([]));
        },
        this.lockOpts,
      );
    }
  }

  // ---- blobs ----

  blobPath(d: Digest): string {
    return join(this.blobsDir, digestHex(parseDigest(d)));
  }

  blobWriter(): BlobWriter {
    return new FileBlobWriter(tempName(this.ingestDir, 'blob'), (d) => this.blobPath(d));
  }

  /** Stores bytes or a stream; a blob already present is not written again. */
  async writeBlob(data: Uint8Array | Readable, expected?: Expected, opts: { signal?: AbortSignal } = {}): Promise<{ digest: Digest; size: number }> {
    if (data instanceof Uint8Array) {
      const got = { digest: sha256(data), size: data.byteLength };
      checkExpected(got, expected);
      if (await this.hasBlob(got.digest)) {
        await touch(this.blobPath(got.digest));
        return got;
      }
    }
    const w = this.blobWriter();
    try {
      const src = data instanceof Uint8Array ? Readable.from([Buffer.from(data.buffer, data.byteOffset, data.byteLength)]) : data;
      await pipeline(src, w.stream, { signal: opts.signal });
    } catch (e) {
      await w.abort();
      throw e;
    }
    return w.commit(expected);
  }

  /** Serialises a manifest, index or config canonically and stores it. */
  async putJson(mediaType: string, value: object): Promise<Descriptor> {
    const bytes = canonicalJson(value);
    const { digest, size } = await this.writeBlob(bytes);
    return { mediaType, digest, size };
  }

  async hasBlob(d: Digest): Promise<boolean> {
    // One stat, asked for every cached step: synchronous, it takes microseconds, not a thread-pool round trip.
    const st = statSync(this.blobPath(d), { throwIfNoEntry: false });
    return st?.isFile() === true;
  }

  /** Lets missing blobs be fetched from where they are known to be (lazy pulls, remote caches). */
  setFetcher(fetcher: BlobFetcher | undefined): void {
    this.fetcher = fetcher;
  }

  /** Whether the blob is here or can be fetched on first read. */
  async available(d: Digest): Promise<boolean> {
    return (await this.hasBlob(d)) || ((await this.fetcher?.knows(d)) ?? false);
  }

  /** Makes a blob local if it is not (fetching it once, however many readers ask at the same time). */
  async ensureBlob(d: Digest, opts: { signal?: AbortSignal | undefined } = {}): Promise<boolean> {
    if (await this.hasBlob(d)) return true;
    const fetcher = this.fetcher;
    if (!fetcher) return false;
    let p = this.fetching.get(d);
    if (!p) {
      p = fetcher.fetch(d, opts).finally(() => this.fetching.delete(d));
      this.fetching.set(d, p);
    }
    return p;
  }

  async openBlob(d: Digest, opts: { signal?: AbortSignal | undefined } = {}): Promise<Readable> {
    await this.ensureBlob(d, opts);
    const p = this.blobPath(d);
    try {
      const fh = await open(p, 'r');
      return fh.createReadStream({ highWaterMark: 1 << 20 });
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') throw new TsbuildError('BLOB_NOT_FOUND', `blob ${d} is not in the store at ${this.layoutDir}`, { cause: e });
      throw e;
    }
  }

  /** Reads a small (JSON) blob whole and checks its content against its digest. */
  async readBlob(d: Digest, opts: { maxSize?: number } = {}): Promise<Buffer> {
    const max = opts.maxSize ?? MAX_JSON_BLOB_SIZE;
    await this.ensureBlob(d);
    const p = this.blobPath(d);
    let buf: Buffer;
    try {
      const s = await stat(p);
      if (s.size > max) throw new TsbuildError('BLOB_TOO_LARGE', `blob ${d} is ${s.size} bytes, more than the ${max} allowed for a manifest or config`);
      buf = await readFile(p);
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') throw new TsbuildError('BLOB_NOT_FOUND', `blob ${d} is not in the store at ${this.layoutDir}`, { cause: e });
      throw e;
    }
    const actual = sha256(buf);
    if (actual !== d) throw new TsbuildError('CORRUPT_BLOB', `blob ${d} in the store is corrupt: its content hashes to ${actual}`, { hint: `remove ${p}` });
    return buf;
  }

  // ---- index.json and tags ----

  async readIndex(): Promise<Index> {
    return parseIndex(await readFile(this.indexFile), { source: this.indexFile });
  }

  private async writeIndex(idx: Index): Promise<void> {
    await writeFileAtomic(this.indexFile, canonicalJson(idx), this.ingestDir);
  }

  /** Read-modify-write of index.json under the store-wide lock. */
  async updateIndex<T>(fn: (manifests: Descriptor[]) => { manifests: Descriptor[]; result: T }): Promise<T> {
    return withLock(
      this.indexLock,
      async () => {
        const idx = await this.readIndex();
        const { manifests, result } = fn(idx.manifests);
        if (manifests !== idx.manifests) await this.writeIndex({ ...idx, manifests });
        return result;
      },
      this.lockOpts,
    );
  }

  /** Points `name` (`:latest` added when untagged) at a manifest or index already in the store. */
  async tag(name: string, desc: Descriptor): Promise<string> {
    const ref = normalizeName(name);
    if (!isManifestMediaType(desc.mediaType) && !isIndexMediaType(desc.mediaType)) {
      throw new TsbuildError('BAD_TAG', `cannot tag ${ref}: ${desc.digest} has media type ${desc.mediaType}, not a manifest or index`);
    }
    const entry: Descriptor = { ...desc, annotations: { ...desc.annotations, [ANNOTATION_REF_NAME]: ref } };
    // A rebuild that changed nothing re-tags the same manifest: leave index.json alone then.
    const current = (await this.readIndex()).manifests.find((m) => m.annotations?.[ANNOTATION_REF_NAME] === ref);
    if (current && current.digest === desc.digest && current.mediaType === desc.mediaType) return ref;
    // The presence check is made under the lock gc also holds, so gc cannot remove the manifest
    // between the check and the write.
    await withLock(
      this.indexLock,
      async () => {
        if (!(await this.hasBlob(desc.digest))) {
          throw new TsbuildError('BLOB_NOT_FOUND', `cannot tag ${ref}: manifest ${desc.digest} is not in the store`);
        }
        const idx = await this.readIndex();
        await this.writeIndex({ ...idx, manifests: [...idx.manifests.filter((m) => m.annotations?.[ANNOTATION_REF_NAME] !== ref), entry] });
      },
      this.lockOpts,
    );
    return ref;
  }

  async untag(name: string): Promise<boolean> {
    const ref = normalizeName(name);
    return this.updateIndex((ms) => {
      const kept = ms.filter((m) => m.annotations?.[ANNOTATION_REF_NAME] !== ref);
      return kept.length === ms.length ? { manifests: ms, result: false } : { manifests: kept, result: true };
    });
  }

  async listImages(): Promise<ImageEntry[]> {
    const out: ImageEntry[] = [];
    for (const m of (await this.readIndex()).manifests) {
      const name = m.annotations?.[ANNOTATION_REF_NAME];
      if (name !== undefined) out.push({ name, descriptor: withoutRefName(m) });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * Finds an image by tag, `name@sha256:…`, full manifest digest, or an unambiguous hex prefix
   * (12+ characters) of a manifest or config digest, like a docker image id.
   */
  async resolve(ref: string): Promise<Descriptor | undefined> {
    const idx = await this.readIndex();
    if (ref.includes('@')) return this.byDigest(idx, parseRef(ref).digest!);
    if (ref.startsWith('sha256:') && ref.length === 71) return this.byDigest(idx, parseDigest(ref));
    const prefix = ID_PREFIX_RE.exec(ref)?.[1];
    if (prefix === undefined || !ref.startsWith('sha256:')) {
      let name: string | undefined;
      try {
        name = normalizeName(ref);
      } catch (e) {
        if (prefix === undefined) throw e;
      }
      const hit = idx.manifests.find((m) => name !== undefined && m.annotations?.[ANNOTATION_REF_NAME] === name);
      if (hit) return withoutRefName(hit);
    }
    if (prefix === undefined) return undefined;
    const found = new Map<Digest, Descriptor>();
    for (const m of idx.manifests) {
      if (digestHex(m.digest).startsWith(prefix)) found.set(m.digest, withoutRefName(m));
      else if (isManifestMediaType(m.mediaType)) {
        const config = await this.configDigestOf(m.digest);
        if (config !== undefined && digestHex(config).startsWith(prefix)) found.set(m.digest, withoutRefName(m));
      }
    }
    if (found.size > 1) {
      throw new UsageError(`image id prefix ${ref} is ambiguous: it matches ${[...found.keys()].join(', ')}`, { hint: 'give more characters' });
    }
    return found.values().next().value;
  }

  private async configDigestOf(manifest: Digest): Promise<Digest | undefined> {
    try {
      const m = JSON.parse((await this.readBlob(manifest)).toString('utf8')) as { config?: { digest?: unknown } };
      const d = m.config?.digest;
      return typeof d === 'string' && /^sha256:[0-9a-f]{64}$/.test(d) ? (d as Digest) : undefined;
    } catch (e) {
      if (e instanceof TsbuildError && e.code === 'BLOB_NOT_FOUND') return undefined;
      throw e;
    }
  }

  private async byDigest(idx: Index, d: Digest): Promise<Descriptor | undefined> {
    const hit = idx.manifests.find((m) => m.digest === d);
    if (hit) return withoutRefName(hit);
    if (!(await this.hasBlob(d))) return undefined;
    const bytes = await this.readBlob(d);
    const mediaType = sniffMediaType(bytes);
    if (!isManifestMediaType(mediaType) && !isIndexMediaType(mediaType)) return undefined;
    return { mediaType: mediaType!, digest: d, size: bytes.length };
  }

  /** The image a reference names; an index is narrowed to the platform (the host's by default). */
  async loadImage(ref: string, opts: { platform?: Platform } = {}): Promise<Image & { descriptor(): Promise<Descriptor> }> {
    const desc = await this.resolve(ref);
    if (!desc) throw new UsageError(`no image ${JSON.stringify(ref)} in the store at ${this.root}`, { hint: 'see the images the store holds with `tsbuild images`' });
    return this.imageAt(desc, opts.platform ?? hostPlatform(), ref);
  }

  private async imageAt(desc: Descriptor, platform: Platform, ref: string): Promise<StoreImage> {
    if (isIndexMediaType(desc.mediaType)) {
      const idx = parseIndex(await this.readBlob(desc.digest), { source: desc.digest });
      const match = idx.manifests.find(
        (m) => platformMatches(m.platform, platform),
      );
      if (!match) {
        const have = idx.manifests.map((m) => (m.platform ? formatPlatform(m.platform) : '?')).join(', ');
        throw new UsageError(`image ${ref} has no manifest for ${formatPlatform(platform)} (it has: ${have || 'none'})`);
      }
      return this.imageAt(match, platform, ref);
    }
    if (!isManifestMediaType(desc.mediaType)) throw new TsbuildError('BAD_MANIFEST', `${ref} (${desc.digest}) has media type ${desc.mediaType}, not an image manifest`);
    return new StoreImage(this, desc);
  }

  /**
   * Removes a tag; given a digest or id prefix instead, removes every tag of that image. Blobs go
   * at the next gc. Returns the names removed.
   */
  async removeImage(ref: string): Promise<string[]> {
    let byName: string | undefined;
    try {
      if (!ref.includes('@')) byName = normalizeName(ref);
    } catch {
      byName = undefined;
    }
    const idx = await this.readIndex();
    let digest: Digest | undefined;
    if (byName === undefined || !idx.manifests.some((m) => m.annotations?.[ANNOTATION_REF_NAME] === byName)) {
      digest = (await this.resolve(ref))?.digest;
      if (digest === undefined) throw new UsageError(`no image ${JSON.stringify(ref)} in the store at ${this.root}`);
    }
    return this.updateIndex((ms) => {
      const gone = ms.filter((m) => (digest !== undefined ? m.digest === digest : m.annotations?.[ANNOTATION_REF_NAME] === byName));
      const names = gone.map((m) => m.annotations?.[ANNOTATION_REF_NAME]).filter((n): n is string => n !== undefined);
      return { manifests: gone.length === 0 ? ms : ms.filter((m) => !gone.includes(m)), result: names };
    });
  }

  // ---- metadata and compressed variants ----

  meta(namespace: string, opts: MetaOptions = {}): MetaStore {
    return new FileMetaStore(this.metaDir, namespace, this.ingestDir, this.locksDir, this.lockOpts, opts);
  }

  /** @internal */
  blobMap(): FileMetaStore {
    return new FileMetaStore(this.metaDir, BLOBMAP_NS, this.ingestDir, this.locksDir, this.lockOpts);
  }

  /**
   * The `algo`-compressed blob of the uncompressed layer `diffId`, made at most once: the first
   * call streams the stored tar through `make` into a new blob and records the mapping after the
   * blob is committed; later calls (in any process) return the recorded descriptor.
   */
  async compressedBlob(diffId: Digest, algo: CompressionAlgo, make: CompressFn, opts: { signal?: AbortSignal } = {}): Promise<Descriptor> {
    const map = this.blobMap();
    const key = `${algo}:${diffId}`;
    const cached = await this.cachedCompressed(key);
    if (cached) return cached;
    const lock = join(this.locksDir, `compress-${algo}-${digestHex(diffId)}.lock`);
    return withLock(
      lock,
      async () => {
        const again = await this.cachedCompressed(key);
        if (again) return again;
        const src = await this.openBlob(diffId);
        const w = this.blobWriter();
        try {
          await make(src, w.stream);
        } catch (e) {
          src.destroy();
          await w.abort();
          throw e;
        }
        src.destroy();
        opts.signal?.throwIfAborted();
        const { digest, size } = await w.commit();
        const desc: Descriptor = { mediaType: layerMediaType(algo), digest, size };
        await map.set(key, desc);
        await map.set(`diffid:${digest}`, diffId);
        return desc;
      },
      { ...this.lockOpts, signal: opts.signal },
    );
  }

  private async cachedCompressed(key: string): Promise<Descriptor | undefined> {
    const v = (await this.blobMap().get(key)) as Descriptor | undefined;
    if (v && typeof v.digest === 'string' && (await this.available(v.digest))) return v;
    return undefined;
  }

  /** A recorded `algo`-compressed variant of `diffId`, here or fetchable, without making one. */
  async compressedVariant(diffId: Digest, algo: CompressionAlgo): Promise<Descriptor | undefined> {
    return this.cachedCompressed(`${algo}:${diffId}`);
  }

  /** The diff_id of a compressed blob this store made, if it made it. */
  async uncompressedFor(digest: Digest): Promise<Digest | undefined> {
    const v = await this.blobMap().get(`diffid:${digest}`);
    return typeof v === 'string' && /^sha256:[0-9a-f]{64}$/.test(v) ? (v as Digest) : undefined;
  }

  /** Records that `compressed` is `diffId` compressed with `algo` (e.g. a layer pulled from a registry). */
  async recordCompressed(diffId: Digest, algo: CompressionAlgo, compressed: Descriptor): Promise<void> {
    const map = this.blobMap();
    await map.set(`${algo}:${diffId}`, { mediaType: compressed.mediaType, digest: compressed.digest, size: compressed.size });
    await map.set(`diffid:${compressed.digest}`, diffId);
  }

  // ---- garbage collection ----

  async gc(opts: GcOptions = {}): Promise<GcResult> {
    return withLock(this.indexLock, () => collectGarbage(this, opts), this.lockOpts);
  }

  /** @internal names of every meta namespace. */
  async metaNamespaces(): Promise<string[]> {
    try {
      return (await readdir(this.metaDir)).filter((n) => /^[a-z0-9][a-z0-9._-]{0,63}$/.test(n));
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return [];
      throw e;
    }
  }
}

function withoutRefName(d: Descriptor): Descriptor {
  const out: Descriptor = { ...d };
  if (d.annotations) {
    const { [ANNOTATION_REF_NAME]: _ref, ...rest } = d.annotations;
    if (Object.keys(rest).length > 0) out.annotations = rest;
    else delete out.annotations;
  }
  return out;
}

export async function openStore(opts: OpenStoreOptions = {}): Promise<Store> {
  const store = new Store(resolveRoot(opts.root !== undefined ? { root: opts.root } : {}), opts);
  await store.init();
  return store;
}

