import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { TsbuildError, UnsafeArchiveError } from '@tsbuild/errors';
import { encodeHeader, endOfArchive, padding } from '@tsbuild/layer';
import { MediaType, buildManifest } from '@tsbuild/oci';
import type { Digest } from '@tsbuild/oci';
import { openStore } from '@tsbuild/store';
import type { Store } from '@tsbuild/store';
import { exportImage, loadArchive, parseOutput, saveImages } from './export.ts';

interface Entry {
  name: string;
  data?: Buffer | string;
  link?: string;
}

function tar(entries: Entry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = Buffer.from(e.data ?? '');
    parts.push(encodeHeader({
      path: e.name, type: e.link !== undefined ? 'symlink' : 'file', mode: 0o644, uid: 0, gid: 0,
      size: e.link !== undefined ? 0 : data.length, mtime: 0, ...(e.link !== undefined ? { linkpath: e.link } : {}),
    }));
    if (e.link === undefined) parts.push(data, Buffer.alloc(padding(data.length)));
  }
  parts.push(endOfArchive());
  return Buffer.concat(parts);
}

const sha = (b: Buffer | string): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const hex = (d: Digest): string => d.slice(7);

let work: string;
let n = 0;
const layer = tar([{ name: 'hello.txt', data: 'hello\n' }]);
const config = JSON.stringify({
  architecture: 'amd64', os: 'linux', config: { Cmd: ['/hello'] },
  rootfs: { type: 'layers', diff_ids: [sha(layer)] }, history: [{ created_by: 'test' }],
});

before(() => {
  work = mkdtempSync(join(tmpdir(), 'tsbuild-export-'));
});
after(() => rmSync(work, { recursive: true, force: true }));

async function freshStore(): Promise<Store> {
  return openStore({ root: join(work, `store-${n++}`) });
}

function dockerArchive(over: { layerData?: Buffer; layers?: string[]; config?: string; extra?: Entry[] } = {}): Buffer {
  const layerData = over.layerData ?? layer;
  const cfg = over.config ?? config;
  return tar([
    { name: `${hex(sha(cfg))}.json`, data: cfg },
    { name: 'abc/layer.tar', data: layerData },
    ...(over.extra ?? []),
    { name: 'manifest.json', data: JSON.stringify([{ Config: `${hex(sha(cfg))}.json`, RepoTags: ['hello:1'], Layers: over.layers ?? ['abc/layer.tar'] }]) },
  ]);
}

async function load(archive: Buffer): Promise<Awaited<ReturnType<typeof loadArchive>>> {
  const store = await freshStore();
  return loadArchive(store, Readable.from([archive]));
}

test('a legacy Docker archive loads with its RepoTags; plain and gzip layers alike', async () => {
  for (const data of [layer, gzipSync(layer)]) {
    const store = await freshStore();
    const r = await loadArchive(store, Readable.from([dockerArchive({ layerData: data })]));
    assert.equal(r.format, 'docker');
    assert.deepEqual(r.images[0]?.tags, ['hello:1']);
    const img = await store.loadImage('hello:1');
    assert.equal((await img.configDescriptor()).digest, sha(config));
    const l = (await img.manifest()).layers[0];
    assert.equal(l?.mediaType, data === layer ? MediaType.OciLayer : MediaType.OciLayerGzip);
  }
});

test('layers linked as ../ID/layer.tar, as old docker save writes them, are followed', async () => {
  const r = await load(dockerArchive({ layers: ['def/layer.tar'], extra: [{ name: 'def/layer.tar', link: '../abc/layer.tar' }] }));
  assert.deepEqual(r.images[0]?.tags, ['hello:1']);
});

test('an archive that is itself gzip-compressed loads', async () => {
  const r = await load(gzipSync(dockerArchive()));
  assert.deepEqual(r.images[0]?.tags, ['hello:1']);
});

test('save → load keeps manifest digests and names, in both formats', async () => {
  const src = await freshStore();
  const l = await src.writeBlob(layer);
  const c = await src.putJson(MediaType.OciConfig, JSON.parse(config) as object);
  const m = await src.putJson(MediaType.OciManifest, buildManifest(c, [{ mediaType: MediaType.OciLayer, ...l }]));
  await src.tag('example.com/app:v1', m);
  for (const format of ['oci', 'docker'] as const) {
    const file = join(work, `save-${format}.tar`);
    await saveImages(src, ['example.com/app:v1'], { format, dest: file });
    const dst = await freshStore();
    const r = await loadArchive(dst, file);
    assert.equal(r.format, format);
    assert.deepEqual(r.images[0]?.tags, ['example.com/app:v1']);
    const got = await dst.resolve('example.com/app:v1');
    if (format === 'oci') assert.equal(got?.digest, m.digest);
    assert.equal(got && (await (await dst.loadImage('example.com/app:v1')).configDescriptor()).digest, c.digest);
  }
  // Archives go to a stream as well, and an image given by digest is written without a name.
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (b: Buffer) => chunks.push(b));
  await exportImage(src, m.digest, { type: 'oci', dest: out });
  const r = await load(Buffer.concat(chunks));
  assert.deepEqual(r.images, [{ manifest: { mediaType: m.mediaType, digest: m.digest, size: m.size }, tags: [] }]);
});

const hostile: Array<{ name: string; archive: () => Buffer; error: new (...args: never[]) => Error; match: RegExp }> = [
  { name: 'entry with ..', archive: () => dockerArchive({ extra: [{ name: 'a/../../evil', data: 'x' }] }), error: UnsafeArchiveError, match: /\.\./ },
  { name: 'absolute entry', archive: () => dockerArchive({ extra: [{ name: '/etc/evil', data: 'x' }] }), error: UnsafeArchiveError, match: /absolute/ },
  { name: 'symlink leaving the archive', archive: () => dockerArchive({ extra: [{ name: 'x/layer.tar', link: '../../../etc/shadow' }] }), error: UnsafeArchiveError, match: /outside/ },
  { name: 'layer path with ..', archive: () => dockerArchive({ layers: ['../layer.tar'] }), error: UnsafeArchiveError, match: /outside the archive/ },
  { name: 'oversize manifest.json', archive: () => tar([{ name: 'manifest.json', data: Buffer.alloc(5 * 1024 * 1024, 0x20) }]), error: UnsafeArchiveError, match: /manifest\.json is \d+ bytes/ },
  { name: 'missing layer', archive: () => dockerArchive({ layers: ['nothere/layer.tar'] }), error: TsbuildError, match: /nothere\/layer\.tar is missing/ },
  { name: 'layer that is not what the config says', archive: () => dockerArchive({ layerData: tar([{ name: 'other', data: 'x' }]) }), error: TsbuildError, match: /diff_id/ },
  {
    name: 'OCI blob whose bytes do not match its name',
    archive: () => tar([{ name: `blobs/sha256/${hex(sha('a'))}`, data: 'b' }, { name: 'index.json', data: '{"schemaVersion":2,"manifests":[]}' }]),
    error: TsbuildError,
    match: /does not match its digest/,
  },
  {
    name: 'OCI index naming a missing manifest',
    archive: () => tar([{ name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' }, { name: 'index.json', data: JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: MediaType.OciManifest, digest: sha('m'), size: 1 }] }) }]),
    error: TsbuildError,
    match: /missing from the archive/,
  },
  { name: 'neither format', archive: () => tar([{ name: 'readme', data: 'hi' }]), error: TsbuildError, match: /neither an OCI archive/ },
  { name: 'manifest.json that is not JSON', archive: () => tar([{ name: 'manifest.json', data: '[{' }]), error: TsbuildError, match: /not valid JSON/ },
];

for (const h of hostile) {
  test(`load refuses: ${h.name}`, async () => {
    await assert.rejects(load(h.archive()), (e: unknown) => {
      assert.ok(e instanceof h.error, `expected ${h.error.name}, got ${String(e)}`);
      assert.match((e as Error).message, h.match);
      return true;
    });
  });
}

test('load of a missing file is a usage error naming it', async () => {
  const store = await freshStore();
  const file = join(work, 'nope.tar');
  await assert.rejects(loadArchive(store, file), /cannot read .*nope\.tar: no such file/);
  writeFileSync(join(work, 'empty.tar'), '');
  await assert.rejects(loadArchive(store, join(work, 'empty.tar')), /neither an OCI archive/);
});

test('--output specs are read as buildx spells them', () => {
  assert.deepEqual(parseOutput('type=oci,dest=out.tar'), { type: 'oci', dest: 'out.tar' });
  assert.deepEqual(parseOutput('type=docker,dest=-'), { type: 'docker', dest: '-' });
  assert.deepEqual(parseOutput('out/dir'), { type: 'local', dest: 'out/dir' });
  assert.deepEqual(parseOutput('-'), { type: 'tar', dest: '-' });
  assert.deepEqual(parseOutput('type=registry'), { type: 'registry', names: [] });
  assert.deepEqual(parseOutput('type=image,name=a:1,push=true'), { type: 'image', names: ['a:1'], push: true });
  assert.throws(() => parseOutput('type=tar'), /needs dest=FILE/);
  assert.throws(() => parseOutput('type=local,dest=-'), /not stdout/);
  assert.throws(() => parseOutput('type=zip,dest=x'), /unknown type "zip"/);
  assert.throws(() => parseOutput('type=oci,dest'), /KEY=VALUE/);
});
