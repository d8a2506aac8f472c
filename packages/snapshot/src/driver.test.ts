import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isTsbuildError } from '@tsbuild/errors';
import { candidateDrivers, inUserNamespace, overlayOptions } from './driver.ts';
import { openSnapshotter } from './snapshotter.ts';

test('mount options per driver: the faithful-changeset flags as root, userxattr without them in a user namespace', () => {
  const spec = { lowers: ['l/2/fs', 'l/1/fs'], upper: { upper: 'a/x/u', work: 'a/x/w' } };
  assert.equal(overlayOptions('overlay', spec), 'lowerdir=l/2/fs:l/1/fs,upperdir=a/x/u,workdir=a/x/w,redirect_dir=off,metacopy=off,index=off,volatile');
  // The kernel refuses redirect_dir and metacopy named together with userxattr.
  assert.equal(overlayOptions('overlay-userxattr', spec), 'lowerdir=l/2/fs:l/1/fs,upperdir=a/x/u,workdir=a/x/w,userxattr,index=off,volatile');
  assert.equal(overlayOptions('fuse-overlayfs', spec), 'lowerdir=l/2/fs:l/1/fs,upperdir=a/x/u,workdir=a/x/w,volatile');
  assert.equal(overlayOptions('overlay', { lowers: ['l/1/fs', 'e'] }), 'lowerdir=l/1/fs:e,redirect_dir=off,metacopy=off,index=off');
  assert.deepEqual(candidateDrivers(), inUserNamespace() ? ['overlay-userxattr', 'fuse-overlayfs'] : ['overlay']);
});

test('a root whose layers were made for another kind of namespace is refused, naming both', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tsbuild-driver-'));
  try {
    mkdirSync(dir, { recursive: true });
    const other = inUserNamespace() ? 'overlay' : 'overlay-userxattr';
    writeFileSync(join(dir, 'driver'), `${other}\n`);
    await assert.rejects(openSnapshotter({ root: dir }), (e: unknown) => {
      assert.ok(isTsbuildError(e));
      assert.equal(e.code, 'SNAPSHOT_DRIVER');
      assert.match(e.message, new RegExp(`made .* for ${other}, and cannot be mounted`));
      return true;
    });
    writeFileSync(join(dir, 'driver'), 'aufs\n');
    await assert.rejects(openSnapshotter({ root: dir }), /names an unknown overlay driver "aufs"/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
