/**
 * The inputs build-push-action has for buildx's own flags, through the bundled Action: network,
 * secret-envs, secret-files, annotations, add-hosts, ulimit, shm-size, build-contexts, ssh, and
 * the DOCKER_BUILD_SUMMARY switch.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { importImage, openRoot } from '../packages/builder/src/index.ts';
import { REPO, busyboxTar } from './helpers/base.ts';
import { ACTION_BUNDLE, runBundledAction } from './helpers/action.ts';
import { writeContext } from './helpers/context.ts';

let work: string;
let root: string;

before(async () => {
  if (!existsSync(ACTION_BUNDLE)) execFileSync('node', [join(REPO, 'scripts/build.mjs')], { stdio: 'inherit' });
  work = mkdtempSync(join(tmpdir(), 'tsbuild-action-buildx-'));
  root = join(work, 'root');
  const { store } = await openRoot(root);
  await importImage(store, busyboxTar(), { tags: ['busybox:latest'] });
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

function workspace(name: string, dockerfile: string, files: Record<string, string> = {}): string {
  return writeContext(join(work, name), dockerfile, files);
}

function run(ws: string, inputs: Record<string, string>, env: Record<string, string | undefined> = {}) {
  return runBundledAction(work, ws, inputs, { TSBUILD_ROOT: root, ...env });
}

test('network, secret-files and secret-envs reach RUN steps; secret values are masked', () => {
  const ws = workspace(
    'secrets',
    'FROM busybox:latest\n' +
      'RUN --mount=type=secret,id=from-file test "$(cat /run/secrets/from-file)" = "file secret" && echo file-ok\n' +
      'RUN --mount=type=secret,id=from-env,env=S test "$S" = "env-secret-value" && echo env-ok\n' +
      'RUN ls /sys/class/net > /nets\n',
    { 'secret.txt': 'file secret' },
  );
  const out = join(ws, 'out');
  const r = run(ws, { context: '.', network: 'none', 'secret-files': 'from-file=secret.txt', 'secret-envs': 'from-env=MY_SECRET_VAR', outputs: `type=local,dest=${out}` }, { MY_SECRET_VAR: 'env-secret-value' });
  assert.equal(r.code, 0, r.stdout);
  assert.match(r.stdout, /^#\S+ file-ok$/m);
  assert.match(r.stdout, /^#\S+ env-ok$/m);
  const masked = r.stdout.indexOf('::add-mask::env-secret-value');
  assert.ok(masked >= 0 && masked < r.stdout.indexOf('env-ok'), 'the env secret is masked before any step runs');
  // network: none gives RUN a network namespace of its own, with only the loopback device.
  assert.equal(readFileSync(join(out, 'nets'), 'utf8'), 'lo\n');
  const bad = run(ws, { context: '.', network: 'bridge' });
  assert.equal(bad.code, 1);
  assert.match(bad.stdout, /^::error title=tsbuild::network: expected one of default, none, host, got "bridge"/m);
});

test('build-contexts and annotations: a directory context replaces a stage; annotations are on the manifest in the OCI archive', () => {
  const ws = workspace('contexts', 'FROM busybox:latest AS src\nRUN echo stage > /f\n\nFROM busybox:latest\nCOPY --from=src /f /f\n', { 'other/f': 'from the named context\n' });
  const archive = join(ws, 'image.tar');
  const r = run(ws, {
    context: '.',
    'build-contexts': 'src=other',
    annotations: 'org.opencontainers.image.title=from the action, with a comma\nmanifest-descriptor:com.example.d=yes',
    outputs: `type=oci,dest=${archive}`,
  });
  assert.equal(r.code, 0, r.stdout);
  const manifest = JSON.parse(execFileSync('skopeo', ['inspect', '--raw', `oci-archive:${archive}`], { encoding: 'utf8' })) as { annotations?: Record<string, string> };
  assert.deepEqual(manifest.annotations, { 'org.opencontainers.image.title': 'from the action, with a comma' });
  const index = JSON.parse(execFileSync('tar', ['-xOf', archive, 'index.json'], { encoding: 'utf8' })) as { manifests: { annotations?: Record<string, string> }[] };
  assert.equal(index.manifests[0]?.annotations?.['com.example.d'], 'yes');
  // The stage src did not run: the file comes from the directory named by build-contexts.
  const fs = join(ws, 'fs');
  mkdirSync(fs);
  execFileSync('tar', ['-xf', archive, '-C', fs]);
  const blob = (d: string) => join(fs, 'blobs/sha256', d.slice('sha256:'.length));
  const digest = (JSON.parse(readFileSync(join(fs, 'index.json'), 'utf8')) as { manifests: { digest: string }[] }).manifests[0]!.digest;
  const layers = (JSON.parse(readFileSync(blob(digest), 'utf8')) as { layers: { digest: string }[] }).layers;
  assert.equal(execFileSync('tar', ['-xOf', blob(layers.at(-1)!.digest), 'f'], { encoding: 'utf8' }), 'from the named context\n');
  const refused = run(ws, { context: '.', annotations: 'index:a=b' });
  assert.equal(refused.code, 1);
  assert.match(refused.stdout, /^::error title=tsbuild::--annotation index:a: index annotations are not supported for a single-platform image/m);
});

test('add-hosts, ulimit, shm-size and ssh reach RUN steps', () => {
  const ws = workspace(
    'run-settings',
    'FROM busybox:latest\n' +
      'RUN grep -q "10.7.7.7\tcache.internal" /etc/hosts && grep -q "10.8.8.8\tdb.internal" /etc/hosts && echo hosts-ok\n' +
      'RUN test "$(ulimit -n)" = 1234 && echo ulimit-ok\n' +
      'RUN df -k /dev/shm | tail -n 1 | grep -q " 16384 " && echo shm-ok\n' +
      'RUN --mount=type=ssh test -S "$SSH_AUTH_SOCK" && echo ssh-ok\n',
  );
  const sock = join(ws, 'agent.sock');
  const agent = execFileSync('ssh-agent', ['-a', sock], { encoding: 'utf8' });
  const pid = Number(/SSH_AGENT_PID=(\d+)/.exec(agent)![1]);
  try {
    const r = run(ws, { context: '.', 'add-hosts': 'cache.internal:10.7.7.7,db.internal:10.8.8.8', ulimit: 'nofile=1234', 'shm-size': '16m', ssh: 'default' }, { SSH_AUTH_SOCK: sock });
    assert.equal(r.code, 0, r.stdout);
    for (const ok of ['hosts-ok', 'ulimit-ok', 'shm-ok', 'ssh-ok']) assert.match(r.stdout, new RegExp(`^#\\S+ ${ok}$`, 'm'));
  } finally {
    process.kill(pid, 'SIGTERM');
  }
});

test('DOCKER_BUILD_SUMMARY=false leaves the job summary out, as build-push-action does', () => {
  const ws = workspace('summary', 'FROM busybox:latest\nRUN echo summarised\n');
  const on = run(ws, { context: '.' });
  assert.equal(on.code, 0, on.stdout);
  assert.match(on.summary, /\| Step \| Time \| Cache \| Layer size \|/);
  const off = run(ws, { context: '.' }, { DOCKER_BUILD_SUMMARY: 'false' });
  assert.equal(off.code, 0, off.stdout);
  assert.equal(off.summary, '');
  assert.match(off.outputs.get('imageid') ?? '', /^sha256:[0-9a-f]{64}$/);
  // A failed build with the summary off writes none either.
  const failed = run(workspace('summary-bad', 'FROM busybox:latest\nRUN exit 3\n'), { context: '.' }, { DOCKER_BUILD_SUMMARY: '0' });
  assert.equal(failed.code, 1);
  assert.equal(failed.summary, '');
  const bad = run(ws, { context: '.' }, { DOCKER_BUILD_SUMMARY: 'perhaps' });
  assert.equal(bad.code, 1);
  assert.match(bad.stdout, /^::error title=tsbuild::DOCKER_BUILD_SUMMARY: expected true or false, got "perhaps"/m);
});
