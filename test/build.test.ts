import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { createHash } from 'node:crypto';
import { lstatSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync, existsSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { build, importImage, openRoot, runImage, historyOf } from '../packages/builder/src/index.ts';
import type { BuildEvent, BuildOptions } from '../packages/builder/src/index.ts';
import { validateImage } from '../packages/oci/src/index.ts';
import { REPO, busyboxTar, debianTar } from './helpers/base.ts';

interface FileExpect {
  absent?: boolean;
  type?: 'file' | 'dir' | 'symlink';
  content?: string;
  mode?: string;
  uid?: number;
  gid?: number;
  size?: number;
  target?: string;
}
interface Expect {
  base?: 'debian';
  buildArgs?: Record<string, string>;
  secrets?: Record<string, string>;
  serve?: { path: string; content: string };
  files?: Record<string, FileExpect>;
  config?: Record<string, unknown>;
  env?: Record<string, string>;
  author?: string;
  layers?: number;
  run?: { args?: string[]; stdout?: string; stdoutMatch?: string };
  history?: string[];
  notInLayers?: string[];
  notInConfig?: string[];
}

const FIXTURES = join(REPO, 'fixtures/builds');
let root: string;
let work: string;
let server: Server;
let port = 0;
const served = new Map<string, string>();

before(async () => {
  work = mkdtempSync(join(tmpdir(), 'tsbuild-e2e-'));
  root = join(work, 'root');
  const { store } = await openRoot(root);
  await importImage(store, busyboxTar(), { tags: ['busybox:latest'] });
  server = createServer((req, res) => {
    const body = served.get(req.url ?? '');
    if (body === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain' }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as { port: number }).port;
});

after(async () => {
  server?.close();
  // Snapshots hold overlay dirs owned by root; remove everything the run made.
  if (work) rmSync(work, { recursive: true, force: true });
});

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

async function buildFixture(name: string, ex: Expect, extra: { noCache?: boolean; epoch?: number; events?: BuildEvent[] } = {}) {
  const dir = join(FIXTURES, name);
  const buildArgs = { ...(ex.buildArgs ?? {}) };
  if (ex.serve) {
    served.set(ex.serve.path, ex.serve.content);
    buildArgs.URL = `http://127.0.0.1:${port}${ex.serve.path}`;
    buildArgs.SUM = `sha256:${createHash('sha256').update(ex.serve.content).digest('hex')}`;
  }
  const secrets: Record<string, { file: string }> = {};
  for (const [id, value] of Object.entries(ex.secrets ?? {})) {
    const f = join(work, `secret-${id}`);
    writeFileSync(f, value);
    secrets[id] = { file: f };
  }
  const events = extra.events ?? [];
  const opts: BuildOptions = {
    context: dir,
    root,
    tags: [`fixture-${name}:latest`],
    buildArgs,
    secrets,
    onEvent: (e) => events.push(e),
  };
  if (extra.noCache) opts.noCache = true;
  if (extra.epoch !== undefined) opts.sourceDateEpoch = extra.epoch;
  try {
    return await build(opts);
  } catch (e) {
    const logs = events.filter((x) => x.type === 'step-log').map((x) => (x as { data: string }).data).join('');
    throw new Error(`build of ${name} failed: ${(e as Error).message}\n${logs.slice(-2000)}`, { cause: e });
  }
}

function checkFiles(rootfs: string, files: Record<string, FileExpect>, name: string): void {
  for (const [p, f] of Object.entries(files)) {
    const abs = join(rootfs, p);
    const where = `${name}: ${p}`;
    let st;
    try {
      st = lstatSync(abs);
    } catch {
      st = undefined;
    }
    if (f.absent) {
      assert.equal(st, undefined, `${where} should not exist`);
      continue;
    }
    assert.ok(st, `${where} should exist`);
    if (f.type) {
      const t = st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
      assert.equal(t, f.type, `${where} type`);
    }
    if (f.content !== undefined) assert.equal(readFileSync(abs, 'utf8'), f.content, `${where} content`);
    if (f.mode !== undefined) assert.equal((st.mode & 0o7777).toString(8).padStart(4, '0'), f.mode.padStart(4, '0'), `${where} mode`);
    if (f.uid !== undefined) assert.equal(st.uid, f.uid, `${where} uid`);
    if (f.gid !== undefined) assert.equal(st.gid, f.gid, `${where} gid`);
    if (f.size !== undefined) assert.equal(st.size, f.size, `${where} size`);
    if (f.target !== undefined) assert.equal(readlinkSync(abs), f.target, `${where} link target`);
  }
}

// TSBUILD_FIXTURES=a,b limits the run to some fixtures while working on them.
const only = process.env.TSBUILD_FIXTURES?.split(',').filter(Boolean);
const names = readdirSync(FIXTURES)
  .filter((n) => existsSync(join(FIXTURES, n, 'Dockerfile')) && (!only || only.includes(n)))
  .sort();

test(`fixtures: ${names.length} Dockerfiles build, validate, unpack with umoci and run`, async (t) => {
  let built = 0;
  for (const name of names) {
    const ex = JSON.parse(readFileSync(join(FIXTURES, name, 'expect.json'), 'utf8')) as Expect;
    await t.test(name, async (tt) => {
      if (ex.base === 'debian') {
        const tar = debianTar();
        if (!tar) {
          tt.skip('debian base could not be made (debootstrap needs the Debian archive)');
          return;
        }
        const { store } = await openRoot(root);
        if (!(await store.resolve('debian:bookworm'))) await importImage(store, tar, { tags: ['debian:bookworm'] });
      }
      const events: BuildEvent[] = [];
      const r = await buildFixture(name, ex, { events });
      const tag = `fixture-${name}:latest`;
      const { store } = await openRoot(root);
      const img = await store.loadImage(tag);
      await validateImage(img);
      const config = await img.config();
      const manifest = await img.manifest();

      // The oracles: skopeo reads the layout, umoci unpacks the image.
      const inspected = JSON.parse(sh('skopeo', ['inspect', `oci:${root}/oci:${tag}`])) as { Layers: string[]; Architecture: string };
      assert.equal(inspected.Layers.length, manifest.layers.length);
      assert.equal(inspected.Architecture, 'amd64');
      const bundle = join(work, `bundle-${name}`);
      sh('umoci', ['unpack', '--image', `${root}/oci:${tag}`, bundle]);
      try {
        checkFiles(join(bundle, 'rootfs'), ex.files ?? {}, name);
      } finally {
        rmSync(bundle, { recursive: true, force: true });
      }

      const cc = (config.config ?? {}) as Record<string, unknown>;
      for (const [k, v] of Object.entries(ex.config ?? {})) {
        if (v === null) assert.ok(cc[k] === null || cc[k] === undefined, `${name}: config.${k} should be unset, is ${JSON.stringify(cc[k])}`);
        else assert.deepEqual(cc[k], v, `${name}: config.${k}`);
      }
      const env = new Map(((cc.Env as string[] | undefined) ?? []).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
      for (const [k, v] of Object.entries(ex.env ?? {})) assert.equal(env.get(k), v, `${name}: env ${k}`);
      if (ex.author !== undefined) assert.equal(config.author, ex.author);
      if (ex.layers !== undefined) assert.equal(manifest.layers.length, ex.layers, `${name}: layer count`);
      if (ex.history) {
        const createdBy = (config.history ?? []).map((h) => h.created_by ?? '');
        let from = 0;
        for (const want of ex.history) {
          const i = createdBy.findIndex((c, j) => j >= from && c.includes(want));
          assert.ok(i >= 0, `${name}: history should contain "${want}" after entry ${from}: ${JSON.stringify(createdBy)}`);
          from = i + 1;
        }
      }
      assert.equal(historyOf(config, manifest.layers).filter((h) => !h.entry.empty_layer).length, manifest.layers.length);
      for (const secret of ex.notInLayers ?? []) {
        for (const l of manifest.layers) {
          const bytes = readFileSync(store.blobPath(l.digest));
          assert.ok(!bytes.includes(secret), `${name}: layer ${l.digest} must not contain ${secret}`);
        }
      }
      const configText = JSON.stringify(config);
      for (const s of ex.notInConfig ?? []) assert.ok(!configText.includes(s), `${name}: config must not contain ${s}`);

      if (ex.run) {
        let out = '';
        const sink = new Writable({ write(c, _e, cb) { out += String(c); cb(); } });
        const code = await runImage(await openRoot(root), tag, { args: ex.run.args ?? [], stdout: sink, stderr: sink });
        assert.equal(code, 0, `${name}: run exit code, output: ${out}`);
        if (ex.run.stdout !== undefined) assert.equal(out, ex.run.stdout);
        if (ex.run.stdoutMatch !== undefined) assert.match(out, new RegExp(ex.run.stdoutMatch));
      }

      // A second build is all cache hits and gives the same image.
      const again: BuildEvent[] = [];
      const r2 = await buildFixture(name, ex, { events: again });
      const misses = again.filter((e) => e.type === 'step-done' && !e.cached);
      assert.equal(misses.length, 0, `${name}: second build should be fully cached`);
      assert.equal(r2.manifest.digest, r.manifest.digest, `${name}: second build gives the same image`);
      built++;
    });
  }
  if (!only) assert.ok(built >= 20, `at least 20 fixtures built (built ${built})`);
});

test('changing one context file rebuilds exactly the steps from its COPY on', async () => {
  const ctx = mkdtempSync(join(work, 'ctx-'));
  writeFileSync(join(ctx, 'a.txt'), 'a\n');
  writeFileSync(join(ctx, 'b.txt'), 'b\n');
  writeFileSync(
    join(ctx, 'Dockerfile'),
    'FROM busybox:latest\nRUN echo one > /one\nCOPY a.txt /a.txt\nRUN echo two > /two\nCOPY b.txt /b.txt\nRUN cat /a.txt /b.txt > /ab\n',
  );
  const names = (ev: BuildEvent[]) => ev.filter((e): e is Extract<BuildEvent, { type: 'step-start' }> => e.type === 'step-start').map((e) => e.id);
  const run = async () => {
    const ev: BuildEvent[] = [];
    await build({ context: ctx, root, tags: ['edit:latest'], onEvent: (e) => ev.push(e) });
    const starts = new Map(ev.filter((e) => e.type === 'step-start').map((e) => [(e as { id: string }).id, (e as { name: string }).name]));
    void names;
    return ev.filter((e) => e.type === 'step-done' && !e.cached).map((e) => starts.get((e as { id: string }).id)!.replace(/^\[[^\]]*\] /, ''));
  };
  await run();
  assert.deepEqual(await run(), []);
  appendFileSync(join(ctx, 'b.txt'), 'changed\n');
  assert.deepEqual(await run(), ['COPY b.txt /b.txt', 'RUN cat /a.txt /b.txt > /ab']);
});

test('changing an ARG reruns the RUN steps that see it, not the COPY steps that do not', async () => {
  const ctx = mkdtempSync(join(work, 'ctx-arg-'));
  writeFileSync(join(ctx, 'a.txt'), 'a\n');
  writeFileSync(
    join(ctx, 'Dockerfile'),
    'FROM busybox:latest\nRUN echo before > /before\nARG V=1\nCOPY a.txt /a.txt\nENV FIXED=x\nRUN echo $V > /v\nLABEL v=${V}\n',
  );
  const rebuilt = async (v: string) => {
    const ev: BuildEvent[] = [];
    await build({ context: ctx, root, buildArgs: { V: v }, onEvent: (e) => ev.push(e) });
    const starts = new Map(ev.filter((e) => e.type === 'step-start').map((e) => [(e as { id: string }).id, (e as { name: string }).name]));
    return ev.filter((e) => e.type === 'step-done' && !e.cached).map((e) => starts.get((e as { id: string }).id)!.replace(/^\[[^\]]*\] /, ''));
  };
  await rebuilt('1');
  assert.deepEqual(await rebuilt('1'), []);
  assert.deepEqual(await rebuilt('2'), ['RUN echo $V > /v', 'LABEL v=${V}']);
});

test('ADD of a URL without --checksum is fetched every build and reruns when the content changed', async () => {
  const ctx = mkdtempSync(join(work, 'ctx-url-'));
  writeFileSync(join(ctx, 'Dockerfile'), 'FROM busybox:latest\nARG URL\nADD ${URL} /dl/\nRUN cat /dl/moving.txt > /copy.txt\n');
  served.set('/moving.txt', 'version 1\n');
  const url = `http://127.0.0.1:${port}/moving.txt`;
  const once = async () => {
    const ev: BuildEvent[] = [];
    const r = await build({ context: ctx, root, tags: ['moving:latest'], buildArgs: { URL: url }, onEvent: (e) => ev.push(e) });
    return { r, misses: ev.filter((e) => e.type === 'step-done' && !e.cached).length };
  };
  const a = await once();
  const b = await once();
  assert.equal(b.misses, 0, 'unchanged content: all cached');
  assert.equal(b.r.manifest.digest, a.r.manifest.digest);
  served.set('/moving.txt', 'version 2\n');
  const c = await once();
  assert.equal(c.misses, 2, 'the ADD and the RUN after it rerun');
  const bundle = join(work, 'bundle-moving');
  sh('umoci', ['unpack', '--image', `${root}/oci:moving:latest`, bundle]);
  assert.equal(readFileSync(join(bundle, 'rootfs/copy.txt'), 'utf8'), 'version 2\n');
  rmSync(bundle, { recursive: true, force: true });
});

test('COPY --link makes the same layer whatever lies below it', async () => {
  const ctx = mkdtempSync(join(work, 'ctx-link-'));
  writeFileSync(join(ctx, 'a.txt'), 'linked\n');
  const lastLayer = async (dockerfile: string, tag: string) => {
    writeFileSync(join(ctx, 'Dockerfile'), dockerfile);
    await build({ context: ctx, root, tags: [tag], sourceDateEpoch: 1700000000 });
    const { store } = await openRoot(root);
    const config = await (await store.loadImage(tag)).config();
    return config.rootfs.diff_ids.at(-1);
  };
  const a = await lastLayer('FROM busybox:latest\nCOPY --link --chown=app a.txt /app/a.txt\n', 'link-a:latest');
  const b = await lastLayer('FROM busybox:latest\nRUN mkdir -p /app && echo other > /app/other\nCOPY --link --chown=app a.txt /app/a.txt\n', 'link-b:latest');
  assert.equal(a, b, 'the --link layer does not depend on the base');
  const bundle = join(work, 'bundle-link');
  sh('umoci', ['unpack', '--image', `${root}/oci:link-b:latest`, bundle]);
  checkFiles(join(bundle, 'rootfs'), { '/app/a.txt': { content: 'linked\n', uid: 1000 }, '/app/other': { content: 'other\n' } }, 'link');
  rmSync(bundle, { recursive: true, force: true });
});

test('two --no-cache builds with SOURCE_DATE_EPOCH give bit-identical images', async () => {
  const ex = JSON.parse(readFileSync(join(FIXTURES, 'basic', 'expect.json'), 'utf8')) as Expect;
  const a = await buildFixture('basic', ex, { noCache: true, epoch: 1700000000 });
  const b = await buildFixture('basic', ex, { noCache: true, epoch: 1700000000 });
  assert.equal(a.manifest.digest, b.manifest.digest);
});
