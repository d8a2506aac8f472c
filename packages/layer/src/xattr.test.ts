import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { TsbuildError } from '@tsbuild/errors';
import { readXattrTree, readXattrs, writeXattrs } from './xattr.ts';
import { tempDir } from './testing.ts';

test('xattrs are read and written on the path itself, never through a symlink', async () => {
  const dir = tempDir('xattr');
  try {
    mkdirSync(`${dir}/d`);
    writeFileSync(`${dir}/d/target`, 't');
    symlinkSync('target', `${dir}/d/link`);
    symlinkSync('missing', `${dir}/d/dangling`);
    await writeXattrs([
      [`${dir}/d/target`, new Map([['user.on-target', Buffer.from('t')]])],
      [`${dir}/d/link`, new Map([['trusted.on-link', Buffer.from([0, 1, 0xff])]])],
      [`${dir}/d/dangling`, new Map([['security.on-dangling', Buffer.from('s')]])],
      [`${dir}/d`, new Map([['user.b', Buffer.alloc(0)], ['user.a', Buffer.from('a')]])],
    ]);
    const table = await readXattrTree(dir);
    assert.deepEqual(
      Object.fromEntries([...table].map(([p, m]) => [p.slice(dir.length), Object.fromEntries([...m].map(([k, v]) => [k, v.toString('hex')]))])),
      {
        '/d': { 'user.a': '61', 'user.b': '' },
        '/d/target': { 'user.on-target': '74' },
        '/d/link': { 'trusted.on-link': '0001ff' },
        '/d/dangling': { 'security.on-dangling': '73' },
      },
    );
    // Sorted by name, whatever order the filesystem lists them in.
    assert.deepEqual([...readXattrs(`${dir}/d`)!.keys()], ['user.a', 'user.b']);
    assert.equal(readXattrs(`${dir}/d/gone`), undefined);
    const kept = readXattrs(`${dir}/d`, (_p, name) => name !== 'user.b');
    assert.deepEqual([...kept!.keys()], ['user.a']);
    // The kernel keeps user.* off symlinks: asking for one is an error naming the path.
    await assert.rejects(
      writeXattrs([[`${dir}/d/link`, new Map([['user.x', Buffer.from('1')]])]]),
      (e: unknown) => e instanceof TsbuildError && e.code === 'XATTR' && e.message.includes(`user.x on ${dir}/d/link`),
    );
    assert.equal(readXattrs(`${dir}/d/target`)!.has('user.x'), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a tree scan can be cancelled', async () => {
  const dir = tempDir('xattr-abort');
  try {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(readXattrTree(dir, { signal: ac.signal }), { name: 'AbortError' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
