/**
 * Cache misses explained: a step that runs says why on its progress line, in rawjson and in the
 * Action's job summary, compared with the last build of the same tag and target.
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

before(() => {
  ensureCli();
  work = mkdtempSync(join(tmpdir(), 'tsbuild-explain-'));
  root = join(work, 'root');
  assert.equal(tsbuild(root, ['import', busyboxTar(), '-t', 'busybox:latest']).code, 0);
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

const DF = 'FROM busybox:latest\nARG GREETING=hi\nCOPY one.txt two.txt /app/\nRUN echo "$GREETING" > /greeting\nRUN cat /app/one.txt /greeting > /out\n';

function ctx(name: string): string {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'Dockerfile'), DF);
  writeFileSync(join(dir, 'one.txt'), 'one\n');
  writeFileSync(join(dir, 'two.txt'), 'two\n');
  return dir;
}

test('changing one of two context files makes the rebuilt COPY name that file; a build arg names itself; later steps say their parent changed', () => {
  const dir = ctx('plain');
  const first = tsbuild(root, ['build', '--progress', 'plain', '-t', 'explain:1', dir]);
  assert.equal(first.code, 0, first.stderr);
  assert.doesNotMatch(first.stderr, /cache miss/, 'a first build has nothing to compare with');

  writeFileSync(join(dir, 'two.txt'), 'two, changed\n');
  const second = tsbuild(root, ['build', '--progress', 'plain', '-t', 'explain:1', dir]);
  assert.equal(second.code, 0, second.stderr);
  assert.match(second.stderr, /^#\d+ DONE [\d.]+s  \(cache miss: files changed two\.txt\)$/m);
  assert.match(second.stderr, /^#\d+ DONE .*\(cache miss: the step before it changed\)$/m);

  const third = tsbuild(root, ['build', '--progress', 'plain', '-t', 'explain:1', '--build-arg', 'GREETING=hello', dir]);
  assert.equal(third.code, 0, third.stderr);
  assert.match(third.stderr, /\[stage-0 3\/5\] COPY[\s\S]*?CACHED/);
  assert.match(third.stderr, /^#\d+ DONE .*\(cache miss: value changed: GREETING\)$/m);

  // The same in rawjson, with the files listed.
  writeFileSync(join(dir, 'one.txt'), 'one, changed\n');
  rmSync(join(dir, 'two.txt'));
  writeFileSync(join(dir, 'Dockerfile'), DF.replace('one.txt two.txt', 'one.txt'));
  const raw = tsbuild(root, ['build', '--progress', 'rawjson', '-t', 'explain:1', '--build-arg', 'GREETING=hello', dir]);
  assert.equal(raw.code, 0, raw.stderr);
  const misses = raw.stderr.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { type: string; miss?: { reason: string } }).filter((e) => e.miss);
  assert.ok(misses.some((e) => e.miss!.reason === 'the instruction changed'), JSON.stringify(misses));
});

test('the Action summary says why each step ran', () => {
  const ws = ctx('action');
  const run = (): string => {
    const summary = join(work, `summary-${Date.now()}.md`);
    writeFileSync(summary, '');
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH, HOME: work, TSBUILD_ROOT: root, GITHUB_ACTIONS: 'true', GITHUB_WORKSPACE: ws,
      GITHUB_OUTPUT: join(work, 'out'), GITHUB_STEP_SUMMARY: summary, RUNNER_TEMP: work, INPUT_CONTEXT: '.', INPUT_TAGS: 'explain:action',
    };
    writeFileSync(env.GITHUB_OUTPUT!, '');
    const r = spawnSync(process.execPath, [join(REPO, 'packages/action/dist/index.js')], { cwd: ws, env, encoding: 'utf8', timeout: 300_000 });
    assert.equal(r.status, 0, r.stdout);
    return readFileSync(summary, 'utf8');
  };
  run();
  writeFileSync(join(ws, 'one.txt'), 'one, once more\n');
  const md = run();
  assert.match(md, /\| Why it ran \|/);
  assert.match(md, /COPY one\.txt two\.txt \/app\/` \| [\d.]+s \| miss \|[^\n]*\| files changed one\.txt \|/);
});
