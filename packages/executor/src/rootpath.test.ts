import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { TsbuildError } from '@tsbuild/errors';
import { isUnderProc, mkdirInRoot, resolveInRoot } from './rootpath.ts';
import { buildSpec, DEFAULT_PATH } from './spec.ts';

describe('resolveInRoot', () => {
  let root: string;
  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'tsbuild-root-'));
    await mkdir(join(root, 'usr/lib'), { recursive: true });
    await symlink('usr/lib', join(root, 'lib'));
    await symlink('/usr', join(root, 'abs'));
    await symlink('../../../../..', join(root, 'usr/up'));
    await symlink('/proc/self/fd/7', join(root, 'usr/fd'));
    await symlink('loop2', join(root, 'loop1'));
    await symlink('loop1', join(root, 'loop2'));
  });
  after(() => rm(root, { recursive: true, force: true }));

  const cases: [string, string][] = [
    ['/', '/'],
    ['/usr/lib/x', '/usr/lib/x'],
    ['lib/x', '/usr/lib/x'],
    ['/abs/lib', '/usr/lib'],
    ['/../../etc/passwd', '/etc/passwd'],
    ['/usr/up/etc', '/etc'],
    ['/usr/up/../../x', '/x'],
    ['/usr/fd/../..', '/proc/self'],
    ['/missing/../usr/./lib//', '/usr/lib'],
  ];
  for (const [input, want] of cases) {
    it(`${input} → ${want}`, async () => {
      assert.equal(await resolveInRoot(root, input), want);
    });
  }

  it('stops at symlink loops', async () => {
    await assert.rejects(resolveInRoot(root, '/loop1/x'), (e: unknown) => e instanceof TsbuildError && e.code === 'PATH_LOOP');
  });

  it('creates directories through in-root symlinks only', async () => {
    await mkdirInRoot(root, await resolveInRoot(root, '/usr/up/made/here'));
    assert.equal(await resolveInRoot(root, '/made/here'), '/made/here');
    await writeFile(join(root, 'usr/file'), '');
    await assert.rejects(mkdirInRoot(root, '/usr/file/sub'), (e: unknown) => e instanceof TsbuildError && e.code === 'NOT_A_DIRECTORY');
  });

  it('recognises /proc paths', () => {
    assert.equal(isUnderProc('/proc'), true);
    assert.equal(isUnderProc('/proc/self/fd/7'), true);
    assert.equal(isUnderProc('/process'), false);
  });
});

describe('buildSpec', () => {
  const input = {
    rootfs: '/r',
    args: ['sh'],
    env: ['A=1'],
    cwd: '/',
    uid: 0,
    gid: 0,
    additionalGids: [],
    hostname: 'h',
    network: 'none' as const,
    mounts: [],
    cgroupsPath: 'tsbuild/x',
    limits: {},
  };

  it('adds a default PATH only when none is set', () => {
    assert.deepEqual(buildSpec(input).process.env, [DEFAULT_PATH, 'A=1']);
    assert.deepEqual(buildSpec({ ...input, env: ['PATH=/x'] }).process.env, ['PATH=/x']);
  });

  it('creates a network namespace only for network none', () => {
    const ns = (n: 'none' | 'host') => buildSpec({ ...input, network: n }).linux.namespaces.map((x) => x.type);
    assert.ok(ns('none').includes('network'));
    assert.ok(!ns('host').includes('network'));
  });

  it('sets limits only when asked, and never rlimits', () => {
    assert.deepEqual(buildSpec(input).linux.resources, { devices: [{ allow: false, access: 'rwm' }] });
    const r = buildSpec({ ...input, limits: { memory: 1, cpuQuota: 2, pidsLimit: 3 } }).linux.resources;
    assert.deepEqual([r.memory, r.cpu, r.pids], [{ limit: 1 }, { quota: 2 }, { limit: 3 }]);
    assert.equal('rlimits' in buildSpec(input).process, false);
  });

  it('drops effective capabilities for non-root users', () => {
    const caps = buildSpec({ ...input, uid: 1000 }).process.capabilities;
    assert.deepEqual(caps.effective, []);
    assert.equal(caps.bounding.length, 14);
  });
});
