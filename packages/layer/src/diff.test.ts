import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream, createWriteStream, linkSync, mkdirSync, readFileSync, rmSync, symlinkSync, utimesSync, lutimesSync, writeFileSync, chmodSync, chownSync, lchownSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { PassThrough, Writable } from 'node:stream';
import { CancelledError } from '@tsbuild/errors';
import { diff, type DiffOptions } from './diff.ts';
import { apply } from './apply.ts';
import { readTar } from './tar.ts';
import type { TarHeader } from './tar.ts';
import { snapshotTree, tempDir } from './testing.ts';

const sh = (cmd: string, ...args: string[]): string => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

/** A tree with every file type, odd modes, xattrs, hardlinks and long names. */
function makeTree(root: string): void {
  mkdirSync(`${root}/dir/sub`, { recursive: true });
  writeFileSync(`${root}/dir/plain`, 'hello\n');
  writeFileSync(`${root}/mode0`, 'secret');
  chmodSync(`${root}/mode0`, 0);
  writeFileSync(`${root}/suid`, '#!/bin/sh\n');
  chmodSync(`${root}/suid`, 0o4755);
  mkdirSync(`${root}/tmp`);
  chmodSync(`${root}/tmp`, 0o1777);
  mkdirSync(`${root}/sgid`);
  chmodSync(`${root}/sgid`, 0o2755);
  writeFileSync(`${root}/big`, Buffer.alloc(3 * 1024 * 1024 + 17, 0x5a));
  writeFileSync(`${root}/owned`, 'x');
  chownSync(`${root}/owned`, 1001, 3_000_000);
  linkSync(`${root}/dir/plain`, `${root}/dir/sub/hard`);
  linkSync(`${root}/dir/plain`, `${root}/z-hard`);
  symlinkSync('../dir/plain', `${root}/dir/sub/rel-link`);
  symlinkSync('/etc/passwd', `${root}/abs-link`);
  lchownSync(`${root}/abs-link`, 7, 8);
  sh('mkfifo', '-m', '0640', `${root}/fifo`);
  sh('mknod', '-m', '0600', `${root}/null`, 'c', '1', '3');
  sh('mknod', '-m', '0660', `${root}/blk`, 'b', '7', '200');
  sh('setfattr', '-n', 'user.note', '-v', 'hi there', `${root}/dir/plain`);
  sh('setfattr', '-n', 'security.capability', '-v', '0x0100000200200000000000000000000000000000', `${root}/suid`);
  sh('setfattr', '-n', 'user.bin', '-v', '0x000aff3d0a', `${root}/dir`);
  const l1 = `${root}/${'l'.repeat(200)}`;
  mkdirSync(l1);
  writeFileSync(`${l1}/${'m'.repeat(120)}`, 'long');
  symlinkSync('t'.repeat(300), `${root}/long-target`);
  writeFileSync(`${root}/ünï-名前`, 'utf8');
  sh('setfattr', '-n', 'user.ключ', '-v', 'значение', `${root}/ünï-名前`);
  for (const p of ['dir/plain', 'mode0', 'suid', 'big', 'owned', 'fifo', 'null', 'blk', `${'l'.repeat(200)}/${'m'.repeat(120)}`, 'ünï-名前']) {
    utimesSync(`${root}/${p}`, 1_600_000_000, 1_600_000_000 + p.length);
  }
  for (const p of ['dir/sub/rel-link', 'abs-link', 'long-target']) lutimesSync(`${root}/${p}`, 1_500_000_000, 1_500_000_000);
  for (const p of ['dir/sub', 'dir', 'tmp', 'sgid', 'l'.repeat(200)]) utimesSync(`${root}/${p}`, 1_400_000_000, 1_400_000_000);
}

async function diffToBuffer(dir: string, opts: DiffOptions = {}): Promise<{ tar: Buffer; diffId: string; size: number }> {
  const pass = new PassThrough();
  const chunks: Buffer[] = [];
  pass.on('data', (c: Buffer) => chunks.push(c));
  const r = await diff(dir, pass, opts);
  const tar = Buffer.concat(chunks);
  return { tar, ...r };
}

async function headers(tar: Buffer): Promise<TarHeader[]> {
  const out: TarHeader[] = [];
  for await (const e of readTar(PassThrough.from([tar]))) out.push(e.header);
  return out;
}

test('diff → apply reproduces the tree exactly, and two diffs are byte-identical', async () => {
  const base = tempDir('roundtrip');
  try {
    makeTree(`${base}/src`);
    mkdirSync(`${base}/src`, { recursive: true });
    const a = await diffToBuffer(`${base}/src`);
    const b = await diffToBuffer(`${base}/src`);
    assert.ok(a.tar.equals(b.tar), 'same tree gives the same bytes');
    assert.equal(a.diffId, `sha256:${createHash('sha256').update(a.tar).digest('hex')}`);
    assert.equal(a.size, a.tar.length);

    writeFileSync(`${base}/layer.tar`, a.tar);
    const stats = await apply(createReadStream(`${base}/layer.tar`), `${base}/dst`);
    assert.equal(stats.diffId, a.diffId);
    const want = await snapshotTree(`${base}/src`);
    const got = await snapshotTree(`${base}/dst`);
    assert.deepEqual(got, want);
    assert.equal(got['suid']!.mode, 0o4755);
    assert.equal(got['mode0']!.mode, 0);
    assert.equal(got['tmp']!.mode, 0o1777);
    assert.equal(got['sgid']!.mode, 0o2755);
    assert.equal(got['owned']!.gid, 3_000_000);
    assert.equal(got['suid']!.xattrs?.['security.capability'], '0100000200200000000000000000000000000000');
    assert.equal(got['dir/sub/hard']!.linkGroup, got['dir/plain']!.linkGroup);
    assert.equal(Buffer.from(got['ünï-名前']!.xattrs?.['user.ключ'] ?? '', 'hex').toString(), 'значение');

    const hs = await headers(a.tar);
    const paths = hs.map((h) => h.path);
    assert.deepEqual(paths, [...paths].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y))), 'entries sorted by path bytes');
    assert.ok(paths.includes('dir/') && paths.includes('dir/sub/'), 'directories end with /');
    assert.ok(paths.every((p) => !p.startsWith('./') && !p.startsWith('/')));
    const hard = hs.filter((h) => h.type === 'hardlink');
    assert.deepEqual(hard.map((h) => [h.path, h.linkpath]), [['dir/sub/hard', 'dir/plain'], ['z-hard', 'dir/plain']]);
    assert.ok(hs.every((h) => h.uname === '' && h.gname === ''));
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('sourceDateEpoch clamps mtimes; exclude drops subtrees', async () => {
  const dir = tempDir('epoch');
  try {
    writeFileSync(`${dir}/old`, 'o');
    utimesSync(`${dir}/old`, 100, 100);
    writeFileSync(`${dir}/new`, 'n');
    mkdirSync(`${dir}/skip/deep`, { recursive: true });
    writeFileSync(`${dir}/skip/deep/f`, 'f');
    const { tar } = await diffToBuffer(dir, { sourceDateEpoch: 1000, exclude: (p) => p === 'skip' });
    const hs = await headers(tar);
    assert.deepEqual(hs.map((h) => [h.path, h.mtime]), [['new', 1000], ['old', 100]]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('GNU tar lists and extracts a diff with xattrs', async () => {
  const base = tempDir('gnu');
  try {
    makeTree(`${base}/src`);
    const out = createWriteStream(`${base}/l.tar`);
    await diff(`${base}/src`, out);
    const listing = sh('tar', '-tvf', `${base}/l.tar`);
    assert.match(listing, /^-rwsr-xr-x 0\/0 .* suid$/m);
    assert.match(listing, /^crw------- 0\/0 +1,3 .* null$/m);
    assert.match(listing, /^brw-rw---- 0\/0 +7,200 .* blk$/m);
    assert.match(listing, /^hrw-r--r-- 0\/0 .* z-hard link to dir\/plain$/m);
    assert.match(listing, new RegExp(`^-rw-r--r-- 0/0 +4 .* ${'l'.repeat(200)}/${'m'.repeat(120)}$`, 'm'));
    mkdirSync(`${base}/x`);
    sh('tar', '--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', `${base}/l.tar`, '-C', `${base}/x`);
    assert.match(sh('getfattr', '-n', 'security.capability', '-e', 'hex', `${base}/x/suid`), /=0x0100000200200000000000000000000000000000/);
    assert.match(sh('getfattr', '-n', 'user.bin', '-e', 'hex', `${base}/x/dir`), /=0x000aff3d0a/);
    assert.equal(readFileSync(`${base}/x/big`).length, 3 * 1024 * 1024 + 17);
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('whiteouts and opaque dirs built by hand', async () => {
  const dir = tempDir('wh');
  try {
    mkdirSync(`${dir}/etc/opq`, { recursive: true });
    sh('mknod', `${dir}/etc/gone`, 'c', '0', '0');
    sh('mknod', `${dir}/etc/real-dev`, 'c', '1', '5');
    sh('setfattr', '-n', 'trusted.overlay.opaque', '-v', 'y', `${dir}/etc/opq`);
    sh('setfattr', '-n', 'trusted.overlay.origin', '-v', '0x00fb', `${dir}/etc`);
    writeFileSync(`${dir}/etc/opq/-first`, 'sorted before the marker by name');
    writeFileSync(`${dir}/etc/opq/new`, 'n');
    const { tar } = await diffToBuffer(dir);
    const hs = await headers(tar);
    assert.deepEqual(
      hs.map((h) => `${h.type} ${h.path}`),
      ['dir etc/', 'file etc/.wh.gone', 'dir etc/opq/', 'file etc/opq/.wh..wh..opq', 'file etc/opq/-first', 'file etc/opq/new', 'char etc/real-dev'],
    );
    assert.ok(hs.every((h) => !h.xattrs || [...h.xattrs.keys()].every((k) => !k.startsWith('trusted.overlay.'))));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a real overlay mount: deletions become whiteouts, a recreated dir is opaque, overlay xattrs are dropped', async (t) => {
  const base = tempDir('ovl');
  for (const d of ['lower/etc/keep', 'lower/data/old', 'upper', 'work', 'merged']) mkdirSync(`${base}/${d}`, { recursive: true });
  writeFileSync(`${base}/lower/etc/passwd`, 'root:x:0:0\n');
  writeFileSync(`${base}/lower/etc/hosts`, '127.0.0.1 localhost\n');
  writeFileSync(`${base}/lower/etc/keep/k`, 'k');
  writeFileSync(`${base}/lower/data/old/file`, 'old');
  try {
    sh('mount', '-t', 'overlay', 'overlay', '-o', `lowerdir=${base}/lower,upperdir=${base}/upper,workdir=${base}/work,redirect_dir=off,metacopy=off,index=off`, `${base}/merged`);
  } catch (e) {
    rmSync(base, { recursive: true, force: true });
    t.skip(`overlay mount unavailable: ${(e as Error).message}`);
    return;
  }
  try {
    const m = `${base}/merged`;
    rmSync(`${m}/etc/hosts`);
    writeFileSync(`${m}/etc/passwd`, 'root:x:0:0\napp:x:1000:1000\n');
    writeFileSync(`${m}/etc/keep/added`, 'a');
    rmSync(`${m}/data`, { recursive: true });
    mkdirSync(`${m}/data`);
    writeFileSync(`${m}/data/fresh`, 'f');
  } finally {
    sh('umount', `${base}/merged`);
  }
  try {
    const { tar } = await diffToBuffer(`${base}/upper`);
    const hs = await headers(tar);
    assert.deepEqual(
      hs.map((h) => `${h.type} ${h.path}`),
      ['dir data/', 'file data/.wh..wh..opq', 'file data/fresh', 'dir etc/', 'file etc/.wh.hosts', 'dir etc/keep/', 'file etc/keep/added', 'file etc/passwd'],
    );
    assert.ok(!tar.includes('trusted.overlay'), 'no overlay xattrs in the layer');

    // Applying it onto a copy of the lower dir gives what the merged view showed.
    sh('cp', '-a', `${base}/lower`, `${base}/applied`);
    const stats = await apply(PassThrough.from([tar]), `${base}/applied`);
    assert.equal(stats.whiteouts, 2);
    const got = await snapshotTree(`${base}/applied`);
    assert.deepEqual(Object.keys(got).sort(), ['data', 'data/fresh', 'etc', 'etc/keep', 'etc/keep/added', 'etc/keep/k', 'etc/passwd']);
    assert.equal(readFileSync(`${base}/applied/etc/passwd`, 'utf8'), 'root:x:0:0\napp:x:1000:1000\n');
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('an aborted diff rejects', async () => {
  const dir = tempDir('abort');
  try {
    writeFileSync(`${dir}/f`, 'x');
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(diff(dir, new PassThrough(), { signal: ac.signal }), CancelledError);
    const late = new AbortController();
    const slow = new PassThrough({ highWaterMark: 1 });
    const running = diff(dir, slow, { signal: late.signal });
    setImmediate(() => late.abort());
    await assert.rejects(running, CancelledError);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A tree with a few MiB of large files and enough small ones to fill several batches. */
function makeBatchTree(root: string): void {
  mkdirSync(`${root}/small`, { recursive: true });
  for (let i = 0; i < 600; i++) writeFileSync(`${root}/small/f${i}`, `file ${i} `.repeat(1 + (i % 300)));
  writeFileSync(`${root}/large`, Buffer.alloc(5 * 1024 * 1024 + 3, 0x33));
  writeFileSync(`${root}/z-after`, 'the end');
}

test('a plain Writable gets the archive in a few reused batches, each kept intact until its callback', async () => {
  const dir = tempDir('reuse');
  try {
    makeBatchTree(dir);
    const whole = createHash('sha256');
    const buffers = new Set<ArrayBufferLike>();
    let changed = 0;
    let writes = 0;
    const out = new Writable({
      write(chunk: Buffer, _enc, cb) {
        writes++;
        buffers.add(chunk.buffer);
        whole.update(chunk);
        const copy = Buffer.from(chunk);
        // Calls back later, as a file would: the chunk must not change before then.
        setImmediate(() => {
          if (!copy.equals(chunk)) changed++;
          cb();
        });
      },
    });
    const r = await diff(dir, out);
    assert.equal(`sha256:${whole.digest('hex')}`, r.diffId);
    assert.equal(changed, 0, 'no batch was written over before its callback');
    assert.ok(writes > 6, `${writes} writes`);
    assert.ok(buffers.size <= 3, `${buffers.size} distinct buffers for ${writes} writes`);
    // The same bytes as a destination that keeps every chunk.
    const kept = await diffToBuffer(dir);
    assert.equal(kept.diffId, r.diffId);
    assert.equal(`sha256:${createHash('sha256').update(kept.tar).digest('hex')}`, r.diffId);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a Duplex destination gets a buffer of its own for every batch, so its reader may keep them', async () => {
  const dir = tempDir('duplex');
  try {
    makeBatchTree(dir);
    const pass = new PassThrough({ highWaterMark: 1 });
    const chunks: Buffer[] = [];
    // Read slowly: batches pile up in the PassThrough while diff goes on.
    const reading = (async () => {
      for await (const c of pass as AsyncIterable<Buffer>) {
        chunks.push(c);
        await new Promise((r) => setImmediate(r));
      }
    })();
    const [r] = await Promise.all([diff(dir, pass), reading]);
    const tar = Buffer.concat(chunks);
    assert.equal(`sha256:${createHash('sha256').update(tar).digest('hex')}`, r.diffId);
    assert.equal(new Set(chunks.map((c) => c.buffer)).size, chunks.length);
    const names = (await headers(tar)).map((h) => h.path);
    assert.deepEqual([names[0], names.at(-2), names.at(-1)], ['large', 'small/f99', 'z-after']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a tree that turns out unwritable part way fails the diff and the destination, after bytes went out', async () => {
  const dir = tempDir('late-error');
  try {
    makeBatchTree(dir);
    // Sorted after everything else, so the walk meets it only at the end.
    mkdirSync(`${dir}/zz`);
    writeFileSync(Buffer.from(`${dir}/zz/bad-\xff`, 'latin1'), 'x');
    let received = 0;
    const out = new Writable({
      write(chunk: Buffer, _enc, cb) {
        received += chunk.length;
        cb();
      },
    });
    out.on('error', () => undefined);
    await assert.rejects(diff(dir, out), (e: unknown) => {
      assert.equal((e as { code?: string }).code, 'UNSUPPORTED_NAME');
      return true;
    });
    assert.ok(received > 5 * 1024 * 1024, 'the walk streamed: the archive was under way');
    assert.ok(out.destroyed, 'the destination is not left waiting for an end');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("fuse-overlayfs's upper dir gives the layer overlayfs's does: its whiteout files, marker files and xattrs, and its opaque new dirs", async () => {
  const base = tempDir('fuse-forms');
  try {
    // What both drivers ran over: /d and /bin/ls exist below, /new does not.
    mkdirSync(`${base}/lower/d/old`, { recursive: true });
    mkdirSync(`${base}/lower/bin`, { recursive: true });
    writeFileSync(`${base}/lower/bin/ls`, 'ls');
    const layout = (root: string, fuse: boolean): void => {
      for (const d of ['d', 'bin', 'new/sub']) mkdirSync(`${root}/${d}`, { recursive: true });
      writeFileSync(`${root}/d/fresh`, 'f');
      writeFileSync(`${root}/new/sub/file`, 'n');
      if (fuse) {
        // rm /bin/ls where mknod is refused; rm -rf /d && mkdir /d; mkdir -p /new/sub.
        writeFileSync(`${root}/bin/.wh.ls`, '');
        chmodSync(`${root}/bin/.wh.ls`, 0o700);
        for (const d of ['d', 'new', 'new/sub']) {
          sh('setfattr', '-n', 'user.fuseoverlayfs.opaque', '-v', 'y', `${root}/${d}`);
          writeFileSync(`${root}/${d}/.wh..wh..opq`, '');
          chmodSync(`${root}/${d}/.wh..wh..opq`, 0o700);
          sh('mknod', '-m', '0700', `${root}/${d}/.wh..opq`, 'c', '0', '0');
        }
        sh('setfattr', '-n', 'user.fuseoverlayfs.origin', '-v', 'x', `${root}/bin`);
      } else {
        sh('mknod', '-m', '0', `${root}/bin/ls`, 'c', '0', '0');
        sh('setfattr', '-n', 'user.overlay.opaque', '-v', 'y', `${root}/d`);
      }
    };
    layout(`${base}/fuse`, true);
    layout(`${base}/native`, false);
    const opts = { sourceDateEpoch: 1000, lowerDirs: [`${base}/lower`] };
    const fuse = await diffToBuffer(`${base}/fuse`, opts);
    const native = await diffToBuffer(`${base}/native`, opts);
    const hs = await headers(fuse.tar);
    assert.deepEqual(
      hs.map((h) => `${h.type} ${h.path} ${h.mode.toString(8)}`),
      ['dir bin/ 755', 'file bin/.wh.ls 0', 'dir d/ 755', 'file d/.wh..wh..opq 0', 'file d/fresh 644', 'dir new/ 755', 'dir new/sub/ 755', 'file new/sub/file 644'],
    );
    assert.ok(hs.every((h) => !h.xattrs), 'no fuse-overlayfs xattrs in the layer');
    assert.equal(fuse.diffId, native.diffId);
    // Without the lowers, a new opaque dir keeps its (harmless) marker.
    const bare = await headers((await diffToBuffer(`${base}/fuse`, { sourceDateEpoch: 1000 })).tar);
    assert.ok(bare.some((h) => h.path === 'new/.wh..wh..opq'));
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});

test('where fuse-overlayfs could set no xattr, its marker file alone makes the dir opaque', async () => {
  const dir = tempDir('fuse-noxattr');
  try {
    mkdirSync(`${dir}/d`);
    writeFileSync(`${dir}/d/.wh..wh..opq`, '');
    writeFileSync(`${dir}/d/kept`, 'k');
    const hs = await headers((await diffToBuffer(dir)).tar);
    assert.deepEqual(hs.map((h) => `${h.type} ${h.path} ${h.mode.toString(8)}`), ['dir d/ 755', 'file d/.wh..wh..opq 0', 'file d/kept 644']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
