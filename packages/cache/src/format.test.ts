import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UsageError } from '@tsbuild/errors';
import { documentBlobs, parseCacheDocument, serializeCacheDocument } from './format.ts';
import type { CacheDocument } from './format.ts';
import { parseCacheFrom, parseCacheTo } from './spec.ts';

const D = (c: string) => `sha256:${c.repeat(64)}` as const;
const layer = { diffId: D('a'), size: 10, blob: { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: D('b'), size: 5 } };

test('a cache document round-trips, sorted, and names each blob once', () => {
  const doc: CacheDocument = {
    tsbuildCache: 1,
    records: [
      { key: 'f'.repeat(64), parent: 'e'.repeat(64), created: '2026-01-01T00:00:00Z', layer },
      { key: '1'.repeat(64), parent: undefined, created: '2026-01-01T00:00:00Z', layer },
    ],
    mounts: [{ name: 'c'.repeat(32), id: 'apt', layer: { ...layer, blob: { ...layer.blob, digest: D('d') } } }],
  };
  const bytes = serializeCacheDocument(doc);
  const back = parseCacheDocument(bytes, 'test');
  assert.deepEqual(back.records.map((r) => r.key), ['1'.repeat(64), 'f'.repeat(64)]);
  assert.deepEqual(serializeCacheDocument(back), bytes);
  assert.deepEqual(documentBlobs(back).map((b) => b.digest), [D('b'), D('d')]);
});

test('hostile documents: bad records are dropped, bad documents refused', () => {
  const good = { key: 'a'.repeat(64), created: '2026-01-01T00:00:00Z' };
  const doc = parseCacheDocument(
    Buffer.from(
      JSON.stringify({
        tsbuildCache: 1,
        records: [
          good,
          { ...good, key: '../../etc/passwd' },
          { ...good, key: 'b'.repeat(64), created: 'yesterday' },
          { ...good, key: 'c'.repeat(64), layer: { ...layer, diffId: 'md5:x' } },
          { ...good, key: 'd'.repeat(64), layer: { ...layer, blob: { ...layer.blob, mediaType: 'text/html' } } },
          { ...good, key: 'e'.repeat(64), layer: { ...layer, size: -1 } },
          null,
          42,
        ],
        mounts: [{ name: '../x', id: 'x', layer }, { name: '0'.repeat(32), id: 'ok', layer }],
      }),
    ),
    'test',
  );
  assert.deepEqual(doc.records.map((r) => r.key), ['a'.repeat(64)]);
  assert.deepEqual(doc.mounts.map((m) => m.id), ['ok']);
  assert.throws(() => parseCacheDocument(Buffer.from('not json'), 'test'), /not JSON/);
  assert.throws(() => parseCacheDocument(Buffer.from('{"tsbuildCache":2}'), 'test'), /unsupported cache format/);
  assert.throws(() => parseCacheDocument(Buffer.alloc(17 * 1024 * 1024, 0x20), 'test'), /too large|more than/);
});

test('--cache-from and --cache-to as buildx spells them', () => {
  assert.deepEqual(parseCacheFrom('type=registry,ref=r.example/app:cache'), { type: 'registry', ref: 'r.example/app:cache' });
  assert.deepEqual(parseCacheFrom('r.example/app:cache'), { type: 'registry', ref: 'r.example/app:cache' });
  assert.deepEqual(parseCacheFrom('type=local,src=/tmp/c'), { type: 'local', src: '/tmp/c', tag: 'latest' });
  assert.deepEqual(parseCacheFrom('type=gha', { GITHUB_REF_NAME: 'main' }), { type: 'gha', scope: 'main' });
  assert.deepEqual(parseCacheTo('type=registry,ref=r/a:c,mode=max,compression=zstd,ignore-error=true,mounts=true,mounts-max-size=512m'), {
    type: 'registry', ref: 'r/a:c', mode: 'max', compression: 'zstd', ignoreError: true, mounts: true, mountsMaxSize: 512 * 1024 * 1024,
  });
  assert.equal(parseCacheTo('type=gha,scope=pr-1').type, 'gha');
  for (const bad of ['type=registry', 'type=registry,ref=x,mode=all', 'type=local', 'type=s3,bucket=x', 'type=inline,mode=max', 'type=registry,ref=x,frobnicate=1', 'type=registry,ref=x,mounts=yes']) {
    assert.throws(() => parseCacheTo(bad), UsageError, bad);
  }
  assert.throws(() => parseCacheFrom('type=inline'), UsageError);
});
