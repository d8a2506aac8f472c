import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, statSync, utimesSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip, gunzipSync } from 'node:zlib';
import { TsbuildError, UsageError } from '@tsbuild/errors';
import { MediaType, buildIndex, hashStream, sha256, validateImage, ANNOTATION_REF_NAME } from '@tsbuild/oci';
import type { Digest } from '@tsbuild/oci';
import { normalizeName, openStore, parseRef, resolveRoot } from './index.ts';
import { makeTar, tempRoot, writeTestImage } from './testutil.ts';

test('resolveRoot: option, then $TSBUILD_ROOT, then /var/lib for root, XDG for users', () => {
  assert.equal(resolveRoot({ root: '/x/y', env: { TSBUILD_ROOT: '/z' } }), '/x/y');
  assert.equal(resolveRoot({ env: { TSBUILD_ROOT: '/z' }, uid: 1000 }), '/z');
  assert.equal(resolveRoot({ env: {}, uid: 0 }), '/var/lib/tsbuild');
  assert.equal(resolveRoot({ env: { XDG_DATA_HOME: '/d', HOME: '/h' }, uid: 1000 }), '/d/tsbuild');
  assert.equal(resolveRoot({ env: { HOME: '/h' }, uid: 1000 }), '/h/.local/share/tsbuild');
});

test('openStore lays out an OCI image layout and refuses a foreign one', async (t) => {
  const root = tempRoot(t);
  const store = await openStore({ root });
  assert.deepEqual(JSON.parse(readFileSync(join(root, 'oci', 'oci-layout'), 'utf8')), { imageLayoutVersion: '1.0.0' });
  assert.deepEqual(JSON.parse(readFileSync(join(root, 'oci', 'index.json'), 'utf8')), { manifests: [], mediaType: MediaType.OciIndex, schemaVersion: 2 });
  assert.ok(statSync(store.blobsDir).isDirectory());
  await openStore({ root });
  writeFileSync(join(root, 'oci', 'oci-layout'), '{"imageLayoutVersion":"9"}');
  await assert.rejects(openStore({ root }), /is not an OCI image layout version 1.0.0/);
});

test('blob ingest verifies digest and size, is idempotent and leaves no temp files', async (t) => {
  const store = await openStore({ root: tempRoot(t) });
  const data = Buffer.from('hello blob');
  const d = sha256(data);
  assert.deepEqual(await store.writeBlob(data), { digest: d, size: data.length });
  assert.deepEqual(readFileSync(store.blobPath(d)), data);
  assert.ok(await store.hasBlob(d));
  assert.deepEqual(await store.writeBlob(Readable.from([data.subarray(0, 3), data.subarray(3)]), { digest: d, size: data.length }), { digest: d, size: data.length });

  const wrong = sha256('other');
  await assert.rejects(
    store.writeBlob(Readable.from([Buffer.from('abc')]), { digest: wrong, size: 3 }),
    (e: unknown) => e instanceof TsbuildError && e.code === 'DIGEST_MISMATCH' && e.message.includes(`expected ${wrong} (3 bytes), received ${sha256('abc')} (3 bytes)`),
  );
  await assert.rejects(store.writeBlob(Buffer.from('abc'), { size: 4 }), /expected any digest \(4 bytes\), received sha256:[0-9a-f]+ \(3 bytes\)/);
  assert.equal(await store.hasBlob(sha256('abc')), false);

  const w = store.blobWriter();
  w.stream.write('part');
  await w.abort();
  const w2 = store.blobWriter();
  w2.stream.write('ab');
  w2.stream.end('cd');
  assert.deepEqual(await w2.commit({ digest: sha256('abcd') }), { digest: sha256('abcd'), size: 4 });
  await assert.rejects(w2.commit(), /already committed/);
  assert.deepEqual(readdirSync(store.ingestDir), []);

  const big = Buffer.alloc(5 << 20, 7);
  const r = await store.writeBlob(Readable.from((function* () {
    for (let i = 0; i < 5; i++) yield big.subarray(i << 20, (i + 1) << 20);
  })()));
  assert.equal(r.digest, sha256(big));
  assert.deepEqual(await hashStream(await store.openBlob(r.digest)), { digest: r.digest, size: big.length });
});

test('reading a missing or corrupt blob names the digest', async (t) => {
  const store = await openStore({ root: tempRoot(t) });
  const missing = sha256('missing');
  await assert.rejects(store.openBlob(missing), (e: unknown) => e instanceof TsbuildError && e.code === 'BLOB_NOT_FOUND' && e.message.includes(missing));
  await assert.rejects(store.readBlob(missing), new RegExp(`blob ${missing} is not in the store`));
  const { digest } = await store.writeBlob(Buffer.from('{"a":1}'));
  writeFileSync(store.blobPath(digest), '{"a":2}');
  await assert.rejects(store.readBlob(digest), /is corrupt: its content hashes to/);
  assert.throws(() => store.blobPath('sha256:../../etc/passwd' as Digest), /invalid digest/);
});

test('reference names: :latest added, port colons are not tags, bad names refused', () => {
  assert.equal(normalizeName('app'), 'app:latest');
  assert.equal(normalizeName('app:1.0'), 'app:1.0');
  assert.equal(normalizeName('127.0.0.1:5000/a/b:1'), '127.0.0.1:5000/a/b:1');
  assert.equal(normalizeName('host:5000/a'), 'host:5000/a:latest');
  assert.equal(normalizeName('localhost/a_b/c-d'), 'localhost/a_b/c-d:latest');
  const d = sha256('x');
  assert.deepEqual(parseRef(`app@${d}`), { name: 'app:latest', digest: d });
  for (const bad of ['', 'App', 'a b', 'a/../b', 'a:', 'a:-x', 'a@sha256:12', '/a', 'a//b', 'a:b:c']) {
    assert.throws(() => normalizeName(bad), (e: unknown) => e instanceof UsageError && /invalid image reference/.test(e.message), bad);
  }
});

test('tags live in index.json as ref.name annotations; resolve by tag, digest and id prefix', async (t) => {
  const root = tempRoot(t);
  const store = await openStore({ root });
  const a = await writeTestImage(store, [makeTar({ 'a.txt': 'a' })], { label: 'a' });
  const b = await writeTestImage(store, [makeTar({ 'b.txt': 'b' })], { label: 'b' });
  assert.equal(await store.tag('app', a.manifest), 'app:latest');
  assert.equal(await store.tag('127.0.0.1:5000/a/b:1', a.manifest), '127.0.0.1:5000/a/b:1');
  assert.equal(await store.tag('host:5000/a', b.manifest), 'host:5000/a:latest');
  const idx = JSON.parse(readFileSync(join(root, 'oci', 'index.json'), 'utf8')) as { manifests: { annotations: Record<string, string>; digest: string }[] };
  assert.deepEqual(idx.manifests.map((m) => m.annotations[ANNOTATION_REF_NAME]).sort(), ['127.0.0.1:5000/a/b:1', 'app:latest', 'host:5000/a:latest']);

  assert.deepEqual(await store.resolve('app'), a.manifest);
  assert.deepEqual(await store.resolve('app:latest'), a.manifest);
  assert.deepEqual(await store.resolve('host:5000/a'), b.manifest);
  assert.deepEqual(await store.resolve(b.manifest.digest), b.manifest);
  assert.deepEqual(await store.resolve(`whatever@${b.manifest.digest}`), b.manifest);
  assert.deepEqual(await store.resolve(b.manifest.digest.slice(7, 19)), b.manifest);
  assert.deepEqual(await store.resolve(a.config.digest.slice(7, 23)), a.manifest);
  assert.deepEqual(await store.resolve(`sha256:${a.config.digest.slice(7, 23)}`), a.manifest);
  assert.equal(await store.resolve('nope'), undefined);
  assert.equal(await store.resolve(b.manifest.digest.slice(7, 18)), undefined, 'an 11-character prefix is not an id');
  assert.equal(await store.resolve(sha256('unknown')), undefined);

  // retagging moves the tag, never duplicates it
  await store.tag('app', b.manifest);
  assert.deepEqual(await store.resolve('app'), b.manifest);
  assert.deepEqual(
    (await store.listImages()).map((i) => [i.name, i.descriptor.digest]),
    [
      ['127.0.0.1:5000/a/b:1', a.manifest.digest],
      ['app:latest', b.manifest.digest],
      ['host:5000/a:latest', b.manifest.digest],
    ],
  );
  await assert.rejects(store.tag('x', { ...a.manifest, digest: sha256('nothing') }), /cannot tag x:latest: manifest sha256:[0-9a-f]+ is not in the store/);
  await assert.rejects(store.tag('x', a.config), /not a manifest or index/);

  assert.equal(await store.untag('127.0.0.1:5000/a/b:1'), true);
  assert.equal(await store.untag('127.0.0.1:5000/a/b:1'), false);
  // b is tagged twice: removing by id removes both tags
  assert.deepEqual((await store.removeImage(b.manifest.digest.slice(7, 20))).sort(), ['app:latest', 'host:5000/a:latest']);
  assert.deepEqual(await store.listImages(), []);
  await assert.rejects(store.removeImage('app'), (e: unknown) => e instanceof UsageError && /no image "app"/.test(e.message));
});

test('an ambiguous id prefix is an error listing the candidates', async (t) => {
  const store = await openStore({ root: tempRoot(t) });
  // Two manifests sharing one config: the config's id prefix names both images.
  const a = await writeTestImage(store, [makeTar({ 'a.txt': 'a' })]);
  const m2 = await store.putJson(MediaType.OciManifest, { schemaVersion: 2, mediaType: MediaType.OciManifest, config: a.config, layers: a.layers, annotations: { x: 'y' } });
  await store.tag('one', a.manifest);
  await store.tag('two', m2);
  await assert.rejects(store.resolve(a.config.digest.slice(7, 19)), (e: unknown) => e instanceof UsageError && e.message.includes('is ambiguous') && e.message.includes(m2.digest));
});

test('loadImage gives an Image that validates, including through an index', async (t) => {
  const store = await openStore({ root: tempRoot(t) });
  const img = await writeTestImage(store, [makeTar({ 'a.txt': 'a' }), makeTar({ 'dir/b.txt': 'b' })]);
  await store.tag('app', img.manifest);
  const loaded = await store.loadImage('app');
  assert.equal(await loaded.digest(), img.manifest.digest);
  assert.deepEqual((await loaded.config()).rootfs.diff_ids, img.diffIds);
  await validateImage(loaded);
  const layers = await loaded.layers();
  assert.equal(layers.length, 2);
  assert.equal(await layers[1]!.diffId(), img.diffIds[1]);

  const arm = await writeTestImage(store, [makeTar({ 'arm.txt': 'arm' })]);
  const idx = await store.putJson(
    MediaType.OciIndex,
    buildIndex([
      { ...img.manifest, platform: { os: 'linux', architecture: 'amd64' } },
      { ...arm.manifest, platform: { os: 'linux', architecture: 'arm64' } },
    ]),
  );
  await store.tag('multi', idx);
  assert.equal(await (await store.loadImage('multi', { platform: { os: 'linux', architecture: 'arm64' } })).digest(), arm.manifest.digest);
  await assert.rejects(store.loadImage('multi', { platform: { os: 'linux', architecture: 's390x' } }), /has no manifest for linux\/s390x \(it has: linux\/amd64, linux\/arm64\)/);
  await assert.rejects(store.loadImage('ghost'), /no image "ghost" in the store/);

  // a corrupted layer blob is caught by validateImage
  writeFileSync(store.blobPath(img.layers[0]!.digest), Buffer.alloc(img.layers[0]!.size));
  await assert.rejects(validateImage(await store.loadImage('app')), /layer 0 .*blob content is/);
});

test('meta: namespaced durable key-value entries with declared roots', async (t) => {
  const root = tempRoot(t);
  const store = await openStore({ root });
  const m = store.meta('cache');
  assert.equal(await m.get('k'), undefined);
  await m.set('k', { a: 1 });
  await m.set('../../etc/passwd', 'x');
  await m.set('sha256:abc/.', [1, 2]);
  await m.set('long'.repeat(100), true);
  assert.deepEqual(await m.get('k'), { a: 1 });
  assert.equal(await m.get('../../etc/passwd'), 'x');
  assert.deepEqual(await m.keys(), ['../../etc/passwd', 'k', 'long'.repeat(100), 'sha256:abc/.'].sort());
  for (const f of readdirSync(join(root, 'meta', 'cache'))) assert.match(f, /^[kh]-[^/]+\.json$/);
  assert.equal(await m.update('n', (old) => ((old as number | undefined) ?? 0) + 1), 1);
  assert.equal(await m.update('n', (old) => (old as number) + 1), 2);
  assert.equal(await m.update('n', () => undefined), undefined);
  assert.equal(await m.get('n'), undefined);
  assert.equal(await m.delete('k'), true);
  assert.equal(await m.delete('k'), false);
  assert.equal(await store.meta('other').get('k'), undefined);
  assert.throws(() => store.meta('../x'), /invalid meta namespace/);
  writeFileSync(join(root, 'meta', 'cache', 'k-bad.json'), '{');
  await assert.rejects(m.get('bad'), /metadata file .*k-bad.json is corrupt/);
});

const gzipMake = async (src: Readable, sink: NodeJS.WritableStream) => {
  await pipeline(src, createGzip({ level: 1 }), sink);
};

test('compressedBlob makes each compressed variant once and remembers the mapping', async (t) => {
  const root = tempRoot(t);
  const store = await openStore({ root });
  const tar = makeTar({ 'f.txt': 'x'.repeat(10000) });
  const { digest: diffId } = await store.writeBlob(tar);
  let calls = 0;
  const make = async (src: Readable, sink: NodeJS.WritableStream) => {
    calls++;
    await gzipMake(src, sink);
  };
  const [d1, d2] = await Promise.all([store.compressedBlob(diffId, 'gzip', make), store.compressedBlob(diffId, 'gzip', make)]);
  assert.equal(calls, 1);
  assert.deepEqual(d1, d2);
  assert.equal(d1.mediaType, MediaType.OciLayerGzip);
  assert.deepEqual(gunzipSync(readFileSync(store.blobPath(d1.digest))), tar);
  const again = await openStore({ root });
  assert.deepEqual(await again.compressedBlob(diffId, 'gzip', make), d1);
  assert.equal(calls, 1);
  assert.equal(await store.uncompressedFor(d1.digest), diffId);
  assert.equal(await store.uncompressedFor(diffId), undefined);

  await assert.rejects(store.compressedBlob(diffId, 'zstd', async () => {
    throw new Error('boom');
  }), /boom/);
  assert.deepEqual(readdirSync(store.ingestDir), []);
  await assert.rejects(store.compressedBlob(sha256('absent'), 'gzip', make), /BLOB_NOT_FOUND|is not in the store/);
});

test('gc removes unreachable blobs, keeps tagged, kept, meta-rooted and compressed variants, and old temp files', async (t) => {
  const root = tempRoot(t);
  const store = await openStore({ root });
  const tagged = await writeTestImage(store, [makeTar({ 't.txt': 't' })], { label: 't' });
  const kept = await writeTestImage(store, [makeTar({ 'k.txt': 'k' })], { label: 'k' });
  const rooted = await store.writeBlob(makeTar({ 'r.txt': 'r' }));
  const orphan = await writeTestImage(store, [makeTar({ 'o.txt': 'o' })], { label: 'o' });
  await store.tag('tagged', tagged.manifest);
  await store.meta('builder-cache').set('step', { layer: rooted.digest }, { roots: [rooted.digest] });
  const gz = await store.compressedBlob(tagged.diffIds[0]!, 'gzip', gzipMake);
  const orphanGz = await store.compressedBlob(orphan.diffIds[0]!, 'gzip', gzipMake);
  const oldTemp = join(store.ingestDir, 'blob-1-old');
  const newTemp = join(store.ingestDir, 'blob-1-new');
  writeFileSync(oldTemp, 'x');
  writeFileSync(newTemp, 'y');
  utimesSync(oldTemp, new Date(Date.now() - 2 * 3600_000), new Date(Date.now() - 2 * 3600_000));

  const before = readdirSync(store.blobsDir).length;
  const res = await store.gc({ keep: [kept.manifest.digest] });
  const orphanBlobs = [orphan.manifest, orphan.config, ...orphan.layers, orphanGz];
  assert.equal(res.removedBlobs, orphanBlobs.length);
  assert.equal(res.freedBytes, orphanBlobs.reduce((n, d) => n + d.size, 0));
  assert.equal(res.removedTempFiles, 1);
  assert.equal(readdirSync(store.blobsDir).length, before - orphanBlobs.length);
  for (const d of [tagged.manifest, tagged.config, ...tagged.layers, kept.manifest, kept.config, ...kept.layers, gz]) assert.ok(await store.hasBlob(d.digest), d.digest);
  assert.ok(await store.hasBlob(rooted.digest));
  for (const d of orphanBlobs) assert.equal(await store.hasBlob(d.digest), false);
  assert.equal(existsSync(oldTemp), false);
  assert.equal(existsSync(newTemp), true);
  assert.equal(await store.uncompressedFor(orphanGz.digest), undefined, 'mappings of removed blobs are dropped');

  // within the grace period nothing unreferenced is removed, and re-writing a blob refreshes it
  await store.meta('builder-cache').delete('step');
  const old = new Date(Date.now() - 3600_000);
  utimesSync(store.blobPath(rooted.digest), old, old);
  await store.writeBlob(makeTar({ 'r.txt': 'r' }));
  assert.equal((await store.gc({ gracePeriodMs: 600_000 })).removedBlobs, 0);
  assert.ok(await store.hasBlob(rooted.digest));

  await store.untag('tagged');
  const res2 = await store.gc();
  assert.equal(res2.removedBlobs, 3 + 1 + 1 + 3);
  assert.deepEqual(readdirSync(store.blobsDir), []);
});
