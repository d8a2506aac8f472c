import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { PassThrough, Readable, Writable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { describe, it } from 'node:test';
import zlib from 'node:zlib';
import { CancelledError, UsageError } from '@tsbuild/errors';
import { compress, crc32Combine, decompress, sniffCompression } from './compress.ts';
import type { CompressOptions } from './compress.ts';

const MiB = 1 << 20;

/** Half random, half repetitive text, so compression both works and has work to do. */
function sample(size: number): Buffer {
  const out = Buffer.alloc(size);
  const rnd = randomBytes(Math.ceil(size / 2));
  rnd.copy(out, 0, 0, Math.min(rnd.length, size));
  const line = Buffer.from('usr/share/doc/tsbuild/changelog.Debian.gz 0644 root root\n');
  for (let off = rnd.length; off < size; off += line.length) line.copy(out, off, 0, Math.min(line.length, size - off));
  return out;
}

/**
 * A source that hands out the data in uneven chunks, as a tar writer would; `first` single bytes
 * come before the rest so a sniffer sees its magic number split up.
 */
function source(data: Buffer, chunk = 100_003, first = 0): Readable {
  let off = 0;
  return new Readable({
    read() {
      if (off >= data.length) return void this.push(null);
      const n = off < first ? 1 : chunk;
      this.push(data.subarray(off, off + n));
      off += n;
    },
  });
}

function sink(): { stream: Writable; bytes: () => Buffer } {
  const parts: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      parts.push(chunk);
      done();
    },
  });
  return { stream, bytes: () => Buffer.concat(parts) };
}

async function run(data: Buffer, opts: CompressOptions, chunk?: number): Promise<{ out: Buffer; digest: string; size: number }> {
  const s = sink();
  const r = await compress(source(data, chunk), s.stream, opts);
  return { out: s.bytes(), ...r };
}

function sha(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

describe('compress gzip', () => {
  it('writes one gzip member that gunzip, gzip -dc and node read, with its digest and size', async () => {
    const data = sample(3 * MiB + 12_345);
    const { out, digest, size } = await run(data, { algorithm: 'gzip', threads: 2 });
    assert.equal(digest, sha(out));
    assert.equal(size, out.length);
    assert.ok(out.length < data.length * 0.6, 'the repetitive half compresses');
    assert.deepEqual(out.subarray(0, 4), Buffer.from([0x1f, 0x8b, 8, 0]));
    // One member: the trailer covers the whole input, not just a last member's part.
    assert.equal(out.readUInt32LE(out.length - 8), zlib.crc32(data));
    assert.equal(out.readUInt32LE(out.length - 4), data.length);
    assert.ok(zlib.gunzipSync(out).equals(data));

    const test = spawnSync('gunzip', ['-t'], { input: out });
    assert.equal(test.status, 0, test.stderr.toString());
    const dc = spawnSync('gzip', ['-dc'], { input: out, maxBuffer: 64 * MiB });
    assert.equal(dc.status, 0, dc.stderr.toString());
    assert.equal(sha(dc.stdout), sha(data));
  });

  it('gives the same bytes for any thread count and any input chunking', async () => {
    const data = sample(4 * MiB + 7);
    const one = await run(data, { algorithm: 'gzip', threads: 1 });
    const two = await run(data, { algorithm: 'gzip', threads: 2 }, 65_536);
    const five = await run(data, { algorithm: 'gzip', threads: 5 }, 1_000_000);
    assert.equal(two.digest, one.digest);
    assert.equal(five.digest, one.digest);
  });

  it('stores and deflates exactly the blocks that one-shot zlib probes would choose', async () => {
    // Random, text, and nearly random blocks (a sixteenth of the bytes zeroed: close to the line).
    const random = randomBytes(2 * MiB);
    const nearly = randomBytes(MiB);
    for (let i = 0; i < nearly.length; i += 16) nearly[i] = 0;
    const data = Buffer.concat([random.subarray(0, MiB), sample(MiB + 4096).subarray(MiB / 2), nearly, random.subarray(MiB)]);
    const probe = 32 << 10;
    const blocks: Buffer[] = [];
    for (let off = 0; off < data.length; off += MiB) {
      const block = data.subarray(off, off + MiB);
      const incompressible = (at: number): boolean => zlib.deflateRawSync(block.subarray(at, at + probe), { level: 1 }).length >= probe * 0.97;
      const stored = block.length >= 4 * probe && [0, (block.length >> 1) - probe / 2, block.length - probe].every(incompressible);
      const finishFlush = off + MiB >= data.length ? zlib.constants.Z_FINISH : zlib.constants.Z_SYNC_FLUSH;
      blocks.push(zlib.deflateRawSync(block, { level: stored ? 0 : 6, chunkSize: MiB + (64 << 10), finishFlush }));
    }
    const trailer = Buffer.alloc(8);
    trailer.writeUInt32LE(zlib.crc32(data), 0);
    trailer.writeUInt32LE(data.length, 4);
    const expected = Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]), ...blocks, trailer]);
    const { out } = await run(data, { algorithm: 'gzip', threads: 2 });
    assert.ok(out.equals(expected), `${out.length} bytes, expected ${expected.length}`);
  });

  it('with hash: false writes the same bytes and reports their size but no digest', async () => {
    const data = sample(2 * MiB + 99);
    for (const algorithm of ['gzip', 'zstd'] as const) {
      const hashed = await run(data, { algorithm, threads: 2 });
      const s = sink();
      const r = await compress(source(data), s.stream, { algorithm, threads: 2, hash: false });
      assert.deepEqual(r, { size: hashed.size });
      assert.equal(sha(s.bytes()), hashed.digest);
    }
  });

  it('handles the sizes at block boundaries, including empty input', async () => {
    for (const size of [0, 1, MiB - 1, MiB, MiB + 1, 2 * MiB]) {
      const data = sample(size);
      const { out } = await run(data, { algorithm: 'gzip', threads: 2, level: 1 });
      assert.ok(zlib.gunzipSync(out).equals(data), `size ${size}`);
      assert.equal(out.readUInt32LE(out.length - 4), size);
      const test = spawnSync('gunzip', ['-t'], { input: out });
      assert.equal(test.status, 0, `size ${size}: ${test.stderr.toString()}`);
    }
  });

  it('reports the level in the header and compresses harder at 9 than at 1', async () => {
    const data = sample(2 * MiB);
    const fast = await run(data, { algorithm: 'gzip', level: 1 });
    const best = await run(data, { algorithm: 'gzip', level: 9 });
    assert.equal(fast.out[8], 4);
    assert.equal(best.out[8], 2);
    assert.ok(best.size <= fast.size);
  });

  it('rejects with CancelledError when aborted mid-stream, and before starting', async () => {
    const ac = new AbortController();
    let pushed = 0;
    const endless = new Readable({
      read() {
        pushed++;
        if (pushed === 5) ac.abort();
        this.push(randomBytes(256 * 1024));
      },
    });
    const s = sink();
    await assert.rejects(compress(endless, s.stream, { algorithm: 'gzip', threads: 2, signal: ac.signal }), CancelledError);
    await assert.rejects(
      compress(source(sample(10)), sink().stream, { algorithm: 'zstd', signal: AbortSignal.abort() }),
      CancelledError,
    );
  });

  it('passes on a failing source as an error', async () => {
    const broken = new Readable({
      read() {
        this.destroy(new Error('disk on fire'));
      },
    });
    await assert.rejects(compress(broken, sink().stream, { algorithm: 'gzip' }), /disk on fire/);
  });

  it('passes on a failing destination as an error', async () => {
    let writes = 0;
    const failing = new Writable({
      write(_chunk, _enc, done) {
        done(++writes === 2 ? new Error('no space left on device') : null);
      },
    });
    await assert.rejects(compress(source(sample(3 * MiB)), failing, { algorithm: 'gzip', threads: 2 }), /no space left/);
  });

  it('can be cancelled while the destination never drains', async () => {
    const stuck = new Writable({
      highWaterMark: 1024,
      write() {
        // never calls back: a peer that stopped reading
      },
    });
    const ac = new AbortController();
    const running = compress(source(sample(3 * MiB)), stuck, { algorithm: 'gzip', threads: 2, signal: ac.signal });
    setTimeout(() => ac.abort(), 200);
    await assert.rejects(running, CancelledError);
  });

  it('refuses bad options with UsageError', async () => {
    const bad: CompressOptions[] = [
      { algorithm: 'gzip', level: 0 },
      { algorithm: 'gzip', level: 10 },
      { algorithm: 'zstd', level: 30 },
      { algorithm: 'gzip', threads: 0 },
      { algorithm: 'gzip', threads: 1.5 },
      { algorithm: 'xz' as 'gzip' },
    ];
    for (const opts of bad) await assert.rejects(compress(source(Buffer.alloc(1)), sink().stream, opts), UsageError);
  });
});

describe('compress zstd', () => {
  it('writes a stream zstd -d reads, the same for any thread count', async () => {
    const data = sample(3 * MiB + 5);
    const one = await run(data, { algorithm: 'zstd', threads: 1 });
    const two = await run(data, { algorithm: 'zstd', threads: 2 });
    assert.equal(one.digest, sha(one.out));
    assert.equal(one.size, one.out.length);
    assert.equal(two.digest, one.digest);
    assert.deepEqual(one.out.subarray(0, 4), Buffer.from([0x28, 0xb5, 0x2f, 0xfd]));
    const d = spawnSync('zstd', ['-dc'], { input: one.out, maxBuffer: 64 * MiB });
    assert.equal(d.status, 0, d.stderr.toString());
    assert.equal(sha(d.stdout), sha(data));
  });
});

describe('crc32Combine', () => {
  it('matches the CRC of the concatenation', () => {
    for (const [a, b] of [[0, 0], [0, 5], [5, 0], [1, 1], [1000, 65_536], [MiB, 12_345], [77, MiB]] as const) {
      const x = randomBytes(a);
      const y = randomBytes(b);
      assert.equal(crc32Combine(zlib.crc32(x), zlib.crc32(y), b), zlib.crc32(Buffer.concat([x, y])), `${a}+${b}`);
    }
  });
});

describe('decompress', () => {
  async function roundTrip(input: Buffer, chunk = 65_536, first = 0): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const c of decompress(source(input, chunk, first))) parts.push(c as Buffer);
    return Buffer.concat(parts);
  }

  it('sniffs gzip, zstd and plain streams, even when the magic arrives byte by byte', async () => {
    const data = sample(MiB + 3);
    const gz = zlib.gzipSync(data);
    const zst = spawnSync('zstd', ['-c'], { input: data, maxBuffer: 64 * MiB }).stdout;
    assert.equal(sniffCompression(gz), 'gzip');
    assert.equal(sniffCompression(zst), 'zstd');
    assert.equal(sniffCompression(data.subarray(0, 4)), 'none');
    assert.ok((await roundTrip(gz, 65_536, 6)).equals(data));
    assert.ok((await roundTrip(zst, 3333, 3)).equals(data));
    assert.ok((await roundTrip(data, 100_000)).equals(data));
    const ours = await run(data, { algorithm: 'gzip', threads: 2 });
    assert.ok((await roundTrip(ours.out, 50_000)).equals(data));
  });

  it('passes through inputs shorter than a magic number', async () => {
    assert.equal((await roundTrip(Buffer.alloc(0))).length, 0);
    assert.equal((await roundTrip(Buffer.from([0x1f]))).toString('hex'), '1f');
    assert.equal((await roundTrip(Buffer.from('abc'), 1, 3)).toString(), 'abc');
    const pt = new PassThrough();
    pt.end('xy');
    assert.equal(await text(decompress(pt)), 'xy');
  });

  it('fails the stream on corrupt compressed data', async () => {
    const gz = zlib.gzipSync(sample(100_000));
    gz[gz.length - 20] = (gz[gz.length - 20] ?? 0) ^ 0xff;
    gz.writeUInt32LE(0, gz.length - 8);
    await assert.rejects(roundTrip(gz, 4096), /cannot decompress layer/);
  });
});
