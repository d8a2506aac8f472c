import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { CancelledError, TsbuildError } from '@tsbuild/errors';
import { cleanupContainers, RLIM_INFINITY, run, runtimeInfo, specJson } from './index.ts';
import type { RunOptions, RunResult } from './index.ts';

const repo = fileURLToPath(new URL('../../..', import.meta.url));

class Collect extends Writable {
  text = '';
  constructor(private readonly onText?: (text: string) => void) {
    super();
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString('utf8');
    this.onText?.(this.text);
    cb();
  }
}

/** Every path under `dir` with its type, for before/after comparisons. */
async function tree(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const e of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = `${prefix}/${e.name}`;
    out.push(`${p}${e.isDirectory() ? '/' : e.isSymbolicLink() ? '@' : ''}`);
    if (e.isDirectory()) out.push(...(await tree(join(dir, e.name), p)));
  }
  return out;
}

function ourContainers(pid: number, runtimeRoot?: string): string[] {
  const args = [...(runtimeRoot ? ['--root', runtimeRoot] : []), 'list', '--format', 'json'];
  const listed = JSON.parse(execFileSync('runc', args, { encoding: 'utf8' }).trim() || 'null') as
    | { id: string }[]
    | null;
  return (listed ?? []).map((c) => c.id).filter((id) => id.startsWith(`tsbuild-${pid}-`));
}

describe('executor.run with runc', () => {
  let base: string;
  let rootfs: string;
  let stateDir: string;
  let baseTar: string;

  const sh = async (script: string, extra: Partial<RunOptions> = {}): Promise<RunResult & { out: string; err: string }> => {
    const stdout = new Collect();
    const stderr = new Collect();
    const r = await run({ rootfs, stateDir, args: ['sh', '-c', script], stdout, stderr, network: 'none', ...extra });
    return { ...r, out: stdout.text, err: stderr.text };
  };

  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'tsbuild-exec-'));
    baseTar = join(base, 'busybox.tar');
    execFileSync('bash', [join(repo, 'fixtures/bases/busybox.sh'), baseTar]);
    rootfs = join(base, 'rootfs');
    stateDir = join(base, 'state');
    await mkdir(rootfs);
    execFileSync('tar', ['-xf', baseTar, '-C', rootfs]);
  });
  after(async () => {
    await rm(base, { recursive: true, force: true });
  });

  it('streams stdout and stderr and returns the exit code', async () => {
    const r = await sh('echo hello; echo oops >&2; exit 3');
    assert.equal(r.exitCode, 3);
    assert.equal(r.signal, undefined);
    assert.equal(r.out, 'hello\n');
    assert.equal(r.err, 'oops\n');
    assert.equal((await sh('true')).exitCode, 0);
    const killed = await sh('sh -c "kill -9 \\$\\$"; exit $?');
    assert.equal(killed.exitCode, 137);
    assert.equal(killed.signal, 'SIGKILL');
    assert.deepEqual(await readdir(stateDir), [], 'bundle dirs are removed');
  });

  it('applies env, working directory and user', async () => {
    const r = await sh('echo "$FOO"; pwd; id -u; id -g; id -G; echo "$PATH"', {
      env: ['FOO=bar baz'],
      cwd: '/work/dir',
      user: { uid: 1000, gid: 1000, additionalGids: [65534] },
    });
    assert.equal(r.exitCode, 0, r.err);
    assert.deepEqual(r.out.split('\n'), [
      'bar baz',
      '/work/dir',
      '1000',
      '1000',
      '1000 65534',
      '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      '',
    ]);
    // The missing working directory was created for the runtime and stays, like WORKDIR's.
    assert.ok(existsSync(join(rootfs, 'work/dir')));
    await rm(join(rootfs, 'work'), { recursive: true });
  });

  it('gives root Docker default capabilities and a non-root user none', async () => {
    const root = await sh('grep -E "^Cap(Eff|Bnd)" /proc/self/status; cat /proc/self/status | grep NoNewPrivs');
    assert.match(root.out, /CapEff:\s+00000000a80425fb/);
    assert.match(root.out, /CapBnd:\s+00000000a80425fb/);
    assert.match(root.out, /NoNewPrivs:\s+1/);
    const user = await sh('grep -E "^CapEff" /proc/self/status', { user: { uid: 65534, gid: 65534 } });
    assert.match(user.out, /CapEff:\s+0000000000000000/);
  });

  it('isolates the network for network none and shares it for host', async () => {
    const none = await sh('ls /sys/class/net');
    assert.equal(none.out, 'lo\n');
    const host = await sh('ls /sys/class/net', { network: 'host' });
    assert.deepEqual(host.out.trim().split(/\s+/).sort(), (await readdir('/sys/class/net')).sort());
  });

  it('provides /etc/hosts, /etc/hostname and /etc/resolv.conf without leaving stubs', async () => {
    const before = await tree(rootfs);
    const times = async () => [(await stat(rootfs)).mtimeMs, (await stat(join(rootfs, 'etc'))).mtimeMs];
    const timesBefore = await times();
    assert.ok(!before.includes('/etc/hosts') && !before.includes('/proc/'));
    const r = await sh('cat /etc/hosts; cat /etc/hostname; hostname; wc -c < /etc/resolv.conf; ls /dev', {
      hostname: 'builder',
      extraHosts: [{ host: 'db.internal', ip: '10.1.2.3' }],
    });
    assert.equal(r.exitCode, 0, r.err);
    assert.match(r.out, /^127\.0\.0\.1\s+localhost builder$/m);
    assert.match(r.out, /^10\.1\.2\.3\s+db\.internal$/m);
    assert.match(r.out, /^builder\nbuilder\n0\n/m);
    for (const dev of ['null', 'zero', 'full', 'random', 'urandom', 'tty', 'pts', 'shm', 'mqueue']) {
      assert.match(r.out, new RegExp(`^${dev}$`, 'm'));
    }
    assert.deepEqual(await tree(rootfs), before);
    assert.deepEqual(await times(), timesBefore, 'directories that held stubs keep their times');

    // Without /etc at all, the directory the runtime had to create goes too.
    await rm(join(rootfs, 'etc'), { recursive: true });
    const noEtc = await tree(rootfs);
    assert.equal((await sh('cat /etc/hostname')).out, 'tsbuild\n');
    assert.deepEqual(await tree(rootfs), noEtc);
    execFileSync('tar', ['-xf', baseTar, '-C', rootfs, 'etc']);
  });

  it('mounts binds and tmpfs and removes the mount points it had to create', async () => {
    const shared = join(base, 'shared');
    await mkdir(shared, { recursive: true });
    await writeFile(join(shared, 'in'), 'from host\n');
    const before = await tree(rootfs);
    const r = await sh('cat /mnt/ro/in; echo x > /mnt/ro/out || echo ro-refused; echo y > /cache/deep/out; touch /scratch/t; ls /scratch', {
      mounts: [
        { type: 'bind', source: shared, destination: '/mnt/ro', readonly: true },
        { type: 'bind', source: shared, destination: '/cache/deep' },
        { type: 'tmpfs', destination: '/scratch', size: 1 << 20 },
      ],
    });
    assert.equal(r.exitCode, 0, r.err);
    assert.equal(r.out, 'from host\nro-refused\nt\n');
    assert.equal(await readFile(join(shared, 'out'), 'utf8'), 'y\n');
    assert.deepEqual(await tree(rootfs), before);
  });

  it('applies cgroup limits', async () => {
    const r = await sh(
      'cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us /sys/fs/cgroup/pids/pids.max',
      { limits: { memory: 64 * 1024 * 1024, cpuQuota: 50000, cpuPeriod: 100000, pidsLimit: 64 } },
    );
    assert.equal(r.exitCode, 0, r.err);
    assert.deepEqual(r.out.trim().split('\n'), ['67108864', '50000', '100000', '64']);
  });

  it('refuses a working directory that reaches into /proc', async () => {
    const isUnsafe = (e: unknown) => e instanceof TsbuildError && e.code === 'UNSAFE_CWD';
    await assert.rejects(sh('pwd', { cwd: '/proc/self/fd/7' }), isUnsafe);
    await symlink('/proc/self/fd/7', join(rootfs, 'evil'));
    await symlink('../../proc/self/cwd', join(rootfs, 'tmp/evil2'));
    try {
      await assert.rejects(sh('pwd', { cwd: '/evil' }), isUnsafe);
      await assert.rejects(sh('pwd', { cwd: '/tmp/evil2/x' }), isUnsafe);
    } finally {
      await rm(join(rootfs, 'evil'));
      await rm(join(rootfs, 'tmp/evil2'));
    }
  });

  it('refuses a program under /proc when runc predates the CVE-2024-21626 fix', async (t) => {
    const info = await runtimeInfo('runc');
    if (info.fixesCve202421626) {
      t.skip(`runc ${info.version} is fixed`);
      return;
    }
    await assert.rejects(
      run({ rootfs, stateDir, args: ['/proc/self/fd/7/../../../bin/sh'] }),
      (e: unknown) => e instanceof TsbuildError && e.code === 'UNSAFE_PROGRAM',
    );
  });

  it('rejects malformed environment entries and ids before starting anything', async () => {
    const bad = (e: unknown) => e instanceof TsbuildError && e.code === 'BAD_RUN';
    await assert.rejects(run({ rootfs, stateDir, args: ['true'], env: ['NOEQUALS'] }), bad);
    await assert.rejects(run({ rootfs, stateDir, args: ['true'], user: { uid: -1, gid: 0 } }), bad);
    await assert.rejects(run({ rootfs, stateDir, args: ['true'], mounts: [{ type: 'tmpfs', destination: 'rel' }] }), bad);
    await assert.rejects(run({ rootfs, stateDir, args: ['true'], mounts: [{ type: 'tmpfs', destination: '/proc/sys' }] }), bad);
    await symlink('/proc/self/fd/7', join(rootfs, 'tmp/to-proc'));
    try {
      const viaLink = { type: 'tmpfs' as const, destination: '/tmp/to-proc' };
      await assert.rejects(run({ rootfs, stateDir, args: ['true'], mounts: [viaLink] }), bad);
    } finally {
      await rm(join(rootfs, 'tmp/to-proc'));
    }
    assert.deepEqual(existsSync(stateDir) ? await readdir(stateDir) : [], []);
  });

  it('sets the rlimits asked for (RLIM_INFINITY as an exact literal), /dev/shm size, and refuses limits it cannot set', async () => {
    const r = await sh('ulimit -Sn; ulimit -Hn; ulimit -c; df -k /dev/shm | tail -n 1', {
      rlimits: [
        { type: 'RLIMIT_NOFILE', soft: 512n, hard: 1024n },
        { type: 'RLIMIT_CORE', soft: RLIM_INFINITY, hard: RLIM_INFINITY },
      ],
      shmSize: 32 * 1024 * 1024,
    });
    assert.equal(r.exitCode, 0, r.err);
    const [soft, hard, core, shm] = r.out.trim().split('\n');
    assert.deepEqual([soft, hard, core], ['512', '1024', 'unlimited']);
    assert.match(shm ?? '', /\s32768\s/);
    assert.match(specJson({ process: { rlimits: [{ type: 'RLIMIT_CORE', soft: RLIM_INFINITY, hard: 5n }] } } as never), /"soft":18446744073709551615,"hard":5/);
    await assert.rejects(sh('true', { rlimits: [{ type: 'RLIMIT_NOFILE', soft: 10n, hard: 5n }] }), /soft limit is above the hard limit/);
    await assert.rejects(sh('true', { rlimits: [{ type: 'RLIMIT_BOGUS', soft: 1n, hard: 1n }] }), /unknown rlimit type/);
  });

  it('reports a runtime that is missing or a program that cannot start', async () => {
    await assert.rejects(run({ rootfs, stateDir, args: ['true'], runtime: '/nonexistent/runc' }), (e: unknown) => {
      assert.ok(e instanceof TsbuildError);
      assert.equal(e.message, "runtime '/nonexistent/runc' not found");
      assert.equal(e.hint, 'apt-get install runc');
      return true;
    });
    await assert.rejects(run({ rootfs, stateDir, args: ['true'], runtime: 'no-such-runtime' }), /runtime 'no-such-runtime' not found/);
    await assert.rejects(
      run({ rootfs, stateDir, args: ['no-such-program'], stderr: new Collect() }),
      (e: unknown) => e instanceof TsbuildError && e.code === 'RUNTIME_START' && /no-such-program/.test(e.message),
    );
    assert.deepEqual(ourContainers(process.pid), []);
  });

  it('kills and deletes the container when aborted', async () => {
    const ac = new AbortController();
    const stdout = new Collect((text) => {
      if (text.includes('started')) ac.abort();
    });
    await assert.rejects(
      run({ rootfs, stateDir, args: ['sh', '-c', 'echo started; exec sleep 1000'], stdout, signal: ac.signal }),
      (e: unknown) => e instanceof CancelledError,
    );
    assert.deepEqual(ourContainers(process.pid), []);
    assert.deepEqual(await readdir(stateDir), []);
    await assert.rejects(run({ rootfs, stateDir, args: ['true'], signal: ac.signal }), CancelledError);
  });

  it('cleans up the container of a killed parent process', async () => {
    const rootfs2 = join(base, 'rootfs2');
    await mkdir(rootfs2);
    execFileSync('tar', ['-xf', baseTar, '-C', rootfs2]);
    // A private runtime state dir: builds running meanwhile clean up dead containers too.
    const runtimeRoot = join(base, 'runc-state');
    const script = `
      import { run } from ${JSON.stringify(fileURLToPath(new URL('./index.ts', import.meta.url)))};
      await run({ rootfs: ${JSON.stringify(rootfs2)}, stateDir: ${JSON.stringify(stateDir)}, runtimeRoot: ${JSON.stringify(runtimeRoot)},
        args: ['sh', '-c', 'echo started; exec sleep 1000'], stdout: process.stdout });
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    await new Promise<void>((resolve, reject) => {
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        if (d.includes('started')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`child exited early with ${code}`)));
    });
    const pid = child.pid ?? -1;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    const left = ourContainers(pid, runtimeRoot);
    assert.equal(left.length, 1, 'the dead parent left its container running');
    assert.deepEqual(await cleanupContainers('runc', { runtimeRoot }), left);
    assert.deepEqual(ourContainers(pid, runtimeRoot), []);
    assert.deepEqual(await readdir(stateDir), []);
  });
});
