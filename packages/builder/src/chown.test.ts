import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { resolveChown, resolveUser } from './chown.ts';
import { tempDir, type Cleanup } from './testing.ts';

function imageRoot(t: Cleanup): string {
  const root = tempDir(t, 'tsbuild-chown-');
  fs.mkdirSync(path.join(root, 'etc'));
  fs.writeFileSync(
    path.join(root, 'etc/passwd'),
    'root:x:0:0:root:/root:/bin/sh\nbad line\napp:x:1000:1001::/home/app:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n',
  );
  fs.writeFileSync(
    path.join(root, 'etc/group'),
    'root:x:0:\nappgrp:x:1001:\nstaff:x:50:app,other\nwheel:x:10:app\ndocker:x:999:\n',
  );
  return root;
}

test('resolveChown: names and ids through the image files', async (t) => {
  const root = imageRoot(t);
  const cases: [string, { uid: number; gid: number }][] = [
    ['app', { uid: 1000, gid: 1001 }],
    ['app:staff', { uid: 1000, gid: 50 }],
    ['app:999', { uid: 1000, gid: 999 }],
    ['1234', { uid: 1234, gid: 1234 }],
    ['1234:5678', { uid: 1234, gid: 5678 }],
    ['42:docker', { uid: 42, gid: 999 }],
    ['0', { uid: 0, gid: 0 }],
  ];
  for (const [spec, want] of cases) assert.deepEqual(await resolveChown(spec, root), want, spec);
  await assert.rejects(resolveChown('ghost', root), /unable to find user ghost: no matching entry in \/etc\/passwd/);
  await assert.rejects(resolveChown('app:ghosts', root), /unable to find group ghosts: no matching entry in \/etc\/group/);
  await assert.rejects(resolveChown(':x', root), /invalid user specification/);
});

test('resolveUser: supplementary groups and numeric users', async (t) => {
  const root = imageRoot(t);
  assert.deepEqual(await resolveUser('app', root), { uid: 1000, gid: 1001, additionalGids: [50, 10], home: '/home/app' });
  assert.deepEqual(await resolveUser('1000', root), { uid: 1000, gid: 1001, additionalGids: [50, 10], home: '/home/app' });
  assert.deepEqual(await resolveUser('app:docker', root), { uid: 1000, gid: 999, additionalGids: [], home: '/home/app' });
  assert.deepEqual(await resolveUser('4242', root), { uid: 4242, gid: 0, additionalGids: [], home: '/' });
  assert.equal((await resolveUser('root', root)).home, '/root');
  assert.deepEqual(await resolveUser('4242:4343', root), { uid: 4242, gid: 4343, additionalGids: [], home: '/' });
  await assert.rejects(resolveUser('ghost', root), /unable to find user ghost/);
});

test('the image passwd is read inside the rootfs even through a hostile symlink', async (t) => {
  const root = tempDir(t, 'tsbuild-chown-');
  fs.mkdirSync(path.join(root, 'real'));
  fs.writeFileSync(path.join(root, 'real/passwd'), 'inside:x:7:8::/:/bin/sh\n');
  // /etc -> ../../../real: on the host this would climb out; inside the root it is /real.
  fs.symlinkSync('../../../real', path.join(root, 'etc'));
  assert.deepEqual(await resolveChown('inside', root), { uid: 7, gid: 8 });
  await assert.rejects(resolveChown('root', root), /no matching entry in \/etc\/passwd/);
  const empty = tempDir(t, 'tsbuild-chown-');
  await assert.rejects(resolveChown('app', empty), /the image has no \/etc\/passwd/);
  assert.deepEqual(await resolveChown('5', empty), { uid: 5, gid: 5 });
});
