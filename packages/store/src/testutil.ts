import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MediaType, buildConfig, buildManifest, sha256 } from '@tsbuild/oci';
import type { Descriptor, Digest } from '@tsbuild/oci';
import type { Store } from './store.ts';

/** A fresh directory removed when the test ends. */
export function tempRoot(t: { after(fn: () => Promise<void>): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'tsbuild-store-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** A real tar of the given files, made by GNU tar with fixed owners and times. */
export function makeTar(files: Record<string, string>): Buffer {
  const dir = mkdtempSync(join(tmpdir(), 'tsbuild-tar-'));
  try {
    for (const [name, content] of Object.entries(files)) {
      mkdirSync(join(dir, name, '..'), { recursive: true });
      writeFileSync(join(dir, name), content);
    }
    return execFileSync('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=@0', '-cf', '-', '-C', dir, ...Object.keys(files).sort()]);
  } finally {
    execFileSync('rm', ['-rf', dir]);
  }
}

export interface TestImage {
  manifest: Descriptor;
  config: Descriptor;
  layers: Descriptor[];
  diffIds: Digest[];
}

/** Writes uncompressed layers, a config and a manifest through the store API. */
export async function writeTestImage(store: Store, layers: Buffer[], opts: { cmd?: string[]; label?: string } = {}): Promise<TestImage> {
  const layerDescs: Descriptor[] = [];
  for (const tar of layers) {
    const { digest, size } = await store.writeBlob(tar);
    layerDescs.push({ mediaType: MediaType.OciLayer, digest, size });
  }
  const diffIds = layers.map((l) => sha256(l));
  const cfg = buildConfig({
    architecture: 'amd64',
    os: 'linux',
    config: { Cmd: opts.cmd ?? ['/bin/sh'], Env: ['PATH=/usr/bin:/bin'], ...(opts.label ? { Labels: { l: opts.label } } : {}) },
    diffIds,
    history: layers.map((_, i) => ({ created_by: `layer ${i}` })),
  });
  const config = await store.putJson(MediaType.OciConfig, cfg);
  const manifest = await store.putJson(MediaType.OciManifest, buildManifest(config, layerDescs));
  return { manifest, config, layers: layerDescs, diffIds };
}
