import { spawn } from 'node:child_process';
import { PassThrough, pipeline } from 'node:stream';
import type { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { TsbuildError } from '@tsbuild/errors';
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
    return compression === 'gzip' ? through(blob, createGunzip()) : zstdDecompress(blob, this.desc.digest);
  }
}

function through(src: Readable, t: NodeJS.ReadWriteStream & Readable): Readable {
  pipeline(src, t, () => undefined);
  return t;
}

/** Node 20 has no zstd: the zstd binary decompresses, streaming both ways. */
function zstdDecompress(src: Readable, digest: Digest): Readable {
  const out = new PassThrough();
  const child = spawn('zstd', ['-dc', '-q'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => {
    if (stderr.length < 2000) stderr += b.toString();
  });
  child.on('error', (e) => {
    src.destroy();
    out.destroy(new TsbuildError('ZSTD_UNAVAILABLE', `cannot decompress zstd layer ${digest}: ${e.message}`, { hint: 'install zstd', cause: e }));
  });
  pipeline(src, child.stdin, () => undefined);
  child.stdout.pipe(out, { end: false });
  child.on('close', (code) => {
    if (code === 0) out.end();
    else out.destroy(new TsbuildError('BAD_LAYER', `zstd layer ${digest} failed to decompress: ${stderr.trim() || `exit code ${code}`}`));
  });
  out.on('close', () => {
    if (child.exitCode === null) child.kill();
  });
  return out;
}
