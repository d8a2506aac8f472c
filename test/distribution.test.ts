/**
 * Registries end to end, through the CLI: build → push → skopeo/umoci read it → pull into fresh
 * roots → run; FROM a registry image; blob reuse and cross-repository mounts; zstd and Docker
 * formats; faults; Basic auth with login/logout; a registry that is down; remote history.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MediaType } from '../packages/oci/src/index.ts';
import { busyboxTar } from './helpers/base.ts';
import { ensureCli, tsbuildNonBlocking as tsbuild, type CliResult } from './helpers/cli.ts';
import { freePort, startRegistry, type RunningRegistry } from './helpers/registry.ts';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.ts';
import { writeContext } from './helpers/context.ts';

let work: string;
/** The root that builds and pushes. */
let root: string;
let reg: RunningRegistry;
/** Every request of the tests below goes through this proxy, so they can be counted. */
let px: FaultProxy;
let appDigest: string;

const GREETING = 'hello from the registry\n';

function ok(r: CliResult, what: string): CliResult {
  assert.equal(r.code, 0, `${what} failed:\n${r.stderr}`);
  return r;
}

function noStack(s: string): void {
  assert.doesNotMatch(s, /\n\s+at .+\(.*:\d+:\d+\)/, `unexpected stack trace:\n${s}`);
}

/** A new empty root (store, snapshots, cache) that has never seen any image. */
function freshRoot(name: string): string {
  const r = join(work, name);
  assert.ok(!existsSync(r));
  return r;
}

function context(name: string, dockerfile: string): string {
  return writeContext(join(work, name), dockerfile);
}

interface RawManifest {
  mediaType?: string;
  config: { mediaType: string; digest: string };
  layers: Array<{ mediaType: string; digest: string; size: number }>;
}

function rawManifest(ref: string): RawManifest {
  return JSON.parse(execFileSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${ref}`], { encoding: 'utf8' })) as RawManifest;
}

async function blobHead(repo: string, digest: string): Promise<Buffer> {
  const res = await fetch(`${reg.url}/v2/${repo}/blobs/${digest}`, { headers: { range: 'bytes=0-3' } });
  assert.ok(res.ok, `GET blob ${digest}: ${res.status}`);
  return Buffer.from(await res.arrayBuffer()).subarray(0, 4);
}

before(async () => {
  ensureCli();
  work = mkdtempSync(join(tmpdir(), 'tsbuild-dist-'));
  root = join(work, 'root');
  ok(await tsbuild(root, ['import', busyboxTar(), '-t', 'busybox:latest']), 'import');
  const ctx = context('app', `FROM busybox:latest\nRUN printf '${GREETING.replace('\n', '\\n')}' > /greeting\nCMD ["cat", "/greeting"]\n`);
  ok(await tsbuild(root, ['build', '-q', '-t', 'app:1', ctx]), 'build app:1');
  reg = await startRegistry();
  px = await startFaultProxy(reg.host);
});

after(async () => {
  await px?.stop();
  await reg?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

test('push and build --push; skopeo sees gzip layers and umoci unpacks a skopeo copy', async () => {
  const pushed = ok(await tsbuild(root, ['push', 'app:1', `${px.host}/app:1`]), 'push');
  appDigest = pushed.stdout.trim();
  assert.match(appDigest, /^sha256:[0-9a-f]{64}$/);
  assert.ok(px.counters.manifestPuts >= 1 && px.counters.uploadPuts >= 3, 'config and both layers were uploaded');

  const ctx = context('app2', 'FROM busybox:latest\nRUN echo two > /two\n');
  const built = ok(await tsbuild(root, ['build', '--push', '-q', '-t', `${px.host}/app:2`, ctx]), 'build --push');
  assert.match(built.stdout, /^sha256:/);

  const info = JSON.parse(execFileSync('skopeo', ['inspect', '--tls-verify=false', `docker://${reg.host}/app:1`], { encoding: 'utf8' })) as { Digest: string; Os: string; Architecture: string; Layers: string[] };
  assert.equal(info.Digest, appDigest);
  assert.equal(info.Os, 'linux');
  assert.equal(info.Architecture, 'amd64');
  for (const tag of ['1', '2']) {
    const m = rawManifest(`${reg.host}/app:${tag}`);
    assert.equal(m.mediaType, MediaType.OciManifest);
    assert.equal(m.layers.length, 2);
    for (const l of m.layers) {
      assert.equal(l.mediaType, MediaType.OciLayerGzip);
      assert.deepEqual([...(await blobHead('app', l.digest)).subarray(0, 2)], [0x1f, 0x8b], 'the blob really is gzip');
    }
  }

  const layout = join(work, 'layout');
  execFileSync('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${reg.host}/app:1`, `oci:${layout}:app`]);
  const bundle = join(work, 'bundle');
  execFileSync('umoci', ['unpack', '--image', `${layout}:app`, bundle]);
  assert.equal(readFileSync(join(bundle, 'rootfs/greeting'), 'utf8'), GREETING);
  assert.ok(existsSync(join(bundle, 'rootfs/bin/busybox')));
});

test('a fresh root pulls by tag and by digest and runs the image', async () => {
  const a = freshRoot('pull-tag');
  const byTag = ok(await tsbuild(a, ['pull', `${px.host}/app:1`]), 'pull by tag');
  assert.equal(byTag.stdout.trim(), appDigest);
  assert.equal(ok(await tsbuild(a, ['run', `${px.host}/app:1`]), 'run').stdout, GREETING);
  assert.match(ok(await tsbuild(a, ['images']), 'images').stdout, new RegExp(`${px.host.replace(/[.]/g, '\\.')}/app\\s+1\\s`));

  const b = freshRoot('pull-digest');
  const ref = `${px.host}/app@${appDigest}`;
  assert.equal(ok(await tsbuild(b, ['pull', ref]), 'pull by digest').stdout.trim(), appDigest);
  assert.equal(ok(await tsbuild(b, ['run', ref]), 'run by digest').stdout, GREETING);
  assert.equal(ok(await tsbuild(b, ['run', ref, 'sh', '-c', 'cat /greeting; echo more']), 'run cmd').stdout, `${GREETING}more\n`);
});

test('a second push of the same image uploads no blob; another repository mounts them', async () => {
  px.resetCounters();
  ok(await tsbuild(root, ['push', 'app:1', `${px.host}/app:1`]), 'second push');
  assert.equal(px.counters.uploadStarts, 0);
  assert.equal(px.counters.uploadPatches + px.counters.uploadPuts, 0);
  assert.equal(px.counters.mounts, 0);
  assert.equal(px.counters.blobHeads, 3, 'config and two layers were checked');

  px.resetCounters();
  const r = ok(await tsbuild(root, ['push', 'app:1', `${px.host}/base:1`]), 'push to another repository');
  assert.equal(r.stdout.trim(), appDigest);
  assert.equal(px.counters.mounts, 3, 'config and layers mounted from app');
  assert.equal(px.counters.uploadStarts, 0, 'nothing uploaded');
  assert.equal(px.counters.uploadPatches + px.counters.uploadPuts, 0);
  assert.equal(rawManifest(`${reg.host}/base:1`).layers.length, 2);
});

test('FROM a registry image pulls once, reuses the store copy, and --pull refreshes it', async () => {
  const c = freshRoot('from-remote');
  const ctx = context('from', `FROM ${px.host}/base:1\nRUN cat /greeting > /copied\nCMD ["cat", "/copied"]\n`);
  px.resetCounters();
  ok(await tsbuild(c, ['build', '-q', '-t', 'derived:1', ctx]), 'first build');
  assert.ok(px.counters.blobGets >= 3, 'the base was pulled');
  assert.equal(ok(await tsbuild(c, ['run', 'derived:1']), 'run').stdout, GREETING);

  px.resetCounters();
  ok(await tsbuild(c, ['build', '-q', '-t', 'derived:1', ctx]), 'second build');
  assert.equal(px.counters.requests, 0, 'the second build made no registry request');

  // Move base:1 to a different image; only --pull notices.
  const next = context('base-next', 'FROM busybox:latest\nRUN echo refreshed > /greeting\n');
  ok(await tsbuild(root, ['build', '-q', '--push', '-t', `${px.host}/base:1`, next]), 'push new base');
  ok(await tsbuild(c, ['build', '-q', '-t', 'derived:2', ctx]), 'build without --pull');
  assert.equal(ok(await tsbuild(c, ['run', 'derived:2']), 'run').stdout, GREETING);
  px.resetCounters();
  ok(await tsbuild(c, ['build', '-q', '--pull', '-t', 'derived:3', ctx]), 'build --pull');
  assert.ok(px.counters.requests > 0);
  assert.equal(ok(await tsbuild(c, ['run', 'derived:3']), 'run').stdout, 'refreshed\n');
});

test('--compression zstd pushes zstd layers that pull back and run', async () => {
  const r = ok(await tsbuild(root, ['push', '--compression', 'zstd', 'app:1', `${px.host}/app:zstd`]), 'zstd push');
  const m = rawManifest(`${reg.host}/app:zstd`);
  assert.equal(m.layers.length, 2);
  for (const l of m.layers) {
    assert.equal(l.mediaType, MediaType.OciLayerZstd);
    assert.deepEqual([...(await blobHead('app', l.digest))], [0x28, 0xb5, 0x2f, 0xfd], 'zstd frame magic');
  }
  const d = freshRoot('pull-zstd');
  assert.equal(ok(await tsbuild(d, ['pull', `${px.host}/app:zstd`]), 'pull zstd').stdout.trim(), r.stdout.trim());
  assert.equal(ok(await tsbuild(d, ['run', `${px.host}/app:zstd`]), 'run zstd').stdout, GREETING);
});

test('--format docker pushes Docker schema2 media types', async () => {
  ok(await tsbuild(root, ['push', '--format', 'docker', 'app:1', `${px.host}/app:docker`]), 'docker push');
  const m = rawManifest(`${reg.host}/app:docker`);
  assert.equal(m.mediaType, MediaType.DockerManifest);
  assert.equal(m.config.mediaType, MediaType.DockerConfig);
  for (const l of m.layers) assert.equal(l.mediaType, MediaType.DockerLayerGzip);
  const e = freshRoot('pull-docker');
  ok(await tsbuild(e, ['pull', `${px.host}/app:docker`]), 'pull docker');
  assert.equal(ok(await tsbuild(e, ['run', `${px.host}/app:docker`]), 'run docker').stdout, GREETING);
  const z = await tsbuild(root, ['push', '--format', 'docker', '--compression', 'zstd', 'app:1', `${px.host}/app:bad`]);
  assert.equal(z.code, 2, z.stderr);
  assert.match(z.stderr, /zstd/);
});

test('push and pull complete through failures, drops and stalls', async () => {
  const ctx = context('big', 'FROM busybox:latest\nRUN head -c 20m /dev/urandom > /big && echo big > /marker\n');
  ok(await tsbuild(root, ['build', '-q', '-t', 'big:1', ctx]), 'build big');
  px.resetCounters();
  const upload = /\/blobs\/uploads\/./;
  px.inject(
    { action: 503, method: 'GET', path: /^\/v2\/$/ },
    { action: 429, method: 'HEAD', path: /\/blobs\/sha256:/ },
    { action: 500, method: 'POST', path: /\/blobs\/uploads\/$/ },
    // The fresh layer streams up while it is compressed: cut that, and it goes up again from the store.
    { action: 'drop-request-midway', method: 'PATCH', path: upload },
    { action: 'drop', method: 'PUT', path: upload },
    { action: 'drop-request-midway', method: 'PUT', path: upload },
    { action: 'stall', method: 'PUT', path: upload },
    { action: 503, method: 'PUT', path: /\/manifests\// },
  );
  const pushed = ok(await tsbuild(root, ['push', '--registry-timeout', '2', 'big:1', `${px.host}/big:1`]), 'push through faults');
  assert.deepEqual(px.pending(), [], 'every push fault fired');
  assert.ok(px.counters.uploadPatches >= 1, 'the fresh layer was streamed as it was compressed');
  assert.equal(rawManifest(`${reg.host}/big:1`).layers.length, 2);

  px.inject(
    { action: 503, method: 'GET', path: /\/manifests\// },
    { action: 'drop', method: 'GET', path: /\/blobs\/sha256:/ },
    { action: 'drop-response-midway', method: 'GET', path: /\/blobs\/sha256:/ },
    { action: 'stall', method: 'GET', path: /\/blobs\/sha256:/ },
    { action: 429, method: 'GET', path: /\/blobs\/sha256:/ },
  );
  const f = freshRoot('pull-faults');
  const pulled = ok(await tsbuild(f, ['pull', '--registry-timeout', '2', `${px.host}/big:1`]), 'pull through faults');
  assert.deepEqual(px.pending(), [], 'every pull fault fired');
  assert.equal(pulled.stdout.trim(), pushed.stdout.trim());
  assert.equal(ok(await tsbuild(f, ['run', `${px.host}/big:1`, 'sh', '-c', 'cat /marker; wc -c < /big']), 'run big').stdout, 'big\n20971520\n');
});

test('Basic auth: login stores credentials, push works, a wrong password is a clear 401, logout removes them', async (t) => {
  const user = 'builder';
  const password = 'correct-horse-battery';
  const secure = await startRegistry({ auth: { htpasswd: { user, password } } });
  t.after(() => secure.stop());
  const dockerConfig = join(work, 'docker-config');
  const env = { DOCKER_CONFIG: dockerConfig };
  const configFile = join(dockerConfig, 'config.json');

  const anon = await tsbuild(root, ['push', 'app:1', `${secure.host}/app:1`], { env });
  assert.notEqual(anon.code, 0);
  assert.match(anon.stderr, /401|unauthori[sz]ed|authentication/i);
  assert.ok(anon.stderr.includes(secure.host), 'the error names the registry');
  noStack(anon.stderr);

  const wrong = await tsbuild(root, ['login', secure.host, '-u', user, '--password-stdin'], { env, input: 'not-the-password-42\n' });
  assert.notEqual(wrong.code, 0);
  assert.match(wrong.stderr, /401|unauthori[sz]ed|denied|incorrect/i);
  assert.ok(!(wrong.stderr + wrong.stdout).includes('not-the-password-42'), 'the password is never printed');
  noStack(wrong.stderr);
  assert.ok(!existsSync(configFile) || !readFileSync(configFile, 'utf8').includes(secure.host), 'a refused login stores nothing');

  ok(await tsbuild(root, ['login', secure.host, '-u', user, '--password-stdin'], { env, input: `${password}\n` }), 'login');
  const cfg = JSON.parse(readFileSync(configFile, 'utf8')) as { auths: Record<string, { auth: string }> };
  assert.equal(Buffer.from(cfg.auths[secure.host]?.auth ?? '', 'base64').toString(), `${user}:${password}`);

  const pushed = ok(await tsbuild(root, ['push', 'app:1', `${secure.host}/app:1`], { env }), 'authenticated push');
  assert.equal(pushed.stdout.trim(), appDigest);
  const g = freshRoot('pull-auth');
  ok(await tsbuild(g, ['pull', `${secure.host}/app:1`], { env }), 'authenticated pull');
  assert.equal(ok(await tsbuild(g, ['run', `${secure.host}/app:1`]), 'run').stdout, GREETING);

  ok(await tsbuild(root, ['logout', secure.host], { env }), 'logout');
  const after = JSON.parse(readFileSync(configFile, 'utf8')) as { auths?: Record<string, unknown> };
  assert.equal(after.auths?.[secure.host], undefined);
  const again = await tsbuild(freshRoot('pull-after-logout'), ['pull', `${secure.host}/app:1`], { env });
  assert.notEqual(again.code, 0);
  assert.match(again.stderr, /401|unauthori[sz]ed|authentication/i);
});

test('a registry that is down gives a clear error and a non-zero exit', async () => {
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  for (const args of [
    ['push', 'app:1', `${host}/app:1`],
    ['pull', `${host}/app:1`],
  ]) {
    const r = await tsbuild(root, args);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.ok(r.stderr.includes(host), `the error names ${host}:\n${r.stderr}`);
    assert.match(r.stderr, /connect|refused|unreachable/i);
    noStack(r.stderr);
  }
});

test('history of a remote image reads manifest and config only', async () => {
  const h = freshRoot('history');
  px.resetCounters();
  const r = ok(await tsbuild(h, ['history', `${px.host}/app:1`]), 'remote history');
  assert.match(r.stdout, /CMD \["cat" "\/greeting"\]/);
  assert.match(r.stdout, /RUN .*printf/);
  assert.match(r.stdout, /tsbuild import/);
  assert.equal(px.counters.blobGets, 1, 'only the config blob was fetched');
  assert.doesNotMatch(ok(await tsbuild(h, ['images']), 'images').stdout, /app/);
});
