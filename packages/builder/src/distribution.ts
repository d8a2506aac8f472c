import { Readable } from 'node:stream';
import { UsageError } from '@tsbuild/errors';
import { compress } from '@tsbuild/layer';
import { MediaType, isIndexMediaType, layerCompression } from '@tsbuild/oci';
import type { Descriptor, Digest, ImageConfig, Manifest } from '@tsbuild/oci';
import type { Store } from '@tsbuild/store';
import {
  RegistryClient, convertManifest, getConfig, getManifest, parseReference, pullImage, pushImage, storeSink,
} from '@tsbuild/registry';
import type { ClientOptions, ImageFormat, Reference } from '@tsbuild/registry';

/** Where pulled blobs came from, so a push to the same registry can mount instead of upload. */
const ORIGINS = 'blob-origins';

export interface DistributionOptions extends ClientOptions {
  signal?: AbortSignal;
}

/** `tsbuild pull`: fetches an image (linux/amd64) into the store and tags it by the name given. */
export async function pullToStore(
  store: Store,
  refText: string,
  opts: DistributionOptions = {},
): Promise<{ ref: Reference; manifest: Descriptor; tag: string | undefined }> {
  const ref = parseReference(refText);
  const client = new RegistryClient(opts);
  // Pooled keep-alive sockets would otherwise outlive the command.
  try {
    return await pullWith(client, store, ref, refText, opts.signal);
  } finally {
    client.close();
  }
}

async function pullWith(
  client: RegistryClient,
  store: Store,
  ref: Reference,
  refText: string,
  signal: AbortSignal | undefined,
): Promise<{ ref: Reference; manifest: Descriptor; tag: string | undefined }> {
  const r = await pullImage(client, ref, storeSink(store), { signal });
  // A digest that named an index: keep the index too, so `name@sha256:<index>` resolves locally.
  if (ref.digest !== undefined && ref.digest !== r.manifestDescriptor.digest) {
    const idx = await getManifest(client, ref, { signal });
    if (idx.isIndex) await store.writeBlob(idx.bytes, { digest: idx.descriptor.digest, size: idx.descriptor.size });
  }
  await recordOrigin(store, [r.manifest.config, ...r.manifest.layers], ref);
  let tag: string | undefined;
  const desc: Descriptor = { mediaType: r.manifestDescriptor.mediaType, digest: r.manifestDescriptor.digest, size: r.manifestDescriptor.size };
  if (ref.digest === undefined) tag = await store.tag(refText, desc);
  return { ref, manifest: desc, tag };
}

/** Remembers that `ref`'s repository holds these blobs, so a later push there can mount them. */
async function recordOrigin(store: Store, blobs: readonly Descriptor[], ref: Reference): Promise<void> {
  const origins = store.meta(ORIGINS);
  const repo = `${ref.registry}/${ref.repository}`;
  for (const b of blobs) {
    await origins.update(b.digest, (old) => {
      const list = Array.isArray(old) ? (old as string[]) : [];
      return list.includes(repo) ? list : [...list, repo].slice(-8);
    });
  }
}

export interface PushFromStoreOptions extends DistributionOptions {
  compression?: 'gzip' | 'zstd';
  format?: ImageFormat;
  onBlob?: (e: { descriptor: Descriptor; status: string }) => void;
}

/**
 * `tsbuild push`: compresses uncompressed layers (once; the store caches the result by diff_id),
 * writes the manifest that names the compressed blobs, and pushes it and its blobs.
 */
export async function pushFromStore(store: Store, localRef: string, destText: string, opts: PushFromStoreOptions = {}): Promise<Digest> {
  const dest = parseReference(destText);
  if (!(await store.resolve(localRef))) throw new UsageError(`no such image: ${localRef}`);
  const img = await store.loadImage(localRef);
  const manifest = await img.manifest();
  const config: ImageConfig = await img.config();
  const configDesc = await img.configDescriptor();
  const algo = opts.compression ?? 'gzip';
  const layers: Descriptor[] = [];
  for (let i = 0; i < manifest.layers.length; i++) {
    const l = manifest.layers[i] as Descriptor;
    if (layerCompression(l.mediaType) !== 'none') {
      layers.push(l);
      continue;
    }
    const diffId = config.rootfs.diff_ids[i] ?? l.digest;
    const cd = await store.compressedBlob(diffId, algo, async (src, sink) => {
      await compress(src, sink, { algorithm: algo, signal: opts.signal });
    }, { signal: opts.signal });
    layers.push({ ...cd, mediaType: algo === 'zstd' ? MediaType.OciLayerZstd : MediaType.OciLayerGzip });
  }
  let out: Manifest = { schemaVersion: 2, mediaType: MediaType.OciManifest, config: configDesc, layers };
  if (opts.format === 'docker') {
    if (algo === 'zstd') throw new UsageError('--format docker cannot carry zstd layers: use --compression gzip');
    out = convertManifest(out, 'docker');
  }
  const bytes = Buffer.from(JSON.stringify(out));
  const blobs = [configDesc, ...layers];
  const origins = store.meta(ORIGINS);
  const mounts = new Map<string, string>();
  for (const b of blobs) {
    const list = (await origins.get(b.digest)) as string[] | undefined;
    const same = list?.find((r) => r.startsWith(`${dest.registry}/`) && r !== `${dest.registry}/${dest.repository}`);
    if (same) mounts.set(b.digest, same.slice(dest.registry.length + 1));
  }
  const client = new RegistryClient(opts);
  let digest: Digest;
  try {
    const res = await pushImage(
      client,
      dest,
      {
        manifest: async () => ({ bytes, mediaType: out.mediaType ?? MediaType.OciManifest }),
        openBlob: async (d) => (d.digest === configDesc.digest ? Readable.from([await store.readBlob(d.digest)]) : store.openBlob(d.digest)),
      },
      {
        signal: opts.signal,
        mountFrom: (d: Descriptor) => mounts.get(d.digest),
        // Every blob goes up as one streamed PUT, as docker and skopeo send it: measured against
        // distribution 2.8 here, 1 GiB took 8.5 s that way and 17–26 s in 8 or 64 MiB PATCH chunks.
        // A failed upload restarts that blob from its first byte.
        monolithicMax: Number.POSITIVE_INFINITY,
        onBlob: opts.onBlob,
      },
    );
    digest = res.digest;
  } finally {
    client.close();
  }
  await recordOrigin(store, blobs, dest);
  return digest;
}

/** Manifest and config of a remote image (for `tsbuild history REF` without pulling layers). */
export async function remoteImage(refText: string, opts: DistributionOptions = {}): Promise<{ config: ImageConfig; manifest: Manifest; digest: Digest }> {
  const ref = parseReference(refText);
  const client = new RegistryClient(opts);
  try {
    const r = await getConfig(client, ref, { signal: opts.signal });
    if (isIndexMediaType(r.manifest.mediaType ?? '')) throw new UsageError(`${refText} is an index`);
    return { config: r.config, manifest: r.manifest, digest: r.manifestDescriptor.digest };
  } finally {
    client.close();
  }
}
