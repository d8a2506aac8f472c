import { Readable, type Writable } from 'node:stream';
import { MediaType, type Descriptor, type Digest, type Image } from '@tsbuild/oci';
import type { BlobSink } from './pull.ts';
import type { ImageSource } from './push.ts';

/**
 * The part of a content store a pull needs (the local store has exactly this shape). `commit`
 * must hash what was written and refuse content that does not match `expected` with a
 * TsbuildError of code `DIGEST_MISMATCH`, leaving nothing behind: a pull into the store relies on
 * it instead of hashing every byte twice.
 */
export interface BlobStoreLike {
  hasBlob(d: Digest): Promise<boolean>;
  blobWriter(): { readonly stream: Writable; commit(expected?: { digest?: Digest; size?: number }): Promise<unknown>; abort(): Promise<void> };
}

/** Pulls into a store: the store's writer hashes the bytes as it writes them and verifies them as it commits. */
export function storeSink(store: BlobStoreLike): BlobSink {
  return {
    has: (d) => store.hasBlob(d),
    write: (desc: Descriptor) => {
      const w = store.blobWriter();
      return {
        stream: w.stream,
        commit: async () => {
          await w.commit({ digest: desc.digest, size: desc.size });
        },
        abort: () => w.abort(),
        verifies: true,
      };
    },
  };
}

/** Pushes an `Image` (lazy manifest, config and layers) as it is stored: blobs are sent as their digests name them. */
export function imageSource(image: Image): ImageSource {
  let layers: Promise<Map<string, () => Promise<Readable>>> | undefined;
  const byDigest = (): Promise<Map<string, () => Promise<Readable>>> =>
    (layers ??= image.layers().then(async (ls) => {
      const m = new Map<string, () => Promise<Readable>>();
      for (const l of ls) m.set(await l.digest(), () => l.compressed());
      return m;
    }));
  return {
    manifest: async () => {
      const [bytes, manifest] = await Promise.all([image.rawManifest(), image.manifest()]);
      return { bytes, mediaType: manifest.mediaType ?? MediaType.OciManifest };
    },
    openBlob: async (desc) => {
      if (desc.digest === (await image.configDescriptor()).digest) return Readable.from([await image.rawConfig()]);
      const open = (await byDigest()).get(desc.digest);
      if (open === undefined) throw new Error(`image has no blob ${desc.digest}`);
      return open();
    },
  };
}
