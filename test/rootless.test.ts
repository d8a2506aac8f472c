/**
 * tsbuild without root: an ordinary user (made here, with subordinate ids) builds, runs, pushes,
 * pulls, saves and loads through the CLI, which enters a user namespace of its own; the same
 * Dockerfiles give the same image ids as root. Then the tsbuild image (deploy/Dockerfile) builds
 * an image inside an unprivileged podman container. Runs as root, which it needs to make users.
 */
import { test, before, after } from 'node:test';
import type { TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { REPO, busyboxTar, debianTar } from './helpers/base.ts';
import { CLI, ensureCli, tsbuild } from './helpers/cli.ts';
import { startRegistry } from './helpers/registry.ts';

const FIXTURES = join(REPO, 'fixtures/builds');
/** The fixtures that exercise what a user namespace changes: owners, chown, mounts, secrets, heredocs, whiteouts. */
const CASES = ['user', 'chown', 'cache-mount', 'cache-locked', 'secret', 'heredocs', 'whiteouts'];
const EPOCH = '1700000000';
const SECRET = 's3cr3t-value';
const USER = `tsbrl${process.pid}`.slice(0, 31);
const NOSUB = `tsbrn${process.pid}`.slice(0, 31);
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

const skip =
  process.getuid?.() !== 0
    ? 'needs root, to make the users it runs tsbuild as'
    : (['useradd', 'userdel', 'runuser', 'unshare', 'newuidmap', 'newgidmap', 'runc'].find((c) => !has(c)) ?? '') !== ''
      ? `needs ${['useradd', 'userdel', 'runuser', 'unshare', 'newuidmap', 'newgidmap', 'runc'].find((c) => !has(c))} (apt-get install uidmap runc)`
      : readFileSync('/proc/sys/user/max_user_namespaces', 'utf8').trim() === '0'
        ? 'user namespaces are disabled (user.max_user_namespaces = 0)'
        : undefined;

let work = '';
/** A copy of the fixtures the users can read (the checkout may sit under a directory they cannot enter). */
let fixtures = '';
let cli = '';
let rootRoot = '';
let home = '';
let baseArchive = '';
let secretFile = '';
const made: string[] = [];
/** fixture → image id, as root built it */
const rootIds = new Map<string, string>();

/** What `tsbuild inspect` prints, as far as these tests read it. */
interface Inspected {
  Id: string;
  Manifest: { layers: Array<{ size: number }> };
  Config: { config?: { User?: string; Entrypoint?: string[] } };
}

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** `tsbuild ARGS` as `user`, with a clean environment (HOME, PATH, and `env`). */
function asUser(user: string, args: string[], env: Record<string, string> = {}): Result {
  const vars = { HOME: user === USER ? home : join(work, 'nosub-home'), PATH: `${dirname(process.execPath)}:${PATH}`, ...env };
  const r = spawnSync('runuser', ['-u', user, '--', 'env', '-i', ...Object.entries(vars).map(([k, v]) => `${k}=${v}`), process.execPath, cli, ...args], {
    cwd: work,
    encoding: 'utf8',
    timeout: 300_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function ok(r: Result, what: string): Result {
  assert.equal(r.code, 0, `${what} failed (exit ${r.code}):\n${r.stderr}`);
  return r;
}

/**
 * The CLI bundle and the native addons it loads, copied where other users can read them: the
 * checkout may sit under a directory they cannot enter, and pnpm's node_modules are symlinks
 * into its store, which the copy dereferences (each addon with its platform package beside it).
 */
function copyCli(dest: string): string {
  const dist = dirname(CLI);
  mkdirSync(join(dest, 'dist'), { recursive: true });
  for (const f of ['tsbuild.js', 'tsbuild.cjs', 'package.json']) {
    if (existsSync(join(dist, f))) cpSync(join(dist, f), join(dest, 'dist', f));
  }
  const modules = join(REPO, 'packages/cli/node_modules');
  for (const name of ['@napi-rs/blake-hash', '@napi-rs/xattr', 'zstd-napi']) {
    if (!existsSync(join(modules, name))) continue;
    // pnpm keeps a package and its dependencies side by side in one node_modules dir.
    const real = realpathSync(join(modules, name));
    const store = real.slice(0, real.lastIndexOf('/node_modules/') + '/node_modules'.length);
    // cp -L, not cpSync: Node 24's cpSync keeps the symlinks nested in the tree despite `dereference`.
    mkdirSync(join(dest, 'node_modules'), { recursive: true });
    execFileSync('cp', ['-RL', '--', `${store}/.`, join(dest, 'node_modules')]);
  }
  execFileSync('chmod', ['-R', 'a+rX', dest]);
  return join(dest, 'dist', 'tsbuild.js');
}

function fixtureArgs(name: string): string[] {
  return name === 'secret' ? ['--secret', `id=token,src=${secretFile}`] : [];
}

before(() => {
  if (skip) return;
  ensureCli();
  work = mkdtempSync(join(tmpdir(), 'tsbuild-rootless-'));
  chmodSync(work, 0o755);
  cli = copyCli(join(work, 'cli'));
  fixtures = join(work, 'fixtures');
  cpSync(FIXTURES, fixtures, { recursive: true, preserveTimestamps: true });
  execFileSync('chmod', ['-R', 'a+rX', fixtures]);
  rootRoot = join(work, 'root-root');
  // useradd gives a new user subordinate ids (SUB_UID_* in login.defs); a system user gets none.
  execFileSync('useradd', ['--create-home', '--shell', '/bin/sh', USER]);
  made.push(USER);
  home = `/home/${USER}`;
  if (!readFileSync('/etc/subuid', 'utf8').split('\n').some((l) => l.startsWith(`${USER}:`))) {
    execFileSync('usermod', ['--add-subuids', '300000-365535', '--add-subgids', '300000-365535', USER]);
  }
  execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/bin/sh', NOSUB]);
  made.push(NOSUB);
  mkdirSync(join(work, 'nosub-home'));
  execFileSync('chown', [`${NOSUB}:`, join(work, 'nosub-home')]);
  secretFile = join(work, 'secret');
  writeFileSync(secretFile, SECRET, { mode: 0o644 });
  // Both build on one base image: root imports busybox, the user loads what root saved.
  ok(tsbuild(rootRoot, ['import', busyboxTar(), '-t', 'busybox:latest']), 'import');
  baseArchive = join(work, 'busybox-image.tar');
  ok(tsbuild(rootRoot, ['save', '-o', baseArchive, 'busybox:latest']), 'save');
  chmodSync(baseArchive, 0o644);
});

after(() => {
  for (const u of made) {
    spawnSync('userdel', ['--remove', u], { stdio: 'ignore' });
    // userdel removes subordinate ids too; make sure of it.
    for (const f of ['/etc/subuid', '/etc/subgid']) {
      const text = readFileSync(f, 'utf8');
      const kept = text.split('\n').filter((l) => !l.startsWith(`${u}:`));
      if (kept.length !== text.split('\n').length) writeFileSync(f, kept.join('\n'));
    }
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

test('an ordinary user builds the fixtures with the image ids root gets', { skip }, async (t) => {
  const r = ok(asUser(USER, ['load', '-i', baseArchive]), 'load as the user');
  assert.match(r.stdout, /Loaded image: busybox:latest/);
  // The default root of an ordinary user, owned by the user, not root.
  const userRoot = join(home, '.local/share/tsbuild');
  assert.equal(statSync(join(userRoot, 'oci')).uid, Number(execFileSync('id', ['-u', USER], { encoding: 'utf8' }).trim()));
  for (const name of CASES) {
    await t.test(name, () => {
      const dir = join(fixtures, name);
      const args = ['build', '-q', ...fixtureArgs(name), '-t', `fixture-${name}:latest`, dir];
      const asRoot = ok(tsbuild(rootRoot, args, { env: { SOURCE_DATE_EPOCH: EPOCH } }), `${name} as root`).stdout.trim();
      const rootless = ok(asUser(USER, args, { SOURCE_DATE_EPOCH: EPOCH }), `${name} as ${USER}`).stdout.trim();
      assert.match(asRoot, /^sha256:[0-9a-f]{64}$/);
      assert.equal(rootless, asRoot, `${name}: the image id without root`);
      rootIds.set(name, asRoot);
      t.diagnostic(`${name}: ${asRoot} (root and ${USER})`);
    });
  }
});

test('tsbuild run as the user: the image user, deletions, the user network, --network none, limits', { skip }, () => {
  assert.equal(ok(asUser(USER, ['run', 'fixture-user']), 'run').stdout, '1000\n');
  assert.equal(asUser(USER, ['run', 'busybox', 'sh', '-c', 'exit 3']).code, 3);
  const w = ok(asUser(USER, ['run', 'fixture-whiteouts', 'sh', '-c', 'test ! -e /d/gone && test ! -e /bin/ls && test ! -e /opq/a && cat /d/keep/f /opq/only']), 'run whiteouts');
  assert.equal(w.stdout, 'k\nfresh\n');
  // By default a container shares the user's network namespace; --network none has only lo.
  const ours = execFileSync('readlink', ['/proc/self/ns/net'], { encoding: 'utf8' }).trim();
  assert.equal(ok(asUser(USER, ['run', 'busybox', 'readlink', '/proc/self/ns/net']), 'run').stdout.trim(), ours);
  const none = ok(asUser(USER, ['run', '--network', 'none', 'busybox', 'sh', '-c', 'readlink /proc/self/ns/net; ip -o link | wc -l']), 'run --network none');
  const [ns, links] = none.stdout.trim().split('\n');
  assert.notEqual(ns, ours);
  assert.equal(links?.trim(), '1');
  // No cgroup is delegated to the user here: limits are left out with one warning, and it runs.
  const limited = ok(asUser(USER, ['run', '--memory', '64m', '--pids-limit', '50', 'busybox', 'true']), 'run with limits');
  if (!existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    assert.match(limited.stderr, /^warning: --memory, --cpus and --pids-limit are not applied: this machine uses cgroup v1/m);
    assert.equal(limited.stderr.match(/not applied/g)?.length, 1);
  }
});

test('the user pushes, pulls, saves and loads', { skip }, async () => {
  const registry = await startRegistry();
  try {
    const ref = `${registry.host}/rootless/heredocs:1`;
    ok(asUser(USER, ['push', 'fixture-heredocs:latest', ref]), 'push');
    const other = join(home, 'other-root');
    const pulled = ok(asUser(USER, ['--root', other, 'pull', ref]), 'pull');
    assert.match(pulled.stdout, /sha256:[0-9a-f]{64}/);
    assert.equal(ok(asUser(USER, ['--root', other, 'run', ref, 'cat', '/out/run.txt']), 'run pulled').stdout, 'hello world\n');
    const archive = join(home, 'whiteouts.tar');
    ok(asUser(USER, ['save', '-o', archive, 'fixture-whiteouts:latest']), 'save');
    const fresh = join(home, 'fresh-root');
    ok(asUser(USER, ['--root', fresh, 'load', '-i', archive]), 'load');
    // Loaded layers keep their deletions when unpacked without root too.
    assert.equal(ok(asUser(USER, ['--root', fresh, 'run', 'fixture-whiteouts', 'sh', '-c', 'ls /d; test ! -e /bin/ls']), 'run loaded').stdout, 'hard\nkeep\n');
    // Root reads what the user saved: the same image.
    const back = join(work, 'root-loaded');
    ok(tsbuild(back, ['load', '-i', archive]), 'load as root');
    const id = (JSON.parse(ok(tsbuild(back, ['inspect', 'fixture-whiteouts']), 'inspect').stdout) as Inspected).Id;
    assert.equal(id, rootIds.get('whiteouts') ?? id);
  } finally {
    await registry.stop();
  }
});

test('where overlayfs refuses the root (itself on overlayfs), fuse-overlayfs builds the same images', { skip: skip ?? (has('fuse-overlayfs') && existsSync('/dev/fuse') ? undefined : 'needs fuse-overlayfs and /dev/fuse') }, async (t) => {
  // A root on overlayfs, as a container's own filesystem is: overlayfs will not take it as an upper dir.
  const ovl = join(work, 'ovl');
  for (const d of ['lower', 'upper', 'work', 'merged']) mkdirSync(join(ovl, d), { recursive: true });
  execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${ovl}/lower,upperdir=${ovl}/upper,workdir=${ovl}/work`, `${ovl}/merged`]);
  execFileSync('chown', [`${USER}:`, `${ovl}/merged`]);
  // Debian's udev rule opens /dev/fuse to everyone (0666); a machine without udev leaves it 0600.
  const mode = statSync('/dev/fuse').mode & 0o777;
  chmodSync('/dev/fuse', 0o666);
  try {
    const root = join(ovl, 'merged', 'root');
    ok(asUser(USER, ['--root', root, 'load', '-i', baseArchive]), 'load');
    for (const name of CASES) {
      await t.test(name, () => {
        const args = ['--root', root, 'build', '-q', ...fixtureArgs(name), '-t', `fixture-${name}:latest`, join(fixtures, name)];
        const id = ok(asUser(USER, args, { SOURCE_DATE_EPOCH: EPOCH }), `${name} with fuse-overlayfs`).stdout.trim();
        assert.equal(id, rootIds.get(name) ?? ok(tsbuild(rootRoot, args.slice(2), { env: { SOURCE_DATE_EPOCH: EPOCH } }), name).stdout.trim());
      });
    }
    assert.equal(readFileSync(join(root, 'snapshots/driver'), 'utf8').trim(), 'fuse-overlayfs');
    // A loaded image's deletions, unpacked where no 0/0 device can be made, still hide what they delete.
    const archive = join(work, 'whiteouts-for-fuse.tar');
    ok(tsbuild(rootRoot, ['save', '-o', archive, 'fixture-whiteouts:latest']), 'save');
    chmodSync(archive, 0o644);
    const fresh = join(ovl, 'merged', 'fresh');
    ok(asUser(USER, ['--root', fresh, 'load', '-i', archive]), 'load whiteouts');
    assert.equal(ok(asUser(USER, ['--root', fresh, 'run', 'fixture-whiteouts', 'sh', '-c', 'ls /d /opq; test ! -e /bin/ls']), 'run').stdout, '/d:\nhard\nkeep\n\n/opq:\nonly\n');
  } finally {
    chmodSync('/dev/fuse', mode);
    spawnSync('umount', ['-l', `${ovl}/merged`]);
  }
});

test('without subordinate ids or newuidmap, the error says what to add', { skip }, () => {
  const noSub = asUser(NOSUB, ['build', join(fixtures, 'basic')]);
  assert.equal(noSub.code, 1, noSub.stderr);
  assert.match(noSub.stderr, new RegExp(`^error: ${NOSUB} has no subordinate ids in /etc/subuid and /etc/subgid`));
  assert.match(noSub.stderr, new RegExp(`^hint: as root: usermod --add-subuids (\\d+)-\\d+ --add-subgids \\1-\\d+ ${NOSUB}$`, 'm'));
  assert.doesNotMatch(noSub.stderr, /\n\s+at /);
  // What needs no namespace still runs as the user.
  ok(asUser(NOSUB, ['check', '-f', join(fixtures, 'basic/Dockerfile'), join(fixtures, 'basic')]), 'check without subordinate ids');

  // A machine without the uidmap package: every tool tsbuild uses but newuidmap/newgidmap.
  const bin = join(work, 'bin-without-uidmap');
  mkdirSync(bin, { recursive: true });
  for (const tool of ['sh', 'unshare', 'mount', 'umount', 'runc']) {
    const at = execFileSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim();
    if (!existsSync(join(bin, tool))) symlinkSync(at, join(bin, tool));
  }
  const noMap = asUser(USER, ['build', join(fixtures, 'basic')], { PATH: bin });
  assert.equal(noMap.code, 1, noMap.stderr);
  assert.match(noMap.stderr, /^error: newuidmap was not found on PATH: building without root needs it/);
  assert.match(noMap.stderr, /^hint: install the uidmap package \(apt-get install uidmap/m);
});

/** podman with its own storage under `dir`, runc as its runtime, and limits this machine can set. */
function podman(dir: string): (args: string[], timeout?: number) => Result {
  const conf = join(dir, 'containers.conf');
  if (!existsSync(conf)) {
    mkdirSync(dir, { recursive: true });
    // crun 1.8 fails on hybrid cgroups; and podman's default rlimits exceed this machine's
    // hard limits, which root cannot raise here, so it asks for lower ones.
    writeFileSync(conf, '[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n[engine]\nruntime = "runc"\n');
  }
  return (args, timeout = 300_000) => {
    const r = spawnSync('podman', ['--root', join(dir, 'storage'), '--runroot', join(dir, 'run'), ...args], {
      encoding: 'utf8',
      env: { ...process.env, CONTAINERS_CONF: conf },
      timeout,
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };
}

/** The security options the container gets, and nothing more: no --privileged, no added capability. */
const UNPRIVILEGED = ['--user', '1000:1000', '--security-opt', 'seccomp=unconfined', '--security-opt', 'apparmor=unconfined', '--security-opt', 'unmask=ALL'];

test('the tsbuild image builds and runs an image as user 1000 in an unprivileged podman container', { skip: skip ?? (has('podman') ? undefined : 'needs podman') }, async (t: TestContext) => {
  const debian = debianTar();
  if (!debian) {
    t.skip('the debian base could not be made (debootstrap needs the Debian archive)');
    return;
  }
  ok(tsbuild(rootRoot, ['import', debian, '-t', 'debian:bookworm-slim']), 'import debian');
  // A TLS-inspecting proxy's CA (this machine's reach to the npm registry) goes in as a secret.
  const ca = '/etc/ssl/certs/ca-certificates.crt';
  const image = 'tsbuild-image:test';
  const built = tsbuild(rootRoot, ['build', '-q', ...(existsSync(ca) ? ['--secret', `id=ca-certificates,src=${ca}`] : []), '-f', join(REPO, 'deploy/Dockerfile'), '-t', image, REPO]);
  ok(built, 'build deploy/Dockerfile');
  const inspected = JSON.parse(ok(tsbuild(rootRoot, ['inspect', image]), 'inspect').stdout) as Inspected;
  assert.equal(inspected.Config.config?.User, '1000:1000');
  assert.deepEqual(inspected.Config.config?.Entrypoint, ['tsbuild']);
  const size = inspected.Manifest.layers.reduce((n, l) => n + l.size, 0);
  t.diagnostic(`tsbuild image ${built.stdout.trim()}: ${(size / 1e6).toFixed(1)} MB in ${inspected.Manifest.layers.length} uncompressed layers`);
  const archive = join(work, 'tsbuild-image.tar');
  ok(tsbuild(rootRoot, ['save', '-o', archive, image]), 'save the tsbuild image');

  const pm = podman(join(work, 'podman'));
  try {
    ok(pm(['load', '-i', archive]), 'podman load');
    const inputs = join(work, 'podman-in');
    mkdirSync(join(inputs, 'ctx'), { recursive: true });
    cpSync(busyboxTar(), join(inputs, 'busybox.tar'));
    writeFileSync(
      join(inputs, 'ctx', 'Dockerfile'),
      'FROM busybox\nRUN echo built > /built && id -u > /uid\nRUN rm /bin/ls\nUSER 1000\nCMD ["sh", "-c", "cat /built /uid; id -u; test ! -e /bin/ls && echo gone"]\n',
    );
    execFileSync('chmod', ['-R', 'a+rX', inputs]);
    // The build needs no network, so the container gets none: nothing on the host network changes.
    const run = (args: string[]) =>
      pm(['run', '--rm', '--network', 'none', ...UNPRIVILEGED, '-v', `${inputs}:/in:ro`, '-v', 'tsbuild-test-root:/home/tsbuild/.local/share/tsbuild', `localhost/${image}`, ...args]);
    ok(run(['import', '/in/busybox.tar', '-t', 'busybox']), 'tsbuild import in podman');
    const b = ok(run(['build', '--progress', 'plain', '-t', 'inner', '/in/ctx']), 'tsbuild build in podman');
    assert.match(b.stderr, /RUN echo built/);
    assert.equal(ok(run(['run', 'inner']), 'tsbuild run in podman').stdout, 'built\n0\n1000\ngone\n');
  } finally {
    pm(['system', 'reset', '--force'], 120_000);
  }
});

test('deploy/kubernetes/job.yaml parses and asks for exactly what the image needs', { skip: has('python3') && spawnSync('python3', ['-c', 'import yaml']).status === 0 ? undefined : 'needs python3 with PyYAML (python3-yaml)' }, () => {
  // No cluster here: PyYAML reads the manifest, and the settings the image needs are checked.
  const json = execFileSync('python3', ['-c', 'import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))', join(REPO, 'deploy/kubernetes/job.yaml')], { encoding: 'utf8' });
  interface Job {
    kind: string;
    spec: { template: { spec: Record<string, unknown> & { containers: Array<Record<string, unknown>>; volumes: Array<Record<string, unknown>> } } };
  }
  const docs = JSON.parse(json) as Job[];
  assert.equal(docs.length, 1);
  const job = docs[0]!;
  assert.equal(job.kind, 'Job');
  const pod = job.spec.template.spec;
  assert.equal(pod.hostUsers, false);
  assert.deepEqual(pod.securityContext, { runAsUser: 1000, runAsGroup: 1000, runAsNonRoot: true });
  const c = pod.containers[0]!;
  assert.deepEqual(c.securityContext, {
    privileged: false,
    allowPrivilegeEscalation: true,
    capabilities: { drop: ['ALL'], add: ['SETUID', 'SETGID'] },
    seccompProfile: { type: 'Unconfined' },
    appArmorProfile: { type: 'Unconfined' },
    procMount: 'Unmasked',
  });
  assert.deepEqual((c.args as string[]).slice(0, 1), ['build']);
  assert.ok((c.args as string[]).includes('--push'));
  const mounts = c.volumeMounts as Array<{ name: string; mountPath: string }>;
  const at = (path: string) => pod.volumes.find((v) => v.name === mounts.find((m) => m.mountPath === path)?.name);
  assert.deepEqual(at('/home/tsbuild/.local/share/tsbuild')?.emptyDir, {});
  assert.deepEqual((at('/home/tsbuild/.docker')?.secret as { items: unknown }).items, [{ key: '.dockerconfigjson', path: 'config.json' }]);
  assert.deepEqual(c.env, [{ name: 'DOCKER_CONFIG', value: '/home/tsbuild/.docker' }]);
});

// Keep the list of users honest should the file change: every case names a fixture.
for (const name of CASES) assert.ok(readdirSync(FIXTURES).includes(name), `fixture ${name} exists`);
