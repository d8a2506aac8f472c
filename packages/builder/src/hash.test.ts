import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { blake3 } from '@napi-rs/blake-hash';
import { BuildContext } from './context.ts';
import { StatCache, hashContextDir, hashFileContent, hashSources } from './hash.ts';
import type { FileHasher } from './hash.ts';
import { createIgnoreMatcher } from './ignore.ts';
import { tempDir } from './testing.ts';

function writeTree(root: string): void {
  fs.mkdirSync(path.join(root, 'src/lib'), { recursive: true });
  fs.writeFileSync(path.join(root, 'src/a.ts'), 'a');
  fs.writeFileSync(path.join(root, 'src/lib/b.ts'), 'b');
  fs.writeFileSync(path.join(root, 'README'), 'readme');
  fs.symlinkSync('a.ts', path.join(root, 'src/link'));
  fs.chmodSync(path.join(root, 'src/a.ts'), 0o644);
}

// Stat data older than the hashing moment by more than the racy window, so caching applies.
const SETTLE_MS = 150;

test('the source digest follows content, names, types and modes — not clocks or owners', async (t) => {
  const mutations: [string, (root: string) => void, boolean][] = [
    ['nothing', () => {}, false],
    ['mtime', (r) => fs.utimesSync(path.join(r, 'src/a.ts'), new Date(5e11), new Date(5e11)), false],
    ['owner', (r) => fs.lchownSync(path.join(r, 'src/a.ts'), 123, 456), false],
    ['ignored file added', (r) => fs.writeFileSync(path.join(r, 'src/x.log'), 'log'), false],
    ['excluded file changed', (r) => fs.writeFileSync(path.join(r, 'src/lib/b.ts'), 'B'), false],
    ['content', (r) => fs.writeFileSync(path.join(r, 'src/a.ts'), 'A'), true],
    ['mode', (r) => fs.chmodSync(path.join(r, 'src/a.ts'), 0o755), true],
    ['rename', (r) => fs.renameSync(path.join(r, 'src/a.ts'), path.join(r, 'src/c.ts')), true],
    ['new file', (r) => fs.writeFileSync(path.join(r, 'src/new.ts'), ''), true],
    ['symlink target', (r) => { fs.unlinkSync(path.join(r, 'src/link')); fs.symlinkSync('lib/b.ts', path.join(r, 'src/link')); }, true],
    ['file becomes dir', (r) => { fs.unlinkSync(path.join(r, 'src/a.ts')); fs.mkdirSync(path.join(r, 'src/a.ts')); }, true],
    ['hardlink', (r) => { fs.unlinkSync(path.join(r, 'src/lib/b.ts')); fs.linkSync(path.join(r, 'src/a.ts'), path.join(r, 'src/lib/b.ts')); }, false],
  ];
  const digestOf = async (root: string, excludes: string[] = ['lib/b.ts']): Promise<string> => {
    const ctx = await BuildContext.open(root, { ignore: createIgnoreMatcher(['**/*.log']) });
    return hashSources(ctx, await ctx.resolveSources(['src'], { excludes }));
  };
  const base = tempDir(t, 'tsbuild-hash-');
  writeTree(base);
  const want = await digestOf(base);
  assert.match(want, /^sources:[0-9a-f]{64}$/);
  for (const [name, mutate, changes] of mutations) {
    const root = tempDir(t, 'tsbuild-hash-');
    writeTree(root);
    mutate(root);
    const got = await digestOf(root);
    assert.equal(got !== want, changes, name);
  }
  // a hardlink pair is not the same as two copies once nothing is excluded
  const copies = tempDir(t, 'tsbuild-hash-');
  writeTree(copies);
  fs.writeFileSync(path.join(copies, 'src/lib/b.ts'), 'a');
  const linked = tempDir(t, 'tsbuild-hash-');
  writeTree(linked);
  fs.unlinkSync(path.join(linked, 'src/lib/b.ts'));
  fs.linkSync(path.join(linked, 'src/a.ts'), path.join(linked, 'src/lib/b.ts'));
  assert.notEqual(await digestOf(copies, []), await digestOf(linked, []));
  // the digest names the source as written: another pattern for the same files is another key
  const ctx = await BuildContext.open(base);
  const a = await hashSources(ctx, await ctx.resolveSources(['src/a.ts']));
  const b = await hashSources(ctx, await ctx.resolveSources(['src/a*']));
  assert.notEqual(a, b);
  assert.equal(await hashContextDir(ctx), await hashSources(ctx, await ctx.resolveSources(['.'])));
});

test('an unchanged 2,000-file context is not read again', async (t) => {
  const root = tempDir(t, 'tsbuild-hash-');
  const cacheFile = path.join(tempDir(t, 'tsbuild-hash-'), 'state/statcache.json');
  for (let d = 0; d < 20; d++) {
    fs.mkdirSync(path.join(root, `d${d}`));
    for (let f = 0; f < 100; f++) fs.writeFileSync(path.join(root, `d${d}/f${f}`), `${d}/${f}`);
  }
  await sleep(SETTLE_MS);
  const ctx = await BuildContext.open(root);
  const matches = await ctx.resolveSources(['.']);
  let reads = 0;
  const counting: FileHasher = (abs, size) => {
    reads++;
    return hashFileContent(abs, size);
  };

  const cache1 = await StatCache.load(cacheFile);
  const first = await hashSources(ctx, matches, { statCache: cache1, hashFile: counting });
  assert.equal(reads, 2000);
  assert.equal(await cache1.save(), true);
  assert.ok(fs.existsSync(cacheFile));

  reads = 0;
  const cache2 = await StatCache.load(cacheFile);
  assert.equal(cache2.size, 2000);
  const second = await hashSources(ctx, matches, { statCache: cache2, hashFile: counting });
  assert.equal(second, first);
  assert.equal(reads, 0, 'second hash reads no file content');
  const before = fs.statSync(cacheFile).mtimeMs;
  assert.equal(await cache2.save(), false, 'an unchanged cache is not rewritten');
  assert.equal(fs.statSync(cacheFile).mtimeMs, before);

  // same size, new content: the stat change is seen and only that file is read
  fs.writeFileSync(path.join(root, 'd3/f7'), '3/f8');
  await sleep(SETTLE_MS);
  reads = 0;
  const third = await hashSources(ctx, matches, { statCache: cache2, hashFile: counting });
  assert.equal(reads, 1);
  assert.notEqual(third, first);

  // a file changed within the racy window of its hashing is read again each time
  await cache2.save();
  const wary = await StatCache.load(cacheFile, { racyWindowMs: 3_600_000 });
  fs.writeFileSync(path.join(root, 'd4/f1'), 'racy');
  reads = 0;
  await hashSources(ctx, matches, { statCache: wary, hashFile: counting });
  await hashSources(ctx, matches, { statCache: wary, hashFile: counting });
  assert.equal(reads, 2 * 2000);

  // a corrupt cache file is only a cold cache
  fs.writeFileSync(cacheFile, '{not json');
  assert.equal((await StatCache.load(cacheFile)).size, 0);
});

test('large files are hashed in chunks with the same result', async (t) => {
  const root = tempDir(t, 'tsbuild-hash-');
  const big = Buffer.alloc(9 * 1024 * 1024 + 123);
  for (let i = 0; i < big.length; i += 4096) big[i] = i & 0xff;
  fs.writeFileSync(path.join(root, 'big'), big);
  assert.equal(hashFileContent(path.join(root, 'big'), big.length), blake3(big).toString('hex'));
  fs.writeFileSync(path.join(root, 'small'), 'abc');
  assert.equal(hashFileContent(path.join(root, 'small'), 3), blake3(Buffer.from('abc')).toString('hex'));
});

test('hashing stops when cancelled', async (t) => {
  const root = tempDir(t, 'tsbuild-hash-');
  fs.writeFileSync(path.join(root, 'x'), 'x');
  const ctx = await BuildContext.open(root);
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(hashSources(ctx, await ctx.resolveSources(['.']), { signal: ac.signal }), { code: 'CANCELLED' });
});
