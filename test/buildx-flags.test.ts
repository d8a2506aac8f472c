/**
 * The `docker buildx build` flags beyond docker build's, and the argument handling around them,
 * driven through the built CLI.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { busyboxTar } from './helpers/base.ts';
import { CLI, ensureCli, tsbuild } from './helpers/cli.ts';

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
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'Dockerfile'), dockerfile);
  for (const [f, content] of Object.entries(files)) {
    mkdirSync(join(dir, f, '..'), { recursive: true });
    writeFileSync(join(dir, f), content);
  }
  return dir;
}

function noStack(s: string): void {
  assert.doesNotMatch(s, /\n\s+at .+\(.*:\d+:\d+\)/, `unexpected stack trace:\n${s}`);
}

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
