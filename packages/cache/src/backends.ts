/**
 * Where cache documents and their blobs live: a registry (an OCI artifact under a tag, or the
 * inline cache of an image), a local OCI image layout directory, GitHub's Actions cache. Each
 * backend reads a document (hostile) and writes one with its blobs, moving only blobs the other
 * side lacks.
 */
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createWriteStream } from 'node:fs';
import { TsbuildError } from '@tsbuild/errors';
import { ANNOTATION_REF_NAME, MAX_MANIFEST_SIZE, MediaType, digestHex, isDigest, parseIndex, parseManifest, sha256 } from '@tsbuild/oci';
import type { Descriptor, Index, Manifest } from '@tsbuild/oci';
import { RegistryClient, fetchBlobBytes, getManifest, parseReference, pushImage } from '@tsbuild/registry';
import type { ClientOptions } from '@tsbuild/registry';
import type { Store } from '@tsbuild/store';
import { ghaBlobKey } from './fetcher.ts';
import {
  CACHE_ARTIFACT_TYPE, CACHE_CONFIG_MEDIA_TYPE, INLINE_ANNOTATION, MAX_CACHE_DOCUMENT, documentBlobs, documentFrom, parseCacheDocument,
  serializeCacheDocument,
} from './format.ts';
import type { CacheDocument } from './format.ts';
import type { GhaCacheClient } from './gha.ts';
import { mountSource, recordOrigins } from './origins.ts';
import type { Origin } from './origins.ts';

export interface BackendContext {
  store: Store;
  registry: ClientOptions;
  gha: GhaCacheClient | undefined;
  signal: AbortSignal | undefined;
}

/** A document read from a backend, and where its blobs are. */
export interface LoadedDocument {
  doc: CacheDocument;
  origin: Origin;
}

// ---- registry -----------------------------------------------------------------------------

/** Reads a cache artifact, or the inline cache of an image, from a registry. Undefined: the tag does not exist. */
export async function loadRegistry(refText: string, ctx: BackendContext): Promise<LoadedDocument | undefined> {
  const ref = parseReference(refText);
  const client = new RegistryClient(ctx.registry);
  try {
    let m;
    try {
      m = await getManifest(client, ref, { signal: ctx.signal });
    } catch (e) {
      if (e instanceof TsbuildError && 'status' in e && (e as { status?: unknown }).status === 404) return undefined;
      throw e;
    }
    const where = `cache ${refText}`;
    if (m.isIndex) throw new TsbuildError('BAD_CACHE', `${where} is an image index, not a tsbuild cache`, { hint: 'caches written by other builders cannot be read' });
    const manifest = m.manifest as Manifest;
    const origin: Origin = { kind: 'registry', repo: `${ref.registry}/${ref.repository}` };
    if (manifest.config.mediaType === CACHE_CONFIG_MEDIA_TYPE) {
      if (manifest.config.size > MAX_CACHE_DOCUMENT) throw new TsbuildError('BAD_CACHE', `${where}: the cache document is ${manifest.config.size} bytes, too large`);
      const bytes = await fetchBlobBytes(client, ref, manifest.config, { signal: ctx.signal });
      return { doc: parseCacheDocument(bytes, where), origin };
    }
    const inline = manifest.annotations?.[INLINE_ANNOTATION];
    if (inline !== undefined) {
      let raw: unknown;
      try {
        raw = JSON.parse(inline);
      } catch (e) {
        throw new TsbuildError('BAD_CACHE', `${where}: the inline cache annotation is not JSON: ${(e as Error).message}`);
      }
      return { doc: documentFrom(raw, where), origin };
    }
    throw new TsbuildError('BAD_CACHE', `${where} is neither a tsbuild cache nor an image with an inline cache`, {
      hint: 'write one with --cache-to type=registry,ref=… or --cache-to type=inline',
    });
  } finally {
    client.close();
  }
}

/** The manifest of a cache artifact: the document as config, every blob it names as a layer. */
export function cacheManifest(doc: CacheDocument): { config: Buffer; configDesc: Descriptor; manifest: Buffer } {
  const config = serializeCacheDocument(doc);
  const configDesc: Descriptor = { mediaType: CACHE_CONFIG_MEDIA_TYPE, digest: sha256(config), size: config.length };
  const m = { schemaVersion: 2, mediaType: MediaType.OciManifest, artifactType: CACHE_ARTIFACT_TYPE, config: configDesc, layers: documentBlobs(doc) };
  return { config, configDesc, manifest: Buffer.from(JSON.stringify(m)) };
}

/** Pushes a cache artifact; blobs the registry has are skipped, blobs another of its repositories has are mounted. */
export async function saveRegistry(refText: string, doc: CacheDocument, ctx: BackendContext): Promise<{ uploaded: number; mounted: number; existed: number }> {
  const ref = parseReference(refText);
  const { config, configDesc, manifest } = cacheManifest(doc);
  const layers = documentBlobs(doc);
  const mounts = new Map<string, string>();
  for (const b of layers) {
    const from = await mountSource(ctx.store, b.digest, ref.registry, ref.repository);
    if (from !== undefined) mounts.set(b.digest, from);
  }
  const counts = { uploaded: 0, mounted: 0, existed: 0 };
  const client = new RegistryClient(ctx.registry);
  try {
    await pushImage(
      client,
      ref,
      {
        manifest: async () => ({ bytes: manifest, mediaType: MediaType.OciManifest }),
        openBlob: async (d) => (d.digest === configDesc.digest ? Readable.from([config]) : ctx.store.openBlob(d.digest, { signal: ctx.signal })),
      },
      {
        signal: ctx.signal,
        mountFrom: (d) => mounts.get(d.digest),
        monolithicMax: Number.POSITIVE_INFINITY,
        onBlob: (e) => {
          if (e.descriptor.digest === configDesc.digest) return;
          counts[e.status === 'uploaded' ? 'uploaded' : e.status === 'mounted' ? 'mounted' : 'existed']++;
        },
      },
    );
  } finally {
    client.close();
  }
  await recordOrigins(ctx.store, layers, { kind: 'registry', repo: `${ref.registry}/${ref.repository}` });
  return counts;
}

/** The annotation an image pushed with `--cache-to type=inline` carries: the document itself. */
export function inlineAnnotation(doc: CacheDocument): Record<string, string> {
  return { [INLINE_ANNOTATION]: serializeCacheDocument(doc).toString('utf8') };
}

// ---- local OCI layout -----------------------------------------------------------------------

async function readLayoutBlob(dir: string, d: Descriptor, max: number): Promise<Buffer> {
  if (!isDigest(d.digest)) throw new TsbuildError('BAD_CACHE', `${dir}: invalid digest ${JSON.stringify(d.digest)}`);
  if (d.size > max) throw new TsbuildError('BAD_CACHE', `${dir}: blob ${d.digest} is ${d.size} bytes, too large`);
  const bytes = await readFile(join(dir, 'blobs', 'sha256', digestHex(d.digest)));
  if (bytes.length !== d.size || sha256(bytes) !== d.digest) throw new TsbuildError('DIGEST_MISMATCH', `${dir}: blob ${d.digest} does not match its digest`);
  return bytes;
}

export async function loadLocal(srcDir: string, tag: string): Promise<LoadedDocument | undefined> {
  const dir = resolvePath(srcDir);
  let indexBytes: Buffer;
  try {
    if ((await stat(join(dir, 'index.json'))).size > MAX_MANIFEST_SIZE) throw new TsbuildError('BAD_CACHE', `${dir}/index.json is too large`);
    indexBytes = await readFile(join(dir, 'index.json'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const index = parseIndex(indexBytes, { source: `${dir}/index.json` });
  const entry = index.manifests.find((m) => m.annotations?.[ANNOTATION_REF_NAME] === tag);
  if (!entry) return undefined;
  const manifest = parseManifest(await readLayoutBlob(dir, entry, MAX_MANIFEST_SIZE), { source: entry.digest });
  if (manifest.config.mediaType !== CACHE_CONFIG_MEDIA_TYPE) throw new TsbuildError('BAD_CACHE', `${dir} (tag ${tag}) is not a tsbuild cache`);
  const doc = parseCacheDocument(await readLayoutBlob(dir, manifest.config, MAX_CACHE_DOCUMENT), `cache ${dir}`);
  return { doc, origin: { kind: 'oci-layout', dir } };
}

async function writeAtomic(file: string, data: Buffer): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  await writeFile(tmp, data);
  await rename(tmp, file);
}

/** Writes the document and its blobs into an OCI layout directory, keeping what else it holds. */
export async function saveLocal(destDir: string, tag: string, doc: CacheDocument, ctx: BackendContext): Promise<{ uploaded: number; existed: number }> {
  const dir = resolvePath(destDir);
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const counts = { uploaded: 0, existed: 0 };
  /** Writes a blob unless the directory has it; returns whether it wrote. */
  const put = async (d: Descriptor, bytes?: Buffer): Promise<boolean> => {
    const file = join(blobs, digestHex(d.digest));
    if (await stat(file).then((s) => s.size === d.size, () => false)) return false;
    const tmp = `${file}.tmp-${process.pid}`;
    try {
      if (bytes) await writeFile(tmp, bytes);
      else await pipeline(await ctx.store.openBlob(d.digest, { signal: ctx.signal }), createWriteStream(tmp), { signal: ctx.signal });
      await rename(tmp, file);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
    return true;
  };
  const { config, configDesc, manifest } = cacheManifest(doc);
  const layers = documentBlobs(doc);
  for (const l of layers) counts[(await put(l)) ? 'uploaded' : 'existed']++;
  await put(configDesc, config);
  const manifestDesc: Descriptor = { mediaType: MediaType.OciManifest, digest: sha256(manifest), size: manifest.length };
  await put(manifestDesc, manifest);
  let index: Index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] };
  try {
    index = parseIndex(await readFile(join(dir, 'index.json')), { source: `${dir}/index.json` });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const manifests = [...index.manifests.filter((m) => m.annotations?.[ANNOTATION_REF_NAME] !== tag), { ...manifestDesc, annotations: { [ANNOTATION_REF_NAME]: tag } }];
  await writeAtomic(join(dir, 'oci-layout'), Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
  await writeAtomic(join(dir, 'index.json'), Buffer.from(JSON.stringify({ ...index, manifests })));
  await recordOrigins(ctx.store, layers, { kind: 'oci-layout', dir });
  return counts;
}

// ---- GitHub Actions cache ---------------------------------------------------------------------

/**
 * Document keys: `tsbuild-cache-<scope, base64url>.<time>-<digest>`. Entries cannot be
 * overwritten, so each export adds one and a lookup by the prefix finds the newest; `.` cannot
 * occur in base64url, so one scope's prefix never matches another scope.
 */
function ghaPrefix(scope: string): string {
  return `tsbuild-cache-${Buffer.from(scope, 'utf8').toString('base64url')}.`;
}

export async function loadGha(scope: string, ctx: BackendContext): Promise<LoadedDocument | undefined> {
  const gha = ctx.gha;
  if (!gha) throw new TsbuildError('GHA_UNAVAILABLE', 'type=gha needs GitHub\'s cache service, which only the tsbuild Action can reach', {
    hint: 'use the Action (it is given ACTIONS_RUNTIME_TOKEN), or type=registry / type=local',
  });
  const entry = await gha.lookup(ghaPrefix(scope), [], { signal: ctx.signal });
  if (!entry) return undefined;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of await entry.open({ signal: ctx.signal })) {
    size += (c as Buffer).length;
    if (size > MAX_CACHE_DOCUMENT) throw new TsbuildError('BAD_CACHE', `gha cache ${entry.matchedKey} is larger than ${MAX_CACHE_DOCUMENT} bytes`);
    chunks.push(c as Buffer);
  }
  return { doc: parseCacheDocument(Buffer.concat(chunks), `gha cache ${entry.matchedKey}`), origin: { kind: 'gha' } };
}

export async function saveGha(scope: string, doc: CacheDocument, ctx: BackendContext): Promise<{ uploaded: number; existed: number }> {
  const gha = ctx.gha;
  if (!gha) throw new TsbuildError('GHA_UNAVAILABLE', 'type=gha needs GitHub\'s cache service, which only the tsbuild Action can reach');
  const counts = { uploaded: 0, existed: 0 };
  const layers = documentBlobs(doc);
  for (const b of layers) {
    const key = ghaBlobKey(b.digest);
    if (await gha.has(key, { signal: ctx.signal })) {
      counts.existed++;
      continue;
    }
    const r = await gha.save(key, b.size, () => ctx.store.openBlob(b.digest, { signal: ctx.signal }), { signal: ctx.signal });
    counts[r === 'saved' ? 'uploaded' : 'existed']++;
  }
  const body = serializeCacheDocument(doc);
  const key = `${ghaPrefix(scope)}${Date.now().toString().padStart(15, '0')}-${digestHex(sha256(body)).slice(0, 16)}`;
  await gha.save(key, body.length, () => Readable.from([body]), { signal: ctx.signal });
  await recordOrigins(ctx.store, layers, { kind: 'gha' });
  return counts;
}
