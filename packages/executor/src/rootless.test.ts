import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { lockedMountFlags } from './rootless.ts';
import { buildSpec } from './spec.ts';
import type { SpecInput } from './spec.ts';

const MOUNTINFO = [
  '22 1 254:0 / / rw,relatime - ext4 /dev/vda rw',
  '86 22 254:0 /data /home/u/.local/share/tsbuild rw,nosuid,nodev,relatime - ext4 /dev/vda rw',
  '87 86 0:50 / /home/u/.local/share/tsbuild/state rw,noexec,noatime - tmpfs tmpfs rw',
  '88 22 0:51 / /with\\040space ro,nosuid - tmpfs tmpfs rw',
].join('\n');

test('a read-only bind repeats the locked flags of the mount its source is on', () => {
  assert.deepEqual(lockedMountFlags('/etc/hosts', MOUNTINFO), []);
  assert.deepEqual(lockedMountFlags('/home/u/.local/share/tsbuild/cache-mounts/x', MOUNTINFO), ['nosuid', 'nodev']);
  assert.deepEqual(lockedMountFlags('/home/u/.local/share/tsbuild/state/c1/hosts', MOUNTINFO), ['noexec', 'noatime']);
  assert.deepEqual(lockedMountFlags('/home/u/.local/share/tsbuildx', MOUNTINFO), []);
  assert.deepEqual(lockedMountFlags('/with space/f', MOUNTINFO), ['nosuid']);
});

const input: SpecInput = {
  rootfs: '/r', args: ['true'], env: [], cwd: '/', uid: 0, gid: 0, additionalGids: [], hostname: 'h', network: 'host', mounts: [], cgroupsPath: undefined, limits: {},
};

test('in a user namespace /sys is bound from the host, and no cgroup is named unless asked', () => {
  const spec = buildSpec({ ...input, rootless: true });
  assert.deepEqual(spec.mounts.find((m) => m.destination === '/sys'), { destination: '/sys', type: 'bind', source: '/sys', options: ['rbind', 'nosuid', 'noexec', 'nodev', 'ro'] });
  assert.ok(!('cgroupsPath' in spec.linux));
  const asRoot = buildSpec({ ...input, cgroupsPath: 'tsbuild/x' });
  assert.equal(asRoot.mounts.find((m) => m.destination === '/sys')?.type, 'sysfs');
  assert.equal(asRoot.linux.cgroupsPath, 'tsbuild/x');
});

test('inUserNamespace tells the initial namespace from a new one', (t) => {
  const probe = "import('./packages/executor/src/rootless.ts').then((m) => console.log(m.inUserNamespace()))";
  const here = execFileSync(process.execPath, ['--import', 'tsx', '-e', probe], { encoding: 'utf8', cwd: new URL('../../..', import.meta.url).pathname }).trim();
  const initial = execFileSync('cat', ['/proc/self/uid_map'], { encoding: 'utf8' }).trim().split(/\s+/).join(' ') === '0 0 4294967295';
  assert.equal(here, String(!initial));
  let inside: string;
  try {
    inside = execFileSync('unshare', ['--user', '--map-root-user', process.execPath, '--import', 'tsx', '-e', probe], { encoding: 'utf8', cwd: new URL('../../..', import.meta.url).pathname, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (e) {
    t.skip(`cannot make a user namespace here: ${(e as Error).message.split('\n')[0]}`);
    return;
  }
  assert.equal(inside, 'true');
});
