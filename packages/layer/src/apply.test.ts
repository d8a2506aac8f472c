import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { CancelledError, UnsafeArchiveError } from '@tsbuild/errors';
import { apply } from './apply.ts';
import { buildTar, snapshotTree, streamOf, tempDir } from './testing.ts';
import type { Spec } from './testing.ts';

interface HostileCase {
  name: string;
  /** `OUT` in paths and link targets is replaced by the absolute path of the outside dir. */
  entries: Spec[];
  expect: 'refused' | 'contained';
  /** For contained cases: a path inside the root the write must have landed on. */
  landsAt?: string;
}

const CASES: HostileCase[] = [
  { name: 'parent traversal', entries: [{ path: '../canary', body: 'pwned' }], expect: 'refused' },
  { name: 'absolute path climbing out', entries: [{ path: '/../../canary', body: 'pwned' }], expect: 'refused' },
  { name: 'nested traversal', entries: [{ path: 'a/../../outside/canary', body: 'pwned' }], expect: 'refused' },
  {
    name: 'symlink to / then write through it',
    entries: [{ path: 'evil', type: 'symlink', linkpath: '/' }, { path: 'evil/OUT/canary', body: 'pwned' }],
    expect: 'contained',
    landsAt: 'OUT/canary',
  },
  {
    name: 'symlink to the outside dir by absolute path',
    entries: [{ path: 'evil', type: 'symlink', linkpath: 'OUT' }, { path: 'evil/canary', body: 'pwned' }],
    expect: 'contained',
    landsAt: 'OUT/canary',
  },
  {
    name: 'chain of .. symlinks',
    entries: [
      { path: 'd/', type: 'dir' },
      { path: 'd/up', type: 'symlink', linkpath: '..' },
      { path: 'd/up2', type: 'symlink', linkpath: 'up/../../..' },
      { path: 'd/up2/d/up2/canary', body: 'pwned' },
    ],
    expect: 'contained',
    landsAt: 'canary',
  },
  { name: 'hardlink to a relative outside path', entries: [{ path: 'h', type: 'hardlink', linkpath: '../outside/canary' }], expect: 'refused' },
  { name: 'hardlink to an absolute outside path', entries: [{ path: 'h', type: 'hardlink', linkpath: 'OUT/canary' }], expect: 'refused' },
  {
    name: 'hardlink through a symlink leaving the root',
    entries: [{ path: 'l', type: 'symlink', linkpath: 'OUT' }, { path: 'h', type: 'hardlink', linkpath: 'l/canary' }],
    expect: 'refused',
  },
  { name: 'whiteout above the root', entries: [{ path: '../.wh.canary' }], expect: 'refused' },
  { name: 'whiteout naming ..', entries: [{ path: 'd/.wh..' }], expect: 'refused' },
  {
    name: 'whiteout in a dir that is a symlink leaving the root',
    entries: [{ path: 's', type: 'symlink', linkpath: 'OUT' }, { path: 's/.wh.canary' }],
    expect: 'contained',
  },
  {
    name: 'opaque marker in a symlink to /',
    entries: [{ path: 's', type: 'symlink', linkpath: '/' }, { path: 's/OUT/.wh..wh..opq' }],
    expect: 'contained',
  },
  {
    name: 'symlink loop',
    entries: [{ path: 'loop1', type: 'symlink', linkpath: 'loop2' }, { path: 'loop2', type: 'symlink', linkpath: 'loop1' }, { path: 'loop1/x', body: 'pwned' }],
    expect: 'refused',
  },
  {
    name: 'file entry replacing a symlink to the canary',
    entries: [{ path: 'f', type: 'symlink', linkpath: 'OUT/canary' }, { path: 'f', body: 'pwned' }],
    expect: 'contained',
    landsAt: 'f',
  },
  {
    name: 'dir entry replacing a symlink to the outside dir',
    entries: [{ path: 'd', type: 'symlink', linkpath: 'OUT' }, { path: 'd/', type: 'dir', mode: 0o777 }, { path: 'd/canary', body: 'pwned' }],
    expect: 'contained',
    landsAt: 'd/canary',
  },
  {
    name: 'dir swapped for a symlink after its xattrs and mtime were queued',
    entries: [
      { path: 'a/', type: 'dir', mtime: 5, xattrs: new Map([['user.evil', Buffer.from('1')]]) },
      { path: 'a/canary', body: 'pwned', xattrs: new Map([['user.evil', Buffer.from('1')]]) },
      { path: 'a', type: 'symlink', linkpath: 'OUT' },
    ],
    expect: 'contained',
  },
  { name: 'file replacing the root', entries: [{ path: './', body: 'x' }], expect: 'refused' },
];

function outsideState(base: string): string {
  return execFileSync('sh', ['-c', `cd ${base} && find outside -printf '%p %y %m %s %T@\\n' | sort && getfattr -R -d -m - -e hex outside 2>/dev/null; cat outside/canary`]).toString();
}

for (const c of CASES) {
  test(`hostile archive: ${c.name} is ${c.expect}`, async () => {
    const base = tempDir('hostile');
    try {
      const out = `${base}/outside`;
      mkdirSync(out);
      mkdirSync(`${base}/root`);
      writeFileSync(`${out}/canary`, 'safe');
      const before = outsideState(base);
      const sub = (s: string | undefined): string | undefined => s?.replaceAll('OUT', out.slice(1));
      const entries = c.entries.map((e) => {
        const r: Spec = { ...e, path: sub(e.path)! };
        if (e.linkpath !== undefined) r.linkpath = e.linkpath === 'OUT' || e.linkpath.startsWith('OUT/') ? '/' + sub(e.linkpath) : sub(e.linkpath)!;
        return r;
      });
      const run = apply(streamOf(buildTar(entries)), `${base}/root`);
      if (c.expect === 'refused') await assert.rejects(run, UnsafeArchiveError);
      else await run;
      assert.equal(outsideState(base), before, 'nothing outside the root changed');
      assert.equal(readFileSync(`${out}/canary`, 'utf8'), 'safe');
      if (c.landsAt) assert.equal(readFileSync(`${base}/root/${sub(c.landsAt)}`, 'utf8'), 'pwned');
    } finally {
      rmSync(base, { recursive: true, force: true });
    }
  });
}

test('whiteouts and opaque markers remove lower content but keep this layer', async () => {
  const root = tempDir('apply-wh');
  try {
    mkdirSync(`${root}/etc/conf.d`, { recursive: true });
    writeFileSync(`${root}/etc/hosts`, 'lower');
    writeFileSync(`${root}/etc/conf.d/old`, 'lower');
    mkdirSync(`${root}/var/lib/x`, { recursive: true });
    writeFileSync(`${root}/var/lib/x/f`, 'lower');
    const tar = buildTar([
      { path: 'etc/', type: 'dir', mode: 0o755 },
      { path: 'etc/.wh.hosts' },
      { path: 'etc/conf.d/', type: 'dir', mode: 0o750 },
      { path: 'etc/conf.d/-new', body: 'upper, sorted before the marker' },
      { path: 'etc/conf.d/.wh..wh..opq' },
      { path: 'var/.wh.lib' },
      { path: 'var/lib/', type: 'dir', mode: 0o700 },
      { path: 'var/lib/y', body: 'y' },
      { path: 'var/lib/z', body: 'z' },
      { path: 'var/lib/.wh.z' },
    ]);
    const stats = await apply(streamOf(gzipSync(tar)), root);
    assert.equal(stats.whiteouts, 4);
    assert.equal(stats.entries, 10);
    assert.equal(stats.size, tar.length);
    const got = await snapshotTree(root);
    assert.deepEqual(Object.keys(got).sort(), ['etc', 'etc/conf.d', 'etc/conf.d/-new', 'var', 'var/lib', 'var/lib/y', 'var/lib/z']);
    assert.equal(got['etc/conf.d']!.mode, 0o750);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('entries replace what is there; symlink targets are kept verbatim; missing parents are created', async () => {
  const root = tempDir('apply-replace');
  try {
    mkdirSync(`${root}/was-dir/inner`, { recursive: true });
    writeFileSync(`${root}/was-file`, 'lower');
    const tar = buildTar([
      { path: 'was-dir', body: 'now a file' },
      { path: 'was-file/', type: 'dir', mode: 0o711 },
      { path: 'abs', type: 'symlink', linkpath: '/etc/../etc/passwd' },
      { path: 'no/parent/here', body: 'p', mode: 0o640, uid: 5, gid: 6 },
      { path: 'no/parent/hard', type: 'hardlink', linkpath: './no/parent/here' },
    ]);
    await apply(streamOf(tar), root);
    assert.equal(readFileSync(`${root}/was-dir`, 'utf8'), 'now a file');
    assert.equal(lstatSync(`${root}/was-file`).mode & 0o7777, 0o711);
    assert.equal(readlinkSync(`${root}/abs`), '/etc/../etc/passwd');
    const st = lstatSync(`${root}/no/parent/here`);
    assert.deepEqual([st.mode & 0o7777, st.uid, st.gid, st.nlink], [0o640, 5, 6, 2]);
    assert.ok(existsSync(`${root}/no/parent/hard`));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('zstd and gzip layers are decompressed; diffId and size are of the uncompressed tar', async () => {
  const dir = tempDir('apply-zstd');
  try {
    const tar = buildTar([{ path: 'a/', type: 'dir', mode: 0o755 }, { path: 'a/f', body: 'zstd body' }]);
    writeFileSync(`${dir}/l.tar`, tar);
    execFileSync('zstd', ['-q', '-3', `${dir}/l.tar`, '-o', `${dir}/l.tar.zst`]);
    const z = await apply(streamOf(readFileSync(`${dir}/l.tar.zst`)), `${dir}/z`);
    const g = await apply(streamOf(gzipSync(tar)), `${dir}/g`);
    for (const [r, sub] of [[z, 'z'], [g, 'g']] as const) {
      assert.equal(r.size, tar.length);
      assert.equal(r.diffId, `sha256:${createHash('sha256').update(tar).digest('hex')}`);
      assert.equal(readFileSync(`${dir}/${sub}/a/f`, 'utf8'), 'zstd body');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a corrupt layer is an error and the apply stops', async () => {
  const dir = tempDir('apply-corrupt');
  try {
    const tar = buildTar([{ path: 'f', body: 'x'.repeat(5000) }]);
    const gz = gzipSync(tar);
    await assert.rejects(apply(streamOf(gz.subarray(0, gz.length - 20)), `${dir}/r`));
    await assert.rejects(apply(streamOf(Buffer.from('definitely not a tar archive'.repeat(30))), `${dir}/r`), UnsafeArchiveError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an aborted apply rejects with CancelledError', async () => {
  const root = tempDir('apply-abort');
  try {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(apply(streamOf(buildTar([{ path: 'f', body: 'x' }])), root, { signal: ac.signal }), CancelledError);
    assert.ok(!existsSync(`${root}/f`));
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('with whiteouts off, .wh. names are ordinary files', async () => {
  const root = tempDir('apply-nowh');
  try {
    writeFileSync(`${root}/x`, 'lower');
    const stats = await apply(streamOf(buildTar([{ path: '.wh.x', body: 'plain' }])), root, { whiteouts: false });
    assert.equal(stats.whiteouts, 0);
    assert.equal(readFileSync(`${root}/x`, 'utf8'), 'lower');
    assert.equal(readFileSync(`${root}/.wh.x`, 'utf8'), 'plain');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('for an overlay lower dir, whiteouts and opaque markers are kept as overlayfs reads them', async (t) => {
  const base = tempDir('apply-ovl');
  try {
    for (const d of ['lower/etc', 'lower/data/old', 'layer', 'merged']) mkdirSync(`${base}/${d}`, { recursive: true });
    writeFileSync(`${base}/lower/etc/hosts`, 'lower');
    writeFileSync(`${base}/lower/etc/passwd`, 'lower');
    writeFileSync(`${base}/lower/data/old/file`, 'lower');
    const tar = buildTar([
      { path: 'etc/', type: 'dir', mode: 0o755 },
      { path: 'etc/.wh.hosts' },
      { path: 'data/', type: 'dir', mode: 0o755 },
      { path: 'data/.wh..wh..opq' },
      { path: 'data/fresh', body: 'upper' },
      { path: 'new/', type: 'dir', mode: 0o755 },
      { path: 'new/f', body: 'kept' },
      { path: 'new/.wh.f' },
    ]);
    const stats = await apply(streamOf(tar), `${base}/layer`, { overlay: { opaqueXattr: 'trusted.overlay.opaque', whiteoutFiles: false } });
    assert.equal(stats.whiteouts, 3);
    const got = await snapshotTree(`${base}/layer`);
    assert.equal(got['etc/hosts']?.type, 'char');
    assert.equal(got['etc/hosts']?.rdev, 0);
    assert.equal(got['data']?.xattrs?.['trusted.overlay.opaque'], Buffer.from('y').toString('hex'));
    // A whiteout of what the layer itself wrote leaves it there, as applying onto a tree does.
    assert.equal(got['new/f']?.content, Buffer.from('kept').toString('base64'));
    try {
      execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${base}/layer:${base}/lower`, `${base}/merged`], { stdio: 'pipe' });
    } catch (e) {
      t.skip(`overlay mount unavailable: ${(e as Error).message}`);
      return;
    }
    try {
      const merged = await snapshotTree(`${base}/merged`);
      assert.deepEqual(Object.keys(merged).sort(), ['data', 'data/fresh', 'etc', 'etc/passwd', 'new', 'new/f']);
    } finally {
      execFileSync('umount', [`${base}/merged`]);
    }
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});
