import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isTsbuildError } from '@tsbuild/errors';
import { namespaceMap, needsNamespace, planNamespace, subordinateRanges } from './userns.ts';
import type { NamespaceOptions } from './userns.ts';

test('subordinate ranges: lines naming the user by name or uid, in file order; others and junk skipped', () => {
  const text = '# comment\nalice:100000:65536\nbob:165536:65536\n1000:300000:10\nalice:bad:1\nalice:400000:0\n\nalice:500000:5\n';
  assert.deepEqual(subordinateRanges(text, { name: 'alice', uid: 1000 }), [
    { start: 100000, count: 65536 },
    { start: 300000, count: 10 },
    { start: 500000, count: 5 },
  ]);
  assert.deepEqual(subordinateRanges(text, { name: undefined, uid: 1000 }), [{ start: 300000, count: 10 }]);
  assert.deepEqual(subordinateRanges(text, { name: 'carol', uid: 7 }), []);
});

test('the namespace map: 0 is the user, then every range from 1 on; the user\'s own id is never mapped twice', () => {
  assert.deepEqual(namespaceMap(1000, [{ start: 100000, count: 65536 }]), [
    { inside: 0, outside: 1000, count: 1 },
    { inside: 1, outside: 100000, count: 65536 },
  ]);
  // The image's ranges: a pod's 65536 ids around user 1000.
  assert.deepEqual(namespaceMap(1000, [{ start: 1, count: 999 }, { start: 1001, count: 64535 }]), [
    { inside: 0, outside: 1000, count: 1 },
    { inside: 1, outside: 1, count: 999 },
    { inside: 1000, outside: 1001, count: 64535 },
  ]);
  assert.deepEqual(namespaceMap(1000, [{ start: 1, count: 65535 }]), [
    { inside: 0, outside: 1000, count: 1 },
    { inside: 1, outside: 1, count: 999 },
    { inside: 1000, outside: 1001, count: 64535 },
  ]);
});

test('which commands need the namespace', () => {
  for (const argv of [['build', '.'], ['run', 'img'], ['--root', '/r', 'images'], ['prune'], ['pull', 'x'], ['save', 'x'], ['load']]) assert.ok(needsNamespace(argv), argv.join(' '));
  for (const argv of [[], ['--help'], ['build', '--help'], ['--version'], ['check', '.'], ['login', 'r'], ['logout', 'r']]) assert.ok(!needsNamespace(argv), argv.join(' '));
});

function planError(opts: NamespaceOptions): { message: string; hint: string | undefined } {
  try {
    planNamespace(opts);
  } catch (e) {
    assert.ok(isTsbuildError(e));
    return { message: e.message, hint: e.hint };
  }
  assert.fail('expected planNamespace to fail');
}

test('what is missing is named: user namespaces, subordinate ids (with the usermod line), newuidmap', () => {
  const base = { uid: 1000, gid: 1000, name: 'alice', path: '/usr/bin:/bin', subuid: 'alice:100000:65536\n', subgid: 'alice:100000:65536\n', readSysctl: () => undefined };
  const off = planError({ ...base, readSysctl: (p) => (p.endsWith('max_user_namespaces') ? '0\n' : undefined) });
  assert.match(off.message, /user namespaces are disabled on this machine \(user\.max_user_namespaces = 0\)/);
  assert.match(off.hint ?? '', /sysctl -w user\.max_user_namespaces=/);
  const clone = planError({ ...base, readSysctl: (p) => (p.endsWith('unprivileged_userns_clone') ? '0\n' : '15000\n') });
  assert.match(clone.message, /kernel\.unprivileged_userns_clone = 0/);
  const none = planError({ ...base, subuid: 'bob:100000:65536\n', subgid: 'bob:100000:65536\n' });
  assert.equal(none.message, 'alice has no subordinate ids in /etc/subuid and /etc/subgid: building without root maps the image\'s users to them');
  // The suggested range overlaps nobody's.
  assert.equal(none.hint, 'as root: usermod --add-subuids 165536-231071 --add-subgids 165536-231071 alice');
  assert.match(planError({ ...base, subgid: '' }).message, /^alice has no subordinate ids in \/etc\/subgid:/);
  const noMap = planError({ ...base, path: '/nonexistent' });
  assert.match(noMap.message, /^newuidmap was not found on PATH/);
  assert.match(noMap.hint ?? '', /install the uidmap package/);
});
