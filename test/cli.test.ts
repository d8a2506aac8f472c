import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseDockerfile } from '../packages/dockerfile/src/index.ts';
import { REPO, busyboxTar } from './helpers/base.ts';
import { CLI, ensureCli, tsbuild, tsbuildAsync } from './helpers/cli.ts';

let work: string;
let root: string;

before(() => {
  ensureCli();
  work = mkdtempSync(join(tmpdir(), 'tsbuild-cli-'));
  root = join(work, 'root');
  const r = tsbuild(root, ['import', busyboxTar(), '-t', 'busybox:latest']);
  assert.equal(r.code, 0, r.stderr);
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** No error output may contain a JavaScript stack trace. */
function noStack(s: string): void {
  assert.doesNotMatch(s, /\n\s+at .+\(.*:\d+:\d+\)/, `unexpected stack trace:\n${s}`);
}

function overlayMountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.includes(' - overlay ') && l.includes(dir));
}

test('--help, --version and build --help list docker build flags', () => {
  const help = tsbuild(root, ['--help']);
  assert.equal(help.code, 0);
  for (const c of ['build', 'check', 'history', 'images', 'run', 'import', 'push', 'pull', 'prune']) assert.match(help.stdout, new RegExp(`tsbuild ${c}`));
  assert.match(tsbuild(root, ['--version']).stdout, /^\d+\.\d+\.\d+/);
  const b = tsbuild(root, ['build', '--help']);
  for (const f of ['--tag', '--file', '--build-arg', '--target', '--no-cache', '--label', '--network', '--memory', '--cpus', '--pids-limit', '--progress', '--iidfile', '--metadata-file', '--source-date-epoch', '--platform', '--secret', '--quiet']) {
    assert.ok(b.stdout.includes(f), `build --help lists ${f}`);
  }
});

test('tsbuild check accepts every fixture Dockerfile and rejects broken ones with file:line', () => {
  const dirs = [join(REPO, 'fixtures/example'), ...readdirSync(join(REPO, 'fixtures/builds')).map((n) => join(REPO, 'fixtures/builds', n))];
  let n = 0;
  for (const d of dirs) {
    if (!existsSync(join(d, 'Dockerfile'))) continue;
    const r = tsbuild(root, ['check', '-f', join(d, 'Dockerfile'), d]);
    assert.equal(r.code, 0, `${d}: ${r.stderr}`);
    n++;
  }
  assert.ok(n >= 20);
  const bad = join(work, 'Dockerfile.bad');
  writeFileSync(bad, 'FROM busybox\nRUN echo ok\nFROBNICATE now\n');
  const r = tsbuild(root, ['check', '-f', bad]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`${bad.replace(/[.]/g, '\\.')}:3:1: .*unknown instruction`, 'i'));
  assert.match(r.stderr, /FROBNICATE now/);
  noStack(r.stderr);
  writeFileSync(bad, 'FROM busybox\nRUN --mount=type=bogus true\n');
  const m = tsbuild(root, ['check', '-f', bad]);
  assert.equal(m.code, 1);
  assert.match(m.stderr, /:2:1: .*mount/);
});

test('import then run prints the output; skopeo and umoci read the store', () => {
  const r = tsbuild(root, ['run', 'busybox:latest', 'sh', '-c', 'echo hi']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'hi\n');
  assert.equal(tsbuild(root, ['run', 'busybox:latest', 'sh', '-c', 'exit 7']).code, 7);
  const inspect = JSON.parse(execFileSync('skopeo', ['inspect', `oci:${root}/oci:busybox:latest`], { encoding: 'utf8' })) as { Os: string };
  assert.equal(inspect.Os, 'linux');
  const bundle = join(work, 'bb-bundle');
  execFileSync('umoci', ['unpack', '--image', `${root}/oci:busybox:latest`, bundle]);
  assert.ok(existsSync(join(bundle, 'rootfs/bin/busybox')));
  rmSync(bundle, { recursive: true, force: true });
  assert.match(tsbuild(root, ['images']).stdout, /busybox\s+latest\s+[0-9a-f]{12}/);
});

test('run --memory 64m --cpus 0.5 applies cgroup limits', () => {
  const r = tsbuild(root, [
    'run', '--memory', '64m', '--cpus', '0.5', '--pids-limit', '64', 'busybox:latest', 'sh', '-c',
    'cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max',
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stdout.trim().split('\n'), ['50000', '100000', '67108864', '64']);
});

test('build, history and inspect of the example match its Dockerfile', () => {
  const ctx = join(REPO, 'fixtures/example');
  const iid = join(work, 'iid');
  const meta = join(work, 'meta.json');
  const b = tsbuild(root, ['build', '--progress', 'plain', '-t', 'example', '-t', 'example:v1', '--iidfile', iid, '--metadata-file', meta, ctx]);
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stderr, /\[build 4\/4\] RUN chmod/);
  assert.equal(b.stdout.trim(), readFileSync(iid, 'utf8'));
  const md = JSON.parse(readFileSync(meta, 'utf8')) as Record<string, string>;
  assert.match(md['containerimage.digest']!, /^sha256:/);
  assert.equal(md['containerimage.config.digest'], b.stdout.trim());
  const again = tsbuild(root, ['build', '--progress', 'plain', '-t', 'example', ctx]);
  assert.equal(again.code, 0);
  assert.ok(!/DONE \d/.test(again.stderr.split('\n').filter((l) => !l.includes('writing image')).join('\n')), `second build all CACHED:\n${again.stderr}`);
  const run = tsbuild(root, ['run', 'example']);
  assert.equal(run.stdout, 'hello from an image built by tsbuild\nrunning as app\n');

  // history: newest first, one row per instruction of the final stage after the base's own.
  const h = tsbuild(root, ['history', '--format', 'json', '--no-trunc', 'example']);
  assert.equal(h.code, 0, h.stderr);
  const rows = h.stdout.trim().split("\n").map((l) => JSON.parse(l) as { ID: string; CreatedBy: string });
  const df = parseDockerfile(readFileSync(join(ctx, 'Dockerfile'), 'utf8'));
  const finalStage = df.stages.at(-1)!;
  const mine = rows.slice(0, finalStage.instructions.length).reverse();
  finalStage.instructions.forEach((inst, i) => {
    assert.ok(mine[i]!.CreatedBy.startsWith(inst.kind.toUpperCase()), `history row ${i}: ${mine[i]!.CreatedBy} for ${inst.original}`);
  });
  assert.equal(rows[0]!.ID.length, 71);
  assert.equal(rows.at(-1)!.CreatedBy, 'tsbuild import busybox.tar');
  const table = tsbuild(root, ['history', 'example']).stdout.split('\n');
  assert.match(table[0]!, /^IMAGE\s+CREATED\s+CREATED BY\s+SIZE\s+COMMENT/);
  assert.match(table[1]!, /^[0-9a-f]{12}\s+.*ago\s+CMD \["sh" "-c" "cat \/srv\/banner\.txt && echo …\s+0B/);
  assert.match(table[2]!, /^<missing>/);
  const inspect = JSON.parse(tsbuild(root, ['inspect', 'example:v1']).stdout) as { Config: { config: { User: string } } };
  assert.equal(inspect.Config.config.User, 'app');
});

test('user errors: a clear message, the Dockerfile line, a non-zero exit, no stack trace', () => {
  const ctx = join(work, 'errs');
  mkdirSync(ctx, { recursive: true });
  const cases: { df: string; want: RegExp; code?: number }[] = [
    { df: 'FROM busybox:latest\nCOPY missing.txt /\n', want: /Dockerfile:2:1: COPY failed: "missing\.txt": not found in build context/ },
    { df: 'FROM busybox:latest\nCOPY ../../etc/passwd /x\n', want: /Dockerfile:2:1: COPY failed: "\.\.\/\.\.\/etc\/passwd": not found/ },
    { df: 'FROM busybox:latest\nRUN echo out; echo err >&2; exit 2\n', want: /Dockerfile:2:1: RUN echo out; echo err >&2; exit 2: exit code 2\n\s+> (out|err)/ },
    { df: 'FROM busybox:latest\nCOPY --from=nowhere /a /b\n', want: /Dockerfile:2:1: .*--from=nowhere/ },
    { df: 'FROM nosuchimage:1\n', want: /Dockerfile:1:1: FROM nosuchimage:1: image "nosuchimage:1" is not in the local store and pulling it failed/ },
    { df: 'FROM busybox:latest AS a\nCOPY --from=b /x /x\nFROM busybox:latest AS b\nCOPY --from=a /y /y\n', want: /circular dependency/ },
    { df: 'FROM busybox:latest\nRUN --mount=type=cache,target=/c,id=../../../../etc touch /c/escaped && ls /c\n', want: /^$/, code: 0 },
  ];
  for (const c of cases) {
    writeFileSync(join(ctx, 'Dockerfile'), c.df);
    const r = tsbuild(root, ['build', '--progress', 'plain', ctx]);
    assert.equal(r.code, c.code ?? 1, `${c.df}\n${r.stderr}`);
    if (c.code === undefined) assert.match(r.stderr, c.want, c.df);
    noStack(r.stderr);
  }
  // The cache-mount id above must not have created anything outside the cache dir.
  assert.ok(!existsSync('/etc/escaped'));
  const missingCtx = tsbuild(root, ['build', join(work, 'nope')]);
  assert.notEqual(missingCtx.code, 0);
  assert.match(missingCtx.stderr, /error: .*nope/);
  const badFlag = tsbuild(root, ['build', ctx, '--frobnicate']);
  assert.equal(badFlag.code, 2);
  assert.match(badFlag.stderr, /error: Unknown argument: frobnicate/);
  const badPlatform = tsbuild(root, ['build', '--platform', 'linux/arm64', ctx]);
  assert.notEqual(badPlatform.code, 0);
  assert.match(badPlatform.stderr, /linux\/arm64 is not supported/);
  assert.equal(overlayMountsUnder(root).length, 0, 'no overlay mount left after failed builds');
});

test('WORKDIR /proc/self/fd/N cannot reach the host (CVE-2024-21626)', () => {
  const ctx = join(work, 'cve');
  mkdirSync(ctx, { recursive: true });
  writeFileSync(join(ctx, 'Dockerfile'), 'FROM busybox:latest\nWORKDIR /proc/self/fd/7\nRUN cat ../../../../etc/shadow > /leak || true\n');
  const r = tsbuild(root, ['build', '--progress', 'plain', ctx]);
  assert.notEqual(r.code, 0, 'the build must be refused');
  noStack(r.stderr);
});

test('SIGINT mid-build exits 130 and leaves no mount or container; SIGKILL leftovers are cleaned on next start', async () => {
  const ctx = join(work, 'slow');
  mkdirSync(ctx, { recursive: true });
  writeFileSync(join(ctx, 'Dockerfile'), 'FROM busybox:latest\nRUN echo started && sleep 60\n');
  for (const sig of ['SIGINT', 'SIGKILL'] as const) {
    const p = tsbuildAsync(root, ['build', '--no-cache', '--progress', 'plain', ctx]);
    let err = '';
    await new Promise<void>((resolve, reject) => {
      p.stderr!.on('data', (d: Buffer) => {
        err += String(d);
        if (err.includes('started')) resolve();
      });
      p.on('exit', (c) => reject(new Error(`build exited (${c}) before its RUN started:\n${err}`)));
    });
    p.kill(sig);
    const code = await new Promise<number | null>((r) => p.on('exit', (c) => r(c)));
    if (sig === 'SIGINT') {
      assert.equal(code, 130, err);
      assert.equal(overlayMountsUnder(root).length, 0);
    }
  }
  // The next start removes what the killed process left.
  const r = tsbuild(root, ['images']);
  assert.equal(r.code, 0);
  assert.equal(overlayMountsUnder(root).length, 0);
  // Other test files may be running containers right now: only a container whose tsbuild is
  // dead counts as left behind.
  const alive = (pid: number): boolean => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  const list = execFileSync('runc', ['list', '-q'], { encoding: 'utf8' }).split('\n');
  const orphans = list.filter((l) => /^tsbuild-(\d+)-/.test(l) && !alive(Number(/^tsbuild-(\d+)-/.exec(l)![1])));
  assert.deepEqual(orphans, [], `runc containers of dead tsbuild processes left: ${orphans.join(', ')}`);
});

test('-f - reads the Dockerfile from stdin; rawjson progress is one event a line; prune frees space', () => {
  const ctx = join(work, 'stdin-ctx');
  mkdirSync(ctx, { recursive: true });
  writeFileSync(join(ctx, 'f.txt'), 'via stdin\n');
  const b = tsbuild(root, ['build', '--progress', 'rawjson', '-t', 'fromstdin', '-f', '-', ctx], {
    input: 'FROM busybox:latest\nCOPY f.txt /f.txt\nRUN cat /f.txt > /g.txt\nCMD ["cat", "/g.txt"]\n',
  });
  assert.equal(b.code, 0, b.stderr);
  const events = b.stderr.trim().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { type: string });
  assert.ok(events.some((e) => e.type === 'step-start'));
  assert.equal(events.at(-1)!.type, 'build-done');
  assert.equal(tsbuild(root, ['run', 'fromstdin']).stdout, 'via stdin\n');
  assert.equal(tsbuild(root, ['rm', 'fromstdin']).code, 0);
  const p = tsbuild(root, ['prune']);
  assert.equal(p.code, 0, p.stderr);
  assert.match(p.stdout, /Deleted \d+ cache entries, \d+ snapshots, [1-9]\d* blobs\nTotal reclaimed space: [\d.]+[kMG]?B/);
  // Tagged images survive a prune and still run.
  assert.equal(tsbuild(root, ['run', 'busybox:latest', 'echo', 'still here']).stdout, 'still here\n');
});

test('build as a non-root user without subordinate ids fails at once, saying what to add', () => {
  // The checkout may sit under a directory other users cannot enter: give them a copy of the CLI.
  const dir = mkdtempSync(join(tmpdir(), 'tsbuild-nobody-'));
  chmodSync(dir, 0o755);
  for (const f of ['tsbuild.js', 'tsbuild.cjs']) copyFileSync(join(dirname(CLI), f), join(dir, f));
  mkdirSync(join(dir, 'ctx'));
  writeFileSync(join(dir, 'ctx', 'Dockerfile'), 'FROM busybox:latest\nRUN true\n');
  let r;
  try {
    r = spawnSync('node', [join(dir, 'tsbuild.js'), 'build', join(dir, 'ctx')], {
      encoding: 'utf8',
      uid: 65534,
      gid: 65534,
      env: { ...process.env, TSBUILD_ROOT: join(dir, 'root'), HOME: dir },
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  // Without root tsbuild builds in a user namespace mapped from the user's subordinate ids (test/rootless.test.ts).
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /^error: nobody has no subordinate ids in \/etc\/subuid and \/etc\/subgid.*\nhint: as root: usermod --add-subuids \d+-\d+ --add-subgids \d+-\d+ nobody\n$/);
  noStack(r.stderr);
});
