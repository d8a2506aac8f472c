import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, stat, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RegistryError } from '../packages/errors/src/index.ts';
import { MediaType } from '../packages/oci/src/index.ts';
import {
  RegistryClient,
  convertManifest,
  getConfig,
  getManifest,
  login,
  logout,
  parseReference,
  pullImage,
  pushImage,
  type ClientOptions,
} from '../packages/registry/src/index.ts';
import { startRegistry, freePort } from './helpers/registry.ts';
import { startFaultProxy } from './helpers/fault-proxy.ts';
import { startTokenServer } from './helpers/token-server.ts';
import { digestOf, dirSink, makeImage, memorySource, randomFile, readBlob, type TestImage } from './helpers/image.ts';

const anonymous: ClientOptions['credentials'] = async () => undefined;

function client(opts: ClientOptions = {}): RegistryClient {
  return new RegistryClient({ credentials: anonymous, retryDelayMs: 5, timeoutMs: 2000, ...opts });
}

/** One small layer and one large enough to go up in PATCH chunks (with monolithicMax lowered). */
async function sampleImage(): Promise<TestImage> {
  return makeImage([{ 'etc/hello.txt': 'hello from tsbuild\n' }, { 'data/random.bin': randomFile(300 * 1024) }]);
}

const CHUNKED = { monolithicMax: 100 * 1024, chunkSize: 64 * 1024 };

async function tempDir(t: { after(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'tsbuild-regtest-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function assertPulledMatches(img: TestImage, dir: string, digests: string[]): Promise<void> {
  for (const d of digests) {
    const got = await readBlob(dir, d);
    assert.equal(digestOf(got), d);
    assert.deepEqual(got, img.blobs.get(d) ?? img.manifestBytes);
  }
}

test('push an image, skopeo reads it, pull it back with matching digests', async (t) => {
  const reg = await startRegistry();
  t.after(() => reg.stop());
  const c = client();
  t.after(() => c.close());
  const img = await sampleImage();
  const ref = parseReference(`${reg.host}/tsbuild/app:v1`);

  const statuses: string[] = [];
  const pushed = await pushImage(c, ref, memorySource(img), { ...CHUNKED, onBlob: (e) => statuses.push(e.status) });
  assert.equal(pushed.digest, digestOf(img.manifestBytes));
  assert.deepEqual(statuses, ['uploaded', 'uploaded', 'uploaded']);

  const inspected = JSON.parse(execFileSync('skopeo', ['inspect', '--tls-verify=false', `docker://${ref.toString()}`], { encoding: 'utf8' })) as {
    Digest: string;
    Layers: string[];
    Architecture: string;
    Os: string;
  };
  assert.equal(inspected.Digest, pushed.digest);
  assert.deepEqual(inspected.Layers, img.manifest.layers.map((l) => l.digest));
  assert.equal(inspected.Architecture, 'amd64');
  assert.equal(inspected.Os, 'linux');

  const dir = await tempDir(t);
  const sink = dirSink(dir);
  const pulled = await pullImage(c, ref, sink);
  assert.equal(pulled.manifestDescriptor.digest, pushed.digest);
  assert.deepEqual(pulled.config, img.config);
  const all = [img.manifest.config.digest, ...img.manifest.layers.map((l) => l.digest)];
  await assertPulledMatches(img, dir, all);
  assert.deepEqual(new Set(sink.commits), new Set([...all, pushed.digest]));
  assert.deepEqual(sink.aborts, []);

  // A second pull finds everything in the sink and downloads nothing.
  const again = dirSink(dir);
  await pullImage(c, ref, again);
  assert.deepEqual(again.commits, []);

  const remote = await getConfig(c, ref);
  assert.deepEqual(remote.config.rootfs, img.config.rootfs);

  // The same image in Docker schema 2: blobs are shared, only the manifest differs.
  const docker = Buffer.from(JSON.stringify(convertManifest(img.manifest, 'docker')));
  const dref = parseReference(`${reg.host}/tsbuild/app:docker`);
  const dpushed = await pushImage(c, dref, memorySource(img, { manifestBytes: docker, mediaType: MediaType.DockerManifest }));
  const dinspect = JSON.parse(execFileSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${dref.toString()}`], { encoding: 'utf8' })) as { mediaType: string };
  assert.equal(dinspect.mediaType, MediaType.DockerManifest);
  const fetched = await getManifest(c, dref);
  assert.equal(fetched.descriptor.digest, dpushed.digest);
  assert.equal(fetched.descriptor.mediaType, MediaType.DockerManifest);
});
