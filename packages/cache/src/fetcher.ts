/**
 * Lazy blobs: a layer a remote cache or a lazily pulled base image names is downloaded only when
 * something reads it (a step that needs the filesystem, an export, an upload that cannot be a
 * cross-repository mount). Every download is verified by digest; an uncompressed layer made from
 * a cached compressed blob must hash to the diff_id the cache claimed, or it is a lie.
 */
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { TsbuildError } from '@tsbuild/errors';
import { decompress } from '@tsbuild/layer';
import { digestHex } from '@tsbuild/oci';
import type { Digest } from '@tsbuild/oci';
import { RegistryClient, parseReference, pullBlob, storeSink } from '@tsbuild/registry';
import type { ClientOptions } from '@tsbuild/registry';
import type { BlobFetcher, Store } from '@tsbuild/store';
import type { GhaCacheClient } from './gha.ts';
import { originsOf } from './origins.ts';
import type { Origin } from './origins.ts';

/** A cached compressed blob that does not decompress to the diff_id the cache recorded for it. */
export class CacheMismatchError extends TsbuildError {
  constructor(
    readonly diffId: Digest,
    readonly blob: Digest,
    got: string,
  ) {
    super('CACHE_MISMATCH', `cached layer ${blob} does not unpack to the diff_id ${diffId} the cache recorded (it is ${got})`, {
      hint: 'the cache entry is ignored and the step runs again',
    });
  }
}

export interface FetcherOptions {
  registry?: ClientOptions;
  /** GitHub's cache, when the build runs in the Action with `type=gha`. */
  gha?: GhaCacheClient | undefined;
}

/** The key of a blob in GitHub's cache: content-addressed, so any scope can share it. */
export function ghaBlobKey(digest: Digest): string {
  return `tsbuild-blob-${digestHex(digest)}`;
}

const ALGOS = ['gzip', 'zstd'] as const;

export class RemoteFetcher implements BlobFetcher {
  constructor(
    private readonly store: Store,
    private readonly opts: FetcherOptions = {},
  ) {}

  async knows(digest: Digest): Promise<boolean> {
    const store = this.store;
    if ((await originsOf(store, digest)).origins.length > 0) return true;
    for (const algo of ALGOS) if (await store.compressedVariant(digest, algo)) return true;
    return false;
  }

  async fetch(digest: Digest, opts: { signal?: AbortSignal | undefined }): Promise<boolean> {
    const store = this.store;
    const known = await originsOf(store, digest);
    const errors: string[] = [];
    if (known.size !== undefined) {
      // The most recent origin first: it is the one a build just used.
      for (const o of [...known.origins].reverse()) {
        try {
          await this.download(store, o, digest, known.size, opts.signal);
          return true;
        } catch (e) {
          if (opts.signal?.aborted || e instanceof TsbuildError && e.code === 'DIGEST_MISMATCH') throw e;
          errors.push(`${describe(o)}: ${e instanceof Error ? e.message : String(e)}`);
        }
      }
    }
    for (const algo of ALGOS) {
      const variant = await store.compressedVariant(digest, algo);
      if (!variant) continue;
      if (!(await store.ensureBlob(variant.digest, opts))) continue;
      await this.unpack(store, digest, variant.digest, opts.signal);
      return true;
    }
    if (errors.length > 0) throw new TsbuildError('BLOB_FETCH', `blob ${digest} could not be fetched: ${errors.join('; ')}`);
    return false;
  }

  /** Makes the uncompressed layer `diffId` from its compressed blob, checking the content against it. */
  private async unpack(store: Store, diffId: Digest, blob: Digest, signal: AbortSignal | undefined): Promise<void> {
    const w = store.blobWriter();
    try {
      await pipeline(decompress(await store.openBlob(blob, { signal })), w.stream, { signal });
      const got = await w.commit();
      if (got.digest !== diffId) {
        throw new CacheMismatchError(diffId, blob, got.digest);
      }
    } catch (e) {
      await w.abort().catch(() => {});
      throw e;
    }
  }

  private async download(store: Store, o: Origin, digest: Digest, size: number, signal: AbortSignal | undefined): Promise<void> {
    switch (o.kind) {
      case 'registry': {
        const client = new RegistryClient(this.opts.registry ?? {});
        try {
          await pullBlob(client, parseReference(o.repo), { mediaType: 'application/octet-stream', digest, size }, storeSink(store), { signal });
        } finally {
          client.close();
        }
        return;
      }
      case 'oci-layout':
        await store.writeBlob(createReadStream(join(o.dir, 'blobs', 'sha256', digestHex(digest))), { digest, size }, { signal });
        return;
      case 'gha': {
        const gha = this.opts.gha;
        if (!gha) throw new TsbuildError('GHA_UNAVAILABLE', 'it is in GitHub\'s Actions cache, which only the tsbuild Action can read');
        const entry = await gha.lookup(ghaBlobKey(digest), [], { signal });
        if (!entry?.exact) throw new TsbuildError('BLOB_NOT_FOUND', 'not in the GitHub cache any more');
        await store.writeBlob(await entry.open({ signal }), { digest, size }, { signal });
        return;
      }
    }
  }
}

function describe(o: Origin): string {
  switch (o.kind) {
    case 'registry':
      return o.repo;
    case 'oci-layout':
      return `cache directory ${o.dir}`;
    case 'gha':
      return 'GitHub cache';
  }
}
