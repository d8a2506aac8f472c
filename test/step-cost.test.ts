/**
 * What each RUN step cost, read from its cgroup: CPU seconds and peak memory on the plain
 * progress line, in rawjson, and in the Action's job summary.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { REPO, busyboxTar } from './helpers/base.ts';
import { ensureCli, tsbuild } from './helpers/cli.ts';

let work: string;
let root: string;
const ALLOC = 'FROM busybox:latest\nRUN dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null && echo allocated > /done\n';

before(() => {
  ensureCli();
  work = mkdtempSync(join(tmpdir(), 'tsbuild-cost-'));
  root = join(work, 'root');
  const r = tsbuild(root, ['import', busyboxTar(), '-t', 'busybox:latest']);
  assert.equal(r.code, 0, r.stderr);
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

test('a RUN that allocates 64 MiB reports its CPU time and a peak above 64 MiB', () => {
  const ctx = join(work, 'alloc');
  mkdirSync(ctx);
  writeFileSync(join(ctx, 'Dockerfile'), ALLOC);
  const plain = tsbuild(root, ['build', '--progress', 'plain', '--no-cache', ctx]);
  assert.equal(plain.code, 0, plain.stderr);
  const m = /^#\d+ DONE \d+\.\ds  cpu (\d+\.\d)s  peak (\d+) MiB(  \(cache miss: [^)]*\))?$/m.exec(plain.stderr);
  assert.ok(m, plain.stderr);
  assert.ok(Number(m[2]) > 64, `peak ${m[2]} MiB`);

  const raw = tsbuild(root, ['build', '--progress', 'rawjson', '--no-cache', ctx]);
  assert.equal(raw.code, 0, raw.stderr);
  const done = raw.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { type: string; usage?: { cpu_seconds: number; memory_peak_bytes?: number } });
  const run = done.find((e) => e.type === 'step-done' && e.usage);
  assert.ok(run?.usage, raw.stderr);
  assert.ok(run.usage.cpu_seconds >= 0);
  assert.ok((run.usage.memory_peak_bytes ?? 0) > 64 * 1024 * 1024, JSON.stringify(run.usage));
  // A cached step ran nothing, so it has no usage.
  const cached = tsbuild(root, ['build', '--progress', 'rawjson', ctx]);
  assert.ok(!cached.stderr.split('\n').some((l) => l.includes('"usage"')), cached.stderr);
});

test('the Action summary has the CPU time and peak memory of each RUN', () => {
  const ws = join(work, 'ws');
  mkdirSync(ws);
  writeFileSync(join(ws, 'Dockerfile'), ALLOC.replace('allocated', 'allocated again'));
  const summary = join(work, 'summary.md');
  writeFileSync(summary, '');
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH, HOME: work, TSBUILD_ROOT: root, GITHUB_ACTIONS: 'true', GITHUB_WORKSPACE: ws,
    GITHUB_OUTPUT: join(work, 'out'), GITHUB_STEP_SUMMARY: summary, RUNNER_TEMP: work, INPUT_CONTEXT: '.',
  };
  writeFileSync(env.GITHUB_OUTPUT!, '');
  const r = spawnSync(process.execPath, [join(REPO, 'packages/action/dist/index.js')], { cwd: ws, env, encoding: 'utf8', timeout: 300_000 });
  assert.equal(r.status, 0, r.stdout);
  const md = readFileSync(summary, 'utf8');
  assert.match(md, /\| Step \| Time \| Cache \| Layer size \| CPU \| Peak memory \|/);
  const row = /\| `\[stage-0 2\/2\] RUN dd[^|]*` \| [\d.]+s \| miss \| [^|]+ \| (\d+\.\d\d)s \| ([\d.]+) MiB \|/.exec(md);
  assert.ok(row, md);
  assert.ok(Number(row[2]) > 64, md);
});
