import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { TsbuildError } from '@tsbuild/errors';
import { decompress, decompressAs, sniffArchiveCompression } from './decompress.ts';
import { chunked, concatStream, toolOutput } from './testing.ts';

const data = Buffer.concat([Buffer.from('tsbuild '.repeat(50_000)), randomBytes(300_000)]);

test('archives: gzip, zstd, xz and bzip2 are told by their magic and undone', async () => {
  const inputs = { gzip: zlib.gzipSync(data), zstd: toolOutput('zstd', data), xz: toolOutput('xz', data), bzip2: toolOutput('bzip2', data) };
  for (const [kind, compressed] of Object.entries(inputs)) {
    assert.equal(sniffArchiveCompression(compressed), kind);
    assert.ok((await concatStream(decompress(chunked(compressed, 1000), { archives: true }))).equals(data), kind);
    assert.ok((await concatStream(decompressAs(chunked(compressed, 65536), kind as keyof typeof inputs))).equals(data), kind);
  }
  // Layers are only ever gzip or zstd: without `archives` an xz stream passes through untouched.
  assert.ok((await concatStream(decompress(Readable.from([inputs.xz])))).equals(inputs.xz));
});

test('a corrupt xz stream is an error, not a short file', async () => {
  const xz = toolOutput('xz', data);
  const broken = Buffer.concat([xz.subarray(0, xz.length >> 1), Buffer.alloc(64, 7)]);
  await assert.rejects(concatStream(decompressAs(Readable.from([broken]), 'xz', { errorMessage: (r) => `cannot decompress a.tar.xz (xz): ${r}` })), (e: unknown) => {
    assert.ok(e instanceof TsbuildError);
    assert.equal(e.code, 'DECOMPRESS');
    assert.match(e.message, /^cannot decompress a\.tar\.xz \(xz\): xz exited with 1/);
    return true;
  });
});

test('a missing tool is named, with the package that brings it', async (t) => {
  const path = process.env.PATH;
  process.env.PATH = '/nonexistent';
  t.after(() => {
    process.env.PATH = path;
  });
  for (const [kind, pkg] of [['xz', 'xz-utils'], ['bzip2', 'bzip2']] as const) {
    await assert.rejects(concatStream(decompressAs(Readable.from([Buffer.alloc(100_000, 1)]), kind)), (e: unknown) => {
      assert.ok(e instanceof TsbuildError);
      assert.equal(e.code, 'MISSING_TOOL');
      assert.match(e.message, new RegExp(`^cannot decompress layer: the ${kind} command is not installed`));
      assert.equal(e.hint, `install the "${pkg}" package (apt-get install ${pkg})`);
      return true;
    });
  }
});
