import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UsageError } from '@tsbuild/errors';
import { MediaType, type Manifest } from '@tsbuild/oci';
import { convertManifest, formatOfManifest, toDockerManifest, toOciManifest } from './convert.ts';

const d = (n: string): `sha256:${string}` => `sha256:${n.repeat(64)}`;
const oci: Manifest = {
  schemaVersion: 2,
  mediaType: MediaType.OciManifest,
  config: { mediaType: MediaType.OciConfig, digest: d('a'), size: 10 },
  layers: [
    { mediaType: MediaType.OciLayerGzip, digest: d('b'), size: 20, annotations: { x: 'y' } },
    { mediaType: MediaType.OciLayer, digest: d('c'), size: 30 },
  ],
  annotations: { 'org.opencontainers.image.created': '2020-01-01T00:00:00Z' },
};

test('OCI to Docker schema 2 and back keeps digests and sizes', () => {
  const docker = toDockerManifest(oci);
  assert.equal(docker.mediaType, MediaType.DockerManifest);
  assert.equal(docker.config.mediaType, MediaType.DockerConfig);
  assert.deepEqual(docker.layers.map((l) => l.mediaType), [MediaType.DockerLayerGzip, MediaType.DockerLayer]);
  assert.deepEqual(docker.layers.map((l) => [l.digest, l.size]), oci.layers.map((l) => [l.digest, l.size]));
  assert.equal(docker.annotations, undefined);
  assert.equal(docker.layers[0]?.annotations, undefined);
  assert.equal(formatOfManifest(docker), 'docker');

  const back = toOciManifest(docker);
  assert.equal(back.mediaType, MediaType.OciManifest);
  assert.deepEqual(back.layers.map((l) => l.mediaType), [MediaType.OciLayerGzip, MediaType.OciLayer]);
  assert.equal(formatOfManifest(back), 'oci');
  // Converting to the format it already has changes nothing but the optional extras.
  assert.deepEqual(convertManifest(oci, 'oci'), oci);
});

test('zstd layers cannot become Docker layers', () => {
  const z: Manifest = { ...oci, layers: [{ mediaType: MediaType.OciLayerZstd, digest: d('d'), size: 1 }] };
  assert.throws(() => toDockerManifest(z), (e: unknown) => e instanceof UsageError && /zstd/.test(e.message));
  assert.throws(() => toDockerManifest({ ...oci, layers: [{ mediaType: 'text/plain', digest: d('d'), size: 1 }] }), /text\/plain/);
});
