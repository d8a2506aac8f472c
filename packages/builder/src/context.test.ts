import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { secureJoin } from '@tsbuild/layer';
import { BuildContext, SourceNotFoundError, compileFilepathMatch, hasWildcard } from './context.ts';
import { createIgnoreMatcher, loadIgnore, parseIgnoreFile } from './ignore.ts';
import { tempDir, makeTree } from './testing.ts';

test('compileFilepathMatch follows Go filepath.Match', () => {
  const cases: [string, string, boolean][] = [
    ['*.txt', 'a.txt', true],
    ['*.txt', '.txt', true],
    ['*.txt', 'a.md', false],
    ['a?c', 'abc', true],
    ['a?c', 'ac', false],
    ['[a-c]x', 'bx', true],
    ['[a-c]x', 'dx', false],
    ['[^a-c]x', 'dx', true],
    ['[^a-c]x', 'ax', false],
    ['[!x]', '!', true], // Go has no `!` negation: `[!x]` is the set {!, x}
    ['[!x]', 'y', false],
    ['\\*', '*', true],
    ['\\*', 'a', false],
    ['a\\[b', 'a[b', true],
    ['**', 'abc', true],
    ['[\\]]', ']', true],
    ['é?', 'éé', true],
  ];
  for (const [pattern, name, want] of cases) {
    assert.equal(compileFilepathMatch(pattern).test(name), want, `${pattern} vs ${name}`);
  }
  for (const bad of ['[', '[a-', '[]', 'a\\', '[z-a]', '[-a]']) {
    assert.throws(() => compileFilepathMatch(bad), /invalid wildcard pattern/, bad);
  }
  assert.equal(hasWildcard('a\\*b'), false);
  assert.equal(hasWildcard('a/*'), true);
  assert.equal(hasWildcard('x[1]'), true);
});

test('secureJoin keeps every path inside the root', (t) => {
  const root = tempDir(t, 'tsbuild-ctx-');
  makeTree(root, ['etc/passwd', 'a/b/', 'abs -> /etc', 'up -> ../../../../etc', 'rel -> a/b', 'loop -> loop', 'dang -> /nowhere/x']);
  const cases: [string, string, boolean?][] = [
    ['../../etc/passwd', 'etc/passwd'],
    ['/abs/passwd', 'etc/passwd'],
    ['up/passwd', 'etc/passwd'],
    ['rel/../../etc', 'etc'],
    ['rel/c', 'a/b/c'],
    ['abs', 'abs', false],
    ['dang', 'nowhere/x'],
    ['a/../../..', ''],
  ];
  for (const [input, want, follow] of cases) {
    const got = secureJoin(root, input, { followLast: follow ?? true });
    assert.equal(got, want === '' ? root : root + '/' + want, input);
  }
  assert.throws(() => secureJoin(root, 'loop/x', { followLast: true }), /too many levels of symbolic links/);
});

test('resolveSources: literal, wildcard, clamped and hostile sources', async (t) => {
  const root = tempDir(t, 'tsbuild-ctx-');
  makeTree(root, [
    'a.txt',
    'b.txt',
    'c.md',
    'dir/x.txt',
    'dir/sub/y.txt',
    'etc/passwd',
    'evil -> /etc',
    'lnk -> a.txt',
    'inner -> dir',
    'escape -> ../../../../..',
    'star*',
  ]);
  const ctx = await BuildContext.open(root);
  const names = async (p: string[], o = {}) => (await ctx.resolveSources(p, o)).map((m) => `${m.path}:${m.kind}`);

  assert.deepEqual(await names(['a.txt']), ['a.txt:file']);
  assert.deepEqual(await names(['*.txt']), ['a.txt:file', 'b.txt:file']);
  assert.deepEqual(await names(['./dir/', '/c.md']), ['dir:dir', 'c.md:file']);
  assert.deepEqual(await names(['.']), [':dir']);
  assert.deepEqual(await names(['*/*.txt']), ['dir/x.txt:file']);
  assert.deepEqual(await names(['d?r/s*/y.txt']), ['dir/sub/y.txt:file']);
  // an escaped wildcard makes no pattern, so (as in BuildKit) the name is taken literally
  await assert.rejects(ctx.resolveSources(['star\\*']), SourceNotFoundError);
  assert.deepEqual(await names(['star[*]']), ['star*:file']);
  assert.deepEqual(await names(['nomatch*']), [], 'an empty wildcard selects nothing (BuildKit allows it)');
  // `..` cannot leave the context: this names etc/passwd of the context itself.
  const passwd = await ctx.resolveSources(['../../etc/passwd']);
  assert.equal(passwd[0]?.realPath, path.join(ctx.root, 'etc/passwd'));
  assert.equal(fs.readFileSync(passwd[0]?.realPath as string, 'utf8'), 'etc/passwd');
  // A symlink to /etc resolves inside the context: evil/passwd is the context's etc/passwd.
  const evil = await ctx.resolveSources(['evil/passwd']);
  assert.equal(evil[0]?.realPath, path.join(ctx.root, 'etc/passwd'));
  // followed at the top level, kept as a symlink when asked not to follow
  assert.deepEqual(await names(['lnk']), ['lnk:file']);
  assert.deepEqual(await names(['lnk'], { followTopLevelSymlink: false }), ['lnk:symlink']);
  assert.deepEqual(await names(['inner']), ['inner:dir']);
  assert.equal((await ctx.resolveSources(['escape']))[0]?.realPath, ctx.root);
  // wildcards never descend through a symlinked directory
  assert.deepEqual(await names(['inner/*.txt']), ['inner/x.txt:file']);
  assert.deepEqual(await names(['*/x.txt']), ['dir/x.txt:file']);

  for (const missing of ['nope', '../nope', 'evil/shadow', 'a.txt/x']) {
    await assert.rejects(ctx.resolveSources([missing]), (e: unknown) => {
      assert.ok(e instanceof SourceNotFoundError);
      assert.equal(e.source, missing);
      assert.match(e.message, /not found in build context/);
      return true;
    });
  }
  // --exclude filters top-level matches and directory contents
  assert.deepEqual(await names(['*.txt'], { excludes: ['b.txt'] }), ['a.txt:file']);
  const [dir] = await ctx.resolveSources(['dir'], { excludes: ['sub'] });
  assert.deepEqual(ctx.walk(dir!).map((e) => e.rel), ['', 'x.txt']);
});

test('.dockerignore hides files; the Dockerfile-specific file wins; exceptions re-include', async (t) => {
  const root = tempDir(t, 'tsbuild-ctx-');
  makeTree(root, ['a.txt', 'secret.key', 'logs/1.log', 'logs/keep.log', 'node_modules/m/i.js', 'Dockerfile', 'sub/Dockerfile']);
  fs.writeFileSync(path.join(root, '.dockerignore'), '\ufeff# comment\n*.key\r\nnode_modules\nlogs\n!logs/keep.log\n  \nDockerfile\n');
  const ignore = await loadIgnore(root, path.join(root, 'Dockerfile'));
  assert.equal(ignore.source, path.join(root, '.dockerignore'));
  const ctx = await BuildContext.open(root, { ignore });
  await assert.rejects(ctx.resolveSources(['secret.key']), /or excluded by \.dockerignore/);
  await assert.rejects(ctx.resolveSources(['node_modules']), SourceNotFoundError);
  await assert.rejects(ctx.resolveSources(['Dockerfile']), SourceNotFoundError);
  assert.deepEqual((await ctx.resolveSources(['*.key', '*.txt'])).map((m) => m.path), ['a.txt']);
  const [all] = await ctx.resolveSources(['.']);
  assert.deepEqual(
    ctx.walk(all!).map((e) => e.rel),
    ['', '.dockerignore', 'a.txt', 'logs', 'logs/keep.log', 'sub', 'sub/Dockerfile'],
  );
  assert.deepEqual((await ctx.resolveSources(['logs'])).map((m) => m.path), ['logs']);
  // a symlink is hidden when it, or what it points at, is ignored
  fs.symlinkSync('secret.key', path.join(root, 'to-secret'));
  fs.symlinkSync('a.txt', path.join(root, 'hidden.key'));
  await assert.rejects(ctx.resolveSources(['to-secret']), SourceNotFoundError);
  await assert.rejects(ctx.resolveSources(['hidden.key']), SourceNotFoundError);

  fs.writeFileSync(path.join(root, 'sub/Dockerfile.dockerignore'), 'a.txt\n');
  const specific = await loadIgnore(root, path.join(root, 'sub/Dockerfile'));
  assert.equal(specific.source, path.join(root, 'sub/Dockerfile.dockerignore'));
  assert.equal(specific.ignores('a.txt'), true);
  assert.equal(specific.ignores('secret.key'), false);
  const none = await loadIgnore(path.join(root, 'sub'), path.join(root, 'Dockerfile'));
  assert.equal(none.ignores('anything'), false);
});

test('ignore patterns follow Docker rules', () => {
  assert.deepEqual(parseIgnoreFile('# c\n a \n!\n\n/b\n'), ['a', '/b']);
  const m = createIgnoreMatcher(['**/*.md', '!README.md', '/build', 'tmp/']);
  const cases: [string, boolean][] = [
    ['x.md', true],
    ['deep/er/x.md', true],
    ['README.md', false],
    ['build', true],
    ['build/out.o', true],
    ['src/build', false],
    ['tmp/a', true],
    ['./x.md', true],
  ];
  for (const [p, want] of cases) assert.equal(m.ignores(p), want, p);
});
