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
  dockerConfigCredentials,
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

test('a second push uploads no blob; a sibling repository gets blobs by cross-repository mount', async (t) => {
  const reg = await startRegistry();
  t.after(() => reg.stop());
  const proxy = await startFaultProxy(reg.host);
  t.after(() => proxy.stop());
  const c = client();
  t.after(() => c.close());
  const img = await sampleImage();
  const ref = parseReference(`${proxy.host}/tsbuild/app:v1`);

  const first = await pushImage(c, ref, memorySource(img), CHUNKED);
  assert.equal(proxy.counters.uploadStarts, 3);
  assert.ok(proxy.counters.uploadPatches >= 5, `chunked upload used ${proxy.counters.uploadPatches} PATCHes`);

  proxy.resetCounters();
  const statuses: string[] = [];
  const second = await pushImage(c, ref, memorySource(img), { ...CHUNKED, onBlob: (e) => statuses.push(e.status) });
  assert.equal(second.digest, first.digest);
  assert.deepEqual(statuses, ['exists', 'exists', 'exists']);
  assert.equal(proxy.counters.blobHeads, 3);
  assert.equal(proxy.counters.uploadStarts + proxy.counters.uploadPatches + proxy.counters.uploadPuts, 0);

  proxy.resetCounters();
  const other = parseReference(`${proxy.host}/tsbuild/other:v1`);
  const source = memorySource(img);
  const mounted: string[] = [];
  await pushImage(c, other, source, { ...CHUNKED, mountFrom: 'tsbuild/app', onBlob: (e) => mounted.push(e.status) });
  assert.deepEqual(mounted, ['mounted', 'mounted', 'mounted']);
  assert.equal(proxy.counters.mounts, 3);
  assert.equal(proxy.counters.uploadPatches + proxy.counters.uploadPuts, 0);
  assert.deepEqual(source.opened, [], 'no blob was read for a mount');
  assert.equal((await getManifest(c, other)).descriptor.digest, first.digest);
});

test('push and pull complete through a proxy that drops, fails, throttles and stalls', async (t) => {
  const reg = await startRegistry();
  t.after(() => reg.stop());
  const proxy = await startFaultProxy(reg.host);
  t.after(() => proxy.stop());
  const c = client({ retries: 6 });
  t.after(() => c.close());
  const img = await sampleImage();
  const ref = parseReference(`${proxy.host}/tsbuild/flaky:v1`);

  proxy.inject(
    { action: 503, method: 'GET', path: /^\/v2\/$/ },
    { action: 503, method: 'HEAD', path: /\/blobs\/sha256:/ },
    { action: 429, method: 'POST', path: /\/blobs\/uploads\/$/ },
    { action: 'drop', method: 'PUT', path: /\/blobs\/uploads\/./ },
    // PATCH faults land on later chunks, so the upload resumes from the registry's Range.
    { action: 'drop-request-midway', method: 'PATCH', after: 2 },
    { action: 500, method: 'PATCH', after: 3 },
    { action: 'stall', method: 'PATCH', after: 4 },
    { action: 502, method: 'PUT', path: /\/manifests\// },
  );
  const pushed = await pushImage(c, ref, memorySource(img), { ...CHUNKED, concurrency: 1 });
  assert.equal(pushed.digest, digestOf(img.manifestBytes));
  assert.deepEqual(proxy.pending(), [], 'every injected push fault fired');

  proxy.inject(
    { action: 503, method: 'GET', path: /\/manifests\// },
    { action: 'drop', method: 'GET', path: /\/blobs\/sha256:/ },
    { action: 'drop-response-midway', method: 'GET', path: /\/blobs\/sha256:/ },
    { action: 'stall', method: 'GET', path: /\/blobs\/sha256:/ },
    { action: 429, method: 'GET', path: /\/blobs\/sha256:/ },
  );
  const dir = await tempDir(t);
  const sink = dirSink(dir);
  const pulled = await pullImage(c, ref, sink, { concurrency: 2 });
  assert.deepEqual(proxy.pending(), [], 'every injected pull fault fired');
  assert.equal(pulled.manifestDescriptor.digest, pushed.digest);
  await assertPulledMatches(img, dir, [img.manifest.config.digest, ...img.manifest.layers.map((l) => l.digest)]);

  // And the registry itself, asked directly, holds exactly the pushed image.
  const direct = client();
  t.after(() => direct.close());
  const check = await getManifest(direct, parseReference(`${reg.host}/tsbuild/flaky:v1`));
  assert.equal(check.descriptor.digest, pushed.digest);
  JSON.parse(execFileSync('skopeo', ['inspect', '--tls-verify=false', `docker://${reg.host}/tsbuild/flaky:v1`], { encoding: 'utf8' }));
});

test('content that does not match its digest is refused, naming the digest', async (t) => {
  const reg = await startRegistry();
  t.after(() => reg.stop());
  const proxy = await startFaultProxy(reg.host);
  t.after(() => proxy.stop());
  const c = client({ retries: 1 });
  t.after(() => c.close());
  const img = await sampleImage();
  const ref = parseReference(`${proxy.host}/tsbuild/bad:v1`);
  await pushImage(c, ref, memorySource(img), CHUNKED);

  // Pull: the registry (here, the proxy) serves a corrupted layer, every time.
  const layer = img.manifest.layers[0]!;
  proxy.inject({ action: 'corrupt', method: 'GET', path: new RegExp(`/blobs/${layer.digest}$`), times: 100 });
  const dir = await tempDir(t);
  const sink = dirSink(dir);
  await assert.rejects(pullImage(c, ref, sink), (e: unknown) => {
    assert.ok(e instanceof RegistryError);
    assert.ok(e.message.includes(layer.digest), e.message);
    assert.match(e.message, /refusing/);
    return true;
  });
  assert.ok(sink.aborts.includes(layer.digest));
  assert.ok(!sink.commits.includes(layer.digest), 'a corrupted blob is never committed');
  await assert.rejects(stat(join(dir, layer.digest.slice(7))));

  // Push: a source whose bytes are not what the manifest says, small (monolithic) and large (chunked).
  for (const target of img.manifest.layers) {
    const lie = new Map([[target.digest, Buffer.alloc(target.size, 7)]]);
    const bref = parseReference(`${reg.host}/tsbuild/lie-${target.size > CHUNKED.monolithicMax ? 'chunked' : 'mono'}:v1`);
    await assert.rejects(pushImage(c, bref, memorySource(img, { override: lie }), CHUNKED), (e: unknown) => {
      assert.ok(e instanceof RegistryError);
      assert.ok(e.message.includes(target.digest), e.message);
      return true;
    });
    await assert.rejects(getManifest(c, bref), /manifest not found/);
  }
});

test('Basic auth: the right password works, a wrong one gets a clear 401 without the password', async (t) => {
  const user = 'alice';
  const password = 'S3cret-pa55word';
  const reg = await startRegistry({ auth: { htpasswd: { user, password } } });
  t.after(() => reg.stop());
  const img = await sampleImage();
  const ref = parseReference(`${reg.host}/tsbuild/private:v1`);

  const good = client({ credentials: async () => ({ username: user, password }) });
  t.after(() => good.close());
  const pushed = await pushImage(good, ref, memorySource(img));
  assert.equal((await getManifest(good, ref)).descriptor.digest, pushed.digest);

  const wrong = client({ credentials: async () => ({ username: user, password: 'wrong-password-123' }) });
  t.after(() => wrong.close());
  await assert.rejects(getManifest(wrong, ref), (e: unknown) => {
    assert.ok(e instanceof RegistryError);
    assert.equal(e.status, 401);
    assert.match(e.message, /refused the credentials/);
    assert.ok(e.message.includes(reg.host));
    assert.ok(!e.message.includes('wrong-password-123') && !String(e.hint).includes('wrong-password-123'));
    return true;
  });
  const none = client();
  t.after(() => none.close());
  await assert.rejects(getManifest(none, ref), /requires authentication and no credentials are configured/);

  // login verifies before saving, saves 0600, and logout forgets.
  const cfgDir = await tempDir(t);
  await assert.rejects(login(reg.host, user, 'nope-nope', { configDir: cfgDir }), (e: unknown) => e instanceof RegistryError && !e.message.includes('nope-nope'));
  await assert.rejects(stat(join(cfgDir, 'config.json')));
  await login(reg.host, user, password, { configDir: cfgDir });
  const file = join(cfgDir, 'config.json');
  assert.equal((await stat(file)).mode & 0o777, 0o600);
  const saved = JSON.parse(await readFile(file, 'utf8')) as { auths: Record<string, { auth: string }> };
  assert.equal(Buffer.from(saved.auths[reg.host]!.auth, 'base64').toString(), `${user}:${password}`);
  const fromConfig = client({ credentials: dockerConfigCredentials({ configDir: cfgDir }) });
  t.after(() => fromConfig.close());
  assert.equal((await getManifest(fromConfig, ref)).descriptor.digest, pushed.digest);
  assert.equal(await logout(reg.host, { configDir: cfgDir }), true);
  assert.deepEqual((JSON.parse(await readFile(file, 'utf8')) as { auths: object }).auths, {});
});

test('token auth: Bearer tokens per scope from a token server, by password or refresh token', async (t) => {
  const ts = await startTokenServer({ users: { bob: 'tok3n-pass' }, refreshToken: 'refresh-me-please' });
  t.after(() => ts.stop());
  const reg = await startRegistry({ auth: { token: { realm: ts.realm, service: ts.service, issuer: ts.issuer, certFile: ts.certFile } } });
  t.after(() => reg.stop());
  const img = await sampleImage();
  const ref = parseReference(`${reg.host}/team/app:v1`);

  const c = client({ credentials: async () => ({ username: 'bob', password: 'tok3n-pass' }) });
  t.after(() => c.close());
  const pushed = await pushImage(c, ref, memorySource(img), CHUNKED);
  // Tokens are cached per scope: one token served every request of the push.
  assert.deepEqual(ts.requests.map((r) => r.scopes), [['repository:team/app:pull,push']]);
  const dir = await tempDir(t);
  await pullImage(c, ref, dirSink(dir));
  assert.deepEqual(ts.requests.map((r) => r.scopes)[1], ['repository:team/app:pull']);
  assert.equal(ts.requests.length, 2);

  const viaRefresh = client({ credentials: async () => ({ identityToken: 'refresh-me-please' }) });
  t.after(() => viaRefresh.close());
  assert.equal((await getManifest(viaRefresh, ref)).descriptor.digest, pushed.digest);
  assert.equal(ts.requests.at(-1)?.via, 'refresh');

  const wrong = client({ credentials: async () => ({ username: 'bob', password: 'not-it-at-all' }) });
  t.after(() => wrong.close());
  await assert.rejects(getManifest(wrong, ref), (e: unknown) => {
    assert.ok(e instanceof RegistryError);
    assert.match(e.message, /token server .* refused the credentials/);
    assert.ok(!e.message.includes('not-it-at-all'));
    return true;
  });
  const anon = client();
  t.after(() => anon.close());
  await assert.rejects(getManifest(anon, ref), /refused anonymous access/);

  const cfgDir = await tempDir(t);
  await login(reg.host, 'bob', 'tok3n-pass', { configDir: cfgDir });
  await assert.rejects(login(reg.host, 'bob', 'bad', { configDir: join(cfgDir, 'other') }), RegistryError);
});

test('a registry that is down gives a clear RegistryError', async () => {
  const port = await freePort();
  const c = client();
  try {
    await assert.rejects(getManifest(c, parseReference(`127.0.0.1:${port}/tsbuild/app:v1`)), (e: unknown) => {
      assert.ok(e instanceof RegistryError);
      assert.match(e.message, new RegExp(`cannot connect to 127\\.0\\.0\\.1:${port}: connection refused`));
      return true;
    });
  } finally {
    c.close();
  }
});
