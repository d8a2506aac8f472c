import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, rmSync, symlinkSync, truncateSync, utimesSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { diff } from './diff.ts';
import { writeEntries } from './entries.ts';
import type { LayerEntry } from './entries.ts';
import { tempDir } from './testing.ts';
import { writeXattrs } from './xattr.ts';

function sink(): { stream: Writable; bytes: () => Buffer } {
  const parts: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      parts.push(Buffer.from(chunk));
      cb();
    },
  });
  return { stream, bytes: () => Buffer.concat(parts) };
}

const T = 1_600_000_000;

test('entries read from their sources give the bytes diff gives for the same tree', async (t) => {
  const root = tempDir('entries');
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const up = `${root}/upper`;
  const src = `${root}/src`;
  mkdirSync(`${up}/d/${'x'.repeat(120)}`, { recursive: true });
  mkdirSync(src);
  const big = Buffer.alloc(3 * (1 << 20) + 7);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
  const files: [string, Buffer][] = [
    ['d/big', big],
    ['d/empty', Buffer.alloc(0)],
    ['d/small', Buffer.from('small\n')],
    [`d/${'x'.repeat(120)}/f`, Buffer.from('long name')],
    ['d/whole', Buffer.alloc(1 << 20, 9)],
  ];
  for (const [p, b] of files) {
    writeFileSync(`${up}/${p}`, b);
    writeFileSync(`${src}/${p.replace(/\//g, '_')}`, b);
  }
  symlinkSync('small', `${up}/d/ln`);
  const attrs = new Map([['user.big', Buffer.alloc(3000, 1)]]);
  await writeXattrs([[`${up}/d/small`, attrs]]);
  for (const p of ['d/big', 'd/empty', 'd/small', `d/${'x'.repeat(120)}/f`, `d/${'x'.repeat(120)}`, 'd/whole', 'd']) utimesSync(`${up}/${p}`, T, T);
  const want = sink();
  await diff(up, want.stream, { sourceDateEpoch: T + 5 });

  const seen = new Map<string, Buffer[]>();
  const watch = (name: string) => (chunk: Buffer, last: boolean): void => {
    const list = seen.get(name) ?? [];
    list.push(Buffer.from(chunk));
    seen.set(name, list);
    if (last) list.push(Buffer.from('<end>'));
  };
  const file = (p: string, fromMemory = false): LayerEntry => {
    const b = files.find(([q]) => q === p)![1];
    const st = lstatSync(`${up}/${p}`);
    return {
      header: { path: p, type: 'file', mode: st.mode & 0o7777, uid: 0, gid: 0, size: b.length, mtime: T },
      body: fromMemory ? b : `${src}/${p.replace(/\//g, '_')}`,
      onBody: watch(p),
    };
  };
  const dirMode = lstatSync(`${up}/d`).mode & 0o7777;
  const lnTime = Math.floor(lstatSync(`${up}/d/ln`).mtimeMs / 1000);
  const entries: LayerEntry[] = [
    { header: { path: 'd/', type: 'dir', mode: dirMode, uid: 0, gid: 0, size: 0, mtime: T } },
    file('d/big'),
    file('d/empty'),
    { header: { path: 'd/ln', type: 'symlink', mode: 0o777, uid: 0, gid: 0, size: 0, mtime: lnTime, linkpath: 'small' } },
    { ...file('d/small', true), header: { ...file('d/small').header, xattrs: attrs } },
    file('d/whole'),
    { header: { path: `d/${'x'.repeat(120)}/`, type: 'dir', mode: dirMode, uid: 0, gid: 0, size: 0, mtime: T } },
    file(`d/${'x'.repeat(120)}/f`),
  ];
  const got = sink();
  const r = await writeEntries(entries, got.stream, { sourceDateEpoch: T + 5 });
  assert.ok(got.bytes().equals(want.bytes()));
  assert.equal(r.size, want.bytes().length);
  assert.equal(r.diffId, `sha256:${createHash('sha256').update(want.bytes()).digest('hex')}`);
  // The observer sees every body, in order, once.
  for (const [p, b] of files) {
    const list = seen.get(p)!;
    assert.equal(list.at(-1)!.toString(), '<end>', p);
    assert.ok(Buffer.concat(list.slice(0, -1)).equals(b), p);
  }
  assert.equal(seen.get('d/big')!.length, 5);

  // Left to a destination that hashes for itself: the same bytes, no diff_id.
  const unhashed = sink();
  const plain = await writeEntries(entries.map(({ onBody: _o, ...e }) => e), unhashed.stream, { sourceDateEpoch: T + 5, hash: false });
  assert.deepEqual(plain, { size: want.bytes().length });
  assert.ok(unhashed.bytes().equals(want.bytes()));
});

test('a source that is not the size its header says fails the layer', async (t) => {
  const root = tempDir('entries-changed');
  t.after(() => rmSync(root, { recursive: true, force: true }));
  writeFileSync(`${root}/grew`, 'abcdef');
  writeFileSync(`${root}/shrank`, 'abc');
  truncateSync(`${root}/shrank`, 2);
  const entry = (name: string, size: number): LayerEntry => ({
    header: { path: name, type: 'file', mode: 0o644, uid: 0, gid: 0, size, mtime: T },
    body: `${root}/${name}`,
  });
  await assert.rejects(writeEntries([entry('grew', 4)], sink().stream), { code: 'LAYER_SOURCE_CHANGED' });
  await assert.rejects(writeEntries([entry('shrank', 3)], sink().stream), { code: 'LAYER_SOURCE_CHANGED' });
  await assert.rejects(writeEntries([entry('missing', 3)], sink().stream), { code: 'LAYER_SOURCE' });
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(writeEntries([entry('grew', 6)], sink().stream, { signal: ac.signal }), { code: 'CANCELLED' });
});
