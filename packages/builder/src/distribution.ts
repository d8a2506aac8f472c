import { Readable } from 'node:stream';
import { UsageError } from '@tsbuild/errors';
import { compress } from '@tsbuild/layer';
import { MediaType, isIndexMediaType, layerCompression } from '@tsbuild/oci';
import type { Descriptor, Digest, ImageConfig, Manifest } from '@tsbuild/oci';
import type { Store } from '@tsbuild/store';
import {
  RegistryClient, convertManifest, getConfig, parseReference, pullImage, pushImage,
} from '@tsbuild/registry';
import type { BlobSink, ClientOptions, ImageFormat, Reference } from '@tsbuild/registry';

/** Where pulled blobs came from, so a push to the same registry can mount instead of upload. */
const ORIGINS = 'blob-origins';

export interface DistributionOptions extends ClientOptions {
  signal?: AbortSignal;
}

function sinkFor(store: Store): BlobSink {
  return {
    has: (d) => store.hasBlob(d),
    write: (desc) => {
      const w = store.blobWriter();
      return {
        stream: w.stream,
        commit: async () => {
          await w.commit({ digest: desc.digest, size: desc.size });
        },
        abort: () => w.abort(),
      };
    },
  };
}

/** `tsbuild pull`: fetches an image (linux/amd64) into the store and tags it by the name given. */
export async function pullToStore(
  store: Store,
  refText: string,
  opts: DistributionOptions = {},
): Promise<{ ref: Reference; manifest: Descriptor; tag: string | undefined }> {
  const ref = parseReference(refText);
  const client = new RegistryClient(opts);
  const signal = opts.signal;
  const r = await pullImage(client, ref, sinkFor(store), signal ? { signal } : {});
  // A digest that named an index: keep the index too, so `name@sha256:<index>` resolves locally.
  if (ref.digest !== undefined && ref.digest !== r.manifestDescriptor.digest) {
    const { getManifest } = await import('@tsbuild/registry');
    const idx = await getManifest(client, ref, signal ? { signal } : {});
    if (idx.isIndex) await store.writeBlob(idx.bytes, { digest: idx.descriptor.digest, size: idx.descriptor.size });
  }
  const origins = store.meta(ORIGINS);
  for (const l of r.manifest.layers) {
    await origins.update(l.digest, (old) => {
      const list = Array.isArray(old) ? (old as string[]) : [];
      const repo = `${ref.registry}/${ref.repository}`;
      return list.includes(repo) ? list : [...list, repo].slice(-8);
    });
  }
  let tag: string | undefined;
  const desc: Descriptor = { mediaType: r.manifestDescriptor.mediaType, digest: r.manifestDescriptor.digest, size: r.manifestDescriptor.size };
  if (ref.digest === undefined) tag = await store.tag(refText, desc);
  return { ref, manifest: desc, tag };
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
      await compress(src, sink, { algorithm: algo, ...(opts.signal ? { signal: opts.signal } : {}) });
    }, opts.signal ? { signal: opts.signal } : {});
    layers.push({ ...cd, mediaType: algo === 'zstd' ? MediaType.OciLayerZstd : MediaType.OciLayerGzip });
  }
  let out: Manifest = { schemaVersion: 2, mediaType: MediaType.OciManifest, config: configDesc, layers };
  let configBytes: Buffer | undefined;
  if (opts.format === 'docker') {
    if (algo === 'zstd') throw new UsageError('--format docker cannot carry zstd layers: use --compression gzip');
    const conv = convertManifest(out, 'docker');
    out = conv;
    configBytes = await store.readBlob(configDesc.digest);
  }
  const bytes = Buffer.from(JSON.stringify(out));
  const origins = store.meta(ORIGINS);
  const client = new RegistryClient(opts);
  const mounts = new Map<string, string>();
  for (const l of layers) {
    const list = (await origins.get(l.digest)) as string[] | undefined;
    const same = list?.find((r) => r.startsWith(`${dest.registry}/`) && r !== `${dest.registry}/${dest.repository}`);
    if (same) mounts.set(l.digest, same.slice(dest.registry.length + 1));
  }
  void configBytes;
  const res = await pushImage(
    client,
    dest,
    {
      manifest: async () => ({ bytes, mediaType: out.mediaType ?? MediaType.OciManifest }),
      openBlob: async (d) => (d.digest === configDesc.digest ? Readable.from([await store.readBlob(d.digest)]) : store.openBlob(d.digest)),
    },
    {
      ...(opts.signal ? { signal: opts.signal } : {}),
      mountFrom: (d: Descriptor) => mounts.get(d.digest),
      ...(opts.onBlob ? { onBlob: opts.onBlob } : {}),
    },
  );
  for (const l of layers) {
    await origins.update(l.digest, (old) => {
      const list = Array.isArray(old) ? (old as string[]) : [];
      const repo = `${dest.registry}/${dest.repository}`;
      return list.includes(repo) ? list : [...list, repo].slice(-8);
    });
  }
  return res.digest;
}

/** Manifest and config of a remote image (for `tsbuild history REF` without pulling layers). */
export async function remoteImage(refText: string, opts: DistributionOptions = {}): Promise<{ config: ImageConfig; manifest: Manifest; digest: Digest }> {
  const ref = parseReference(refText);
  const client = new RegistryClient(opts);
  const r = await getConfig(client, ref, opts.signal ? { signal: opts.signal } : {});
  if (isIndexMediaType(r.manifest.mediaType ?? '')) throw new UsageError(`${refText} is an index`);
  return { config: r.config, manifest: r.manifest, digest: r.manifestDescriptor.digest };
}
