import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { MediaType, type Digest, type Image, type Layer, type Manifest } from '@tsbuild/oci';
import { imageSource, storeSink } from './adapters.ts';

const sha = (b: Uint8Array): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function readAll(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts);
}

test('storeSink commits with the descriptor as the expected digest and size', async () => {
  const calls: string[] = [];
  const sink = storeSink({
    hasBlob: async (d) => d === sha(Buffer.from('x')),
    blobWriter: () => {
      const parts: Buffer[] = [];
      return {
        stream: new Writable({ write: (c: Buffer, _e, cb) => (parts.push(c), cb()) }),
        commit: async (expected) => {
          calls.push(`commit ${expected?.digest} ${expected?.size} ${Buffer.concat(parts).toString()}`);
          return {};
        },
        abort: async () => void calls.push('abort'),
      };
    },
  });
  assert.equal(await sink.has(sha(Buffer.from('x'))), true);
  const data = Buffer.from('hello');
  const w = await sink.write({ mediaType: 'x', digest: sha(data), size: 5 });
  await pipeline(Readable.from([data]), w.stream);
  await w.commit();
  await (await sink.write({ mediaType: 'x', digest: sha(data), size: 5 })).abort();
  assert.deepEqual(calls, [`commit ${sha(data)} 5 hello`, 'abort']);
});

test('imageSource serves the raw manifest, the config and layers by digest', async () => {
  const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
  const layer = Buffer.from('layer');
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.DockerManifest,
    config: { mediaType: MediaType.DockerConfig, digest: sha(config), size: config.length },
    layers: [{ mediaType: MediaType.DockerLayerGzip, digest: sha(layer), size: layer.length }],
  };
  const raw = Buffer.from(JSON.stringify(manifest));
  const l: Layer = {
    diffId: async () => sha(layer),
    digest: async () => sha(layer),
    size: async () => layer.length,
    mediaType: async () => MediaType.DockerLayerGzip,
    uncompressed: async () => Readable.from([layer]),
    compressed: async () => Readable.from([layer]),
  };
  const image: Image = {
    digest: async () => sha(raw),
    rawManifest: async () => raw,
    manifest: async () => manifest,
    rawConfig: async () => config,
    config: async () => JSON.parse(config.toString()),
    configDescriptor: async () => manifest.config,
    layers: async () => [l],
  };
  const src = imageSource(image);
  assert.deepEqual(await src.manifest(), { bytes: raw, mediaType: MediaType.DockerManifest });
  assert.deepEqual(await readAll(await src.openBlob(manifest.config)), config);
  assert.deepEqual(await readAll(await src.openBlob(manifest.layers[0]!)), layer);
  await assert.rejects(src.openBlob({ mediaType: 'x', digest: sha(Buffer.from('nope')), size: 4 }), /has no blob/);
});
