import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { UnsafeArchiveError, UsageError } from '@tsbuild/errors';
import { encodeHeader, endOfArchive, padding } from '@tsbuild/layer';
import type { TarEntryType } from '@tsbuild/layer';
import type { Descriptor, Digest, ImageConfig } from '@tsbuild/oci';
import { LayerStack, analyzeLayers, readLayerChanges } from './layers.ts';
import type { LayerChangeset, LayerChanges } from './layers.ts';

interface Spec {
  path: string;
  type?: TarEntryType;
  /** A body of this many bytes. */
  bytes?: number;
  link?: string;
}

function tar(specs: Spec[]): Buffer {
  const out: Buffer[] = [];
  for (const s of specs) {
    const type = s.type ?? (s.path.endsWith('/') ? 'dir' : 'file');
    const size = type === 'file' ? (s.bytes ?? 0) : 0;
    out.push(encodeHeader({ path: s.path, type, mode: type === 'dir' ? 0o755 : 0o644, uid: 0, gid: 0, size, mtime: 0, ...(s.link !== undefined ? { linkpath: s.link } : {}) }));
    if (size > 0) out.push(Buffer.alloc(size, 0x61), Buffer.alloc(padding(size)));
  }
  out.push(endOfArchive());
  return Buffer.concat(out);
}

/** Small chunks, so headers straddle reads. */
function stream(b: Buffer): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < b.length; i += 700) parts.push(b.subarray(i, i + 700));
  return Readable.from(parts);
}

const read = (specs: Spec[]): Promise<LayerChangeset> => readLayerChanges(stream(tar(specs)));

/** A change list as `X size path` lines, as easy to compare as to read. */
function lines(c: LayerChanges): string[] {
  return [
    ...c.added.map((p) => `A ${p.size} ${p.path}`),
    ...c.changed.map((p) => `M ${p.size} ${p.path}`),
    ...c.removed.map((p) => `D ${p.size} ${p.path}`),
  ];
}

const BASE: Spec[] = [
  { path: 'app/' },
  { path: 'app/a', bytes: 100 },
  { path: 'app/b', bytes: 200 },
  { path: 'bin/' },
  { path: 'bin/tool', bytes: 50 },
  { path: 'bin/tool2', type: 'hardlink', link: 'bin/tool' },
  { path: 'bin/sh', type: 'symlink', link: 'tool' },
  { path: 'cache/' },
  { path: 'cache/x', bytes: 30 },
  { path: 'cache/sub/' },
  { path: 'cache/sub/y', bytes: 40 },
  { path: 'etc/conf', bytes: 10 },
];

test('add, change, whiteout, opaque directory, hardlink: each layer and the totals', async () => {
  const stack = new LayerStack();
  const l0 = stack.push(await read(BASE));
  assert.equal(l0.size, 430, 'hardlinks and symlinks weigh nothing');
  assert.deepEqual(lines(l0), [
    'A 200 /app/b', 'A 100 /app/a', 'A 50 /bin/tool', 'A 40 /cache/sub/y', 'A 30 /cache/x', 'A 10 /etc/conf',
    'A 0 /app', 'A 0 /bin', 'A 0 /bin/sh', 'A 0 /bin/tool2', 'A 0 /cache', 'A 0 /cache/sub',
  ]);

  // The opaque marker comes after a sibling here: the layer's own entries stay whatever the order.
  const l1 = stack.push(await read([
    { path: 'app/' },
    { path: 'app/.wh.b' },
    { path: 'app/a', bytes: 150 },
    { path: 'app/c', bytes: 5 },
    { path: 'cache/' },
    { path: 'cache/z', bytes: 7 },
    { path: 'cache/.wh..wh..opq' },
  ]));
  assert.equal(l1.size, 162, 'markers weigh nothing');
  assert.deepEqual(lines(l1), [
    'A 7 /cache/z', 'A 5 /app/c',
    'M 150 /app/a', 'M 0 /app', 'M 0 /cache',
    'D 200 /app/b', 'D 40 /cache/sub', 'D 30 /cache/x',
  ]);

  // A whiteout of a directory removes it whole, listed once with everything it held.
  const l2 = stack.push(await read([{ path: 'app/a', bytes: 150 }, { path: '.wh.bin' }]));
  assert.deepEqual(lines(l2), ['M 150 /app/a', 'D 50 /bin']);

  // What was removed comes back as added; removing what is not there removes nothing.
  const l3 = stack.push(await read([{ path: 'app/b', bytes: 200 }, { path: 'bin/tool', bytes: 1 }, { path: '.wh.nothing' }, { path: 'app/.wh.nothing' }]));
  assert.deepEqual(lines(l3), ['A 200 /app/b', 'A 1 /bin/tool']);

  const s = stack.summary();
  assert.equal(s.totalSize, 430 + 162 + 150 + 201);
  // app/a: 100 then 150 replaced (the last 150 stays); app/b 200 removed; the opaque cache hid 30 + 40; bin/tool 50.
  assert.equal(s.wastedBytes, 250 + 200 + 70 + 50);
  assert.deepEqual(s.wasted, [
    { path: '/app/a', bytes: 250, copies: 2 },
    { path: '/app/b', bytes: 200, copies: 1 },
    { path: '/bin/tool', bytes: 50, copies: 1 },
    { path: '/cache/sub/y', bytes: 40, copies: 1 },
    { path: '/cache/x', bytes: 30, copies: 1 },
  ]);
  // Smallest size each path had: app/a 100, etc/conf 10, app/c 5, cache/z 7, everything once removed 0.
  assert.equal(s.efficiency, (100 + 10 + 5 + 7) / s.totalSize);
});

test('an image where no layer replaces or removes anything wastes nothing and scores 1', async () => {
  const stack = new LayerStack();
  stack.push(await read(BASE));
  // Directories written again (a RUN step's copied-up /etc) weigh nothing either way.
  const l1 = stack.push(await read([{ path: 'etc/' }, { path: 'etc/new', bytes: 3 }]));
  assert.deepEqual(lines(l1), ['A 3 /etc/new', 'M 0 /etc']);
  const s = stack.summary();
  assert.equal(s.wastedBytes, 0);
  assert.deepEqual(s.wasted, []);
  assert.equal(s.efficiency, 1);
  assert.equal(new LayerStack().summary().efficiency, 1, 'no layers: nothing to waste');
});

test('a file over a directory removes what the directory held; a directory over a file replaces it', async () => {
  const stack = new LayerStack();
  stack.push(await read([{ path: 'd/' }, { path: 'd/f', bytes: 10 }, { path: 'd/g/' }, { path: 'd/g/h', bytes: 20 }, { path: 'f', bytes: 5 }]));
  const l1 = stack.push(await read([{ path: 'd', bytes: 1 }, { path: 'f/' }, { path: 'f/x', bytes: 2 }]));
  assert.deepEqual(lines(l1), ['A 2 /f/x', 'M 1 /d', 'M 0 /f', 'D 20 /d/g', 'D 10 /d/f']);
  assert.equal(stack.summary().wastedBytes, 10 + 20 + 5);
  // A parent left out of the tar is created as applying creates it, and a file in its way is removed.
  const l2 = stack.push(await read([{ path: 'd/new', bytes: 4 }]));
  assert.deepEqual(lines(l2), ['A 4 /d/new', 'D 1 /d']);
});

test('an opaque root, paths spelled in every way, and a path written twice in one layer', async () => {
  const stack = new LayerStack();
  stack.push(await read([{ path: './a', bytes: 1 }, { path: '/b/', type: 'dir' }, { path: 'b//c', bytes: 2 }, { path: 'x/../y', bytes: 3 }]));
  const l1 = stack.push(await read([{ path: '.wh..wh..opq' }, { path: 'b/c', bytes: 9 }, { path: 'b/c', bytes: 4 }, { path: '.wh..wh.plnk' }]));
  assert.deepEqual(lines(l1), ['M 4 /b/c', 'D 3 /y', 'D 1 /a'], 'the last entry for b/c wins; aufs bookkeeping hides nothing');
  assert.equal(l1.size, 4);
});

test('gzip layers are read like plain ones', async () => {
  const plain = await readLayerChanges(stream(tar(BASE)));
  const gz = await readLayerChanges(stream(gzipSync(tar(BASE))));
  assert.deepEqual(gz, plain);
});

test('hostile layers are refused by name', async () => {
  await assert.rejects(read([{ path: '../escape', bytes: 1 }]), UnsafeArchiveError);
  await assert.rejects(read([{ path: 'dir/.wh.' }]), (e: unknown) => e instanceof UnsafeArchiveError && /does not name a file/.test(e.message));
  await assert.rejects(read([{ path: 'dir/.wh...' }]), UnsafeArchiveError);
  await assert.rejects(read([{ path: `${'d/'.repeat(2100)}f`, bytes: 1 }]), (e: unknown) => e instanceof UnsafeArchiveError && /longer than/.test(e.message));
  await assert.rejects(readLayerChanges(Readable.from([Buffer.alloc(1024, 7)])), UnsafeArchiveError, 'not a tar');
});

test('deep trees are walked without recursion', async () => {
  const deep = `${'d/'.repeat(1500)}`;
  const stack = new LayerStack();
  stack.push(await read([{ path: `${deep}f`, bytes: 8 }]));
  const l1 = stack.push(await read([{ path: '.wh.d' }]));
  assert.deepEqual(lines(l1), ['D 8 /d']);
  assert.equal(stack.summary().efficiency, 0);
});

const digest = (n: number): Digest => `sha256:${String(n).repeat(64).slice(0, 64)}` as Digest;

test('analyzeLayers joins layers to history, reads ahead but lays them in order, and stops early on request', async () => {
  const tars = [tar(BASE), tar([{ path: 'app/a', bytes: 1 }]), tar([{ path: 'app/.wh.b' }])];
  const layers: Descriptor[] = tars.map((t, i) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: digest(i + 1), size: t.length }));
  const config: ImageConfig = {
    architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
    history: [
      { created_by: 'base', created: '2024-01-01T00:00:00Z' },
      { created_by: 'ENV A=1', empty_layer: true },
      { created_by: 'RUN change a' },
      { created_by: 'RUN rm b' },
    ],
  };
  let open = 0;
  let maxOpen = 0;
  const reader = async (d: Descriptor): Promise<LayerChangeset> => {
    open++;
    maxOpen = Math.max(maxOpen, open);
    const i = layers.findIndex((l) => l.digest === d.digest);
    // The last layer finishes first: the order of the result must not follow it.
    await new Promise((r) => setTimeout(r, (3 - i) * 20));
    try {
      return await readLayerChanges(stream(tars[i]!));
    } finally {
      open--;
    }
  };
  const a = await analyzeLayers(digest(9), config, layers, reader, { concurrency: 3 });
  assert.equal(maxOpen, 3);
  assert.equal(a.id, digest(9));
  assert.deepEqual(a.layers.map((l) => [l.index, l.createdBy, l.digest, l.blobSize]), [[0, 'base', digest(1), tars[0]!.length], [1, 'RUN change a', digest(2), tars[1]!.length], [2, 'RUN rm b', digest(3), tars[2]!.length]]);
  assert.equal(a.layers[0]!.created, '2024-01-01T00:00:00Z');
  assert.deepEqual(lines(a.layers[2]!), ['D 200 /app/b']);
  assert.equal(a.wastedBytes, 300);

  const seen: Digest[] = [];
  const partial = await analyzeLayers(digest(9), config, layers, async (d) => {
    seen.push(d.digest);
    return reader(d);
  }, { through: 1 });
  assert.equal(partial.layers.length, 2);
  assert.deepEqual(lines(partial.layers[1]!), ['M 1 /app/a']);
  assert.deepEqual(seen, [digest(1), digest(2)], 'the layers above are not read');

  await assert.rejects(analyzeLayers(digest(9), config, layers, reader, { through: 3 }), (e: unknown) => e instanceof UsageError && /layer 3 does not exist: the image has 3 layers \(0 to 2, from the bottom\)/.test(e.message));
  const boom = new Error('read failed');
  const signals: AbortSignal[] = [];
  await assert.rejects(analyzeLayers(digest(9), config, layers, async (d, signal) => {
    signals.push(signal);
    if (d.digest === digest(2)) throw boom;
    return reader(d);
  }), boom);
  assert.ok(signals.every((s) => s.aborted), 'one failed layer stops the others');
});
