import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, lstatSync, readlinkSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { TsbuildError } from '@tsbuild/errors';
import { sha256 } from '@tsbuild/oci';
import type { Digest } from '@tsbuild/oci';
import { openSnapshotter } from './index.ts';
import { readMounts } from './mountinfo.ts';

const key = (s: string): Digest => sha256(s);

function lstatOrNone(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch {
    return undefined;
  }
}

async function mountsBelow(dir: string): Promise<string[]> {
  return (await readMounts()).map((m) => m.mountPoint).filter((p) => p.startsWith(`${dir}/`));
}

/** Unpacks a chain of `n` layers, layer i adding file f<i>; returns the chain IDs, base first. */
async function stack(s: Awaited<ReturnType<typeof openSnapshotter>>, tag: string, n: number): Promise<Digest[]> {
  const ids: Digest[] = [];
  let parent: Digest | undefined;
  for (let i = 0; i < n; i++) {
    const id = key(`${tag}-${i}`);
    await s.unpack(id, parent, async (dir) => {
      await writeFile(join(dir, `f${i}`), `layer ${i}\n`);
    });
    ids.push(id);
    parent = id;
  }
  return ids;
}

describe('snapshotter', () => {
  let base: string;
  before(async () => {
    base = await mkdtemp(join(tmpdir(), 'tsbuild-snap-'));
  });
  after(async () => {
    const left = await mountsBelow(base);
    await rm(base, { recursive: true, force: true });
    assert.deepEqual(left, [], 'tests left mounts behind');
  });

  it('unpacks layers and mounts them merged, newest on top', async () => {
    const s = await openSnapshotter({ root: join(base, 'merge') });
    const a = key('a');
    const b = key('b');
    assert.equal(await s.has(a), false);
    await s.unpack(a, undefined, async (dir) => {
      await writeFile(join(dir, 'shared'), 'from a');
      await writeFile(join(dir, 'only-a'), 'a');
    });
    await s.unpack(b, a, async (dir) => {
      await writeFile(join(dir, 'shared'), 'from b');
    });
    assert.equal(await s.has(a), true);
    assert.equal((await s.get(b))?.parent, a);
    const act = await s.prepare(b);
    assert.equal(await readFile(join(act.rootfs, 'shared'), 'utf8'), 'from b');
    assert.equal(await readFile(join(act.rootfs, 'only-a'), 'utf8'), 'a');
    await writeFile(join(act.rootfs, 'new'), 'n');
    await unlink(join(act.rootfs, 'only-a'));
    assert.deepEqual((await readdir(act.upper)).sort(), ['new', 'only-a']);
    const c = key('c');
    await assert.rejects(act.commit(c, a), /prepared from/);
    const dir = await act.commit(c, b);
    assert.equal(await readFile(join(dir, 'new'), 'utf8'), 'n');
    assert.equal((await s.get(c))?.parent, b);
    await assert.rejects(act.release(), /already committed/);

    const act2 = await s.prepare(c);
    assert.deepEqual((await readdir(act2.rootfs)).sort(), ['new', 'shared']);
    await act2.release();
    assert.deepEqual(await readdir(join(s.root, 'a')), []);
    assert.deepEqual(await mountsBelow(s.root), []);
  });

  it('prepares an empty rootfs for scratch and discards a released one', async () => {
    const s = await openSnapshotter({ root: join(base, 'scratch') });
    const act = await s.prepare(undefined);
    assert.deepEqual(await readdir(act.rootfs), []);
    await mkdir(join(act.rootfs, 'etc'));
    const id = key('scratch-child');
    await act.commit(id);
    const info = await s.get(id);
    assert.equal(info?.parent, undefined);
    assert.deepEqual(await readdir(info?.dir ?? '/nonexistent'), ['etc']);
    assert.deepEqual(await readdir(join(s.root, 'e')), []);
  });

  it('refuses a parent that does not exist', async () => {
    const s = await openSnapshotter({ root: join(base, 'missing') });
    await assert.rejects(s.prepare(key('nope')), (e: unknown) => e instanceof TsbuildError && e.code === 'SNAPSHOT_NOT_FOUND');
    await assert.rejects(
      s.unpack(key('x'), key('nope'), async () => {}),
      (e: unknown) => e instanceof TsbuildError && e.code === 'SNAPSHOT_NOT_FOUND',
    );
  });

  it('leaves nothing behind when fill fails', async () => {
    const s = await openSnapshotter({ root: join(base, 'failfill') });
    await assert.rejects(
      s.unpack(key('bad'), undefined, async (dir) => {
        await writeFile(join(dir, 'partial'), 'x');
        throw new Error('tar broke');
      }),
      /tar broke/,
    );
    assert.equal(await s.has(key('bad')), false);
    assert.deepEqual(await readdir(join(s.root, 'l')), []);
    assert.deepEqual(await readdir(join(s.root, 't')), []);
  });

  it('keeps one layer when the same key is unpacked concurrently', async () => {
    const root = join(base, 'concurrent');
    const s1 = await openSnapshotter({ root });
    const s2 = await openSnapshotter({ root });
    const id = key('same');
    let fills = 0;
    const fill = async (dir: string) => {
      fills++;
      await new Promise((r) => setTimeout(r, 20));
      await writeFile(join(dir, 'f'), 'x');
    };
    await Promise.all([s1.unpack(id, undefined, fill), s1.unpack(id, undefined, fill), s2.unpack(id, undefined, fill)]);
    // Within one snapshotter the second call joins the first; across two, both fill and one wins.
    assert.equal(fills, 2);
    assert.equal((await s1.list()).length, 1);
    assert.equal((await readdir(join(root, 'l'))).length, 1);
    assert.deepEqual(await readdir(join(root, 't')), []);
  });

  it('replaces an index entry whose layer dir was deleted by hand', async () => {
    const s = await openSnapshotter({ root: join(base, 'dangling') });
    const id = key('dangling');
    await s.unpack(id, undefined, async (dir) => writeFile(join(dir, 'v1'), ''));
    const info = await s.get(id);
    assert.ok(info);
    await rm(join(info.dir, '..'), { recursive: true });
    assert.equal(await s.has(id), false);
    await s.unpack(id, undefined, async (dir) => writeFile(join(dir, 'v2'), ''));
    assert.deepEqual(await readdir((await s.get(id))?.dir ?? '/nonexistent'), ['v2']);
  });

  it('mounts a 130-layer chain with every file visible', async () => {
    const s = await openSnapshotter({ root: join(base, 'deep') });
    const ids = await stack(s, 'deep', 130);
    const act = await s.prepare(ids[ids.length - 1]);
    const names = await readdir(act.rootfs);
    assert.equal(names.length, 130);
    assert.equal(await readFile(join(act.rootfs, 'f0'), 'utf8'), 'layer 0\n');
    assert.equal(await readFile(join(act.rootfs, 'f129'), 'utf8'), 'layer 129\n');
    await act.release();
  });

  it('flattens the oldest layers when a chain exceeds the mount limits', async () => {
    const s = await openSnapshotter({ root: join(base, 'flat'), maxLowerLayers: 16 });
    const ids = await stack(s, 'flat', 130);
    // A deletion inside the flattened part must stay deleted in the merged view.
    const act0 = await s.prepare(ids[ids.length - 1]);
    await unlink(join(act0.rootfs, 'f3'));
    const top = key('flat-top');
    await act0.commit(top);
    const act = await s.prepare(top);
    const names = new Set(await readdir(act.rootfs));
    assert.equal(names.size, 129);
    for (let i = 0; i < 130; i++) assert.equal(names.has(`f${i}`), i !== 3, `f${i}`);
    assert.equal(await readFile(join(act.rootfs, 'f77'), 'utf8'), 'layer 77\n');
    await act.release();
    assert.ok((await readdir(join(s.root, 'f'))).length > 0, 'expected a flattened dir');

    // The option-length limit alone forces flattening too.
    const s2 = await openSnapshotter({ root: join(base, 'flat-bytes'), maxOptionBytes: 400 });
    const ids2 = await stack(s2, 'bytes', 130);
    const act2 = await s2.prepare(ids2[ids2.length - 1]);
    assert.equal((await readdir(act2.rootfs)).length, 130);
    await act2.release();
  });

  it('removes layers with their descendants and prunes all but what is kept', async () => {
    const s = await openSnapshotter({ root: join(base, 'gc') });
    const [x0, x1, x2] = await stack(s, 'x', 3);
    const [y0] = await stack(s, 'y', 1);
    assert.ok(x0 && x1 && x2 && y0);
    const act = await s.prepare(x2);
    await assert.rejects(s.remove(x1), (e: unknown) => e instanceof TsbuildError && e.code === 'SNAPSHOT_IN_USE');
    await act.release();
    assert.deepEqual((await s.remove(x1)).sort(), [x1, x2].sort());
    assert.equal(await s.has(x1), false);
    assert.equal(await s.has(x0), true);

    const [z0, z1] = await stack(s, 'z', 2);
    assert.ok(z0 && z1);
    const removed = await s.prune(new Set([z1]));
    assert.deepEqual(removed.sort(), [x0, y0].sort());
    assert.deepEqual((await s.list()).map((i) => i.chainId).sort(), [z0, z1].sort());
    assert.equal((await readdir(join(s.root, 'l'))).length, 2);
  });

  it('unmounts and removes what a killed process left behind', async () => {
    const root = join(base, 'crash');
    const s = await openSnapshotter({ root });
    const [l0] = await stack(s, 'crash', 1);
    assert.ok(l0);
    const script = `
      import { openSnapshotter } from ${JSON.stringify(fileURLToPath(new URL('./index.ts', import.meta.url)))};
      const s = await openSnapshotter({ root: ${JSON.stringify(root)} });
      const act = await s.prepare(${JSON.stringify(l0)});
      process.stdout.write(act.rootfs + '\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const rootfs = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        if (out.includes('\n')) resolve(out.trim());
      });
      child.once('exit', (code) => reject(new Error(`child exited early with ${code}`)));
    });
    assert.deepEqual(await mountsBelow(root), [rootfs]);
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    assert.ok(existsSync(join(rootfs, 'f0')), 'the dead process mount is still there');

    await openSnapshotter({ root });
    assert.deepEqual(await mountsBelow(root), []);
    assert.deepEqual(await readdir(join(root, 'a')), []);
    assert.equal(await s.has(l0), true);
  });
  it('sweeps a layer a killed process left without its key; a clean exit leaves no open marker', async () => {
    const root = join(base, 'unkeyed');
    const s = await openSnapshotter({ root });
    const [l0] = await stack(s, 'unkeyed', 1);
    assert.ok(l0);
    const index = JSON.stringify(fileURLToPath(new URL('./index.ts', import.meta.url)));
    const child = (script: string) =>
      spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const others = async () => (await readdir(join(root, 'o'))).filter((n) => !n.startsWith(`${process.pid}-`));

    const clean = child(`import { openSnapshotter } from ${index}; await openSnapshotter({ root: ${JSON.stringify(root)} });`);
    assert.equal(await new Promise((r) => clean.once('exit', r)), 0);
    assert.deepEqual(await others(), [], 'a process that exits cleanly removes its open marker');

    // A kill between a layer's rename into l/ and its key leaves an unkeyed layer dir: the child
    // publishes a layer, drops its key as that kill would have, and is killed.
    const half = key('half');
    const killed = child(`
      import { rm } from 'node:fs/promises';
      import { openSnapshotter } from ${index};
      const s = await openSnapshotter({ root: ${JSON.stringify(root)} });
      await s.unpack(${JSON.stringify(half)}, undefined, async () => {});
      await rm(${JSON.stringify(join(root, 'keys', half.slice('sha256:'.length)))});
      process.stdout.write('ready\\n');
      setInterval(() => {}, 1000);
    `);
    await new Promise<void>((resolve, reject) => {
      killed.stdout.setEncoding('utf8').on('data', (d: string) => d.includes('ready') && resolve());
      killed.once('exit', (code) => reject(new Error(`child exited early with ${code}`)));
    });
    const exited = new Promise((r) => killed.once('exit', r));
    killed.kill('SIGKILL');
    await exited;
    assert.equal((await readdir(join(root, 'l'))).length, 2);
    assert.equal((await others()).length, 1, 'the killed process left its open marker');

    const again = await openSnapshotter({ root });
    assert.equal((await readdir(join(root, 'l'))).length, 1, 'the unkeyed layer dir is swept');
    assert.deepEqual(await others(), []);
    assert.equal(await again.has(l0), true);
    assert.equal(await again.has(half), false);
  });
  it('reads a chain unmounted as the kernel merges it: whiteouts, opaque dirs, type changes, symlinks', async () => {
    const s = await openSnapshotter({ root: join(base, 'merged') });
    // Each layer is made through a mounted overlay, so its whiteouts and opaque dirs are the kernel's.
    const steps: ((r: string) => Promise<void>)[] = [
      async (r) => {
        for (const d of ['a/b/c', 'gone/deep', 'opq/old', 'f2d', 'keep']) await mkdir(join(r, d), { recursive: true });
        for (const f of ['a/b/c/file', 'a/top', 'gone/deep/x', 'opq/old/y', 'opq/z', 'd2f', 'keep/k', 'f2d/inner']) await writeFile(join(r, f), f);
        await symlink('a/b', join(r, 'link'));
        await symlink('/etc/passwd', join(r, 'abs'));
      },
      async (r) => {
        await rm(join(r, 'gone'), { recursive: true });
        await rm(join(r, 'opq'), { recursive: true });
        await mkdir(join(r, 'opq'));
        await writeFile(join(r, 'opq/new'), 'new');
        await rm(join(r, 'a/top'));
        await writeFile(join(r, 'a/b/c/added'), 'added');
      },
      async (r) => {
        await rm(join(r, 'f2d'), { recursive: true });
        await writeFile(join(r, 'f2d'), 'now a file');
        await rm(join(r, 'd2f'));
        await mkdir(join(r, 'd2f/sub'), { recursive: true });
        await writeFile(join(r, 'gone'), 'back as a file');
        await rm(join(r, 'link'));
        await symlink('keep', join(r, 'link'));
      },
    ];
    let parent: Digest | undefined;
    for (const [i, step] of steps.entries()) {
      const act = await s.prepare(parent);
      await step(act.rootfs);
      parent = key(`merged-${i}`);
      await act.commit(parent);
    }
    assert.ok(parent);
    const merged = await s.merged(parent);
    assert.ok(merged, 'the chain can be read unmounted');
    // Every path any layer holds, and one missing name in each directory.
    const paths = new Set<string>(['']);
    const walk = async (dir: string, rel: string): Promise<void> => {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        const r = rel === '' ? e.name : `${rel}/${e.name}`;
        paths.add(r);
        paths.add(`${r}/nothing`);
        if (e.isDirectory()) await walk(join(dir, e.name), r);
      }
    };
    for (const l of merged.layers) await walk(l, '');
    const view = await s.prepare(parent);
    try {
      const shown = (st: Stats | undefined) =>
        st && { type: st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'link' : st.isFile() ? 'file' : 'other', mode: st.mode, uid: st.uid, size: st.isFile() ? st.size : 0, mtime: st.mtimeMs };
      let present = 0;
      // The root is left out: a mounted view shows its own new upper dir's times there.
      for (const p of [...paths].sort().filter((p) => p !== '')) {
        const want = lstatOrNone(join(view.rootfs, p));
        // Below a symlink the mount would follow it; the merged tree never does (nor is it asked to).
        if (p.split('/').slice(0, -1).some((_, i, a) => lstatOrNone(join(view.rootfs, ...a.slice(0, i + 1)))?.isSymbolicLink())) continue;
        assert.deepEqual(shown(merged.lstat(p)), shown(want), p);
        if (want?.isSymbolicLink()) assert.equal(merged.symlinkTarget(p), readlinkSync(join(view.rootfs, p)), p);
        if (want) present++;
      }
      assert.ok(present >= 15, `${present} paths compared`);
      assert.equal(merged.lstat('gone/deep'), undefined);
      assert.equal(merged.lstat('opq/old'), undefined);
      assert.equal(merged.lstat('opq/z'), undefined);
      assert.ok(merged.lstat('opq/new')?.isFile());
    } finally {
      await view.release();
    }
  });
});
