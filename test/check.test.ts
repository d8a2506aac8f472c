import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './helpers/base.ts';
import { ensureCli, tsbuild } from './helpers/cli.ts';

let work: string;
let root: string;

before(() => {
  ensureCli();
  work = mkdtempSync(join(tmpdir(), 'tsbuild-check-'));
  root = join(work, 'root');
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

/** A context directory holding these files. */
function context(name: string, files: Record<string, string>): string {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  for (const [f, body] of Object.entries(files)) writeFileSync(join(dir, f), body);
  return dir;
}

const lines = (s: string): string[] => s.split('\n').filter((l) => l !== '');

test('warnings print as FILE:LINE:COL: warning: RULE: message and exit 0', () => {
  const dir = context('warn', { Dockerfile: 'FROM scratch as base\nMAINTAINER me@example.org\nCMD run\n' });
  const file = join(dir, 'Dockerfile');
  const r = tsbuild(root, ['check', dir]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(lines(r.stderr), [
    `${file}:1:14: warning: FromAsCasing: 'as' and 'FROM' keywords' casing do not match`,
    `${file}:2:1: warning: MaintainerDeprecated: Maintainer instruction is deprecated in favor of using label`,
    `${file}:3:1: warning: JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals`,
  ]);
  assert.equal(r.stdout, `${file}: ok (1 stage, 3 instructions, 3 warnings)\n`);

  // the same Dockerfile from stdin, named "-"
  const s = tsbuild(root, ['check', '-f', '-', dir], { input: 'FROM scratch\nENV a b\n' });
  assert.equal(s.code, 0, s.stderr);
  assert.deepEqual(lines(s.stderr), ['-:2:1: warning: LegacyKeyValueFormat: "ENV key=value" should be used instead of legacy "ENV key value" format']);
});

test('error=true fails the check when a rule fires, from the directive or the build arg', () => {
  const dir = context('strict', {
    Dockerfile: '# check=skip=JSONArgsRecommended;error=true\nFROM scratch AS Build\nCMD run\n',
    'Dockerfile.clean': '# check=error=true\nFROM scratch\nCMD ["run"]\n',
  });
  const file = join(dir, 'Dockerfile');
  const r = tsbuild(root, ['check', dir]);
  assert.equal(r.code, 1);
  assert.deepEqual(lines(r.stderr), [
    `${file}:2:17: warning: StageNameCasing: Stage name 'Build' should be lowercase`,
    `${file}:2:17: error: lint violation found for rules: StageNameCasing`,
    '  | FROM scratch AS Build',
    'hint: error=true is set by the # check= directive; fix the findings or skip their rules',
  ]);
  assert.equal(r.stdout, '');
  assert.equal(tsbuild(root, ['check', '-f', join(dir, 'Dockerfile.clean'), dir]).code, 0, 'nothing found, nothing fails');

  // BUILDKIT_DOCKERFILE_CHECK replaces the directive as a whole
  const relaxed = tsbuild(root, ['check', '--build-arg', 'BUILDKIT_DOCKERFILE_CHECK=skip=StageNameCasing', dir]);
  assert.equal(relaxed.code, 0, relaxed.stderr);
  assert.deepEqual(lines(relaxed.stderr), [`${file}:3:1: warning: JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals`]);
  const stricter = tsbuild(root, ['check', '--build-arg', 'BUILDKIT_DOCKERFILE_CHECK=skip=StageNameCasing;error=true', dir]);
  assert.equal(stricter.code, 1);
  assert.match(stricter.stderr, /error: lint violation found for rules: JSONArgsRecommended\n/);
  assert.match(stricter.stderr, /set by the BUILDKIT_DOCKERFILE_CHECK build arg/);
  const bad = tsbuild(root, ['check', '--build-arg', 'BUILDKIT_DOCKERFILE_CHECK=sikp=all', dir]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /BUILDKIT_DOCKERFILE_CHECK: invalid check option "sikp"/);
});

test('--format json lists every warning with its rule, page and position', () => {
  const dir = context('json', { Dockerfile: 'FROM scratch\nCOPY $nowhere /\nEXPOSE 80/TCP\n' });
  const file = join(dir, 'Dockerfile');
  const r = tsbuild(root, ['check', '--format', 'json', dir]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  const doc = JSON.parse(r.stdout) as {
    file: string;
    result: string;
    exitCode: number;
    settings: { error: boolean; from: string };
    warnings: Record<string, unknown>[];
    errors: unknown[];
  };
  assert.equal(doc.file, file);
  assert.equal(doc.result, 'warnings');
  assert.equal(doc.exitCode, 0);
  assert.deepEqual(doc.errors, []);
  assert.equal(doc.settings.from, 'default');
  assert.deepEqual(doc.warnings, [
    {
      rule: 'UndefinedVar',
      message: "Usage of undefined variable '$nowhere'",
      description: 'Variables should be defined before their use',
      url: 'https://docs.docker.com/go/dockerfile/rule/undefined-var/',
      file,
      line: 2,
      column: 6,
      endLine: 2,
      endColumn: 14,
    },
    {
      rule: 'ExposeProtoCasing',
      message: "Defined protocol '80/TCP' in EXPOSE instruction should be lowercase",
      description: 'Protocol in EXPOSE instruction should be lowercase',
      url: 'https://docs.docker.com/go/dockerfile/rule/expose-proto-casing/',
      file,
      line: 3,
      column: 8,
      endLine: 3,
      endColumn: 14,
    },
  ]);

  const clean = JSON.parse(tsbuild(root, ['check', '--format', 'json', '-f', '-', dir], { input: 'FROM scratch\n' }).stdout) as { result: string; warnings: unknown[] };
  assert.deepEqual([clean.result, clean.warnings], ['ok', []]);
});

test('a parse error exits 1 with file:line:col, the line and no stack trace', () => {
  const dir = context('broken', { Dockerfile: 'FROM scratch AS Base\nRUN echo ok\nFROBNICATE now\n' });
  const file = join(dir, 'Dockerfile');
  const r = tsbuild(root, ['check', dir]);
  assert.equal(r.code, 1);
  assert.deepEqual(lines(r.stderr), [
    `${file}:1:17: warning: StageNameCasing: Stage name 'Base' should be lowercase`,
    `${file}:3:1: error: unknown instruction: FROBNICATE`,
    '  | FROBNICATE now',
  ]);
  assert.equal(r.stdout, '');
  const j = tsbuild(root, ['check', '--format', 'json', dir]);
  assert.equal(j.code, 1);
  const doc = JSON.parse(j.stdout) as { result: string; exitCode: number; errors: { message: string; line: number; column: number }[] };
  assert.deepEqual([doc.result, doc.exitCode], ['failed', 1]);
  assert.deepEqual(doc.errors.map((e) => [e.message, e.line, e.column]), [['unknown instruction: FROBNICATE', 3, 1]]);
  const missing = tsbuild(root, ['check', '-f', join(dir, 'nope'), dir]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /cannot read Dockerfile .*nope: ENOENT/);
});

test('CopyIgnoredFile reads the context .dockerignore (or <Dockerfile>.dockerignore)', () => {
  const df = 'FROM scratch\nCOPY secret.txt /\nCOPY logs/app.log /\nCOPY kept.txt /\nCOPY --from=scratch secret.txt /x\n';
  const dir = context('ignored', { Dockerfile: df, '.dockerignore': '# not for images\nsecret.txt\nlogs\n', 'kept.txt': 'k' });
  const file = join(dir, 'Dockerfile');
  const r = tsbuild(root, ['check', dir]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(lines(r.stderr), [
    `${file}:2:6: warning: CopyIgnoredFile: Attempting to Copy file "secret.txt" that is excluded by .dockerignore`,
    `${file}:3:6: warning: CopyIgnoredFile: Attempting to Copy file "logs/app.log" that is excluded by .dockerignore`,
  ]);
  // a Dockerfile-specific ignore file wins over the context's
  writeFileSync(join(dir, 'Other'), df);
  writeFileSync(join(dir, 'Other.dockerignore'), 'kept.txt\n');
  const other = tsbuild(root, ['check', '-f', join(dir, 'Other'), dir]);
  assert.deepEqual(lines(other.stderr), [`${join(dir, 'Other')}:4:6: warning: CopyIgnoredFile: Attempting to Copy file "kept.txt" that is excluded by .dockerignore`]);
  // with a ! exception BuildKit cannot tell statically, and says nothing
  writeFileSync(join(dir, '.dockerignore'), 'secret.txt\nlogs\n!logs/keep.log\n');
  assert.equal(tsbuild(root, ['check', dir]).stderr, '');
});

function dockerfilesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...dockerfilesUnder(p));
    else if (name === 'Dockerfile' || name.startsWith('Dockerfile.')) out.push(p);
  }
  return out;
}

test('every Dockerfile under fixtures/ passes the check (warnings allowed)', () => {
  const files = dockerfilesUnder(join(REPO, 'fixtures')).filter((f) => !f.endsWith('.dockerignore'));
  assert.ok(files.length >= 27, `found ${files.length}`);
  for (const f of files) {
    const r = tsbuild(root, ['check', '-f', f, join(f, '..')]);
    assert.equal(r.code, 0, `${f}: ${r.stderr}`);
    assert.match(r.stdout, /: ok \(\d+ stages?, \d+ instructions, \d+ warnings?\)\n$/);
    for (const l of lines(r.stderr)) assert.match(l, /^.+:\d+:\d+: warning: [A-Za-z]+: .+$/, `${f}: ${l}`);
  }
});

test('build --check (and --call check) runs the checks and builds nothing', () => {
  const dir = context('build-check', { Dockerfile: 'FROM scratch as base\nCOPY missing.txt /\n' });
  const file = join(dir, 'Dockerfile');
  for (const flags of [['--check'], ['--call', 'check']]) {
    const r = tsbuild(root, ['build', ...flags, dir]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(lines(r.stderr), [`${file}:1:14: warning: FromAsCasing: 'as' and 'FROM' keywords' casing do not match`]);
    assert.match(r.stdout, /ok \(1 stage, 2 instructions, 1 warning\)/);
  }
  // Nothing was built: the COPY of a missing file would have failed.
  assert.throws(() => statSync(join(root, 'oci', 'index.json')));
  const strict = tsbuild(root, ['build', '--check', '--build-arg', 'BUILDKIT_DOCKERFILE_CHECK=error=true', dir]);
  assert.equal(strict.code, 1);
  assert.match(strict.stderr, /error: lint violation found for rules: FromAsCasing/);
});
