import { test } from 'node:test';
import assert from 'node:assert/strict';
import { applyChmod, parseChmod } from './chmod.ts';

const FILE = 0o100000;
const DIR = 0o040000;

test('applyChmod: octal and symbolic modes', () => {
  const cases: [string, number, boolean, number][] = [
    ['0755', 0o644, false, 0o755],
    ['644', 0o4755, false, 0o644],
    ['4755', 0o644, false, 0o4755],
    ['0', 0o777, true, 0],
    ['u+x', 0o644, false, 0o744],
    ['+x', 0o644, false, 0o755],
    ['a+x', 0o600, false, 0o711],
    ['g-w,o-w', 0o666, false, 0o644],
    ['u=rwx,go=rx', 0o600, false, 0o755],
    ['go=', 0o777, false, 0o700],
    ['a+X', 0o644, false, 0o644],
    ['a+X', 0o744, false, 0o755],
    ['a+X', 0o600, true, 0o711],
    ['u+s', 0o755, false, 0o4755],
    ['g+s', 0o755, true, 0o2755],
    ['+t', 0o777, true, 0o1777],
    ['o=u', 0o750, false, 0o757],
    ['g+u-x', 0o700, false, 0o760],
    ['u-x+r', 0o300, false, 0o600],
    ['=r', 0o777, false, 0o444],
  ];
  for (const [spec, mode, isDir, want] of cases) {
    const type = isDir ? DIR : FILE;
    const got = applyChmod(type | mode, parseChmod(spec), isDir);
    assert.equal(got & ~0o7777, type, `${spec}: file type kept`);
    assert.equal((got & 0o7777).toString(8), want.toString(8), `${spec} on ${mode.toString(8)}`);
  }
});

test('parseChmod rejects what BuildKit rejects', () => {
  for (const bad of ['', '8', '17777', 'u+y', 'x+r', 'u+x,', 'rwx', '0o755']) {
    assert.throws(() => parseChmod(bad), /invalid --chmod value/, JSON.stringify(bad));
  }
  assert.deepEqual(parseChmod('0755'), { kind: 'octal', mode: 0o755, text: '0755' });
});
