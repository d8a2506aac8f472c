/**
 * Images out of an OCI image layout directory (`--build-context NAME=oci-layout://DIR[:TAG|@DIGEST]`):
 * the manifest named by a tag (its `org.opencontainers.image.ref.name`) or a digest, narrowed to
 * the build's platform when it is an index, and its blobs copied into the store. The layout is
 * input from outside: every blob is read by digest, size-limited and verified.
 */
import { createReadStream } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TsbuildError, UsageError } from '@tsbuild/errors';
import {
  ANNOTATION_REF_NAME, MAX_MANIFEST_SIZE, digestHex, formatPlatform, isIndexMediaType, isManifestMediaType, parseConfig, parseIndex, parseManifest,
  platformMatches, sha256, sniffMediaType,
} from '@tsbuild/oci';
import type { Descriptor, Digest, Platform } from '@tsbuild/oci';
import type { Store } from '@tsbuild/store';
import type { BaseImage } from './session.ts';

export interface LayoutRef {
  dir: string;
  tag?: string;
  digest?: Digest;
}

/** Messages leave the layout out: the caller names it as `--build-context` wrote it. */
function fail(message: string, hint?: string): TsbuildError {
  return new UsageError(message, hint === undefined ? {} : { hint });
}

/** A small blob of the layout, checked against its digest (and size, when the descriptor gives one). */
async function readJsonBlob(dir: string, d: Digest, size: number | undefined): Promise<Buffer> {
  const file = join(dir, 'blobs', 'sha256', digestHex(d));
  let fh;
  try {
    fh = await open(file, 'r');
  } catch {
    throw fail(`blob ${d} is not in the layout`);
  }
  let bytes: Buffer;
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.size > MAX_MANIFEST_SIZE) throw fail(`blob ${d} is not a manifest or config (${st.size} bytes)`);
    bytes = await fh.readFile();
  } finally {
    await fh.close();
  }
  if (sha256(bytes) !== d || (size !== undefined && bytes.length !== size)) throw new TsbuildError('DIGEST_MISMATCH', `blob ${d} of the layout does not match its digest`);
  return bytes;
}

/** The descriptor `ref` names in the layout's index.json. */
async function pick(ref: LayoutRef): Promise<Descriptor> {
  let text: Buffer;
  try {
    text = await readFile(join(ref.dir, 'index.json'));
  } catch {
    throw fail(`${ref.dir} is not an OCI image layout (no index.json)`, 'write one with skopeo copy … oci:DIR:TAG, or build with -o type=oci and unpack it');
  }
  if (text.length > MAX_MANIFEST_SIZE) throw fail(`index.json is ${text.length} bytes, more than the ${MAX_MANIFEST_SIZE} allowed`);
  const idx = parseIndex(text, { source: join(ref.dir, 'index.json') });
  if (ref.digest !== undefined) {
    const hit = idx.manifests.find((m) => m.digest === ref.digest);
    if (hit) return hit;
    // A digest may also name a manifest held by an index in the layout.
    const bytes = await readJsonBlob(ref.dir, ref.digest, undefined);
    const mediaType = sniffMediaType(bytes);
    if (mediaType === undefined || (!isManifestMediaType(mediaType) && !isIndexMediaType(mediaType))) throw fail(`${ref.digest} is not a manifest or an index`);
    return { mediaType, digest: ref.digest, size: bytes.length };
  }
  const tags = idx.manifests.map((m) => m.annotations?.[ANNOTATION_REF_NAME]).filter((t): t is string => t !== undefined);
  const tag = ref.tag ?? 'latest';
  const hit = idx.manifests.find((m) => m.annotations?.[ANNOTATION_REF_NAME] === tag);
  if (hit) return hit;
  // An untagged layout of one image is that image, whatever tag was left out.
  if (ref.tag === undefined && idx.manifests.length === 1) return idx.manifests[0] as Descriptor;
  throw fail(`no image tagged ${JSON.stringify(tag)}`, tags.length > 0 ? `tags in the layout: ${tags.join(', ')}` : 'name the image by digest: oci-layout://DIR@sha256:…');
}

/** Copies the image `ref` names from an OCI layout into the store; returns it as FROM sees a base image. */
export async function importFromLayout(store: Store, ref: LayoutRef, platform: Platform, signal?: AbortSignal): Promise<BaseImage> {
  let desc = await pick(ref);
  for (let depth = 0; isIndexMediaType(desc.mediaType); depth++) {
    if (depth > 4) throw fail('indexes nest too deeply');
    const idx = parseIndex(await readJsonBlob(ref.dir, desc.digest, desc.size), { source: desc.digest });
    const match = idx.manifests.find((m) => platformMatches(m.platform, platform));
    if (!match) {
      const have = idx.manifests.map((m) => (m.platform ? formatPlatform(m.platform) : '?')).join(', ');
      throw fail(`the index has no image for ${formatPlatform(platform)} (it has: ${have || 'none'})`);
    }
    desc = match;
  }
  if (!isManifestMediaType(desc.mediaType)) throw fail(`${desc.digest} has media type ${desc.mediaType}, not an image manifest`);
  const manifestBytes = await readJsonBlob(ref.dir, desc.digest, desc.size);
  const manifest = parseManifest(manifestBytes, { source: desc.digest });
  const configBytes = await readJsonBlob(ref.dir, manifest.config.digest, manifest.config.size);
  const config = parseConfig(configBytes, { source: manifest.config.digest });
  if (config.rootfs.diff_ids.length !== manifest.layers.length) {
    throw fail(`the image config lists ${config.rootfs.diff_ids.length} layers and the manifest ${manifest.layers.length}`);
  }
  for (const l of manifest.layers) {
    if (await store.hasBlob(l.digest)) continue;
    const file = join(ref.dir, 'blobs', 'sha256', digestHex(l.digest));
    const opts: { signal?: AbortSignal } = {};
    if (signal) opts.signal = signal;
    try {
      await store.writeBlob(createReadStream(file), { digest: l.digest, size: l.size }, opts);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw fail(`layer ${l.digest} is not in the layout`);
      throw e;
    }
  }
  await store.writeBlob(configBytes, { digest: manifest.config.digest, size: configBytes.length });
  await store.writeBlob(manifestBytes, { digest: desc.digest, size: manifestBytes.length });
  return { digest: desc.digest, config, layers: manifest.layers.map((l) => ({ ...l })) };
}
