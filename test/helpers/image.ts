import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { access, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { MediaType, type Descriptor, type Digest, type ImageConfig, type Manifest } from '../../packages/oci/src/index.ts';
import type { BlobSink, ImageSource } from '../../packages/registry/src/index.ts';

export function digestOf(b: Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

export interface TestImage {
  manifest: Manifest;
  manifestBytes: Buffer;
  config: ImageConfig;
  blobs: Map<string, Buffer>;
}

/** A gzip tar layer made by GNU tar from files written here, deterministic in its bytes. */
export async function makeLayer(files: Record<string, Buffer | string>): Promise<{ tar: Buffer; gz: Buffer }> {
  const dir = await mkdtemp(join(tmpdir(), 'tsbuild-layer-'));
  try {
    const root = join(dir, 'root');
    await mkdir(root);
    for (const [name, content] of Object.entries(files)) {
      await mkdir(join(root, name, '..'), { recursive: true });
      await writeFile(join(root, name), content);
    }
    const tar = execFileSync('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-cf', '-', '-C', root, '.'], { maxBuffer: 1 << 28 });
    return { tar, gz: gzipSync(tar) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A linux/amd64 image of the given layers, as OCI blobs held in memory. */
export async function makeImage(layerFiles: Array<Record<string, Buffer | string>>): Promise<TestImage> {
  const blobs = new Map<string, Buffer>();
  const layers: Descriptor[] = [];
  const diffIds: Digest[] = [];
  for (const files of layerFiles) {
    const { tar, gz } = await makeLayer(files);
    const d = digestOf(gz);
    blobs.set(d, gz);
    layers.push({ mediaType: MediaType.OciLayerGzip, digest: d, size: gz.length });
    diffIds.push(digestOf(tar));
  }
  const config: ImageConfig = {
    architecture: 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: diffIds.map((_, i) => ({ created_by: `layer ${i}` })),
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDigest = digestOf(configBytes);
  blobs.set(configDigest, configBytes);
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: MediaType.OciConfig, digest: configDigest, size: configBytes.length },
    layers,
  };
  return { manifest, manifestBytes: Buffer.from(JSON.stringify(manifest)), config, blobs };
}

export function randomFile(size: number): Buffer {
  return randomBytes(size);
}

/** An ImageSource over in-memory blobs; `override` swaps a blob's bytes (to lie about content). */
export function memorySource(img: TestImage, opts: { manifestBytes?: Buffer; mediaType?: string; override?: Map<string, Buffer> } = {}): ImageSource & { opened: string[] } {
  const opened: string[] = [];
  return {
    opened,
    manifest: async () => ({ bytes: opts.manifestBytes ?? img.manifestBytes, mediaType: opts.mediaType ?? MediaType.OciManifest }),
    openBlob: async (desc) => {
      const b = opts.override?.get(desc.digest) ?? img.blobs.get(desc.digest);
      if (b === undefined) throw new Error(`no blob ${desc.digest}`);
      opened.push(desc.digest);
      // Small pieces so chunking and partial resends are exercised.
      const from = 0;
      return Readable.from(
        (function* () {
          for (let i = from; i < b.length; i += 16 * 1024) yield b.subarray(i, Math.min(i + 16 * 1024, b.length));
        })(),
      );
    },
  };
}

/** A BlobSink that writes `<dir>/<hex>` through a temp file; records commits and aborts. */
export function dirSink(dir: string): BlobSink & { commits: string[]; aborts: string[] } {
  const commits: string[] = [];
  const aborts: string[] = [];
  let n = 0;
  return {
    commits,
    aborts,
    has: async (d) =>
      access(join(dir, d.slice(7))).then(
        () => true,
        () => false,
      ),
    write: async (desc) => {
      await mkdir(dir, { recursive: true });
      const tmp = join(dir, `.tmp-${process.pid}-${n++}`);
      const stream = createWriteStream(tmp);
      return {
        stream,
        commit: async () => {
          commits.push(desc.digest);
          await rename(tmp, join(dir, desc.digest.slice(7)));
        },
        abort: async () => {
          aborts.push(desc.digest);
          stream.destroy();
          await rm(tmp, { force: true });
        },
      };
    },
  };
}

export async function readBlob(dir: string, d: string): Promise<Buffer> {
  return readFile(join(dir, d.slice(7)));
}
