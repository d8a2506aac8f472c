import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { encodeHeader, endOfArchive, padding } from '@tsbuild/layer';
import type { TarHeader } from '@tsbuild/layer';
import { extractArchive, isArchive, isTarHeader, sniffArchiveCompression } from './archive.ts';
import { tempDir } from './testing.ts';

type Entry = Partial<TarHeader> & { path: string; body?: string };

function tarOf(entries: Entry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const body = Buffer.from(e.body ?? '');
    const h: TarHeader = {
      type: e.type ?? 'file',
      mode: e.mode ?? (e.type === 'dir' ? 0o755 : 0o644),
      uid: e.uid ?? 0,
      gid: e.gid ?? 0,
      size: (e.type ?? 'file') === 'file' ? body.length : 0,
      mtime: e.mtime ?? 1_000_000_000,
      ...e,
    };
    parts.push(encodeHeader(h));
    if (h.type === 'file') parts.push(body, Buffer.alloc(padding(body.length)));
  }
  parts.push(endOfArchive());
  return Buffer.concat(parts);
}

const sample: Entry[] = [
  { path: 'top/', type: 'dir', mode: 0o750, uid: 5, gid: 6 },
  { path: 'top/hello.txt', body: 'hello', uid: 1000, gid: 1000, mode: 0o640 },
  { path: 'top/link', type: 'symlink', linkpath: 'hello.txt' },
];

function compressWith(tool: 'bzip2' | 'xz' | 'zstd', file: string): string {
  execFileSync(tool, tool === 'zstd' ? ['-q', '-f', file] : ['-k', '-f', file]);
  return file + { bzip2: '.bz2', xz: '.xz', zstd: '.zst' }[tool];
}

test('archives are told by content, not by name', async (t) => {
  const dir = tempDir(t, 'tsbuild-archive-');
  const tarFile = path.join(dir, 'a.tar');
  fs.writeFileSync(tarFile, tarOf(sample));
  const gz = path.join(dir, 'a.tar.gz');
  fs.writeFileSync(gz, zlib.gzipSync(fs.readFileSync(tarFile)));
  const textGz = path.join(dir, 'notes.gz');
  fs.writeFileSync(textGz, zlib.gzipSync(Buffer.from('just text, no tar here\n'.repeat(50))));
  const corrupt = path.join(dir, 'broken.tgz');
  fs.writeFileSync(corrupt, Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), Buffer.alloc(40, 7)]));
  const plain = path.join(dir, 'readme.tar');
  fs.writeFileSync(plain, 'not an archive at all'.repeat(40));
  const empty = path.join(dir, 'empty');
  fs.writeFileSync(empty, '');
  const zeros = path.join(dir, 'zeros.tar');
  fs.writeFileSync(zeros, Buffer.alloc(1024));

  const cases: [string, boolean][] = [
    [tarFile, true],
    [gz, true],
    [compressWith('bzip2', tarFile), true],
    [compressWith('xz', tarFile), true],
    [compressWith('zstd', tarFile), true],
    [textGz, false],
    [compressWith('xz', plain), false],
    [corrupt, false],
    [plain, false],
    [empty, false],
    [zeros, false],
  ];
  for (const [file, want] of cases) assert.equal(await isArchive(file), want, path.basename(file));
  assert.equal(sniffArchiveCompression(fs.readFileSync(gz)), 'gzip');
  // GNU tar's own output (ustar/GNU header) passes the checksum test
  const gnu = execFileSync('tar', ['-cf', '-', '-C', dir, 'a.tar']);
  assert.equal(isTarHeader(gnu.subarray(0, 512)), true);
  const damaged = Buffer.from(gnu.subarray(0, 512));
  damaged[0] = (damaged[0] as number) ^ 1;
  assert.equal(isTarHeader(damaged), false);
});

test('extractArchive unpacks every compression into the destination', async (t) => {
  const dir = tempDir(t, 'tsbuild-archive-');
  const tarFile = path.join(dir, 'a.tar');
  fs.writeFileSync(tarFile, tarOf(sample));
  const files = [tarFile, compressWith('bzip2', tarFile), compressWith('xz', tarFile), compressWith('zstd', tarFile)];
  fs.writeFileSync(path.join(dir, 'a.tgz'), zlib.gzipSync(fs.readFileSync(tarFile)));
  files.push(path.join(dir, 'a.tgz'));
  for (const file of files) {
    const dest = path.join(dir, 'out-' + path.basename(file));
    fs.mkdirSync(dest);
    fs.chmodSync(dest, 0o700);
    const r = await extractArchive(file, dest, { tmpDir: dir });
    assert.ok(r.entries >= 3);
    assert.equal(fs.readFileSync(path.join(dest, 'top/hello.txt'), 'utf8'), 'hello', file);
    const st = fs.statSync(path.join(dest, 'top/hello.txt'));
    assert.deepEqual([st.uid, st.gid, st.mode & 0o7777], [1000, 1000, 0o640]);
    assert.equal(st.mtimeMs, 1_000_000_000_000);
    assert.equal(fs.readlinkSync(path.join(dest, 'top/link')), 'hello.txt');
    const top = fs.statSync(path.join(dest, 'top'));
    assert.deepEqual([top.uid, top.gid, top.mode & 0o7777], [5, 6, 0o750]);
    // the destination directory itself keeps its own metadata
    assert.equal(fs.statSync(dest).mode & 0o7777, 0o700);
  }
  const owned = path.join(dir, 'owned');
  await extractArchive(tarFile, owned, { chown: { uid: 7, gid: 8 }, tmpDir: dir });
  const st = fs.lstatSync(path.join(owned, 'top/link'));
  assert.deepEqual([st.uid, st.gid], [7, 8]);
  assert.equal(fs.readdirSync(dir).filter((n) => n.startsWith('tsbuild-add-')).length, 0, 'staging removed');
});

test('hostile archives cannot write outside the destination', async (t) => {
  const dir = tempDir(t, 'tsbuild-archive-');
  const dest = path.join(dir, 'a/b/dest');
  fs.mkdirSync(dest, { recursive: true });
  fs.mkdirSync(path.join(dir, 'a/b/dest/etc'));
  const hostile: [string, Entry[], RegExp | undefined][] = [
    ['dotdot', [{ path: '../../escape.txt', body: 'x' }], /escapes the root/],
    ['link then write through it', [{ path: 'l', type: 'symlink', linkpath: '../../../..' }, { path: 'l/escape2.txt', body: 'x' }], undefined],
    ['absolute link then write', [{ path: 'abs', type: 'symlink', linkpath: '/' }, { path: 'abs/escape3.txt', body: 'x' }], undefined],
    ['hardlink to a host file', [{ path: 'h', type: 'hardlink', linkpath: '/etc/passwd' }], /not a file in the layer's root/],
  ];
  for (const [name, entries, err] of hostile) {
    const file = path.join(dir, name + '.tar');
    fs.writeFileSync(file, tarOf(entries));
    const run = extractArchive(file, dest, { tmpDir: dir });
    if (err) await assert.rejects(run, err, name);
    else await run;
  }
  const outside = fs.readdirSync(dir).sort();
  assert.deepEqual(outside, ['a', 'absolute link then write.tar', 'dotdot.tar', 'hardlink to a host file.tar', 'link then write through it.tar']);
  assert.deepEqual(fs.readdirSync(path.join(dir, 'a')), ['b']);
  assert.deepEqual(fs.readdirSync(path.join(dir, 'a/b')), ['dest']);
  // writes through archive symlinks landed inside the destination
  assert.equal(fs.readFileSync(path.join(dest, 'escape2.txt'), 'utf8'), 'x');
  assert.equal(fs.readFileSync(path.join(dest, 'escape3.txt'), 'utf8'), 'x');
  assert.equal(fs.readlinkSync(path.join(dest, 'abs')), '/');
});
