/**
 * The build cache beyond one machine, through the CLI (and the bundled Action for GitHub's
 * cache): export on one root, import on a fresh one whose context lives elsewhere; what crosses
 * the network (counted at a proxy in front of a real docker-registry); mode=min against max; cache
 * mounts that travel; local, inline and gha caches; faults on the cache ref; a cache that lies.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { RegistryClient, fetchBlobBytes, getManifest, parseReference, pushImage } from '../packages/registry/src/index.ts';
import { MediaType, sha256 } from '../packages/oci/src/index.ts';
import type { Manifest } from '../packages/oci/src/index.ts';
import { busyboxTar } from './helpers/base.ts';
import { ensureCli, tsbuildNonBlocking, type CliResult } from './helpers/cli.ts';
import { startRegistry, type RunningRegistry } from './helpers/registry.ts';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.ts';
import { startGhaServer, type GhaServer } from './helpers/gha-server.ts';
import { runBundledActionNonBlocking } from './helpers/action.ts';
import { writeContext } from './helpers/context.ts';

let work: string;
let reg: RunningRegistry;
let px: FaultProxy;
let base: string;
const EPOCH = { SOURCE_DATE_EPOCH: '1700000000' };

/** Runs the CLI without blocking this process (the proxy must keep answering). */
function tsbuild(root: string, args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return tsbuildNonBlocking(root, args, { env: { ...EPOCH, ...env } });
}

function ok(r: CliResult, what: string): CliResult {
  assert.equal(r.code, 0, `${what} failed:\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /\n\s+at .+:\d+:\d+\)?\n/, `${what}: stack trace`);
  return r;
}

let roots = 0;
function freshRoot(): string {
  return join(work, `root-${roots++}`);
}

/** Steps of a plain-progress build: `[stage i/n] …` lines and whether each was CACHED. */
function steps(stderr: string): { name: string; cached: boolean }[] {
  const names = new Map<string, string>();
  const cached = new Map<string, boolean>();
  for (const line of stderr.split('\n')) {
    const m = /^#(\d+) (\[.+)$/.exec(line);
    if (m) names.set(m[1]!, m[2]!);
    const d = /^#(\d+) (CACHED|DONE)/.exec(line);
    if (d && names.has(d[1]!)) cached.set(d[1]!, d[2] === 'CACHED');
  }
  return [...names].map(([id, name]) => ({ name, cached: cached.get(id) ?? false }));
}

function context(name: string, dockerfile: string, files: Record<string, string> = {}): string {
  return writeContext(join(work, name), dockerfile, files);
}

/** A copy of a context at another absolute path (keys must not depend on where the context is). */
function elsewhere(dir: string): string {
  const copy = mkdtempSync(join(tmpdir(), 'tsbuild-ctx-elsewhere-'));
  cpSync(dir, copy, { recursive: true });
  return copy;
}

const layerGets = (p: FaultProxy, layers: Set<string>): string[] =>
  p.counters.log.filter((l) => l.startsWith('GET ') && [...layers].some((d) => l.endsWith(`/blobs/${d}`)));

before(async () => {
  ensureCli();
  work = mkdtempSync(join(tmpdir(), 'tsbuild-cache-'));
  reg = await startRegistry();
  px = await startFaultProxy(reg.host);
  // The base image lives in the registry, as on a CI runner: a fresh root has nothing.
  const seed = freshRoot();
  ok(await tsbuild(seed, ['import', busyboxTar(), '-t', 'busybox:latest']), 'import');
  base = `${px.host}/base/busybox:1`;
  ok(await tsbuild(seed, ['push', 'busybox:latest', base]), 'push base');
});

after(async () => {
  await px?.stop();
  await reg?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

const APP = (b: string): string => `FROM ${b} AS tools
RUN echo tool > /tool
FROM ${b}
COPY --from=tools /tool /tool
COPY a.txt /a.txt
ENV GREETING=hi
ARG V=1
RUN cat /a.txt /tool > /both && echo "$V" >> /both
CMD ["cat", "/both"]
`;

test('a cache exported on one root makes a fresh root with the context elsewhere build nothing and download no layer, with the same image id', async () => {
  const ctx = context('app', APP(base), { 'a.txt': 'hello\n' });
  const a = ok(await tsbuild(freshRoot(), ['build', '--progress', 'plain', '-t', `${px.host}/app:1`, '--push', '--cache-to', `type=registry,ref=${px.host}/app:cache,mode=max`, ctx]), 'build A');
  const id = a.stdout.trim();
  const pushedA = /pushed \S+@(sha256:[0-9a-f]{64})/.exec(a.stderr)?.[1];
  assert.ok(pushedA, a.stderr);

  // The cache is an OCI artifact the registry keeps and skopeo reads.
  // skopeo goes straight to the registry: a synchronous spawn would block the proxy in this process.
  const raw = spawnSync('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${reg.host}/app:cache`], { encoding: 'utf8' });
  assert.equal(raw.status, 0, raw.stderr);
  const artifact = JSON.parse(raw.stdout) as Manifest & { artifactType?: string };
  assert.equal(artifact.artifactType, 'application/vnd.tsbuild.cache.v1');
  assert.equal(artifact.config.mediaType, 'application/vnd.tsbuild.cache.config.v1+json');
  // Its layers are the image's own blobs (plus the tools stage's, with mode=max).
  const image = JSON.parse(spawnSync('skopeo', ['inspect', '--tls-verify=false', '--raw', `docker://${reg.host}/app:1`], { encoding: 'utf8' }).stdout) as Manifest;
  const cached = new Set(artifact.layers.map((l) => l.digest));
  for (const l of image.layers.slice(1)) assert.ok(cached.has(l.digest), `image layer ${l.digest} is not shared with the cache`);

  const layers = new Set([...image.layers, ...artifact.layers].map((l) => l.digest));
  px.resetCounters();
  const b = ok(
    await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--output', `type=registry,name=${px.host}/app:2`, '--cache-from', `type=registry,ref=${px.host}/app:cache`, elsewhere(ctx)]),
    'build B',
  );
  const s = steps(b.stderr);
  assert.ok(s.length >= 7, b.stderr);
  for (const st of s) assert.ok(st.cached, `${st.name} was not CACHED:\n${b.stderr}`);
  assert.equal(b.stdout.trim(), id, 'same image id');
  assert.equal(/pushed \S+@(sha256:[0-9a-f]{64})/.exec(b.stderr)?.[1], pushedA, 'the pushed manifest is byte-identical');
  assert.deepEqual(layerGets(px, layers), [], 'no layer was downloaded');
  assert.equal(px.counters.uploadStarts, 0, 'nothing was uploaded');
});

test('mode=min carries the steps of the exported image only: an intermediate stage runs again, with mode=max it does not', async () => {
  const ctx = context('minmax', APP(base), { 'a.txt': 'min or max\n' });
  ok(await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--cache-to', `type=registry,ref=${px.host}/minmax:min`, '--cache-to', `type=registry,ref=${px.host}/minmax:max,mode=max`, ctx]), 'export');
  const withMin = steps(ok(await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--cache-from', `type=registry,ref=${px.host}/minmax:min`, ctx]), 'min').stderr);
  const withMax = steps(ok(await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--cache-from', `type=registry,ref=${px.host}/minmax:max`, ctx]), 'max').stderr);
  const tool = (s: { name: string; cached: boolean }[]) => s.find((x) => x.name.includes('RUN echo tool'));
  assert.equal(tool(withMin)?.cached, false, 'the tools stage is not in a mode=min cache');
  assert.equal(tool(withMax)?.cached, true, 'the tools stage is in a mode=max cache');
  const last = (s: { name: string; cached: boolean }[]) => s.find((x) => x.name.includes('RUN cat /a.txt'));
  assert.equal(last(withMin)?.cached, true);
  assert.equal(last(withMax)?.cached, true);
});

test('a cache mount travels with mounts=true: a fresh root finds what the last build downloaded, and mounts-max-size leaves a big one out by name', async () => {
  const df = `FROM ${base}
ARG RUN_ID
RUN --mount=type=cache,id=downloads,target=/var/cache/dl sh -c 'if [ -f /var/cache/dl/pkg ]; then echo "reused $(cat /var/cache/dl/pkg)"; else echo v1 > /var/cache/dl/pkg; echo downloaded; fi; echo $RUN_ID > /ran'
`;
  const ctx = context('mounts', df);
  const first = ok(await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--build-arg', 'RUN_ID=1', '--cache-to', `type=local,dest=${join(work, 'mount-cache')},mounts=true`, ctx]), 'first');
  assert.match(first.stderr, /downloaded/);
  // The next CI run: a fresh root, and a step that runs again (its build arg changed).
  const second = ok(await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--build-arg', 'RUN_ID=2', '--cache-from', `type=local,src=${join(work, 'mount-cache')}`, ctx]), 'second');
  assert.match(second.stderr, /reused v1/, second.stderr);
  assert.doesNotMatch(second.stderr, /downloaded/);
  // Exporting the same contents again gives the same blob: nothing new in the directory.
  const blobs = () => readdirSync(join(work, 'mount-cache', 'blobs', 'sha256')).filter((n) => !n.includes('.tmp'));
  const before = new Set(blobs());
  const r3 = freshRoot();
  ok(await tsbuild(r3, ['build', '--progress', 'plain', '--build-arg', 'RUN_ID=1', '--cache-from', `type=local,src=${join(work, 'mount-cache')}`, '--cache-to', `type=local,dest=${join(work, 'mount-cache')},mounts=true`, ctx]), 'third');
  const added = blobs().filter((b) => !before.has(b));
  assert.ok(added.length <= 2, `only a new index document and manifest may appear, got ${added.length} blobs`);

  const capped = ok(await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--build-arg', 'RUN_ID=4', '--cache-to', `type=local,dest=${join(work, 'capped')},mounts=true,mounts-max-size=16`, ctx]), 'capped');
  assert.match(capped.stderr, /warning: cache mount "downloads" is .* more than mounts-max-size .*left out/);
});

test('type=local and type=inline caches', async () => {
  const ctx = context('local-inline', APP(base), { 'a.txt': 'local and inline\n' });
  const dir = join(work, 'local-cache');
  const a = ok(await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--cache-to', `type=local,dest=${dir},mode=max`, ctx]), 'local export');
  // An OCI layout skopeo reads.
  assert.equal(spawnSync('skopeo', ['inspect', '--raw', `oci:${dir}:latest`]).status, 0);
  const b = ok(await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--cache-from', `type=local,src=${dir}`, elsewhere(ctx)]), 'local import');
  assert.ok(steps(b.stderr).every((s) => s.cached), b.stderr);
  assert.equal(b.stdout.trim(), a.stdout.trim());

  const tag = `${px.host}/inline:1`;
  const c = ok(await tsbuild(freshRoot(), ['build', '--progress', 'plain', '-t', tag, '--push', '--cache-to', 'type=inline', ctx]), 'inline export');
  const d = ok(await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--cache-from', `type=registry,ref=${tag}`, ctx]), 'inline import');
  const s = steps(d.stderr);
  // The image carries its own steps' cache: those hit; the tools stage is not in it.
  assert.equal(s.find((x) => x.name.includes('RUN cat /a.txt'))?.cached, true, d.stderr);
  assert.equal(d.stdout.trim(), c.stdout.trim());
  const bad = await tsbuild(freshRoot(), ['build', '--cache-to', 'type=inline,mode=max', ctx]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /type=inline only supports mode=min/);
});

test('the cache ref is hostile and fallible: missing or failing refs are warnings, a failing export fails the build unless ignore-error=true', async () => {
  const ctx = context('faults', APP(base), { 'a.txt': 'faults\n' });
  const missing = ok(await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--cache-from', `type=registry,ref=${px.host}/nothing:here`, ctx]), 'missing ref');
  assert.match(missing.stderr, /warning: cache registry \S+nothing:here not found/);
  px.inject({ method: 'GET', path: /\/faulty\/manifests\//, action: 500, times: 50 });
  const broken = ok(await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--registry-timeout', '2', '--cache-from', `type=registry,ref=${px.host}/faulty:cache`, ctx]), 'failing ref');
  assert.match(broken.stderr, /warning: cache registry \S+faulty:cache cannot be read, building without it/);

  px.inject({ method: 'PUT', path: /\/refused\/manifests\//, action: 403, times: 50 });
  const refused = await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--cache-to', `type=registry,ref=${px.host}/refused:cache`, ctx]);
  assert.equal(refused.code, 1, refused.stderr);
  assert.match(refused.stderr, /error: exporting the cache to registry \S+refused:cache failed/);
  assert.match(refused.stderr, /ignore-error=true/);
  px.inject({ method: 'PUT', path: /\/refused\/manifests\//, action: 403, times: 50 });
  const ignored = ok(await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--cache-to', `type=registry,ref=${px.host}/refused:cache,ignore-error=true`, ctx]), 'ignore-error');
  assert.match(ignored.stderr, /warning: exporting the cache to registry \S+refused:cache failed/);
});

test('a cache whose map lies about a layer: the step runs again and the image is right', async () => {
  const ctx = context('poison', APP(base), { 'a.txt': 'the truth\n' });
  ok(await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--cache-to', `type=registry,ref=${px.host}/poison:honest,mode=max`, ctx]), 'honest export');
  // Rewrite the document so COPY a.txt claims the blob of COPY --from=tools: same size class, wrong content.
  const client = new RegistryClient({});
  const ref = parseReference(`${px.host}/poison:honest`);
  const m = (await getManifest(client, ref)).manifest as Manifest;
  const doc = JSON.parse((await fetchBlobBytes(client, ref, m.config)).toString()) as { records: { history?: { created_by?: string }; layer?: { blob: unknown } }[] };
  const copyA = doc.records.find((r) => r.history?.created_by?.startsWith('COPY a.txt'));
  const copyTool = doc.records.find((r) => r.history?.created_by?.startsWith('COPY --from=tools'));
  assert.ok(copyA?.layer && copyTool?.layer);
  copyA.layer.blob = copyTool.layer.blob;
  const config = Buffer.from(JSON.stringify(doc));
  const lie: Manifest = { ...m, config: { ...m.config, digest: sha256(config), size: config.length } };
  const lieBytes = Buffer.from(JSON.stringify(lie));
  await pushImage(client, parseReference(`${px.host}/poison:lie`), {
    manifest: async () => ({ bytes: lieBytes, mediaType: MediaType.OciManifest }),
    openBlob: async () => {
      const { Readable } = await import('node:stream');
      return Readable.from([config]);
    },
  });
  client.close();

  // A later step that misses needs the lying layer's bytes: the lie is found, COPY a.txt runs.
  const honest = ok(await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--build-arg', 'V=2', ctx]), 'honest build');
  const r = await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--build-arg', 'V=2', '--cache-from', `type=registry,ref=${px.host}/poison:lie`, ctx]);
  ok(r, 'build over the lie');
  assert.match(r.stderr, /warning: cached layer sha256:[0-9a-f]+ does not unpack to the diff_id/);
  assert.equal(r.stdout.trim(), honest.stdout.trim(), 'the image is the honest one');
});

test('no secret value, secret file or credential reaches a cache blob', async () => {
  const secret = `tsbuild-cache-secret-${Date.now()}`;
  const secretFile = join(work, 'secret.txt');
  writeFileSync(secretFile, secret);
  const df = `FROM ${base}
RUN --mount=type=secret,id=tok --mount=type=cache,id=c,target=/c sh -c 'test -s /run/secrets/tok && echo cached-file > /c/f && echo layer > /l'
RUN --mount=type=secret,id=tok,env=TOK sh -c 'test -n "$TOK" && echo env-seen > /e'
`;
  const ctx = context('secrets', df);
  const dir = join(work, 'secret-cache');
  ok(await tsbuild(freshRoot(), ['build', '--progress', 'plain', '--secret', `id=tok,src=${secretFile}`, '--cache-to', `type=local,dest=${dir},mode=max,mounts=true`, ctx], { DOCKER_CONFIG: join(work, 'no-docker-config') }), 'build');
  let scanned = 0;
  for (const name of readdirSync(join(dir, 'blobs', 'sha256'))) {
    const raw = readFileSync(join(dir, 'blobs', 'sha256', name));
    let text = raw;
    try {
      text = gunzipSync(raw);
    } catch {
      // not compressed
    }
    assert.ok(!text.includes(secret), `blob ${name} holds the secret`);
    scanned++;
  }
  assert.ok(scanned >= 4, `only ${scanned} blobs`);
  assert.ok(!readFileSync(join(dir, 'index.json')).includes(secret));
});

test('GitHub cache (type=gha) through the bundled Action: exported in one job, every step hit in the next', async () => {
  const gha: GhaServer = await startGhaServer();
  try {
    const ctx = context('gha', APP(base), { 'a.txt': 'from the actions cache\n' });
    const runAction = async (root: string, inputs: Record<string, string>): Promise<{ status: number | null; stdout: string }> => {
      // Without blocking: the cache service and the proxy answer from this process.
      const r = await runBundledActionNonBlocking(work, ctx, inputs, { TSBUILD_ROOT: root, GITHUB_REF_NAME: 'main', ...EPOCH, ...gha.env() });
      return { status: r.code, stdout: `${r.stdout}\n${r.stderr}` };
    };
    const first = await runAction(freshRoot(), { context: '.', 'cache-to': 'type=gha,mode=max' });
    assert.equal(first.status, 0, first.stdout);
    assert.ok(gha.counters.requests.FinalizeCacheEntryUpload >= 3, 'blobs and the document went to the cache');
    const second = await runAction(freshRoot(), { context: '.', 'cache-from': 'type=gha' });
    assert.equal(second.status, 0, second.stdout);
    const done = second.stdout.split('\n').filter((l) => /^#\S+ (CACHED|DONE)/.test(l));
    assert.ok(done.length >= 7, second.stdout);
    assert.ok(done.every((l) => / CACHED$/.test(l)), second.stdout);
    // Another scope shares the blobs but not the document.
    const other = await runAction(freshRoot(), { context: '.', 'cache-from': 'type=gha,scope=feature' });
    assert.equal(other.status, 0, other.stdout);
    assert.match(other.stdout, /::warning .*cache gha scope feature not found/);
  } finally {
    await gha.stop();
  }
});
