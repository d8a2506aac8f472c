import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, lstatSync, openSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build, exportImage, importImage, loadArchive, openRoot } from '../packages/builder/src/index.ts';
import { encodeHeader, endOfArchive, padding } from '../packages/layer/src/index.ts';
import { REPO, busyboxTar } from './helpers/base.ts';
import { CLI, ensureCli, tsbuild } from './helpers/cli.ts';

let work: string;
let root: string;
let manifestDigest: string;

before(async () => {
  ensureCli();
  work = mkdtempSync(join(tmpdir(), 'tsbuild-export-e2e-'));
  root = join(work, 'root');
  const { store } = await openRoot(root);
  await importImage(store, busyboxTar(), { tags: ['busybox:latest'] });
  // Whiteouts, an opaque directory, a hardlink and a symlink across three layers.
  const r = await build({ context: join(REPO, 'fixtures/builds/whiteouts'), root, tags: ['wo:latest'] });
  manifestDigest = r.manifest.digest;
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Everything lstat and the contents say about a tree, by relative path. */
function walk(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const inodes = new Map<number, string>();
  const visit = (rel: string): void => {
    const p = rel === '' ? dir : join(dir, rel);
    const st = lstatSync(p);
    const kind = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other';
    let extra = '';
    if (st.isFile()) {
      extra = createHash('sha256').update(readFileSync(p)).digest('hex');
      // Hardlinks are compared as "same inode as the first path seen".
      const first = inodes.get(st.ino);
      if (first !== undefined) extra += ` link=${first}`;
      else inodes.set(st.ino, rel);
    } else if (st.isSymbolicLink()) extra = readlinkSync(p);
    else if (!st.isDirectory()) extra = `rdev=${st.rdev}`;
    const mtime = st.isSymbolicLink() ? '' : ` mtime=${Math.floor(st.mtimeMs / 1000)}`;
    out.set(rel || '.', `${kind} mode=${(st.mode & 0o7777).toString(8)} uid=${st.uid} gid=${st.gid} size=${st.isFile() ? st.size : 0}${mtime} ${extra}`);
    if (st.isDirectory()) for (const name of readdirSync(p).sort()) visit(rel === '' ? name : `${rel}/${name}`);
  };
  visit('');
  return out;
}

test('docker-archive and oci-archive exports are read by skopeo', async () => {
  const { store } = await openRoot(root);
  const docker = join(work, 'wo-docker.tar');
  const oci = join(work, 'wo-oci.tar');
  await exportImage(store, 'wo:latest', { type: 'docker', dest: docker });
  await exportImage(store, 'wo:latest', { type: 'oci', dest: oci, tags: ['wo:latest', 'example.com/wo:v2'] });
  const config = await (await store.loadImage('wo:latest')).config();
  for (const src of [`docker-archive:${docker}`, `oci-archive:${oci}:wo:latest`, `oci-archive:${oci}:example.com/wo:v2`]) {
    const info = JSON.parse(sh('skopeo', ['inspect', src])) as { Layers: string[]; Architecture: string };
    assert.equal(info.Architecture, 'amd64', src);
    assert.equal(info.Layers.length, config.rootfs.diff_ids.length, src);
  }
  const raw = JSON.parse(sh('skopeo', ['inspect', '--raw', `oci-archive:${oci}:wo:latest`])) as { config: { digest: string } };
  assert.equal(raw.config.digest, (await (await store.loadImage('wo:latest')).configDescriptor()).digest);
  const tags = JSON.parse(execFileSync('tar', ['-xOf', docker, 'manifest.json'], { encoding: 'utf8' })) as Array<{ RepoTags: string[] }>;
  assert.deepEqual(tags[0]?.RepoTags, ['wo:latest']);
  // skopeo can copy the Docker archive into an OCI layout, layer by layer (it checks every diff_id).
  sh('skopeo', ['copy', `docker-archive:${docker}`, `oci:${join(work, 'copied')}:wo`]);
});

test('type=local is the filesystem umoci unpacks from the same image, whiteouts and opaque dirs included', async () => {
  const { store } = await openRoot(root);
  const local = join(work, 'local');
  await exportImage(store, manifestDigest, { type: 'local', dest: local });
  const layout = join(work, 'layout');
  mkdirSync(layout);
  await exportImage(store, 'wo:latest', { type: 'oci', dest: join(work, 'for-umoci.tar') });
  sh('tar', ['-xf', join(work, 'for-umoci.tar'), '-C', layout]);
  const bundle = join(work, 'bundle');
  sh('umoci', ['unpack', '--image', `${layout}:wo:latest`, bundle]);
  const ours = walk(local);
  const theirs = walk(join(bundle, 'rootfs'));
  // The root directory itself is made by the unpacker, not by a layer entry.
  ours.delete('.');
  theirs.delete('.');
  assert.deepEqual([...ours.keys()].sort(), [...theirs.keys()].sort());
  for (const [k, v] of ours) assert.equal(v, theirs.get(k), k);
  assert.equal(ours.has('d/gone'), false);
  assert.equal(ours.has('bin/ls'), false);
  assert.equal(ours.has('opq/a'), false);
  assert.equal(readFileSync(join(local, 'opq/only'), 'utf8'), 'fresh\n');
  assert.match(ours.get('d/keep/f') ?? '', / link=d\/hard$/);
  await assert.rejects(exportImage(store, 'wo:latest', { type: 'local', dest: local }), /not empty/);
});

test('type=tar holds the same filesystem as type=local', async () => {
  const { store } = await openRoot(root);
  const file = join(work, 'fs.tar');
  await exportImage(store, 'wo:latest', { type: 'tar', dest: file });
  const out = join(work, 'fs-extracted');
  mkdirSync(out);
  sh('tar', ['--numeric-owner', '--xattrs', '-xpf', file, '-C', out]);
  const a = walk(out);
  const b = walk(join(work, 'local'));
  a.delete('.');
  b.delete('.');
  assert.deepEqual(a, b);
});

test('build -o, save and load through the CLI; the loaded image runs in a fresh root', () => {
  const files = join(work, 'cli');
  mkdirSync(files);
  const b = tsbuild(root, ['build', '--progress', 'plain', '-t', 'wo2', '-o', `type=docker,dest=${files}/d.tar`, '-o', `type=oci,dest=${files}/o.tar`, join(REPO, 'fixtures/builds/whiteouts')]);
  assert.equal(b.code, 0, b.stderr);
  const fresh = join(work, 'fresh');
  for (const f of ['d.tar', 'o.tar']) {
    rmSync(fresh, { recursive: true, force: true });
    const l = tsbuild(fresh, ['load', '-i', join(files, f)]);
    assert.equal(l.code, 0, l.stderr);
    assert.match(l.stdout, /Loaded image: wo2:latest/);
    const r = tsbuild(fresh, ['run', 'wo2', 'cat', '/opq/only', '/d/hard']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'fresh\nk\n');
  }
  const s = tsbuild(root, ['save', 'wo2', 'busybox', '--format', 'oci', '-o', join(files, 'both.tar')]);
  assert.equal(s.code, 0, s.stderr);
  rmSync(fresh, { recursive: true, force: true });
  const l = tsbuild(fresh, ['load', '-i', join(files, 'both.tar')]);
  assert.equal(l.code, 0, l.stderr);
  assert.match(l.stdout, /wo2:latest[\s\S]*busybox:latest/);
  // `-o -` writes the filesystem tarball to stdout and the image id to stderr.
  const fsTar = join(files, 'stdout.tar');
  const fd = openSync(fsTar, 'w');
  const t = spawnSync('node', [CLI, 'build', '-q', '-t', 'wo2', '-o', '-', join(REPO, 'fixtures/builds/whiteouts')], {
    env: { ...process.env, TSBUILD_ROOT: root }, stdio: ['ignore', fd, 'pipe'], encoding: 'utf8',
  });
  closeSync(fd);
  assert.equal(t.status, 0, t.stderr);
  assert.match(t.stderr, /sha256:[0-9a-f]{64}/);
  assert.match(sh('tar', ['-tf', fsTar]), /^opq\/only$/m);
  const bad = tsbuild(root, ['build', '-o', 'type=oci', join(REPO, 'fixtures/builds/whiteouts')]);
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /type=oci needs dest=FILE/);
});

test('a hostile archive is refused with a message and no stack', () => {
  const data = Buffer.from('x');
  const evil = Buffer.concat([
    encodeHeader({ path: '../../etc/evil', type: 'file', mode: 0o644, uid: 0, gid: 0, size: 1, mtime: 0 }),
    data,
    Buffer.alloc(padding(1)),
    endOfArchive(),
  ]);
  const file = join(work, 'evil.tar');
  writeFileSync(file, evil);
  const r = tsbuild(join(work, 'evil-root'), ['load', '-i', file]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /\.\.\/\.\.\/etc\/evil/);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
});

test('a loaded archive whose layer was tampered with is refused', async () => {
  const { store } = await openRoot(join(work, 'tamper-root'));
  const src = join(work, 'wo-docker.tar');
  const dir = join(work, 'tamper');
  mkdirSync(dir);
  sh('tar', ['-xf', src, '-C', dir]);
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Array<{ Layers: string[] }>;
  const last = manifest[0]!.Layers.at(-1)!;
  // Same size, one byte different: only the digest check can notice.
  const bytes = readFileSync(join(dir, last));
  bytes[100] = bytes[100]! ^ 1;
  writeFileSync(join(dir, last), bytes);
  const repacked = join(work, 'tampered.tar');
  sh('tar', ['-cf', repacked, '-C', dir, '.']);
  await assert.rejects(loadArchive(store, repacked), /does not match its digest/);
});
