/**
 * The `docker buildx build` flags beyond docker build's, and the argument handling around them,
 * driven through the built CLI.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { busyboxTar } from './helpers/base.ts';
import { CLI, ensureCli, tsbuild } from './helpers/cli.ts';
import { startRegistry } from './helpers/registry.ts';
import { writeContext } from './helpers/context.ts';

/** The command lines of the running processes, as `ps -eo args` shows them (without needing procps). */
function processArgs(): string[] {
  return readdirSync('/proc')
    .filter((n) => /^\d+$/.test(n))
    .map((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
      } catch {
        return '';
      }
    });
}

let work: string;
let root: string;

before(() => {
  ensureCli();
  work = mkdtempSync(join(tmpdir(), 'tsbuild-buildx-'));
  root = join(work, 'root');
  const r = tsbuild(root, ['import', busyboxTar(), '-t', 'busybox:latest']);
  assert.equal(r.code, 0, r.stderr);
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** A context directory with a Dockerfile and files. */
function context(name: string, dockerfile: string, files: Record<string, string> = {}): string {
  return writeContext(join(work, name), dockerfile, files);
}

function noStack(s: string): void {
  assert.doesNotMatch(s, /\n\s+at .+\(.*:\d+:\d+\)/, `unexpected stack trace:\n${s}`);
}

test('build --help lists the buildx flags', () => {
  const help = tsbuild(root, ['build', '--help']).stdout;
  for (const f of ['--build-context', '--add-host', '--ulimit', '--shm-size', '--ssh', '--annotation']) assert.ok(help.includes(f), `build --help lists ${f}`);
  assert.match(help, /"quiet"/);
});

test('run: everything after the image is the command, also with global flags before run', () => {
  const r = spawnSync('node', [CLI, '--root', root, 'run', 'busybox:latest', 'sh', '-c', 'echo hi'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'hi\n');
  const eq = spawnSync('node', [CLI, `--root=${root}`, '--debug', 'run', '--network', 'none', 'busybox:latest', 'sh', '-c', 'echo $0-"$1"', 'a', '-b'], { encoding: 'utf8' });
  assert.equal(eq.status, 0, eq.stderr);
  assert.equal(eq.stdout, 'a--b\n');
});

test('an unknown flag is named with exit 2, whatever it swallowed; a missing context is named as such', () => {
  const ctx = context('flags', 'FROM busybox:latest\n');
  for (const args of [['build', '--frobnicate', ctx], ['--frobnicate', 'build', ctx], ['build', '--frobnicate', 'x', ctx], ['build', '--frobnicate=1', ctx]]) {
    const r = tsbuild(root, args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^error: Unknown argument: frobnicate\n/, args.join(' '));
  }
  const short = tsbuild(root, ['build', '-qZ', ctx]);
  assert.equal(short.code, 2);
  assert.match(short.stderr, /^error: Unknown argument: Z\n/);
  // Known flags with values still parse.
  assert.equal(tsbuild(root, ['build', '-q', '--progress', 'plain', '-t', 'flags:1', ctx]).code, 0);

  const missing = tsbuild(root, ['build', join(work, 'nonexistent')]);
  assert.equal(missing.code, 2, missing.stderr);
  assert.match(missing.stderr, /^error: build context ".*nonexistent" does not exist\n/);
  assert.doesNotMatch(missing.stderr, /Dockerfile|ENOENT/);
  const file = join(work, 'a-file');
  writeFileSync(file, '');
  assert.match(tsbuild(root, ['build', file]).stderr, /^error: build context ".*a-file" is not a directory\n/);
  noStack(missing.stderr);
});

test('plain progress names the manifest digest and the image id for what they are; stdout is the id alone', () => {
  const ctx = context('names', 'FROM busybox:latest\nRUN echo named > /named\n');
  const meta = join(work, 'names-meta.json');
  const r = tsbuild(root, ['build', '--progress', 'plain', '-t', 'names:1', '--metadata-file', meta, ctx]);
  assert.equal(r.code, 0, r.stderr);
  const md = JSON.parse(readFileSync(meta, 'utf8')) as Record<string, string>;
  const id = md['containerimage.config.digest']!;
  const manifest = md['containerimage.digest']!;
  assert.notEqual(id, manifest);
  assert.equal(r.stdout, `${id}\n`);
  assert.match(r.stderr, new RegExp(`^#\\d+ exporting manifest ${manifest}$`, 'm'));
  assert.match(r.stderr, new RegExp(`^#\\d+ DONE \\d+\\.\\ds writing image ${id}$`, 'm'));
  assert.match(r.stderr, /^naming to names:1$/m);
  assert.doesNotMatch(r.stderr, new RegExp(`writing image ${manifest}`));
});

test('--progress quiet is -q: nothing on stderr, the image id on stdout', () => {
  const ctx = context('quiet', 'FROM busybox:latest\nRUN echo loud\n');
  const q = tsbuild(root, ['build', '--progress', 'quiet', '-t', 'quiet:1', ctx]);
  assert.equal(q.code, 0, q.stderr);
  assert.equal(q.stderr, '');
  assert.match(q.stdout, /^sha256:[0-9a-f]{64}\n$/);
  const dashQ = tsbuild(root, ['build', '-q', ctx]);
  assert.equal(dashQ.stdout, q.stdout);
  assert.equal(dashQ.stderr, '');
});

test('-o - writes the filesystem as a tarball on stdout and -o PATH writes it as a directory, as buildx does', () => {
  const ctx = context('outputs', 'FROM busybox:latest\nRUN mkdir -p /out && echo exported > /out/file\n');
  const tar = spawnSync('node', [CLI, 'build', '--progress', 'plain', '-o', '-', ctx], { env: { ...process.env, TSBUILD_ROOT: root }, maxBuffer: 1 << 28 });
  assert.equal(tar.status, 0, String(tar.stderr));
  // The id goes to stderr, so that stdout is the tarball alone.
  assert.match(String(tar.stderr), /^sha256:[0-9a-f]{64}$/m);
  const listing = execFileSync('tar', ['-t'], { input: tar.stdout, encoding: 'utf8' }).split('\n');
  assert.ok(listing.includes('out/file'), listing.slice(0, 20).join('\n'));
  assert.ok(listing.includes('bin/busybox'));
  const content = execFileSync('tar', ['-xO', 'out/file'], { input: tar.stdout, encoding: 'utf8' });
  assert.equal(content, 'exported\n');

  const dir = join(work, 'outputs-dir');
  const local = tsbuild(root, ['build', '-q', '-o', dir, ctx]);
  assert.equal(local.code, 0, local.stderr);
  assert.equal(readFileSync(join(dir, 'out/file'), 'utf8'), 'exported\n');
  assert.ok(existsSync(join(dir, 'bin/busybox')));
  assert.match(local.stdout, /^sha256:[0-9a-f]{64}\n$/);
});

test('--platform: a list of several platforms is refused naming them; a list of one builds', () => {
  const ctx = context('platforms', 'FROM busybox:latest\nARG TARGETPLATFORM\nRUN echo $TARGETPLATFORM > /p\n');
  const many = tsbuild(root, ['build', '--platform', 'linux/amd64,linux/arm64', ctx]);
  assert.equal(many.code, 2, many.stderr);
  assert.match(many.stderr, /^error: --platform: tsbuild builds one platform per run, not linux\/amd64, linux\/arm64\n/);
  const one = tsbuild(root, ['build', '-q', '--platform', 'linux/amd64', '-t', 'platforms:1', ctx]);
  assert.equal(one.code, 0, one.stderr);
  const same = tsbuild(root, ['build', '-q', '--platform', 'linux/amd64,linux/amd64', ctx]);
  assert.equal(same.code, 0, same.stderr);
  assert.equal(same.stdout, one.stdout);
  assert.equal(tsbuild(root, ['run', 'platforms:1', 'cat', '/p']).stdout, 'linux/amd64\n');
});

/** The build's plain progress output of one step, by its `[stage i/n]` label. */
function stepLines(stderr: string, label: string): string[] {
  const n = new RegExp(`^#(\\d+) \\[${label.replace(/[[\]/]/g, '\\$&')}\\]`, 'm').exec(stderr)?.[1];
  assert.ok(n, `no step ${label} in:\n${stderr}`);
  return stderr.split('\n').filter((l) => l.startsWith(`#${n} `)).map((l) => l.slice(`#${n} `.length));
}

test('--add-host writes /etc/hosts of RUN steps, not of the image, and is part of the step key', () => {
  const ctx = context('hosts', 'FROM busybox:latest\nRUN cat /etc/hosts > /hosts-seen\n');
  const fs = join(work, 'hosts-fs');
  const r = tsbuild(root, ['build', '-q', '--add-host', 'db.internal:10.1.2.3', '--add-host', 'v6.internal=[fd00::7]', '-t', 'hosts:1', '-o', fs, ctx]);
  assert.equal(r.code, 0, r.stderr);
  const seen = readFileSync(join(fs, 'hosts-seen'), 'utf8').split('\n');
  assert.ok(seen.includes('10.1.2.3\tdb.internal'), seen.join('\n'));
  assert.ok(seen.includes('fd00::7\tv6.internal'), seen.join('\n'));
  // The generated file is mounted for the step only: the image keeps its own /etc.
  assert.ok(!existsSync(join(fs, 'etc/hosts')));
  // Another mapping is another step; the same one is served from the cache.
  const again = tsbuild(root, ['build', '--progress', 'plain', '--add-host', 'db.internal:10.1.2.3', '--add-host', 'v6.internal=[fd00::7]', ctx]);
  assert.deepEqual(stepLines(again.stderr, 'stage-0 2/2').at(-1), 'CACHED');
  const other = tsbuild(root, ['build', '--progress', 'plain', '--add-host', 'db.internal:10.9.9.9', ctx]);
  assert.match(stepLines(other.stderr, 'stage-0 2/2').at(-1) ?? '', /^DONE /);
  for (const bad of ['nocolon', 'db:not-an-ip', 'db:host-gateway']) {
    const b = tsbuild(root, ['build', '--add-host', bad, ctx]);
    assert.equal(b.code, 2, `${bad}: ${b.stderr}`);
    assert.match(b.stderr, new RegExp(`^error: --add-host ${bad}: `));
  }
});

/** This process's hard limit of open files, and whether it may raise hard limits (CAP_SYS_RESOURCE). */
function nofileHard(): { hard: number; canRaise: boolean } {
  const hard = Number(/^Max open files\s+\S+\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))![1]);
  const capEff = BigInt(`0x${/^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]}`);
  return { hard, canRaise: ((capEff >> 24n) & 1n) === 1n };
}

test('--ulimit sets RUN rlimits as docker spells them; a hard limit the runtime cannot raise is refused before anything runs', () => {
  const ctx = context('ulimits', 'FROM busybox:latest\nRUN echo "$(ulimit -Sn) $(ulimit -Hn) $(ulimit -c) $(ulimit -Su)" > /limits\n');
  const r = tsbuild(root, ['build', '-q', '--ulimit', 'nofile=1024:2048', '--ulimit', 'core=-1', '--ulimit', 'nproc=500', '--ulimit', 'nproc=400', '-t', 'ulimits:1', ctx]);
  assert.equal(r.code, 0, r.stderr);
  // As with docker, a later --ulimit of the same type wins, and SOFT alone sets both.
  assert.equal(tsbuild(root, ['run', 'ulimits:1', 'cat', '/limits']).stdout, '1024 2048 unlimited 400\n');
  const other = tsbuild(root, ['build', '--progress', 'plain', '--ulimit', 'nofile=1000:2048', ctx]);
  assert.match(stepLines(other.stderr, 'stage-0 2/2').at(-1) ?? '', /^DONE /, 'another limit is another step');

  const { hard, canRaise } = nofileHard();
  const above = tsbuild(root, ['build', '--progress', 'plain', '--no-cache', '--ulimit', `nofile=${hard + 1}`, ctx]);
  if (canRaise) assert.equal(above.code, 0, above.stderr);
  else {
    assert.equal(above.code, 1, above.stderr);
    assert.match(above.stderr, new RegExp(`^error: ulimit nofile=${hard + 1}:${hard + 1}: the hard limit here is ${hard}, and raising it needs CAP_SYS_RESOURCE`, 'm'));
    assert.match(above.stderr, new RegExp(`^hint: ask for at most nofile=${hard} `, 'm'));
    assert.doesNotMatch(above.stderr, /^#\d+ \[stage-0 2\/2\]/m, 'refused before any step ran');
  }
  for (const [bad, want] of [['nofile=10:5', /soft limit must not be above the hard limit/], ['files=10', /unknown type "files".*\nhint: one of core, cpu, /], ['nofile', /expected TYPE=SOFT\[:HARD\]/], ['nofile=1:2:3', /expected SOFT\[:HARD\]/]] as const) {
    const b = tsbuild(root, ['build', '--ulimit', bad, ctx]);
    assert.equal(b.code, 2, `${bad}: ${b.stderr}`);
    assert.match(b.stderr, want, bad);
  }
});

test('--shm-size sizes /dev/shm of RUN steps', () => {
  const ctx = context('shm', 'FROM busybox:latest\nRUN df -k /dev/shm | tail -n 1 | tr -s " " | cut -d " " -f 2 > /shm\n');
  const r = tsbuild(root, ['build', '-q', '--shm-size', '128m', '-t', 'shm:1', ctx]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(tsbuild(root, ['run', 'shm:1', 'cat', '/shm']).stdout, '131072\n');
  const dflt = tsbuild(root, ['build', '-q', '-t', 'shm:2', ctx]);
  assert.equal(dflt.code, 0, dflt.stderr);
  assert.equal(tsbuild(root, ['run', 'shm:2', 'cat', '/shm']).stdout, '65536\n', "Docker's default: 64 MiB");
  assert.equal(tsbuild(root, ['build', '--shm-size', 'lots', ctx]).code, 2);
});

/** Starts an ssh-agent on `sock` holding `keys`; returns its pid. */
function startAgent(sock: string, keys: string[]): number {
  const out = execFileSync('ssh-agent', ['-a', sock], { encoding: 'utf8' });
  const pid = Number(/SSH_AGENT_PID=(\d+)/.exec(out)![1]);
  for (const k of keys) execFileSync('ssh-add', ['-q', k], { env: { ...process.env, SSH_AUTH_SOCK: sock }, stdio: 'ignore' });
  return pid;
}

/** Layer blobs of an image in the store, as text (uncompressed tars), for searching. */
function layersOf(ref: string): string {
  const manifest = JSON.parse(execFileSync('skopeo', ['inspect', '--raw', `oci:${root}/oci:${ref}`], { encoding: 'utf8' })) as { layers: { digest: string }[] };
  return manifest.layers.map((l) => readFileSync(join(root, 'oci/blobs/sha256', l.digest.slice(7)), 'latin1')).join('');
}

test('--ssh and RUN --mount=type=ssh: the agent answers inside RUN, keys never reach a layer or the cache key', (t) => {
  // ssh-add inside the step: the host's binary and the libraries it loads, on top of busybox.
  const ctx = join(work, 'ssh');
  const lib = join(ctx, 'root');
  mkdirSync(join(lib, 'usr/bin'), { recursive: true });
  execFileSync('cp', ['/usr/bin/ssh-add', join(lib, 'usr/bin/')]);
  for (const so of execFileSync('ldd', ['/usr/bin/ssh-add'], { encoding: 'utf8' }).match(/\/\S+/g) ?? []) {
    mkdirSync(join(lib, so, '..'), { recursive: true });
    execFileSync('cp', ['-L', so, join(lib, so)]);
  }
  writeFileSync(
    join(ctx, 'Dockerfile'),
    'FROM busybox:latest\nCOPY root/ /\n' +
      'RUN --mount=type=ssh echo "sock=$SSH_AUTH_SOCK" && ssh-add -l\n' +
      'RUN --mount=type=ssh,id=deploy,uid=1000,gid=1000,mode=0640,target=/tmp/agent.sock stat -c "%u:%g %a" /tmp/agent.sock && SSH_AUTH_SOCK=/tmp/agent.sock ssh-add -l\n',
  );
  const keys = join(work, 'ssh-keys');
  mkdirSync(keys, { mode: 0o700 });
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'tsbuild-test-key', '-f', join(keys, 'id')]);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'tsbuild-deploy-key', '-f', join(keys, 'deploy')]);
  const fingerprint = (f: string) => execFileSync('ssh-keygen', ['-lf', f], { encoding: 'utf8' }).split(' ')[1]!;
  const agents: number[] = [];
  t.after(() => {
    for (const pid of agents) process.kill(pid, 'SIGTERM');
  });
  const sockA = join(keys, 'agent-a.sock');
  agents.push(startAgent(sockA, [join(keys, 'id')]));

  // default: the agent at $SSH_AUTH_SOCK; deploy: key files, for which tsbuild runs an agent of its own.
  const env = { SSH_AUTH_SOCK: sockA };
  const b = tsbuild(root, ['build', '--progress', 'plain', '--ssh', 'default', '--ssh', `deploy=${join(keys, 'deploy')}`, '-t', 'ssh:1', ctx], { env });
  assert.equal(b.code, 0, b.stderr);
  const first = stepLines(b.stderr, 'stage-0 3/4');
  assert.equal(first[1], 'sock=/run/buildkit/ssh_agent.0');
  assert.match(first[2] ?? '', new RegExp(`^256 ${fingerprint(join(keys, 'id')).replace(/[+/]/g, '\\$&')} tsbuild-test-key \\(ED25519\\)$`));
  const second = stepLines(b.stderr, 'stage-0 4/4');
  assert.equal(second[1], '1000:1000 640');
  assert.match(second[2] ?? '', /^256 SHA256:\S+ tsbuild-deploy-key \(ED25519\)$/);
  assert.equal(processArgs().filter((l) => l.startsWith('ssh-agent -D')).length, 0, 'the agent tsbuild ran is gone');

  // Nothing of the agent or the keys is in the image: not in a layer, not in the config.
  const layers = layersOf('ssh:1');
  const privateKey = readFileSync(join(keys, 'id'), 'utf8').split('\n')[1]!;
  const publicKey = readFileSync(join(keys, 'id.pub'), 'utf8').split(' ')[1]!;
  for (const s of [privateKey, publicKey, 'ssh_agent', 'agent.sock', keys]) assert.ok(!layers.includes(s), `a layer holds ${s}`);
  const config = tsbuild(root, ['inspect', 'ssh:1']).stdout;
  assert.doesNotMatch(config, /ssh_agent\.0|agent-a|tsbuild-ssh-/);
  const inspected = JSON.parse(config) as { Config: { config: { Env?: string[] } } };
  assert.ok(!(inspected.Config.config.Env ?? []).some((e) => e.startsWith('SSH_AUTH_SOCK=')));

  // Another socket path holding the same key: the same steps, served from the cache. (BuildKit
  // keys an ssh mount by its id, target, mode and owner only: the agent behind it, and which keys
  // it holds, are not part of the key, so a different key would be served from the cache too.)
  const sockB = join(keys, 'agent-b.sock');
  agents.push(startAgent(sockB, [join(keys, 'id')]));
  const c = tsbuild(root, ['build', '--progress', 'plain', '--ssh', `default=${sockB}`, '--ssh', `deploy=${join(keys, 'deploy')}`, '-t', 'ssh:2', ctx]);
  assert.equal(c.code, 0, c.stderr);
  assert.equal(stepLines(c.stderr, 'stage-0 3/4').at(-1), 'CACHED');
  assert.equal(stepLines(c.stderr, 'stage-0 4/4').at(-1), 'CACHED');
  assert.equal(c.stdout, b.stdout);

  // An optional agent that was not given is left out; a required one fails naming its id.
  const none = tsbuild(root, ['build', '--progress', 'plain', '--no-cache', ctx], { env: { SSH_AUTH_SOCK: '' } });
  assert.equal(none.code, 1, none.stderr);
  assert.match(none.stderr, /ssh-add -l|Could not open a connection|Error connecting to agent/i);
  writeFileSync(join(ctx, 'Dockerfile.required'), 'FROM busybox:latest\nRUN --mount=type=ssh,id=gone,required=true true\n');
  const req = tsbuild(root, ['build', '-f', join(ctx, 'Dockerfile.required'), ctx]);
  assert.equal(req.code, 1, req.stderr);
  assert.match(req.stderr, /Dockerfile\.required:2:1: ssh agent "gone" is required but was not provided\n[^]*hint: pass it with --ssh gone=/);
  const missing = tsbuild(root, ['build', '--ssh', `default=${join(keys, 'nowhere.sock')}`, ctx]);
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /^error: --ssh default=\S+nowhere\.sock: \S+nowhere\.sock does not exist\n/);
  const unset = tsbuild(root, ['build', '--ssh', 'default', ctx], { env: { SSH_AUTH_SOCK: '' } });
  assert.equal(unset.code, 2);
  assert.match(unset.stderr, /^error: --ssh default: no path given and SSH_AUTH_SOCK is not set\n/);
  noStack(missing.stderr);
});

test('--annotation: manifest annotations in the store, an OCI archive and the registry; the descriptor ones beside them; index ones refused', async (t) => {
  const registry = await startRegistry();
  t.after(() => registry.stop());
  const ctx = context('annotations', 'FROM busybox:latest\nRUN echo annotated > /a\n');
  const tag = `${registry.host}/buildx/annotated:1`;
  const archive = join(work, 'annotated.tar');
  const r = tsbuild(root, [
    'build', '-q', '-t', tag, '--push', '-o', `type=oci,dest=${archive}`,
    '--annotation', 'org.opencontainers.image.title=annotated',
    '--annotation', 'manifest:org.opencontainers.image.version=1.0',
    '--annotation', 'manifest-descriptor:com.example.descriptor=yes',
    '--annotation', 'manifest[linux/arm64]:com.example.arm=only-there',
    '--annotation', 'manifest[linux/amd64],manifest-descriptor:com.example.both=here',
    ctx,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const want = { 'org.opencontainers.image.title': 'annotated', 'org.opencontainers.image.version': '1.0', 'com.example.both': 'here' };
  const local = JSON.parse(execFileSync('skopeo', ['inspect', '--raw', `oci:${root}/oci:${tag}`], { encoding: 'utf8' })) as { annotations?: Record<string, string> };
  assert.deepEqual(local.annotations, want);
  const pushed = JSON.parse(execFileSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${tag}`], { encoding: 'utf8' })) as { annotations?: Record<string, string> };
  assert.deepEqual(pushed.annotations, want);
  const fromArchive = JSON.parse(execFileSync('skopeo', ['inspect', '--raw', `oci-archive:${archive}`], { encoding: 'utf8' })) as { annotations?: Record<string, string> };
  assert.deepEqual(fromArchive.annotations, want);
  // manifest-descriptor: on the descriptor that points at the manifest (there is no index to hold another).
  const index = JSON.parse(execFileSync('tar', ['-xOf', archive, 'index.json'], { encoding: 'utf8' })) as { manifests: { annotations: Record<string, string> }[] };
  assert.equal(index.manifests[0]!.annotations['com.example.descriptor'], 'yes');
  assert.equal(index.manifests[0]!.annotations['com.example.both'], 'here');
  const store = JSON.parse(readFileSync(join(root, 'oci/index.json'), 'utf8')) as { manifests: { annotations?: Record<string, string> }[] };
  const entry = store.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  assert.equal(entry?.annotations?.['com.example.descriptor'], 'yes');

  for (const level of ['index', 'index-descriptor']) {
    const bad = tsbuild(root, ['build', '--annotation', `${level}:com.example.x=1`, ctx]);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, new RegExp(`^error: --annotation ${level}:com.example.x: index annotations are not supported for a single-platform image`));
  }
  const unknown = tsbuild(root, ['build', '--annotation', 'layer:x=1', ctx]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown annotation type "layer"/);
});

test('--build-context NAME=DIR replaces a stage in COPY --from, RUN --mount from= and FROM, keyed by content, never by path', () => {
  const shared = join(work, 'shared-src');
  mkdirSync(join(shared, 'sub'), { recursive: true });
  writeFileSync(join(shared, 'sub/f'), 'from the named context\n');
  writeFileSync(join(shared, 'secret'), 'kept out by its .dockerignore\n');
  writeFileSync(join(shared, '.dockerignore'), 'secret\n');
  const ctx = context(
    'named-dir',
    'FROM busybox:latest AS src\nRUN mkdir /sub && echo "from the stage" > /sub/f\n\n' +
      'FROM busybox:latest\nCOPY --from=src /sub/f /copied\nRUN --mount=from=src,target=/m ls -A /m > /mounted\n',
  );
  // Without the context the stage is used.
  const plain = tsbuild(root, ['build', '-q', '-t', 'named-dir:stage', ctx]);
  assert.equal(plain.code, 0, plain.stderr);
  assert.equal(tsbuild(root, ['run', 'named-dir:stage', 'cat', '/copied']).stdout, 'from the stage\n');

  const r = tsbuild(root, ['build', '--progress', 'plain', '-t', 'named-dir:1', '--build-context', `src=${shared}`, ctx]);
  assert.equal(r.code, 0, r.stderr);
  assert.doesNotMatch(r.stderr, /from the stage|RUN mkdir/, 'the stage the context replaces does not run');
  assert.equal(tsbuild(root, ['run', 'named-dir:1', 'cat', '/copied']).stdout, 'from the named context\n');
  assert.equal(tsbuild(root, ['run', 'named-dir:1', 'cat', '/mounted']).stdout, '.dockerignore\nsub\n');

  // The same files at another path, with other times: the same key, so every step is cached.
  const moved = join(work, 'shared-elsewhere');
  execFileSync('cp', ['-r', shared, moved]);
  execFileSync('touch', ['-d', '2001-02-03', join(moved, 'sub/f')]);
  const again = tsbuild(root, ['build', '--progress', 'plain', '-t', 'named-dir:2', '--build-context', `src=${moved}`, ctx]);
  assert.equal(again.code, 0, again.stderr);
  assert.equal(again.stdout, r.stdout);
  assert.equal(stepLines(again.stderr, 'stage-1 2/3').at(-1), 'CACHED');
  assert.equal(stepLines(again.stderr, 'stage-1 3/3').at(-1), 'CACHED');
  // Other content is another key.
  writeFileSync(join(moved, 'sub/f'), 'changed\n');
  const changed = tsbuild(root, ['build', '--progress', 'plain', '-t', 'named-dir:3', '--build-context', `src=${moved}`, ctx]);
  assert.match(stepLines(changed.stderr, 'stage-1 2/3').at(-1) ?? '', /^DONE /);
  assert.equal(tsbuild(root, ['run', 'named-dir:3', 'cat', '/copied']).stdout, 'changed\n');

  // FROM a directory: its files are the stage's filesystem.
  const fromDir = context('from-dir', 'FROM tree\nCOPY --from=busybox:latest /bin/busybox /bin/busybox\n');
  const f = tsbuild(root, ['build', '-q', '-t', 'from-dir:1', '--build-context', `tree=${shared}`, fromDir]);
  assert.equal(f.code, 0, f.stderr);
  // (It has no /etc/passwd, so the user is given by number.)
  assert.equal(tsbuild(root, ['run', '-u', '0:0', 'from-dir:1', '/bin/busybox', 'cat', '/sub/f']).stdout, 'from the named context\n');

  const missing = tsbuild(root, ['build', '--build-context', `src=${join(work, 'no-such-dir')}`, ctx]);
  assert.equal(missing.code, 1, missing.stderr);
  assert.match(missing.stderr, /--build-context src=\S+no-such-dir: directory \S+no-such-dir does not exist/);
  for (const [bad, want] of [['src', /expected NAME=VALUE/], ['Src=.', /"Src" is not a valid context name/], ['src=https://example.com/x.git', /https contexts are not supported/]] as const) {
    const b = tsbuild(root, ['build', '--build-context', bad, ctx]);
    assert.equal(b.code, 2, `${bad}: ${b.stderr}`);
    assert.match(b.stderr, want, bad);
  }
});

test('--build-context NAME=docker-image://REF (store or registry) and NAME=oci-layout://DIR[:TAG|@DIGEST] stand for images', async (t) => {
  const registry = await startRegistry();
  t.after(() => registry.stop());
  // An image that exists only in the registry, with a file that tells it apart from busybox.
  const marked = context('marked', 'FROM busybox:latest\nRUN echo marked > /marker\n');
  assert.equal(tsbuild(root, ['build', '-q', '-t', 'marked:1', marked]).code, 0);
  const remote = `${registry.host}/buildx/marked:1`;
  assert.equal(tsbuild(root, ['push', 'marked:1', remote]).code, 0);
  assert.equal(tsbuild(root, ['rm', 'marked:1']).code, 0);

  // FROM busybox:latest finds the context named busybox (names are matched as buildx normalises them).
  const ctx = context(
    'named-image',
    'FROM scratch AS tools\n\nFROM busybox:latest\nCOPY --from=tools /marker /copied-marker\nRUN --mount=from=tools,target=/t cat /t/marker > /mounted-marker && cat /marker > /own-marker\n',
  );
  const r = tsbuild(root, ['build', '-q', '-t', 'named-image:1', '--build-context', `busybox=docker-image://${remote}`, '--build-context', `tools=docker-image://${remote}`, ctx]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(tsbuild(root, ['run', 'named-image:1', 'cat', '/own-marker', '/copied-marker', '/mounted-marker']).stdout, 'marked\nmarked\nmarked\n');
  // From the store: the local busybox stands in for the stage named tools.
  const local = tsbuild(root, ['build', '-q', '-t', 'named-image:2', '--build-context', 'tools=docker-image://busybox:latest', context('named-local', 'FROM scratch AS tools\nFROM tools\nRUN echo "runs in busybox" > /ok\n')]);
  assert.equal(local.code, 0, local.stderr);
  assert.equal(tsbuild(root, ['run', 'named-image:2', 'cat', '/ok']).stdout, 'runs in busybox\n');

  // An OCI layout written by skopeo, by tag and by digest.
  const layout = join(work, 'layout');
  execFileSync('skopeo', ['copy', '-q', `oci:${root}/oci:named-image:1`, `oci:${layout}:v1`]);
  const digest = (JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] }).manifests[0]!.digest;
  const fromLayout = context('from-layout', 'FROM base\nRUN cat /own-marker > /via-layout\n');
  for (const spec of [`oci-layout://${layout}:v1`, `oci-layout://${layout}@${digest}`]) {
    const l = tsbuild(root, ['build', '-q', '-t', 'from-layout:1', '--build-context', `base=${spec}`, fromLayout]);
    assert.equal(l.code, 0, `${spec}: ${l.stderr}`);
    assert.equal(tsbuild(root, ['run', 'from-layout:1', 'cat', '/via-layout']).stdout, 'marked\n');
  }
  const noTag = tsbuild(root, ['build', '--build-context', `base=oci-layout://${layout}:v2`, fromLayout]);
  assert.equal(noTag.code, 2, noTag.stderr);
  assert.match(noTag.stderr, /^error: --build-context base=oci-layout:\/\/\S+:v2: no image tagged "v2"\nhint: tags in the layout: v1\n/m);
  const noLayout = tsbuild(root, ['build', '--build-context', `base=oci-layout://${work}`, fromLayout]);
  assert.match(noLayout.stderr, /is not an OCI image layout \(no index\.json\)/);
  const noImage = tsbuild(root, ['build', '--build-context', 'base=docker-image://nosuch/image:1', fromLayout]);
  assert.equal(noImage.code, 1);
  assert.match(noImage.stderr, /--build-context base=docker-image:\/\/nosuch\/image:1: image "nosuch\/image:1" /);
  noStack(noImage.stderr);
});
