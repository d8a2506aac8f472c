import { createHash } from 'node:crypto';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { RegistryError, TsbuildError, UsageError } from '@tsbuild/errors';
import { MAX_JSON_BLOB_SIZE, MAX_MANIFEST_SIZE, MediaType, formatPlatform, parsePlatform, platformMatches, type Descriptor, type Digest, type ImageConfig, type Index, type Manifest, type Platform } from '@tsbuild/oci';
import { pullScope, type RegistryClient } from './client.ts';
import { responseError } from './http.ts';
import { withDigest, type Reference } from './reference.ts';
import { DigestVerifier, parseManifestJson, verifyBytes } from './verify.ts';
import { eachLimit } from './limit.ts';

/** One blob being written by a sink: bytes go to `stream`; `commit` only after they verified. */
export interface BlobWriter {
  stream: Writable;
  commit(): Promise<void>;
  abort(): Promise<void>;
  /**
   * true when `commit()` itself checks the bytes written against the descriptor, hashing exactly
   * the bytes it commits, and rejects a mismatch with a TsbuildError of code `DIGEST_MISMATCH`,
   * committing nothing (a store's blob writer does). The pull then counts the bytes but does not
   * hash them a second time.
   */
  verifies?: boolean | undefined;
}

/**
 * Where pulled blobs go. A store adapts with `has: d => store.has(d)` and
 * `write: desc => { const w = store.blobWriter(); return { stream: w, commit: () => w.commit(desc), abort: () => w.abort() } }`.
 */
export interface BlobSink {
  has(digest: Digest): Promise<boolean>;
  write(desc: Descriptor): BlobWriter | Promise<BlobWriter>;
}

export interface ManifestOptions {
  signal?: AbortSignal | undefined;
  /** `linux/amd64` (default), `linux/arm64/v8`, or a Platform. */
  platform?: string | Platform | undefined;
}

export interface PullOptions extends ManifestOptions {
  /** Blobs downloaded at once. Default 4. */
  concurrency?: number | undefined;
  /** false: only the manifest and config (the caller fetches layers when it needs them). Default true. */
  layers?: boolean | undefined;
  onBlob?: ((event: { descriptor: Descriptor; status: 'exists' | 'done' }) => void) | undefined;
}

export interface FetchedManifest {
  descriptor: Descriptor;
  bytes: Buffer;
  manifest: Manifest | Index;
  isIndex: boolean;
}

export interface ResolvedImage {
  manifestDescriptor: Descriptor;
  manifestBytes: Buffer;
  manifest: Manifest;
  /** The index the manifest was picked from, when the reference named one. */
  index: FetchedManifest | undefined;
}

const ACCEPT = [MediaType.OciIndex, MediaType.OciManifest, MediaType.DockerManifestList, MediaType.DockerManifest].join(', ');

/** GET one manifest or index exactly as the registry has it, verified against the reference's digest. */
export async function getManifest(client: RegistryClient, ref: Reference, opts: { signal?: AbortSignal | undefined } = {}): Promise<FetchedManifest> {
  const what = `get manifest ${ref.toString()}`;
  return client.retry(what, opts.signal, async () => {
    const res = await client.request(ref.registry, {
      method: 'GET',
      path: `/v2/${ref.repository}/manifests/${ref.identifier}`,
      headers: { accept: ACCEPT },
      scopes: [pullScope(ref.repository)],
      what,
      signal: opts.signal,
    });
    if (res.status === 404) {
      const err = await responseError(res, what, ref.toString());
      throw new RegistryError(`${ref.toString()}: manifest not found (the image or tag does not exist)`, { status: 404, ociCode: err.ociCode ?? 'MANIFEST_UNKNOWN', reference: ref.toString() });
    }
    if (res.status !== 200) throw await responseError(res, what, ref.toString());
    const bytes = await res.bytes(MAX_MANIFEST_SIZE);
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}` as Digest;
    if (ref.digest !== undefined && digest !== ref.digest) {
      throw new RegistryError(`${what}: the registry served a manifest hashing to ${digest} for ${ref.digest}; refusing it`, { reference: ref.toString() });
    }
    const claimed = res.header('docker-content-digest');
    if (claimed !== undefined && claimed.startsWith('sha256:') && claimed !== digest) {
      throw new RegistryError(`${what}: the registry says the manifest is ${claimed} but it hashes to ${digest}; refusing it`, { reference: ref.toString() });
    }
    const parsed = parseManifestJson(bytes, res.header('content-type'), what);
    return { descriptor: { mediaType: parsed.mediaType, digest, size: bytes.length }, bytes, manifest: parsed.manifest, isIndex: parsed.isIndex };
  });
}

/** The image manifest for the wanted platform, following an index when the reference names one. */
export async function resolveImage(client: RegistryClient, ref: Reference, opts: ManifestOptions = {}): Promise<ResolvedImage> {
  const top = await getManifest(client, ref, opts);
  if (!top.isIndex) return { manifestDescriptor: top.descriptor, manifestBytes: top.bytes, manifest: top.manifest as Manifest, index: undefined };
  const want = typeof opts.platform === 'object' ? opts.platform : parsePlatform(opts.platform ?? 'linux/amd64');
  const entries = (top.manifest as Index).manifests;
  const pick = entries.find((d) => platformMatches(d.platform, want));
  if (pick === undefined) {
    const have = entries.map((d) => d.platform).filter((p): p is Platform => p !== undefined && p.os !== 'unknown').map(formatPlatform);
    throw new RegistryError(`${ref.toString()} has no image for ${formatPlatform(want)}; it has: ${have.length ? have.join(', ') : 'no platform-tagged images'}`, {
      reference: ref.toString(),
      hint: 'choose one of those with --platform',
    });
  }
  const child = await getManifest(client, withDigest(ref, pick.digest), opts);
  if (child.isIndex) throw new RegistryError(`${ref.toString()}: nested indexes are not supported (${pick.digest})`, { reference: ref.toString() });
  if (child.bytes.length !== pick.size) throw new RegistryError(`${ref.toString()}: manifest ${pick.digest} is ${child.bytes.length} bytes, the index says ${pick.size}`);
  return { manifestDescriptor: { ...child.descriptor, mediaType: pick.mediaType, platform: want }, manifestBytes: child.bytes, manifest: child.manifest as Manifest, index: top };
}

/** A small blob (a config) read into memory, verified. */
export async function fetchBlobBytes(client: RegistryClient, ref: Reference, desc: Descriptor, opts: { signal?: AbortSignal | undefined } = {}): Promise<Buffer> {
  const what = `get blob ${desc.digest} of ${ref.registry}/${ref.repository}`;
  if (desc.size > MAX_JSON_BLOB_SIZE) throw new RegistryError(`${what}: ${desc.size} bytes is too large to read into memory`);
  return client.retry(what, opts.signal, async () => {
    const res = await client.request(ref.registry, { method: 'GET', path: `/v2/${ref.repository}/blobs/${desc.digest}`, scopes: [pullScope(ref.repository)], what, signal: opts.signal });
    if (res.status !== 200) throw await responseError(res, what, ref.toString());
    const bytes = await res.bytes(desc.size);
    verifyBytes(bytes, desc, what);
    return bytes;
  });
}

/** Manifest and config only: what `tsbuild history` of a remote image needs. */
export async function getConfig(client: RegistryClient, ref: Reference, opts: ManifestOptions = {}): Promise<{ manifestDescriptor: Descriptor; manifest: Manifest; config: ImageConfig; configBytes: Buffer }> {
  const img = await resolveImage(client, ref, opts);
  const configBytes = await fetchBlobBytes(client, ref, img.manifest.config, opts);
  let config: ImageConfig;
  try {
    config = JSON.parse(configBytes.toString('utf8')) as ImageConfig;
  } catch {
    throw new RegistryError(`${ref.toString()}: config ${img.manifest.config.digest} is not valid JSON`);
  }
  if (config === null || typeof config !== 'object') throw new RegistryError(`${ref.toString()}: config ${img.manifest.config.digest} is not a JSON object`);
  return { manifestDescriptor: img.manifestDescriptor, manifest: img.manifest, config, configBytes };
}

/** Streams one blob through digest verification into the sink; the sink commits only verified bytes. */
export async function pullBlob(client: RegistryClient, ref: Reference, desc: Descriptor, sink: BlobSink, opts: { signal?: AbortSignal | undefined } = {}): Promise<void> {
  const what = `pull blob ${desc.digest} of ${ref.registry}/${ref.repository}`;
  await client.retry(what, opts.signal, async () => {
    const res = await client.request(ref.registry, { method: 'GET', path: `/v2/${ref.repository}/blobs/${desc.digest}`, scopes: [pullScope(ref.repository)], what, signal: opts.signal });
    if (res.status !== 200) throw await responseError(res, what, ref.toString());
    const writer = await sink.write(desc);
    const verifies = writer.verifies === true;
    try {
      // Sizes are always checked here: a registry that sends more than the descriptor says is cut off at once.
      await pipeline(res.body, new DigestVerifier(desc, what, { hash: !verifies }), writer.stream, { signal: opts.signal });
    } catch (e) {
      await writer.abort();
      if (e instanceof RegistryError) throw e;
      // A connection cut mid-body: worth another try.
      throw new RegistryError(`${what}: download interrupted: ${(e as Error).message}`, { cause: e, temporary: !opts.signal?.aborted });
    }
    try {
      await writer.commit();
    } catch (e) {
      if (!verifies || !(e instanceof TsbuildError) || e.code !== 'DIGEST_MISMATCH') throw e;
      await writer.abort().catch(() => undefined);
      throw new RegistryError(`${what}: the registry served content for ${desc.digest} that does not match it (${e.message}); refusing it`, { cause: e, reference: ref.toString() });
    }
  });
}


async function writeBytes(sink: BlobSink, desc: Descriptor, bytes: Buffer): Promise<void> {
  if (await sink.has(desc.digest)) return;
  const w = await sink.write(desc);
  try {
    await pipeline(async function* () {
      yield bytes;
    }, w.stream);
  } catch (e) {
    await w.abort();
    throw e;
  }
  await w.commit();
}

/**
 * Pulls an image into `sink`: layers (skipping those the sink has), the config, then the
 * manifest itself, so a sink that sees the manifest has everything it points to. Every byte is
 * verified against its descriptor before the sink commits it.
 */
export async function pullImage(client: RegistryClient, ref: Reference, sink: BlobSink, opts: PullOptions = {}): Promise<{ manifestDescriptor: Descriptor; manifest: Manifest; manifestBytes: Buffer; config: ImageConfig }> {
  const img = await resolveImage(client, ref, opts);
  // The config is small and needed in memory anyway; it goes to the sink from there.
  const configDesc = img.manifest.config;
  const configBytes = await fetchBlobBytes(client, ref, configDesc, opts);
  let config: ImageConfig;
  try {
    config = JSON.parse(configBytes.toString('utf8')) as ImageConfig;
  } catch {
    throw new RegistryError(`${ref.toString()}: config ${configDesc.digest} is not valid JSON`);
  }

  const seen = new Set<string>([configDesc.digest]);
  // A lazy pull leaves the layers where they are: they are fetched when something reads them.
  const layers = opts.layers === false ? [] : img.manifest.layers.filter((d) => !seen.has(d.digest) && seen.add(d.digest));
  for (const d of layers) {
    if (d.urls !== undefined && d.urls.length > 0) throw new RegistryError(`${ref.toString()}: layer ${d.digest} is a foreign layer (hosted elsewhere), which is not supported`);
  }
  await eachLimit(layers, opts.concurrency ?? 4, async (d) => {
    if (await sink.has(d.digest)) {
      opts.onBlob?.({ descriptor: d, status: 'exists' });
      return;
    }
    await pullBlob(client, ref, d, sink, opts);
    opts.onBlob?.({ descriptor: d, status: 'done' });
  });
  await writeBytes(sink, configDesc, configBytes);
  await writeBytes(sink, img.manifestDescriptor, img.manifestBytes);
  return { manifestDescriptor: img.manifestDescriptor, manifest: img.manifest, manifestBytes: img.manifestBytes, config };
}
