import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { spawn } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { MediaType, buildConfig, buildManifest, validateImage } from '@tsbuild/oci';
import { openStore } from './index.ts';
import { makeTar, tempRoot, writeTestImage } from './testutil.ts';

const run = promisify(execFile);

test('skopeo inspects and umoci unpacks an image written through the store', async (t) => {
  const root = tempRoot(t);
  const store = await openStore({ root });
  const img = await writeTestImage(store, [makeTar({ 'hello.txt': 'hello from tsbuild\n' }), makeTar({ 'etc/motd': 'second layer\n' })], { cmd: ['/bin/true'] });
  await store.tag('app', img.manifest);
  const layout = join(root, 'oci');

  const { stdout } = await run('skopeo', ['inspect', `oci:${layout}:app:latest`]);
  const info = JSON.parse(stdout) as { Digest: string; Layers: string[]; Architecture: string; Os: string };
  assert.equal(info.Digest, img.manifest.digest);
  assert.deepEqual(info.Layers, img.layers.map((l) => l.digest));
  assert.equal(info.Architecture, 'amd64');
  const raw = await run('skopeo', ['inspect', '--raw', `oci:${layout}:app:latest`]);
  assert.equal(raw.stdout, readFileSync(store.blobPath(img.manifest.digest), 'utf8'));

  const bundle = join(root, 'bundle');
  await run('umoci', ['unpack', '--image', `${layout}:app:latest`, bundle]);
  assert.equal(readFileSync(join(bundle, 'rootfs', 'hello.txt'), 'utf8'), 'hello from tsbuild\n');
  assert.equal(readFileSync(join(bundle, 'rootfs', 'etc', 'motd'), 'utf8'), 'second layer\n');
  const cfg = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as { process: { args: string[] } };
  assert.deepEqual(cfg.process.args, ['/bin/true']);
});

test('gzip and zstd variants made by compressedBlob form valid images', async (t) => {
  const root = tempRoot(t);
  const store = await openStore({ root });
  const tar = makeTar({ 'z.txt': 'zipped\n' });
  const { digest: diffId } = await store.writeBlob(tar);
  const gz = await store.compressedBlob(diffId, 'gzip', (src, sink) => pipeline(src, createGzip(), sink));
  const config = await store.putJson(MediaType.OciConfig, buildConfig({ architecture: 'amd64', os: 'linux', diffIds: [diffId] }));
  const manifest = await store.putJson(MediaType.OciManifest, buildManifest(config, [gz]));
  await store.tag('zipped:1', manifest);
  const layout = join(root, 'oci');
  const out = join(root, 'copy');
  await run('skopeo', ['copy', `oci:${layout}:zipped:1`, `oci:${out}:copy`]);
  const bundle = join(root, 'bundle');
  await run('umoci', ['unpack', '--image', `${out}:copy`, bundle]);
  assert.equal(readFileSync(join(bundle, 'rootfs', 'z.txt'), 'utf8'), 'zipped\n');
  // With the uncompressed tar gone, the store's Image must decompress gzip and zstd itself.
  const zst = await store.compressedBlob(diffId, 'zstd', async (src, sink) => {
    const child = spawn('zstd', ['-q', '-c', '-3'], { stdio: ['pipe', 'pipe', 'inherit'] });
    const exited = new Promise<number | null>((res, rej) => child.on('error', rej).on('close', res));
    await Promise.all([pipeline(src, child.stdin), pipeline(child.stdout, sink)]);
    assert.equal(await exited, 0);
  });
  assert.equal(zst.mediaType, MediaType.OciLayerZstd);
  const zManifest = await store.putJson(MediaType.OciManifest, buildManifest(config, [zst]));
  await store.tag('zstd:1', zManifest);
  rmSync(store.blobPath(diffId));
  await validateImage(await store.loadImage('zipped:1'));
  await validateImage(await store.loadImage('zstd:1'));
  const layer = (await (await store.loadImage('zstd:1')).layers())[0]!;
  assert.deepEqual(Buffer.concat(await (await layer.uncompressed()).toArray()), tar);
  // a corrupt zstd blob surfaces as an error on the stream, naming the layer
  writeFileSync(store.blobPath(zst.digest), 'not zstd');
  await assert.rejects(async () => (await layer.uncompressed()).toArray(), new RegExp(`zstd layer ${zst.digest} failed to decompress`));
});
