import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { TsbuildError } from '@tsbuild/errors';
import { createZstdCompressor, createZstdDecompressor, zstdEngine } from './zstd.ts';
import type { ZstdEngine } from './zstd.ts';
import { chunked, concatStream, toolOutput } from './testing.ts';

const data = Buffer.concat([Buffer.from('tsbuild '.repeat(50_000)), randomBytes(300_000)]);

test('zstd: every engine this Node has round-trips, and each gives the same bytes however the input is cut', async () => {
  const engines = (['zstd-napi', 'node'] as ZstdEngine[]).filter((e) => {
    try {
      createZstdDecompressor(e).destroy();
      return true;
    } catch (err) {
      assert.ok(err instanceof TsbuildError && err.code === 'ZSTD_UNAVAILABLE');
      return false;
    }
  });
  assert.ok(engines.length > 0 || zstdEngine('compress') === undefined);
  const reference = toolOutput('zstd', data);
  for (const e of engines) {
    const params = { level: 3, workers: 2, jobSize: 1 << 20 };
    const a = await concatStream(chunked(data, 1 << 20).pipe(createZstdCompressor(params, e)));
    const b = await concatStream(chunked(data, 777).pipe(createZstdCompressor(params, e)));
    assert.ok(a.equals(b), `${e}: output depends on how the input is cut`);
    assert.ok((await concatStream(Readable.from([a]).pipe(createZstdDecompressor(e)))).equals(data), e);
    assert.ok((await concatStream(chunked(reference, 4096).pipe(createZstdDecompressor(e)))).equals(data), `${e} reads the zstd CLI's output`);
  }
  if (typeof (zlib as { createZstdCompress?: unknown }).createZstdCompress !== 'function') {
    assert.throws(() => createZstdCompressor({ level: 3, workers: 1, jobSize: 1 << 20 }, 'node'), { code: 'ZSTD_UNAVAILABLE' });
  }
});
