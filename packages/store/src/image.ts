import type { Readable } from 'node:stream';
import { TsbuildError } from '@tsbuild/errors';
import { decompressAs } from '@tsbuild/layer';
import { layerCompression, parseConfig, parseManifest } from '@tsbuild/oci';
import type { Descriptor, Digest, Image, ImageConfig, Layer, Manifest } from '@tsbuild/oci';

/** What an image over the store needs from it. */
export interface BlobSource {
  readBlob(d: Digest): Promise<Buffer>;
  openBlob(d: Digest): Promise<Readable>;
  hasBlob(d: Digest): Promise<boolean>;
}

/** An image whose manifest, config and layers are blobs in the store, read when asked. */
export class StoreImage implements Image {
  private rawM: Promise<Buffer> | undefined;
  private m: Promise<Manifest> | undefined;
  private rawC: Promise<Buffer> | undefined;
  private c: Promise<ImageConfig> | undefined;

  constructor(
    private readonly src: BlobSource,
    private readonly desc: Descriptor,
  ) {}

  async descriptor(): Promise<Descriptor> {
    return this.desc;
  }
  async digest(): Promise<Digest> {
    return this.desc.digest;
  }
  rawManifest(): Promise<Buffer> {
    return (this.rawM ??= this.src.readBlob(this.desc.digest));
  }
  manifest(): Promise<Manifest> {
    return (this.m ??= this.rawManifest().then((b) => parseManifest(b, { source: this.desc.digest })));
  }
  async configDescriptor(): Promise<Descriptor> {
    return (await this.manifest()).config;
  }
  rawConfig(): Promise<Buffer> {
    return (this.rawC ??= this.configDescriptor().then((d) => this.src.readBlob(d.digest)));
  }
  config(): Promise<ImageConfig> {
    return (this.c ??= Promise.all([this.rawConfig(), this.configDescriptor()]).then(([b, d]) => parseConfig(b, { source: d.digest })));
  }
  async layers(): Promise<Layer[]> {
    const [m, c] = await Promise.all([this.manifest(), this.config()]);
    return m.layers.map((d, i) => new StoreLayer(this.src, d, c.rootfs.diff_ids[i]));
  }
}

export class StoreLayer implements Layer {
  constructor(
    private readonly src: BlobSource,
    private readonly desc: Descriptor,
    private readonly diff: Digest | undefined,
  ) {}

  async diffId(): Promise<Digest> {
    if (this.diff === undefined) throw new TsbuildError('INVALID_IMAGE', `layer ${this.desc.digest} has no diff_id in the image config`);
    return this.diff;
  }
  async digest(): Promise<Digest> {
    return this.desc.digest;
  }
  async size(): Promise<number> {
    return this.desc.size;
  }
  async mediaType(): Promise<string> {
    return this.desc.mediaType;
  }
  async compressed(): Promise<Readable> {
    return this.src.openBlob(this.desc.digest);
  }
  async uncompressed(): Promise<Readable> {
    const compression = layerCompression(this.desc.mediaType);
    if (compression === 'none') return this.src.openBlob(this.desc.digest);
    // The uncompressed tar is often stored too (a layer built here, or unpacked before).
    if (this.diff !== undefined && (await this.src.hasBlob(this.diff))) return this.src.openBlob(this.diff);
    const blob = await this.src.openBlob(this.desc.digest);
    const digest = this.desc.digest;
    return decompressAs(blob, compression, { errorMessage: (reason) => `${compression} layer ${digest} failed to decompress: ${reason}` });
  }
}
