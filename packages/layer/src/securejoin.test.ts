import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, symlinkSync } from 'node:fs';
import { UnsafeArchiveError } from '@tsbuild/errors';
import { cleanArchivePath, secureJoin } from './securejoin.ts';
import { tempDir } from './testing.ts';

test('cleanArchivePath drops ./ and empty parts, re-roots absolute names, refuses climbing out', () => {
  assert.deepEqual(cleanArchivePath('./a//b/./c/'), ['a', 'b', 'c']);
  assert.deepEqual(cleanArchivePath('/etc/passwd'), ['etc', 'passwd']);
  assert.deepEqual(cleanArchivePath('a/b/../c'), ['a', 'c']);
  assert.deepEqual(cleanArchivePath('./'), []);
  for (const bad of ['..', '../x', 'a/../../x', '/../x', 'a\0b']) {
    assert.throws(() => cleanArchivePath(bad), UnsafeArchiveError, bad);
  }
});

test('secureJoin follows symlinks as if the root were /', () => {
  const root = tempDir('sj');
  try {
    mkdirSync(`${root}/real/deeper`, { recursive: true });
    symlinkSync('/real', `${root}/abs`);
    symlinkSync('../../../../..', `${root}/real/up`);
    symlinkSync('deeper', `${root}/real/rel`);
    symlinkSync('/etc/shadow', `${root}/final`);
    symlinkSync('self', `${root}/self`);
    const join = (p: string, followLast = false): string => secureJoin(root, cleanArchivePath(p), { followLast });
    assert.equal(join('abs/deeper/x'), `${root}/real/deeper/x`);
    assert.equal(join('real/up/etc/passwd'), `${root}/etc/passwd`);
    assert.equal(join('real/rel'), `${root}/real/rel`, 'the last component is not followed by default');
    assert.equal(join('real/rel', true), `${root}/real/deeper`);
    assert.equal(join('final'), `${root}/final`);
    assert.equal(join('final', true), `${root}/etc/shadow`);
    assert.equal(join('missing/a/b'), `${root}/missing/a/b`);
    assert.equal(join(''), root);
    assert.throws(() => join('self/x'), UnsafeArchiveError);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
