import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync, rmSync } from 'node:fs';
import { UnsafeArchiveError } from '@tsbuild/errors';
import { BLOCK, readTar, encodeHeader, encodeHeaderInto } from './tar.ts';
import type { TarHeader } from './tar.ts';
import { buildTar, streamOf, tempDir } from './testing.ts';

async function readAll(buf: Buffer): Promise<Array<{ header: TarHeader; body: Buffer }>> {
  const out: Array<{ header: TarHeader; body: Buffer }> = [];
  for await (const e of readTar(streamOf(buf))) {
    const chunks: Buffer[] = [];
    for await (const c of e.body) chunks.push(c);
    out.push({ header: e.header, body: Buffer.concat(chunks) });
  }
  return out;
}

const long = (n: number, ch = 'a'): string => ch.repeat(n);

test('headers round-trip through PAX for what ustar cannot hold', async () => {
  const xattrs = new Map<string, Uint8Array>([
    ['security.capability', Buffer.from('0100000200200000000000000000000000000000', 'hex')],
    ['user.bin', Buffer.from([0, 10, 61, 255, 32, 10])],
  ]);
  const name300 = `${long(120)}/${long(120, 'b')}/${long(59, 'c')}`;
  const tar = buildTar([
    { path: 'mode0', mode: 0 },
    { path: 'suid', mode: 0o4755, body: 'x' },
    { path: 'sticky/', type: 'dir', mode: 0o1777 },
    { path: `${long(150)}`, body: 'long name' },
    { path: name300, body: Buffer.alloc(1000, 7) },
    { path: 'link', type: 'symlink', linkpath: long(200, 'z') },
    { path: 'big-ids', uid: 3_000_000_000, gid: 2_097_152 },
    { path: 'xattrs', xattrs },
    { path: 'dev', type: 'char', devmajor: 4095, devminor: 1048575 },
    { path: 'ünïcødé-名前', body: '' },
  ]);
  const entries = await readAll(tar);
  assert.deepEqual(
    entries.map((e) => e.header.path),
    ['mode0', 'suid', 'sticky/', long(150), name300, 'link', 'big-ids', 'xattrs', 'dev', 'ünïcødé-名前'],
  );
  const by = new Map(entries.map((e) => [e.header.path, e]));
  assert.equal(by.get('mode0')!.header.mode, 0);
  assert.equal(by.get('suid')!.header.mode, 0o4755);
  assert.equal(by.get('sticky/')!.header.mode, 0o1777);
  assert.equal(by.get(name300)!.body.length, 1000);
  assert.equal(by.get('link')!.header.linkpath, long(200, 'z'));
  assert.equal(by.get('big-ids')!.header.uid, 3_000_000_000);
  assert.equal(by.get('big-ids')!.header.gid, 2_097_152);
  assert.deepEqual(by.get('xattrs')!.header.xattrs, xattrs);
  assert.equal(by.get('dev')!.header.devmajor, 4095);
  assert.equal(by.get('dev')!.header.devminor, 1048575);
  assert.equal(by.get('mode0')!.header.uname, '');
});

test('PAX record lengths count their own digits and bytes, not characters', async () => {
  // Values chosen so the record length crosses from 2 to 3 and 3 to 4 digits.
  for (const n of [80, 85, 86, 87, 88, 89, 90, 95, 980, 985, 990, 995, 996, 997]) {
    const value = Buffer.alloc(n, 0xe9);
    const tar = buildTar([{ path: 'f', xattrs: new Map([['user.v', value]]) }]);
    const [e] = await readAll(tar);
    assert.deepEqual(Buffer.from(e!.header.xattrs!.get('user.v')!), value, `length ${n}`);
  }
});

test('GNU tar lists and extracts what we write, xattrs included', () => {
  const dir = tempDir('gnutar');
  try {
    const tar = buildTar([
      { path: 'd/', type: 'dir', mode: 0o755 },
      { path: `d/${long(130, 'e')}/`, type: 'dir', mode: 0o755 },
      { path: `d/${long(130, 'e')}/${long(130)}`, body: 'deep', mode: 0o600 },
      { path: 'd/cap', body: 'c', mode: 0o755, xattrs: new Map([['user.bin', Buffer.from([0, 1, 2, 10, 255])]]) },
      { path: 'd/sym', type: 'symlink', linkpath: `${long(260, 'x')}` },
    ]);
    writeFileSync(`${dir}/a.tar`, tar);
    const listing = execFileSync('tar', ['-tvf', `${dir}/a.tar`]).toString();
    assert.match(listing, /-rw------- 0\/0\s+4 .* d\/e{130}\/a{130}\n/);
    assert.match(listing, /d\/sym -> x{260}\n/);
    execFileSync('mkdir', [`${dir}/x`]);
    execFileSync('tar', ['--xattrs', '--xattrs-include=*', '-xf', `${dir}/a.tar`, '-C', `${dir}/x`]);
    const dump = execFileSync('getfattr', ['-n', 'user.bin', '-e', 'hex', `${dir}/x/d/cap`]).toString();
    assert.match(dump, /user\.bin=0x0001020aff/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('reads GNU-format long names written by GNU tar', async () => {
  const dir = tempDir('gnulong');
  try {
    execFileSync('mkdir', ['-p', `${dir}/src/${long(120)}`]);
    writeFileSync(`${dir}/src/${long(120)}/${long(120, 'q')}`, 'v');
    execFileSync('tar', ['--format=gnu', '-cf', `${dir}/g.tar`, '-C', `${dir}/src`, '.']);
    const { readFileSync } = await import('node:fs');
    const entries = await readAll(readFileSync(`${dir}/g.tar`));
    const f = entries.find((e) => e.header.type === 'file');
    assert.equal(f?.header.path, `./${long(120)}/${long(120, 'q')}`);
    assert.equal(f?.body.toString(), 'v');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('corrupt or truncated archives are refused', async () => {
  const good = buildTar([{ path: 'f', body: 'hello world' }]);
  const badSum = Buffer.from(good);
  badSum[0] = 0x67;
  await assert.rejects(readAll(badSum), UnsafeArchiveError);
  await assert.rejects(readAll(good.subarray(0, 600)), UnsafeArchiveError);
  const sparse = withTypeflag(encodeHeader({ path: 'x', type: 'file', mode: 0, uid: 0, gid: 0, size: 0, mtime: 0 }), 'S');
  await assert.rejects(readAll(Buffer.concat([sparse, Buffer.alloc(1024)])), UnsafeArchiveError);
});

/** Rewrites the typeflag of a single ustar header block and fixes its checksum. */
function withTypeflag(block: Buffer, flag: string): Buffer {
  const b = Buffer.from(block);
  b[156] = flag.charCodeAt(0);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return b;
}

test('old-style entries: NUL typeflag is a file, or a directory when the name ends in /', async () => {
  const f = withTypeflag(encodeHeader({ path: 'f', type: 'file', mode: 0o644, uid: 0, gid: 0, size: 2, mtime: 0 }), '\0');
  const d = withTypeflag(encodeHeader({ path: 'd/', type: 'file', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0 }), '\0');
  const body = Buffer.alloc(BLOCK);
  body.write('hi');
  const entries = await readAll(Buffer.concat([f, body, d, Buffer.alloc(1024)]));
  assert.deepEqual(entries.map((e) => [e.header.path, e.header.type, e.body.toString()]), [['f', 'file', 'hi'], ['d/', 'dir', '']]);
});

test('sizes beyond the 8 GiB ustar limit travel in PAX', async () => {
  const size = 2 ** 33 + 5;
  const head = encodeHeader({ path: 'huge', type: 'file', mode: 0o644, uid: 0, gid: 0, size, mtime: 0 });
  const it = readTar(streamOf(Buffer.concat([head, Buffer.alloc(BLOCK)])));
  const first = await it.next();
  assert.equal(first.done, false);
  assert.equal(first.value!.header.size, size);
  // The body is missing, so finishing the entry must fail rather than invent data.
  await assert.rejects(it.next(), UnsafeArchiveError);
});

test('encodeHeaderInto writes the same bytes as encodeHeader, and declines what needs PAX', () => {
  const simple: TarHeader[] = [
    { path: 'a', type: 'file', mode: 0o644, uid: 1, gid: 2, size: 3, mtime: 4 },
    { path: `${long(100)}`, type: 'file', mode: 0o4755, uid: 2_097_151, gid: 0, size: 0o77777777777, mtime: 0 },
    { path: 'dir/', type: 'dir', mode: 0o1777, uid: 0, gid: 0, size: 0, mtime: 1_700_000_000 },
    { path: 'l', type: 'symlink', mode: 0o777, uid: 0, gid: 0, size: 0, mtime: 0, linkpath: long(100, 'z') },
    { path: 'ü'.repeat(50), type: 'char', mode: 0, uid: 0, gid: 0, size: 0, mtime: 0, devmajor: 1, devminor: 3 },
  ];
  for (const h of simple) {
    const target = Buffer.alloc(2048, 0xee);
    assert.equal(encodeHeaderInto(h, target, 512), BLOCK, h.path);
    assert.deepEqual(target.subarray(512, 1024), encodeHeader(h), h.path);
    assert.ok(target.subarray(0, 512).every((b) => b === 0xee) && target.subarray(1024).every((b) => b === 0xee));
  }
  const needPax: TarHeader[] = [
    { path: long(101), type: 'file', mode: 0, uid: 0, gid: 0, size: 0, mtime: 0 },
    { path: 'ü'.repeat(51), type: 'file', mode: 0, uid: 0, gid: 0, size: 0, mtime: 0 },
    { path: 'x', type: 'file', mode: 0, uid: 2_097_152, gid: 0, size: 0, mtime: 0 },
    { path: 'x', type: 'file', mode: 0, uid: 0, gid: 0, size: 0, mtime: 0, xattrs: new Map([['user.a', Buffer.from('b')]]) },
  ];
  for (const h of needPax) assert.equal(encodeHeaderInto(h, Buffer.alloc(BLOCK), 0), 0);
  assert.equal(encodeHeaderInto(simple[0]!, Buffer.alloc(BLOCK + 10), 11), 0, 'no room');
});
