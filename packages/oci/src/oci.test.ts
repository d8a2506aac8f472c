import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { TsbuildError } from '@tsbuild/errors';
import {
  MediaType,
  buildConfig,
  buildIndex,
  buildManifest,
  canonicalJson,
  chainIds,
  descriptorFor,
  isIndexMediaType,
  isManifestMediaType,
  layerCompression,
  parseConfig,
  parseIndex,
  parseManifest,
  serialize,
  sha256,
  validateImage,
} from './index.ts';
import type { Descriptor, Digest, HistoryEntry, Image, ImageConfig, Layer, Manifest } from './index.ts';

const hex = (s: string) => createHash('sha256').update(s).digest('hex');

test('canonicalJson gives the same bytes whatever the key order', () => {
  const a = canonicalJson({ b: 1, a: { y: [1, { d: 2, c: 3 }], x: undefined } });
  const b = canonicalJson({ a: { y: [1, { c: 3, d: 2 }] }, b: 1 });
  assert.equal(a.toString(), '{"a":{"y":[1,{"c":3,"d":2}]},"b":1}');
  assert.deepEqual(a, b);
});

test('chainIds: first is the diff_id, then sha256 of "parent diff"', () => {
  const d0 = `sha256:${hex('a')}` as Digest;
  const d1 = `sha256:${hex('b')}` as Digest;
  const d2 = `sha256:${hex('c')}` as Digest;
  const c = chainIds([d0, d1, d2]);
  assert.equal(c[0], d0);
  assert.equal(c[1], `sha256:${hex(`${d0} ${d1}`)}`);
  assert.equal(c[2], `sha256:${hex(`${c[1]} ${d2}`)}`);
  assert.deepEqual(chainIds([]), []);
});

test('media type helpers accept OCI and Docker schema2 types', () => {
  assert.ok(isIndexMediaType(MediaType.OciIndex));
  assert.ok(isIndexMediaType(MediaType.DockerManifestList));
  assert.ok(!isIndexMediaType(MediaType.OciManifest));
  assert.ok(isManifestMediaType(MediaType.DockerManifest));
  assert.ok(!isManifestMediaType(undefined));
  assert.equal(layerCompression(MediaType.OciLayer), 'none');
  assert.equal(layerCompression(MediaType.DockerLayer), 'none');
  assert.equal(layerCompression(MediaType.OciLayerGzip), 'gzip');
  assert.equal(layerCompression(MediaType.DockerLayerGzip), 'gzip');
  assert.equal(layerCompression(MediaType.DockerForeignLayerGzip), 'gzip');
  assert.equal(layerCompression(MediaType.OciLayerZstd), 'zstd');
  assert.equal(layerCompression('application/vnd.oci.image.layer.nondistributable.v1.tar+gzip'), 'gzip');
  assert.throws(() => layerCompression('application/json'), /unsupported layer media type "application\/json"/);
});

test('builders produce documents the parsers accept, with stable digests', () => {
  const layer = descriptorFor(MediaType.OciLayer, Buffer.from('tar'));
  const cfg = buildConfig({ architecture: 'amd64', os: 'linux', diffIds: [layer.digest], history: [{ created_by: 'x' }] });
  const c = serialize(MediaType.OciConfig, cfg);
  const m = buildManifest(c.descriptor, [layer], { a: 'b' });
  assert.equal(m.mediaType, MediaType.OciManifest);
  const ms = serialize(MediaType.OciManifest, m);
  assert.deepEqual(parseManifest(ms.bytes), m);
  assert.deepEqual(parseConfig(c.bytes), cfg);
  assert.equal(serialize(MediaType.OciManifest, JSON.parse(ms.bytes.toString()) as Manifest).descriptor.digest, ms.descriptor.digest);
  const idx = buildIndex([{ ...ms.descriptor, platform: { os: 'linux', architecture: 'amd64' } }]);
  assert.deepEqual(parseIndex(canonicalJson(idx)), idx);
  const docker = buildManifest({ ...c.descriptor, mediaType: MediaType.DockerConfig }, [layer], { a: 'b' });
  assert.equal(docker.mediaType, MediaType.DockerManifest);
  assert.equal(docker.annotations, undefined);
});

test('parsers reject hostile or malformed JSON with a message naming the field', () => {
  const good: Manifest = buildManifest(descriptorFor(MediaType.OciConfig, Buffer.from('{}')), []);
  const variant = (patch: Record<string, unknown>) => JSON.stringify({ ...good, ...patch });
  const cases: [string, RegExp][] = [
    ['{', /manifest sha256:x: not valid JSON/],
    ['[]', /must be an object, got an array/],
    [variant({ schemaVersion: 1 }), /schemaVersion must be 2/],
    [variant({ layers: 'x' }), /layers must be an array/],
    [variant({ config: { ...good.config, digest: 'sha256:../../etc/passwd' } }), /config.digest must be a sha256 digest/],
    [variant({ config: { ...good.config, size: -1 } }), /config.size must be a non-negative integer, got -1/],
    [variant({ config: { ...good.config, size: 2 ** 60 } }), /config.size must be a non-negative integer/],
    [variant({ config: { ...good.config, size: 1.5 } }), /config.size must be a non-negative integer/],
    [variant({ layers: [{ mediaType: 1 }] }), /layers\[0\].mediaType must be a string/],
    [variant({ mediaType: MediaType.OciIndex }), /not an image manifest type/],
    [variant({ annotations: { a: 1 } }), /annotations\["a"\] must be a string/],
  ];
  for (const [text, re] of cases) {
    assert.throws(
      () => parseManifest(text, { source: 'sha256:x' }),
      (e: unknown) => e instanceof TsbuildError && e.code === 'BAD_MANIFEST' && re.test(e.message),
      text,
    );
  }
  assert.throws(() => parseIndex('{"schemaVersion":2,"manifests":[{}]}'), /image index: manifests\[0\].mediaType must be a string, got nothing/);
  assert.throws(() => parseConfig('{"architecture":"amd64","os":"linux","rootfs":{"type":"x"}}'), /rootfs.type must be "layers"/);
  assert.throws(
    () => parseConfig('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:1"]}}'),
    /rootfs.diff_ids\[0\] must be a sha256 digest/,
  );
  assert.throws(
    () => parseConfig('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{"Env":"A=1"}}'),
    /config.Env must be an array/,
  );
  const cfg = parseConfig(
    '{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{"Cmd":null,"Env":["A=1"],"ExposedPorts":{"80/tcp":{}}},"container_config":{}}',
  );
  assert.deepEqual(cfg.config, { Cmd: null, Env: ['A=1'], ExposedPorts: { '80/tcp': {} } });
});

interface MemLayer {
  blob: Buffer;
  tar: Buffer;
  mediaType: string;
  diffId?: Digest;
}

function memImage(layers: MemLayer[], tweak: { config?: (c: ImageConfig) => void; manifest?: (m: Manifest) => void; digest?: Digest } = {}): Image {
  const cfg = buildConfig({
    architecture: 'amd64',
    os: 'linux',
    diffIds: layers.map((l) => l.diffId ?? sha256(l.tar)),
    history: [...layers.map((_, i): HistoryEntry => ({ created_by: `step ${i}` })), { created_by: 'ENV', empty_layer: true }],
  });
  tweak.config?.(cfg);
  const c = serialize(MediaType.OciConfig, cfg);
  const manifest = buildManifest(
    c.descriptor,
    layers.map((l) => descriptorFor(l.mediaType, l.blob)),
  );
  tweak.manifest?.(manifest);
  const m = serialize(MediaType.OciManifest, manifest);
  return {
    digest: async () => tweak.digest ?? m.descriptor.digest,
    rawManifest: async () => m.bytes,
    manifest: async () => manifest,
    rawConfig: async () => c.bytes,
    config: async () => cfg,
    configDescriptor: async () => c.descriptor,
    layers: async () =>
      layers.map((l, i): Layer => ({
        diffId: async () => cfg.rootfs.diff_ids[i]!,
        digest: async () => manifest.layers[i]!.digest,
        size: async () => manifest.layers[i]!.size,
        mediaType: async () => manifest.layers[i]!.mediaType,
        compressed: async () => Readable.from([l.blob]),
        uncompressed: async () => Readable.from([l.tar]),
      })),
  };
}

test('validateImage accepts a consistent image and names what is wrong otherwise', async () => {
  const tar1 = Buffer.alloc(3000, 1);
  const tar2 = Buffer.alloc(5000, 2);
  const plain: MemLayer = { blob: tar1, tar: tar1, mediaType: MediaType.OciLayer };
  const gz: MemLayer = { blob: gzipSync(tar2), tar: tar2, mediaType: MediaType.OciLayerGzip };
  await validateImage(memImage([plain, gz]));

  const rejects = async (img: Image, re: RegExp) =>
    assert.rejects(validateImage(img), (e: unknown) => e instanceof TsbuildError && e.code === 'INVALID_IMAGE' && re.test(e.message));
  await rejects(memImage([plain, gz], { digest: sha256('other') }), /manifest bytes hash to/);
  await rejects(memImage([plain, { ...gz, diffId: sha256('nope') }]), /layer 1 \(sha256:[0-9a-f]+\): uncompressed content hashes to sha256:[0-9a-f]+ but config diff_ids\[1\] is sha256:/);
  await rejects(memImage([{ ...plain, diffId: sha256('nope') }]), /layer 0 .*uncompressed content hashes to/);
  await rejects(memImage([plain, gz], { config: (c) => c.rootfs.diff_ids.pop() }), /config lists 1 diff_ids for 2 layers/);
  await rejects(memImage([plain, gz], { config: (c) => c.history!.push({ created_by: 'RUN' }) }), /3 non-empty entries for 2 layers/);
  await rejects(
    memImage([plain, gz], {
      manifest: (m) => {
        m.layers[0] = { ...m.layers[0]!, size: m.layers[0]!.size + 1 };
      },
    }),
    /layer 0 .*blob content is sha256:[0-9a-f]+ \(3000 bytes\), expected .*3001 bytes/,
  );
  await rejects(
    memImage([plain], {
      manifest: (m) => {
        m.config = { ...m.config, size: 1 };
      },
    }),
    /config descriptor .* differs from the manifest's/,
  );
  const base = memImage([plain]);
  const lying: Image = { ...base, rawConfig: async () => Buffer.from('{}') };
  await rejects(lying, /config blob is sha256:[0-9a-f]+ \(2 bytes\) but its descriptor says/);
  const desc: Descriptor = await base.configDescriptor();
  assert.equal(desc.mediaType, MediaType.OciConfig);
});
