import { Readable, Writable } from 'node:stream';
import { InternalError, RegistryError, UsageError } from '@tsbuild/errors';
import { compress, drained } from '@tsbuild/layer';
import { MediaType, isIndexMediaType, layerCompression } from '@tsbuild/oci';
import type { Descriptor, Digest, ImageConfig, Manifest } from '@tsbuild/oci';
import type { Store } from '@tsbuild/store';
import { mountSource, recordOrigins } from '@tsbuild/cache';
import {
  RegistryClient, convertManifest, getConfig, getManifest, parseReference, pullImage, pushBlob, pushManifest, startBlobUpload, storeSink,
} from '@tsbuild/registry';
import type { BlobPushStatus, BlobSource, ClientOptions, ImageFormat, PushOptions, Reference } from '@tsbuild/registry';

export interface DistributionOptions extends ClientOptions {
  signal?: AbortSignal;
}

export interface PullToStoreOptions extends DistributionOptions {
  /**
   * Only the manifest and config: the layers stay in the registry and are fetched when something
   * reads them (a step that needs the filesystem, an export), or mounted when pushed to the same
   * registry. What a build does with its base images.
   */
  lazy?: boolean;
}

/** `tsbuild pull`: fetches an image (linux/amd64) into the store and tags it by the name given. */
export async function pullToStore(
  store: Store,
  refText: string,
  opts: PullToStoreOptions = {},
): Promise<{ ref: Reference; manifest: Descriptor; tag: string | undefined }> {
  const ref = parseReference(refText);
  const client = new RegistryClient(opts);
  // Pooled keep-alive sockets would otherwise outlive the command.
  try {
    return await pullWith(client, store, ref, refText, opts.signal, opts.lazy === true);
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
  lazy: boolean,
): Promise<{ ref: Reference; manifest: Descriptor; tag: string | undefined }> {
  const r = await pullImage(client, ref, storeSink(store), { signal, layers: !lazy });
  // A digest that named an index: keep the index too, so `name@sha256:<index>` resolves locally.
  if (ref.digest !== undefined && ref.digest !== r.manifestDescriptor.digest) {
    const idx = await getManifest(client, ref, { signal });
    if (idx.isIndex) await store.writeBlob(idx.bytes, { digest: idx.descriptor.digest, size: idx.descriptor.size });
  }
  await recordOrigins(store, [r.manifest.config, ...r.manifest.layers], { kind: 'registry', repo: `${ref.registry}/${ref.repository}` });
  let tag: string | undefined;
  const desc: Descriptor = { mediaType: r.manifestDescriptor.mediaType, digest: r.manifestDescriptor.digest, size: r.manifestDescriptor.size };
  if (ref.digest === undefined) tag = await store.tag(refText, desc);
  return { ref, manifest: desc, tag };
}

export interface PushFromStoreOptions extends DistributionOptions {
  compression?: 'gzip' | 'zstd';
  format?: ImageFormat;
  onBlob?: (e: { descriptor: Descriptor; status: string }) => void;
  /** Annotations of the pushed manifest (an inline cache travels this way). */
  annotations?: Record<string, string>;
}

/**
 * `tsbuild push`: writes the manifest that names compressed layers and pushes it and its blobs.
 * An uncompressed layer is compressed once: the first push compresses it while it uploads, the
 * compressed bytes going to the registry and into the store in the same pass (the store keeps
 * them by diff_id), so later pushes upload what the store holds and compress nothing.
 */
export async function pushFromStore(store: Store, localRef: string, destText: string, opts: PushFromStoreOptions = {}): Promise<Digest> {
  const dest = parseReference(destText);
  if (!(await store.resolve(localRef))) throw new UsageError(`no such image: ${localRef}`);
  const algo = opts.compression ?? 'gzip';
  if (opts.format === 'docker' && algo === 'zstd') throw new UsageError('--format docker cannot carry zstd layers: use --compression gzip');
  const img = await store.loadImage(localRef);
  const manifest = await img.manifest();
  const config: ImageConfig = await img.config();
  const configDesc = await img.configDescriptor();
  const layerType = algo === 'zstd' ? MediaType.OciLayerZstd : MediaType.OciLayerGzip;

  // Each layer is either known (compressed already, or compressed by an earlier push) or
  // compressed on its way up; the manifest is written once every layer's digest is known.
  const layers: Array<Descriptor | undefined> = [];
  const toCompress = new Map<Digest, number[]>();
  for (let i = 0; i < manifest.layers.length; i++) {
    const l = manifest.layers[i] as Descriptor;
    if (layerCompression(l.mediaType) !== 'none') {
      layers.push(l);
      continue;
    }
    const diffId = config.rootfs.diff_ids[i] ?? l.digest;
    const cached = await store.compressedVariant(diffId, algo);
    layers.push(cached === undefined ? undefined : { ...cached, mediaType: layerType });
    if (cached === undefined) toCompress.set(diffId, [...(toCompress.get(diffId) ?? []), i]);
  }
  const seen = new Set<string>();
  const known = [configDesc, ...layers.filter((d): d is Descriptor => d !== undefined)].filter((d) => !seen.has(d.digest) && seen.add(d.digest));
  const mounts = new Map<string, string>();
  for (const b of known) {
    const from = await mountSource(store, b.digest, dest.registry, dest.repository);
    if (from !== undefined) mounts.set(b.digest, from);
  }

  const client = new RegistryClient(opts);
  let digest: Digest;
  let blobs: Descriptor[];
  try {
    const source: BlobSource = {
      openBlob: async (d) => (d.digest === configDesc.digest ? Readable.from([await store.readBlob(d.digest)]) : store.openBlob(d.digest, { signal: opts.signal })),
    };
    const pushOpts: PushOptions = {
      signal: opts.signal,
      mountFrom: (d: Descriptor) => mounts.get(d.digest),
      // A blob whose digest is known goes up in one PUT carrying the whole body: measured against
      // distribution 2.8 here, 1 GiB took 8.5 s that way and 17–26 s in 8 or 64 MiB PATCH chunks.
      // A failed upload restarts that blob from its first byte.
      monolithicMax: Number.POSITIVE_INFINITY,
    };
    // Three blobs at a time, as pushImage sends them; the first failure stops the rest.
    const queue = [...known];
    let failed = false;
    const uploadKnown = Promise.all(
      Array.from({ length: Math.min(3, queue.length) }, async () => {
        for (let d = queue.shift(); d !== undefined && !failed; d = queue.shift()) {
          try {
            const status = await pushBlob(client, dest, d, source, pushOpts);
            opts.onBlob?.({ descriptor: d, status });
          } catch (e) {
            failed = true;
            throw e;
          }
        }
      }),
    );
    // One layer at a time: compress already keeps every core busy.
    const compressing = (async () => {
      for (const [diffId, at] of toCompress) {
        const { descriptor, status } = await compressWhileUploading(store, client, dest, diffId, algo, source, pushOpts);
        const d = { ...descriptor, mediaType: layerType };
        for (const i of at) layers[i] = d;
        opts.onBlob?.({ descriptor: d, status });
      }
    })();
    // Both run to their end before a failure is reported, so nothing is left uploading behind it.
    const [a, b] = await Promise.allSettled([uploadKnown, compressing]);
    if (a.status === 'rejected') throw a.reason;
    if (b.status === 'rejected') throw b.reason;

    const final = layers.map((d) => {
      if (d === undefined) throw new InternalError('a layer was neither known nor compressed');
      return d;
    });
    blobs = [configDesc, ...final];
    let out: Manifest = { schemaVersion: 2, mediaType: MediaType.OciManifest, config: configDesc, layers: final };
    // The manifest's own annotations (--annotation) travel with it, with those of the push added.
    const annotations = { ...(manifest.annotations ?? {}), ...(opts.annotations ?? {}) };
    if (Object.keys(annotations).length > 0) out.annotations = annotations;
    if (opts.format === 'docker') out = convertManifest(out, 'docker');
    const bytes = Buffer.from(JSON.stringify(out));
    digest = await pushManifest(client, dest, bytes, out.mediaType ?? MediaType.OciManifest, { signal: opts.signal });
  } finally {
    client.close();
  }
  await recordOrigins(store, blobs, { kind: 'registry', repo: `${dest.registry}/${dest.repository}` });
  return digest;
}

/**
 * Compresses the stored tar `diffId` once, streaming the compressed bytes into the store (which
 * hashes, verifies and keeps them by diff_id) and into an upload at the same time, and commits the
 * upload under the digest the store's writer computed of those same bytes, as soon as it has
 * hashed the last of them (before they are durable: the registry checks the digest itself). When
 * the upload fails part way, the compression still completes into the store and the blob is
 * pushed again from there, with the retries of any other blob; so is a layer another process
 * compressed first.
 */
async function compressWhileUploading(
  store: Store,
  client: RegistryClient,
  dest: Reference,
  diffId: Digest,
  algo: 'gzip' | 'zstd',
  source: BlobSource,
  pushOpts: PushOptions,
): Promise<{ descriptor: Descriptor; status: BlobPushStatus }> {
  const signal = pushOpts.signal;
  const upload = await startBlobUpload(client, dest, { signal });
  let hashed: (d: { digest: Digest; size: number }) => void = () => undefined;
  const digest = new Promise<{ digest: Digest; size: number }>((resolve) => (hashed = resolve));
  let committed: Promise<void> | undefined;
  let descriptor: Descriptor;
  try {
    descriptor = await store.compressedBlob(
      diffId,
      algo,
      async (src, sink) => {
        sink.once('hashed', hashed);
        // Hashed once, by the store's writer: compress need not hash the same bytes again.
        await compress(src, tee(sink, upload.stream), { algorithm: algo, signal, hash: false });
        committed = digest.then((d) => upload.commit(d));
        committed.catch(() => undefined);
      },
      { signal },
    );
  } catch (e) {
    upload.cancel();
    throw e;
  }
  if (committed === undefined) {
    // Another process compressed it meanwhile: nothing went into the upload.
    upload.cancel();
    return { descriptor, status: await pushBlob(client, dest, descriptor, source, pushOpts) };
  }
  // A writer that never said: the commit waits for the stored blob instead.
  hashed({ digest: descriptor.digest, size: descriptor.size });
  const sent = await digest;
  if (sent.digest !== descriptor.digest || sent.size !== descriptor.size) {
    throw new InternalError(`compressing ${diffId}: the upload was named ${sent.digest} (${sent.size} bytes) but the store kept ${descriptor.digest} (${descriptor.size} bytes)`);
  }
  try {
    await committed;
    return { descriptor, status: 'uploaded' };
  } catch (e) {
    if (!(e instanceof RegistryError) || signal?.aborted) throw e;
    // What was streamed is gone, but the compressed blob is in the store now. Its commit may even
    // have landed with only the answer lost: pushBlob asks before it uploads.
    return { descriptor, status: await pushBlob(client, dest, descriptor, source, pushOpts) };
  }
}

/**
 * A Writable that passes every chunk to `main` and to `side`, at the pace of the slower. Only
 * `main` can fail it: `side` is an upload stream, which reports its failures at its commit.
 * Ending it ends both without waiting for `main` to finish: its owner waits for that.
 */
function tee(main: Writable, side: Writable): Writable {
  // Errors of `main` reach its owner (the store's commit); this only keeps them from being unhandled.
  main.on('error', () => undefined);
  return new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _enc, cb) {
      const waits: Promise<void>[] = [];
      if (!main.write(chunk)) waits.push(drained(main, 'stream'));
      if (!side.write(chunk)) waits.push(drained(side, 'stream').catch(() => undefined));
      if (waits.length === 0) cb();
      else Promise.all(waits).then(() => cb(), (e: Error) => cb(e));
    },
    final(cb) {
      side.end();
      main.end();
      cb();
    },
    destroy(err, cb) {
      side.destroy(err ?? undefined);
      if (err) main.destroy(err);
      cb(err);
    },
  });
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
