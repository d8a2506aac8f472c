/**
 * The layer a COPY writes straight from its sources (copy-layer.ts) against the layer of the way
 * it was made before: an overlay over the unpacked parent, copyInto, then diff of the upper dir.
 * Both come from the same snapshots and sources; the two tars must list the same entries, in the
 * same order, with the same type, mode, owner, size, link target, xattrs, content and mtime, and
 * with SOURCE_DATE_EPOCH set (so the moment each way ran does not show) the very same bytes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { diff, readTar, writeXattrs } from '@tsbuild/layer';
import { sha256 } from '@tsbuild/oci';
import type { Digest } from '@tsbuild/oci';
import { openSnapshotter } from '@tsbuild/snapshot';
import type { Snapshotter } from '@tsbuild/snapshot';
import { parseChmod } from './chmod.ts';
import { BuildContext } from './context.ts';
import type { ResolveOptions } from './context.ts';
import { copyInto } from './copy.ts';
import type { CopyOptions } from './copy.ts';
import { CopyLayerPlan } from './copy-layer.ts';
import { NO_IGNORE } from './ignore.ts';
import { makeTree, tempDir } from './testing.ts';

const OLD = new Date('2001-02-03T04:05:06Z');
const CAP = Buffer.from('0100000200200000000000000000000000000000', 'hex');

interface Op {
  /** Which context the sources come from (a second one stands for staged heredocs). */
  ctx?: 'main' | 'staged';
  sources: string[];
  dest: string;
  opts?: Partial<CopyOptions> & ResolveOptions;
}

interface Scenario {
  name: string;
  context: string[];
  /** Metadata and links for the context, after the files exist. */
  setup?: (dir: string) => void | Promise<void>;
  staged?: string[];
  /** The parent filesystem; undefined is an empty tree (scratch, COPY --link). */
  image?: string[];
  imageSetup?: (dir: string) => void | Promise<void>;
  ops: Op[];
  /** Both ways must fail with this message. */
  error?: RegExp;
}

function chmod(dir: string, rel: string, mode: number): void {
  fs.chmodSync(path.join(dir, rel), mode);
}

function xattr(dir: string, rel: string, name: string, value: Buffer | string): Promise<void> {
  return writeXattrs([[path.join(dir, rel), new Map([[name, Buffer.from(value)]])]]);
}

/** Old, fixed times everywhere, so an mtime the copy keeps is told apart from one it sets. */
function ageTree(dir: string): void {
  const visit = (p: string): void => {
    const st = fs.lstatSync(p);
    if (st.isDirectory()) for (const n of fs.readdirSync(p)) visit(path.join(p, n));
    fs.lutimesSync(p, OLD, OLD);
  };
  for (const n of fs.readdirSync(dir)) visit(path.join(dir, n));
}

const LONG = `long/${'n'.repeat(90)}/${'m'.repeat(60)}.txt`;

const scenarios: Scenario[] = [
  { name: 'file to dir/', context: ['a.txt'], ops: [{ sources: ['a.txt'], dest: '/x/' }] },
  { name: 'file to a new name', context: ['a.txt'], image: ['etc/'], ops: [{ sources: ['a.txt'], dest: '/etc/renamed' }] },
  {
    name: 'directory contents, parents created',
    context: ['dir/x.sh', 'dir/sub/y.txt', 'dir/sub/deeper/z'],
    setup: (d) => {
      chmod(d, 'dir/x.sh', 0o755);
      chmod(d, 'dir/sub', 0o700);
    },
    image: ['bin/sh'],
    ops: [{ sources: ['dir'], dest: '/opt/app' }],
  },
  {
    name: 'several sources into a directory, workdir-relative',
    context: ['a.txt', 'dir/x.sh', 'b.txt'],
    image: ['w/'],
    ops: [{ sources: ['a.txt', 'dir/x.sh', 'b.txt'], dest: 'rel/', opts: { workdir: '/w' } }],
  },
  {
    name: 'wildcards',
    context: ['a.txt', 'b.txt', 'c.md', 'dir/x', 'dir/sub/y', 'dox/q'],
    ops: [
      { sources: ['*.txt'], dest: '/t/' },
      { sources: ['d*'], dest: '/f/' },
    ],
  },
  {
    name: 'existing directories keep their metadata or take the source metadata',
    context: ['src/sub/new.txt', 'src/sub/inner/i', 'src/top.txt', 'src/emptydir/'],
    setup: (d) => {
      chmod(d, 'src/sub', 0o711);
      chmod(d, 'src', 0o700);
    },
    image: ['app/sub/old.txt', 'app/sub/inner/', 'app/other/keep', 'app/top.txt', 'usr/lib/x'],
    imageSetup: async (d) => {
      chmod(d, 'app', 0o750);
      chmod(d, 'app/sub', 0o705);
      fs.chownSync(path.join(d, 'app'), 5, 6);
      fs.chownSync(path.join(d, 'app/sub'), 7, 8);
      await xattr(d, 'app', 'user.lower', 'app');
      await xattr(d, 'app/sub', 'user.lower', 'sub');
      await xattr(d, 'app/sub', 'trusted.kept', 'yes');
    },
    ops: [{ sources: ['src/'], dest: '/app/' }],
  },
  {
    name: "the image's symlinks along the destination, one pointing outside the root",
    context: ['a.txt', 'dir/f'],
    image: ['etc/conf/', 'x -> /etc', 'y -> ../../../../host', 'lib -> usr/lib', 'usr/lib/', 'etc/passwd', 'etc/link -> passwd'],
    imageSetup: (d) => chmod(d, 'etc', 0o751),
    ops: [
      { sources: ['a.txt'], dest: '/x/' },
      { sources: ['a.txt'], dest: '/y/' },
      { sources: ['a.txt'], dest: '/y/deeper/../../../z' },
      { sources: ['dir'], dest: '/lib/pkg/' },
      { sources: ['a.txt'], dest: '/x/conf' },
      { sources: ['a.txt'], dest: '/etc/link' },
    ],
  },
  {
    name: '--chown by id and --chmod octal',
    context: ['dir/x', 'dir/s/y', 'one'],
    setup: (d) => chmod(d, 'dir/x', 0o640),
    image: ['new/'],
    ops: [
      { sources: ['dir'], dest: '/new/app/', opts: { chown: { uid: 1000, gid: 1001 } } },
      { sources: ['one'], dest: '/o', opts: { chmod: parseChmod('4755') } },
    ],
  },
  {
    name: '--chmod symbolic',
    context: ['dir/x', 'dir/s/y'],
    setup: (d) => {
      chmod(d, 'dir/x', 0o640);
      chmod(d, 'dir/s', 0o750);
    },
    ops: [{ sources: ['dir'], dest: '/sym/', opts: { chmod: parseChmod('u+x,g=u,o-r'), chown: { uid: 3, gid: 4 } } }],
  },
  {
    name: '--parents with a /./ pivot',
    context: ['a/b/c.txt', 'a/b/d.txt', 'x/y/z.txt', 'top.txt', 'p/q/r/s.txt'],
    setup: (d) => {
      chmod(d, 'a', 0o711);
      chmod(d, 'p/q', 0o750);
    },
    image: ['dst/a/'],
    imageSetup: (d) => chmod(d, 'dst/a', 0o700),
    ops: [{ sources: ['a/b/*.txt', 'x/./y/z.txt', 'top.txt', 'p/./q/r'], dest: '/dst', opts: { parents: true } }],
  },
  {
    name: 'hardlinks inside the copy',
    context: ['d/file', 'd/z/other', 'd/rel -> file'],
    setup: (d) => {
      fs.linkSync(path.join(d, 'd/file'), path.join(d, 'd/hard'));
      fs.linkSync(path.join(d, 'd/file'), path.join(d, 'd/a-first'));
      fs.linkSync(path.join(d, 'd/z/other'), path.join(d, 'd/z-link'));
      fs.chownSync(path.join(d, 'd/file'), 77, 88);
    },
    ops: [{ sources: ['d'], dest: '/t/' }],
  },
  { name: 'a long name', context: [LONG, 'short'], ops: [{ sources: ['long', 'short'], dest: '/deep/' + 'p'.repeat(70) + '/' }] },
  {
    name: 'kept ownership with a user xattr and security.capability',
    context: ['bin/tool', 'bin/sub/x', 'bin/ln -> tool'],
    setup: async (d) => {
      fs.chownSync(path.join(d, 'bin/tool'), 77, 88);
      fs.chownSync(path.join(d, 'bin/sub'), 9, 10);
      fs.lchownSync(path.join(d, 'bin/ln'), 11, 12);
      chmod(d, 'bin/tool', 0o4750);
      await xattr(d, 'bin/tool', 'user.note', 'kept');
      await xattr(d, 'bin/tool', 'security.capability', CAP);
      await xattr(d, 'bin/sub', 'user.dir', 'yes');
      await xattr(d, 'bin/sub', 'trusted.overlay.opaque', 'y');
    },
    image: ['kept/sub/', 'plain/'],
    imageSetup: async (d) => {
      await xattr(d, 'kept/sub', 'user.lower', 'l');
      await xattr(d, 'kept/sub', 'user.dir', 'replaced');
    },
    ops: [
      { sources: ['bin'], dest: '/kept/', opts: { keepOwnership: true } },
      { sources: ['bin'], dest: '/plain/' },
    ],
  },
  {
    name: 'names sort by their bytes, directories as if they ended in /',
    context: ['u/a\u{1F600}', 'u/a\uFB00', 'u/a-b', 'u/a/x', 'u/a.txt', 'u/\u00e9', 'u/a0', 'u/a/y/z'],
    ops: [{ sources: ['u'], dest: '/u/' }],
  },
  { name: 'an empty directory', context: ['empty/', 'holder/inner/'], ops: [{ sources: ['empty', 'holder'], dest: '/e/' }] },
  {
    name: 'a destination whose ancestors partly exist',
    context: ['a.txt', 'tree/f'],
    image: ['usr/share/doc/', 'usr/bin/sh', 'var/'],
    imageSetup: async (d) => {
      chmod(d, 'usr', 0o751);
      fs.chownSync(path.join(d, 'usr/share'), 2, 3);
      await xattr(d, 'usr/share', 'user.a', 'b');
    },
    ops: [
      { sources: ['a.txt'], dest: '/usr/share/doc/new/deeper/' },
      { sources: ['tree'], dest: '/usr/local/tree', opts: { chown: { uid: 50, gid: 60 } } },
    ],
  },
  {
    name: 'replacing files and symlinks of the image, --exclude',
    context: ['etc/passwd', 'etc/hosts', 'etc/skip.bak', 'etc/sub/x'],
    image: ['etc/passwd', 'etc/hosts -> /elsewhere', 'etc/sub/old'],
    ops: [{ sources: ['etc'], dest: '/etc/', opts: { excludes: ['*.bak'] } }],
  },
  {
    name: 'staged heredocs, then context sources into the same directory',
    context: ['a.txt', 'dir/b'],
    staged: ['doc1', 'doc2'],
    image: ['srv/'],
    ops: [
      { ctx: 'staged', sources: ['doc1', 'doc2'], dest: '/srv/out/' },
      { sources: ['a.txt', 'dir'], dest: '/srv/out/' },
    ],
  },
  { name: 'an empty wildcard', context: ['a.txt'], image: ['x/'], ops: [{ sources: ['*.none'], dest: '/x/' }] },
  {
    name: 'two sources write the same names',
    context: ['one/same/f', 'one/g', 'two/same/f', 'two/g'],
    setup: (d) => {
      chmod(d, 'one/same', 0o701);
      chmod(d, 'two/same', 0o702);
    },
    ops: [{ sources: ['one', 'two'], dest: '/m/' }],
  },
  { name: 'several sources need a directory', context: ['a.txt', 'b.txt'], image: ['out'], ops: [{ sources: ['a.txt', 'b.txt'], dest: '/out' }], error: /destination must be a directory/ },
  { name: 'a directory onto a file', context: ['dir/f'], image: ['app'], ops: [{ sources: ['dir'], dest: '/app' }], error: /cannot copy to non-directory: \/app/ },
  { name: 'a leaf symlink in the image', context: ['dir/lib/l.so'], image: ['app/lib -> /usr/lib', 'usr/lib/'], ops: [{ sources: ['dir'], dest: '/app' }], error: /cannot copy to non-directory: \/app\/lib/ },
  { name: 'a file on the way', context: ['a.txt'], image: ['z'], ops: [{ sources: ['a.txt'], dest: '/z/sub/' }], error: /is not a directory/ },
];

interface Listed {
  path: string;
  type: string;
  mode: string;
  owner: string;
  size: number;
  link?: string;
  xattrs?: Record<string, string>;
  content?: string;
  mtime: number;
}

async function listTar(tar: Buffer): Promise<Listed[]> {
  const out: Listed[] = [];
  for await (const e of readTar(Readable.from([tar]))) {
    const h = e.header;
    const parts: Buffer[] = [];
    for await (const c of e.body) parts.push(c);
    const l: Listed = { path: h.path, type: h.type, mode: h.mode.toString(8), owner: `${h.uid}:${h.gid}`, size: h.size, mtime: h.mtime };
    if (h.linkpath) l.link = h.linkpath;
    if (h.xattrs && h.xattrs.size > 0) l.xattrs = Object.fromEntries([...h.xattrs].map(([k, v]) => [k, Buffer.from(v).toString('hex')]));
    if (h.type === 'file') l.content = Buffer.concat(parts).toString('base64');
    out.push(l);
  }
  return out;
}

function collector(): { stream: Writable; bytes: () => Buffer } {
  const parts: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      parts.push(Buffer.from(chunk));
      cb();
    },
  });
  return { stream, bytes: () => Buffer.concat(parts) };
}

async function outcome<T>(fn: () => Promise<T>): Promise<{ ok: T } | { err: string }> {
  try {
    return { ok: await fn() };
  } catch (e) {
    return { err: (e as Error).message };
  }
}

async function runOps(sc: Scenario, ctxs: Record<'main' | 'staged', BuildContext>, each: (ctx: BuildContext, op: Op, copyOpts: CopyOptions) => Promise<void>): Promise<void> {
  for (const op of sc.ops) {
    const { excludes: _e, parents, followTopLevelSymlink: _f, ...rest } = op.opts ?? {};
    const copyOpts: CopyOptions = { workdir: '/', ...rest };
    if (parents) copyOpts.parents = true;
    await each(ctxs[op.ctx ?? 'main'], op, copyOpts);
  }
}

async function resolveOp(ctx: BuildContext, op: Op): ReturnType<BuildContext['resolveSources']> {
  const r: ResolveOptions = {};
  if (op.opts?.excludes) r.excludes = op.opts.excludes;
  if (op.opts?.parents) r.parents = true;
  return ctx.resolveSources(op.sources, r);
}

test('a COPY layer written from its sources equals the diff of the overlay copyInto wrote', async (t) => {
  const base = tempDir(t, 'tsbuild-copylayer-');
  const snaps: Snapshotter = await openSnapshotter({ root: path.join(base, 'snapshots') });
  // Times the copy sets (now) clamp to this; times it keeps are older and stay as they are.
  const epoch = Math.floor(Date.now() / 1000) - 1;
  let checked = 0;
  for (const [i, sc] of scenarios.entries()) {
    const ctxDir = path.join(base, `ctx${i}`);
    const stagedDir = path.join(base, `staged${i}`);
    fs.mkdirSync(ctxDir);
    fs.mkdirSync(stagedDir);
    makeTree(ctxDir, sc.context);
    makeTree(stagedDir, sc.staged ?? []);
    await sc.setup?.(ctxDir);
    ageTree(ctxDir);
    ageTree(stagedDir);
    const ctxs = {
      main: await BuildContext.open(ctxDir),
      staged: await BuildContext.open(stagedDir, { ignore: NO_IGNORE }),
    };
    let parent: Digest | undefined;
    if (sc.image) {
      parent = sha256(`image ${i}`);
      await snaps.unpack(parent, undefined, async (dir) => {
        makeTree(dir, sc.image as string[]);
        await sc.imageSetup?.(dir);
        ageTree(dir);
      });
    }

    const active = await snaps.prepare(parent);
    const before = await outcome(async () => {
      await runOps(sc, ctxs, async (ctx, op, o) => {
        await copyInto(ctx, await resolveOp(ctx, op), active.rootfs, op.dest, o);
      });
      const out = collector();
      await diff(active.upper, out.stream, { sourceDateEpoch: epoch });
      return out.bytes();
    });
    await active.release();

    const planned = (over: ConstructorParameters<typeof CopyLayerPlan>[0]) =>
      outcome(async () => {
        const plan = new CopyLayerPlan(over);
        await runOps(sc, ctxs, async (ctx, op, o) => {
          await plan.copy(ctx, await resolveOp(ctx, op), op.dest, o);
        });
        const out = collector();
        const r = await plan.write(out.stream, { sourceDateEpoch: epoch });
        assert.equal(r.size, out.bytes().length);
        assert.equal(r.diffId, sha256(out.bytes()));
        return out.bytes();
      });
    const view = parent ? await snaps.prepare(parent) : undefined;
    const after = await planned(view?.rootfs);
    await view?.release();
    // The same plan over the parent's layer dirs merged without a mount.
    const merged = parent ? await snaps.merged(parent) : undefined;
    assert.ok(!parent || merged, `${sc.name}: the parent can be read unmounted`);
    const unmounted = await planned(merged);
    assert.deepEqual(unmounted, after, `${sc.name}: planned over the merged layers as over the mounted view`);

    if (sc.error) {
      assert.ok('err' in before && sc.error.test(before.err), `${sc.name}: the overlay copy fails: ${JSON.stringify(before)}`);
      assert.ok('err' in after, `${sc.name}: the planned copy fails too`);
      assert.equal(after.err, before.err, sc.name);
      checked++;
      continue;
    }
    assert.ok('ok' in before, `${sc.name}: overlay copy: ${'err' in before ? before.err : ''}`);
    assert.ok('ok' in after, `${sc.name}: planned copy: ${'err' in after ? after.err : ''}`);
    const want = await listTar(before.ok);
    const got = await listTar(after.ok);
    assert.deepEqual(got, want, sc.name);
    assert.ok(got.some((e) => e.mtime === epoch) || got.length === 0, `${sc.name}: some time is the copy's own`);
    assert.ok(after.ok.equals(before.ok), `${sc.name}: the same bytes`);
    assert.ok(want.length > 0 || sc.name === 'an empty wildcard', `${sc.name}: the scenario changes something`);
    checked++;
  }
  assert.equal(checked, scenarios.length);
});
