import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { TsbuildError } from '@tsbuild/errors';
import type { Digest } from './digest.ts';
import { sha256 } from './digest.ts';
import { parseConfig, parseManifest } from './parse.ts';
import type { Descriptor, ImageConfig, Manifest } from './types.ts';

/** Content known by its descriptor; nothing is read until asked. */
export interface Blob {
  descriptor(): Promise<Descriptor>;
  open(): Promise<Readable>;
}

/** One layer of an image; every accessor is lazy and may fail. */
export interface Layer {
  /** sha256 of the uncompressed tar (what the config's rootfs.diff_ids lists). */
  diffId(): Promise<Digest>;
  /** sha256 of the blob as stored or transferred. */
  digest(): Promise<Digest>;
  size(): Promise<number>;
  mediaType(): Promise<string>;
  uncompressed(): Promise<Readable>;
  compressed(): Promise<Readable>;
}

export interface Image {
  /** Digest of the manifest bytes. */
  digest(): Promise<Digest>;
  rawManifest(): Promise<Buffer>;
  manifest(): Promise<Manifest>;
  rawConfig(): Promise<Buffer>;
  config(): Promise<ImageConfig>;
  configDescriptor(): Promise<Descriptor>;
  layers(): Promise<Layer[]>;
}

/** sha256 and byte count of a stream, consumed in full without buffering it. */
export async function hashStream(stream: Readable): Promise<{ digest: Digest; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  for await (const chunk of stream) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    h.update(buf);
    size += buf.length;
  }
  return { digest: `sha256:${h.digest('hex')}`, size };
}

function invalid(what: string, problem: string): TsbuildError {
  return new TsbuildError('INVALID_IMAGE', `image ${what}: ${problem}`);
}

export interface ValidateOptions {
  signal?: AbortSignal;
}

/**
 * Checks that an image is internally consistent: the manifest matches its digest, the config and
 * every layer blob match their descriptors, each layer's uncompressed content matches its diff_id,
 * and the counts of layers, diff_ids and non-empty history entries agree. Layers are streamed.
 */
export async function validateImage(img: Image, opts: ValidateOptions = {}): Promise<void> {
  const digest = await img.digest();
  const raw = await img.rawManifest();
  const actual = sha256(raw);
  if (actual !== digest) throw invalid(digest, `manifest bytes hash to ${actual}`);
  const manifest = parseManifest(raw, { source: digest });

  const cd = await img.configDescriptor();
  if (cd.digest !== manifest.config.digest || cd.size !== manifest.config.size) {
    throw invalid(digest, `config descriptor ${cd.digest} (${cd.size} bytes) differs from the manifest's ${manifest.config.digest} (${manifest.config.size} bytes)`);
  }
  const rawConfig = await img.rawConfig();
  const configDigest = sha256(rawConfig);
  if (configDigest !== cd.digest || rawConfig.length !== cd.size) {
    throw invalid(digest, `config blob is ${configDigest} (${rawConfig.length} bytes) but its descriptor says ${cd.digest} (${cd.size} bytes)`);
  }
  const config = parseConfig(rawConfig, { source: cd.digest });
  const diffIds = config.rootfs.diff_ids;
  const layers = await img.layers();
  if (layers.length !== manifest.layers.length) {
    throw invalid(digest, `has ${layers.length} layers but the manifest lists ${manifest.layers.length}`);
  }
  if (diffIds.length !== layers.length) {
    throw invalid(digest, `config lists ${diffIds.length} diff_ids for ${layers.length} layers`);
  }
  if (config.history !== undefined) {
    const nonEmpty = config.history.filter((h) => h.empty_layer !== true).length;
    if (nonEmpty !== layers.length) {
      throw invalid(digest, `config history has ${nonEmpty} non-empty entries for ${layers.length} layers`);
    }
  }

  for (const [i, layer] of layers.entries()) {
    opts.signal?.throwIfAborted();
    const want = manifest.layers[i]!;
    const wantDiff = diffIds[i]!;
    const [ld, ls, lm, lDiff] = await Promise.all([layer.digest(), layer.size(), layer.mediaType(), layer.diffId()]);
    const at = `layer ${i} (${want.digest})`;
    if (ld !== want.digest || ls !== want.size || lm !== want.mediaType) {
      throw invalid(digest, `${at}: layer reports ${ld} (${ls} bytes, ${lm}), manifest says ${want.digest} (${want.size} bytes, ${want.mediaType})`);
    }
    if (lDiff !== wantDiff) throw invalid(digest, `${at}: layer reports diff_id ${lDiff}, config says ${wantDiff}`);
    const blob = await hashStream(await layer.compressed());
    if (blob.digest !== want.digest || blob.size !== want.size) {
      throw invalid(digest, `${at}: blob content is ${blob.digest} (${blob.size} bytes), expected ${want.digest} (${want.size} bytes)`);
    }
    // An uncompressed layer is its own tar: the blob hash just computed is the diff_id.
    const un = want.digest === wantDiff ? blob : await hashStream(await layer.uncompressed());
    if (un.digest !== wantDiff) {
      throw invalid(digest, `${at}: uncompressed content hashes to ${un.digest} but config diff_ids[${i}] is ${wantDiff}`);
    }
  }
}
