import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseChmod } from './chmod.ts';
import { BuildContext } from './context.ts';
import type { ResolveOptions } from './context.ts';
import { copyInto } from './copy.ts';
import type { CopyOptions } from './copy.ts';
import { tempDir, makeTree } from './testing.ts';

/** Every entry under `root` as `path type mode uid:gid [-> target | content]`, sorted. */
function listTree(root: string): string[] {
  const out: string[] = [];
  const visit = (dir: string, rel: string): void => {
    for (const name of fs.readdirSync(dir).sort()) {
      const abs = path.join(dir, name);
      const r = rel + '/' + name;
      const st = fs.lstatSync(abs);
      const owner = `${st.uid}:${st.gid}`;
      const mode = (st.mode & 0o7777).toString(8);
      if (st.isSymbolicLink()) out.push(`${r} l ${owner} -> ${fs.readlinkSync(abs)}`);
      else if (st.isDirectory()) {
        out.push(`${r} d ${mode} ${owner}`);
        visit(abs, r);
      } else out.push(`${r} f ${mode} ${owner} ${fs.readFileSync(abs, 'utf8')}`);
    }
  };
  visit(root, '');
  return out;
}

interface Fixture {
  ctxDir: string;
  rootfs: string;
  outside: string;
  run(sources: string[], dest: string, opts?: Partial<CopyOptions> & ResolveOptions): Promise<string[]>;
}

async function fixture(t: { after(fn: () => void): void }, contextSpec: string[], imageSpec: string[] = []): Promise<Fixture> {
  const base = tempDir(t, 'tsbuild-copy-');
  const ctxDir = path.join(base, 'ctx');
  const rootfs = path.join(base, 'a/b/rootfs');
  const outside = path.join(base, 'a');
  fs.mkdirSync(ctxDir);
  fs.mkdirSync(rootfs, { recursive: true });
  makeTree(ctxDir, contextSpec);
  makeTree(rootfs, imageSpec);
  const ctx = await BuildContext.open(ctxDir);
  return {
    ctxDir,
    rootfs,
    outside,
    async run(sources, dest, opts = {}) {
      const resolveOpts: ResolveOptions = {};
      if (opts.excludes) resolveOpts.excludes = opts.excludes;
      if (opts.parents) resolveOpts.parents = true;
      if (opts.followTopLevelSymlink !== undefined) resolveOpts.followTopLevelSymlink = opts.followTopLevelSymlink;
      const matches = await ctx.resolveSources(sources, resolveOpts);
      await copyInto(ctx, matches, rootfs, dest, { workdir: '/', ...opts });
      return listTree(rootfs);
    },
  };
}

test('COPY destination rules', async (t) => {
  const cases: { name: string; sources: string[]; dest: string; workdir?: string; want: string[] }[] = [
    { name: 'file to a new path', sources: ['a.txt'], dest: '/x', want: ['/x f 644 0:0 a.txt'] },
    {
      name: 'file into a dir dest',
      sources: ['a.txt'],
      dest: '/x/',
      want: ['/x d 755 0:0', '/x/a.txt f 644 0:0 a.txt'],
    },
    {
      name: 'directory copies its contents, parents created',
      sources: ['dir'],
      dest: '/opt/app',
      want: ['/opt d 755 0:0', '/opt/app d 755 0:0', '/opt/app/sub d 700 0:0', '/opt/app/sub/y.txt f 644 0:0 dir/sub/y.txt', '/opt/app/x.sh f 755 0:0 dir/x.sh'],
    },
    {
      name: 'several sources into a dir',
      sources: ['a.txt', 'dir/x.sh'],
      dest: '/d/',
      want: ['/d d 755 0:0', '/d/a.txt f 644 0:0 a.txt', '/d/x.sh f 755 0:0 dir/x.sh'],
    },
    {
      name: 'relative dest is under WORKDIR',
      sources: ['a.txt'],
      dest: 'rel/',
      workdir: '/w',
      want: ['/w d 755 0:0', '/w/rel d 755 0:0', '/w/rel/a.txt f 644 0:0 a.txt'],
    },
    { name: 'dot dest is WORKDIR', sources: ['a.txt'], dest: '.', workdir: '/w', want: ['/w d 755 0:0', '/w/a.txt f 644 0:0 a.txt'] },
    {
      name: 'wildcard directories are flattened like Docker',
      sources: ['d*'],
      dest: '/f/',
      want: ['/f d 755 0:0', '/f/sub d 700 0:0', '/f/sub/y.txt f 644 0:0 dir/sub/y.txt', '/f/x.sh f 755 0:0 dir/x.sh'],
    },
  ];
  for (const c of cases) {
    const f = await fixture(t, ['a.txt', 'dir/x.sh', 'dir/sub/y.txt']);
    fs.chmodSync(path.join(f.ctxDir, 'a.txt'), 0o644);
    fs.chmodSync(path.join(f.ctxDir, 'dir/x.sh'), 0o755);
    fs.chmodSync(path.join(f.ctxDir, 'dir/sub'), 0o700);
    fs.chmodSync(path.join(f.ctxDir, 'dir/sub/y.txt'), 0o644);
    fs.chownSync(path.join(f.ctxDir, 'a.txt'), 1234, 4321);
    assert.deepEqual(await f.run(c.sources, c.dest, c.workdir ? { workdir: c.workdir } : {}), c.want, c.name);
  }
});

test('several sources need a directory destination', async (t) => {
  const f = await fixture(t, ['a.txt', 'b.txt'], ['existing/']);
  await assert.rejects(f.run(['a.txt', 'b.txt'], '/out'), /destination must be a directory and end with a \//);
  await assert.rejects(f.run(['*.txt'], '/out'), /destination must be a directory/);
  const tree = await f.run(['*.txt'], '/existing');
  assert.ok(tree.includes('/existing/b.txt f 644 0:0 b.txt'));
});

test('--chown, --chmod, modes and mtimes', async (t) => {
  const f = await fixture(t, ['dir/x', 'dir/s/y']);
  fs.chmodSync(path.join(f.ctxDir, 'dir/x'), 0o640);
  fs.chmodSync(path.join(f.ctxDir, 'dir/s'), 0o750);
  const mtime = new Date('2001-02-03T04:05:06Z');
  fs.utimesSync(path.join(f.ctxDir, 'dir/x'), mtime, mtime);
  fs.utimesSync(path.join(f.ctxDir, 'dir/s'), mtime, mtime);
  const tree = await f.run(['dir'], '/new/app/', { chown: { uid: 1000, gid: 1001 }, chmod: parseChmod('u+x,g=u') });
  assert.deepEqual(tree, [
    '/new d 755 1000:1001',
    '/new/app d 755 1000:1001',
    '/new/app/s d 770 1000:1001',
    '/new/app/s/y f 774 1000:1001 dir/s/y',
    '/new/app/x f 770 1000:1001 dir/x',
  ]);
  assert.equal(fs.statSync(path.join(f.rootfs, 'new/app/x')).mtime.getTime(), mtime.getTime());
  assert.equal(fs.statSync(path.join(f.rootfs, 'new/app/s')).mtime.getTime(), mtime.getTime());
  const octal = await f.run(['dir/x'], '/o', { chmod: parseChmod('4755') });
  assert.ok(octal.includes('/o f 4755 0:0 dir/x'));
});

test('symlinks stay symlinks, hardlinks stay linked, ownership kept only when asked', async (t) => {
  const f = await fixture(t, ['d/file', 'd/evil -> /etc', 'd/rel -> file']);
  fs.linkSync(path.join(f.ctxDir, 'd/file'), path.join(f.ctxDir, 'd/hard'));
  fs.chownSync(path.join(f.ctxDir, 'd/file'), 77, 88);
  const tree = await f.run(['d'], '/t/');
  assert.deepEqual(tree, [
    '/t d 755 0:0',
    '/t/evil l 0:0 -> /etc',
    '/t/file f 644 0:0 d/file',
    '/t/hard f 644 0:0 d/file',
    '/t/rel l 0:0 -> file',
  ]);
  const a = fs.statSync(path.join(f.rootfs, 't/file'));
  const b = fs.statSync(path.join(f.rootfs, 't/hard'));
  assert.equal(a.ino, b.ino);
  assert.equal(a.nlink, 2);
  const kept = await f.run(['d/file'], '/k', { keepOwnership: true });
  assert.ok(kept.includes('/k f 644 77:88 d/file'));
  const link = await f.run(['d/rel'], '/asLink', { followTopLevelSymlink: false });
  assert.ok(link.includes('/asLink l 0:0 -> file'));
  const followed = await f.run(['d/rel'], '/followed');
  assert.ok(followed.includes('/followed f 644 0:0 d/file'));
});

test('image symlinks cannot send a COPY outside the rootfs', async (t) => {
  const f = await fixture(t, ['a.txt', 'dir/f', 'dir/lib/l.so'], ['etc/', 'x -> /etc', 'y -> ../../../../host', 'app/f -> /etc/passwd', 'app/lib -> /usr/lib', 'etc/passwd']);
  const before = fs.readdirSync(f.outside).sort();
  await f.run(['a.txt'], '/x/');
  assert.equal(fs.readFileSync(path.join(f.rootfs, 'etc/a.txt'), 'utf8'), 'a.txt');
  await f.run(['a.txt'], '/y/');
  assert.equal(fs.readFileSync(path.join(f.rootfs, 'host/a.txt'), 'utf8'), 'a.txt');
  await f.run(['a.txt'], '/y/deeper/../../../z');
  assert.equal(fs.readFileSync(path.join(f.rootfs, 'z'), 'utf8'), 'a.txt');
  // A leaf symlink inside a directory copy is replaced, never written through.
  await assert.rejects(f.run(['dir'], '/app'), /cannot copy to non-directory: \/app\/lib/);
  assert.equal(fs.readFileSync(path.join(f.rootfs, 'etc/passwd'), 'utf8'), 'etc/passwd');
  assert.ok(fs.lstatSync(path.join(f.rootfs, 'app/f')).isFile());
  assert.deepEqual(fs.readdirSync(f.outside).sort(), before);
  assert.equal(fs.existsSync(path.join(f.outside, 'host')), false);
  await assert.rejects(f.run(['a.txt'], '/z/sub/'), /is not a directory/);
});

test('--parents keeps the source path, from the root or a /./ pivot', async (t) => {
  const f = await fixture(t, ['a/b/c.txt', 'a/b/d.txt', 'x/y/z.txt', 'top.txt']);
  fs.chmodSync(path.join(f.ctxDir, 'a'), 0o711);
  const tree = await f.run(['a/b/*.txt', 'x/./y/z.txt', 'top.txt'], '/dst', { parents: true });
  assert.deepEqual(tree, [
    '/dst d 755 0:0',
    '/dst/a d 711 0:0',
    '/dst/a/b d 755 0:0',
    '/dst/a/b/c.txt f 644 0:0 a/b/c.txt',
    '/dst/a/b/d.txt f 644 0:0 a/b/d.txt',
    '/dst/top.txt f 644 0:0 top.txt',
    '/dst/y d 755 0:0',
    '/dst/y/z.txt f 644 0:0 x/y/z.txt',
  ]);
});

test('a cancelled copy stops with CancelledError', async (t) => {
  const f = await fixture(t, ['d/a', 'd/b']);
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(f.run(['d'], '/c/', { signal: ac.signal }), { code: 'CANCELLED' });
});

test('extended attributes travel with kept ownership, never overlay markers', async (t) => {
  const f = await fixture(t, ['bin/tool', 'bin/sub/x']);
  const setf = (p: string, name: string, value: string): void => {
    execFileSync('setfattr', ['-h', '-n', name, '-v', value, path.join(f.ctxDir, p)]);
  };
  setf('bin/tool', 'user.note', 'kept');
  setf('bin/tool', 'security.capability', '0x0100000200200000000000000000000000000000');
  setf('bin/sub', 'trusted.overlay.opaque', 'y');
  setf('bin/sub', 'user.dir', 'yes');
  const get = (p: string): string =>
    execFileSync('getfattr', ['-h', '-d', '-m', '-', '-e', 'text', '--absolute-names', path.join(f.rootfs, p)], { encoding: 'utf8' });
  await f.run(['bin'], '/kept/', { keepOwnership: true });
  assert.match(get('kept/tool'), /user\.note="kept"/);
  assert.match(get('kept/tool'), /security\.capability=/);
  assert.match(get('kept/sub'), /user\.dir="yes"/);
  assert.doesNotMatch(get('kept/sub'), /overlay/);
  await f.run(['bin'], '/plain/');
  assert.equal(get('plain/tool'), '');
});

test('--parents with ** keeps every matching path', async (t) => {
  const f = await fixture(t, ['packages/a/package.json', 'packages/a/src/x.ts', 'packages/b/deep/package.json', 'package.json', 'other/readme']);
  const tree = await f.run(['**/package.json'], '/app/', { parents: true });
  assert.deepEqual(
    tree.filter((l) => l.includes(' f ')),
    [
      '/app/package.json f 644 0:0 package.json',
      '/app/packages/a/package.json f 644 0:0 packages/a/package.json',
      '/app/packages/b/deep/package.json f 644 0:0 packages/b/deep/package.json',
    ],
  );
  const pivot = await f.run(['packages/./**/package.json'], '/piv/', { parents: true });
  assert.deepEqual(
    pivot.filter((l) => l.startsWith('/piv') && l.includes(' f ')),
    ['/piv/a/package.json f 644 0:0 packages/a/package.json', '/piv/b/deep/package.json f 644 0:0 packages/b/deep/package.json'],
  );
});
