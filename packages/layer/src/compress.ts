import { createHash, type Hash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Readable, Transform } from 'node:stream';
import type { Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import type * as WorkerThreads from 'node:worker_threads';
import type { Worker } from 'node:worker_threads';
import type * as Zlib from 'node:zlib';
import { CancelledError, InternalError, TsbuildError, UsageError } from '@tsbuild/errors';
import type { Digest } from '@tsbuild/oci';
import { createZstdCompressor } from './zstd.ts';
import { drained } from './batches.ts';

/** Loaded on first use: a build that compresses nothing (cached, or exported uncompressed) starts neither. */
const zlib = (): typeof Zlib => process.getBuiltinModule('node:zlib');
const workerThreads = (): typeof WorkerThreads => process.getBuiltinModule('node:worker_threads');

export type CompressionAlgorithm = 'gzip' | 'zstd';

export interface CompressOptions {
  algorithm: CompressionAlgorithm;
  /** gzip 1–9 (default 6), zstd 1–19 (default 3). */
  level?: number;
  /** Worker threads; defaults to every core. Never changes the output bytes. */
  threads?: number;
  /**
   * false: do not hash the output (the result then has no digest). For a destination that hashes
   * what it is given anyway, such as the store's blob writer: a second sha256 of every compressed
   * byte costs the main thread as much as writing them. Default true.
   */
  hash?: boolean;
  signal?: AbortSignal;
}

export interface CompressResult {
  /** sha256 of the compressed bytes written to `out`. */
  digest: Digest;
  /** Number of compressed bytes written to `out`. */
  size: number;
}

/*
 * Default levels, measured on this kind of machine with node zlib on a 200 MB tar of /usr
 * (1 MiB blocks, one core): level 1 ≈ 66 MB/s at ratio 0.611, level 6 ≈ 51 MB/s at 0.593,
 * level 9 ≈ 31 MB/s at 0.592. Level 1 saves only a quarter of the time for 3% more bytes that
 * every pull then downloads, and 6 is what gzip, pigz and Go's compress/gzip (so docker and
 * containerd) use by default, so 6 it is. zstd 3 is the zstd CLI's default and already far
 * faster than any gzip level.
 */
const DEFAULT_GZIP_LEVEL = 6;
const DEFAULT_ZSTD_LEVEL = 3;
/*
 * zstd's default job at level 3 is 8 MiB per worker, several buffers deep: measured on a 200 MB
 * tar with 2 workers, 2 MiB jobs bring peak RSS from 161 to 98 MB for 0.26% more bytes.
 */
const ZSTD_JOB_SIZE = 2 << 20;

/*
 * The block size is fixed (never derived from the thread count) so that the same input gives
 * the same bytes on every machine. 1 MiB keeps memory at a few MB per thread while making the
 * per-block cost (flush marker, worker round trip) negligible.
 */
const BLOCK_SIZE = 1 << 20;
/*
 * Blocks are deflated independently, without priming each with the previous block's last 32 KiB
 * as pigz does: measured on a tar of /usr that gains 0.1% and costs 10% more time.
 */

/**
 * Compress `src` into `out` (which is ended) and return the digest and size of what was written.
 * gzip output is one gzip member made of independently deflated 1 MiB blocks, so every core
 * works on it and the bytes do not depend on the thread count. zstd uses the library's own
 * worker threads.
 */
export async function compress(src: Readable, out: Writable, opts: CompressOptions & { hash: false }): Promise<{ size: number }>;
export async function compress(src: Readable, out: Writable, opts: CompressOptions): Promise<CompressResult>;
export async function compress(src: Readable, out: Writable, opts: CompressOptions): Promise<CompressResult | { size: number }> {
  const { algorithm, signal } = opts;
  if (algorithm !== 'gzip' && algorithm !== 'zstd') {
    throw new UsageError(`unknown compression ${JSON.stringify(algorithm)}`, { hint: 'use gzip or zstd' });
  }
  const threads = opts.threads ?? availableParallelism();
  if (!Number.isInteger(threads) || threads < 1 || threads > 256) {
    throw new UsageError(`compression threads must be an integer from 1 to 256, got ${threads}`);
  }
  const [minLevel, maxLevel] = algorithm === 'gzip' ? [1, 9] : [1, 19];
  const level = opts.level ?? (algorithm === 'gzip' ? DEFAULT_GZIP_LEVEL : DEFAULT_ZSTD_LEVEL);
  if (!Number.isInteger(level) || level < minLevel || level > maxLevel) {
    throw new UsageError(`${algorithm} level must be an integer from ${minLevel} to ${maxLevel}, got ${level}`);
  }
  if (signal?.aborted) throw cancelled(signal);

  try {
    const hash = opts.hash === false ? undefined : createHash('sha256');
    const size = algorithm === 'gzip' ? await gzipParallel(src, out, level, threads, hash, signal) : await zstdStream(src, out, level, threads, hash, signal);
    return hash === undefined ? { size } : { digest: `sha256:${hash.digest('hex')}`, size };
  } catch (err) {
    if (!out.destroyed) out.destroy();
    if (!src.destroyed) src.destroy();
    if (signal?.aborted) throw cancelled(signal);
    if (err instanceof TsbuildError) throw err;
    throw new TsbuildError('COMPRESS', `${algorithm} compression failed: ${errorMessage(err)}`, { cause: err });
  }
}

// Decompression lives in decompress.ts; these names stay here for the code that imports them from here.
export { decompress, sniffCompression } from './decompress.ts';

// ---------------------------------------------------------------------------------------------
// zstd

async function zstdStream(
  src: Readable,
  out: Writable,
  level: number,
  threads: number,
  hash: Hash | undefined,
  signal: AbortSignal | undefined,
): Promise<number> {
  let size = 0;
  // workers ≥ 1 always: zstd's multi-threaded format is the same for any worker count but
  // differs from its single-threaded one, and digests must not depend on the machine.
  const encoder = createZstdCompressor({ level, workers: threads, jobSize: ZSTD_JOB_SIZE });
  const tap = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash?.update(chunk);
      size += chunk.length;
      done(null, chunk);
    },
  });
  await pipeline(src, encoder, tap, out, { signal });
  return size;
}

// ---------------------------------------------------------------------------------------------
// gzip

interface BlockResult {
  deflated: Buffer;
  crc: number;
  length: number;
  /** The input buffer, handed back so it can be reused. */
  input: ArrayBuffer;
}

/*
 * Runs in each worker (and is mirrored by deflateBlock for blocks the main thread handles
 * itself; a test checks both give the same bytes). Plain JavaScript in a string so that it
 * works unchanged from TypeScript sources and from the bundled CLI.
 */
/*
 * Data that does not compress (random bytes, already-compressed files) is stored, not deflated:
 * deflate spends ~30 s of CPU per GiB of it for nothing. A block whose start, middle and end
 * (32 KiB each) shrink by less than 3% at level 1 (about 1 ms each) is written as stored deflate
 * blocks. The choice depends
 * only on the block's bytes, so the output stays the same for any thread count.
 */
const PROBE_SIZE = 32 << 10;
const STORE_RATIO = 0.97;

function storeLevel(data: Buffer, level: number): number {
  if (level === 0 || data.length < PROBE_SIZE * 4) return level;
  const incompressible = (at: number): boolean =>
    zlib().deflateRawSync(data.subarray(at, at + PROBE_SIZE), { level: 1 }).length >= PROBE_SIZE * STORE_RATIO;
  // Start, middle and end must all look random: a block that mixes data keeps being deflated.
  return [0, (data.length >> 1) - PROBE_SIZE / 2, data.length - PROBE_SIZE].every(incompressible) ? 0 : level;
}

/*
 * A probe only needs the length of its level-1 deflate. zlib.deflateRawSync builds a stream
 * object and fresh output buffers for each call, garbage V8 lets pile up in a worker before
 * collecting it: measured on 1 GiB of random bytes, the three probes per block took a 2-thread
 * gzip from 150 to 220 MB of peak RSS. So a worker keeps one level-1 engine and one output
 * buffer, resets the engine before each probe (deflateReset: deflateEnd plus deflateInit with
 * the same settings) and writes into that buffer, allocating nothing. This uses the engine's
 * handle, which Node does not document: a self-check against deflateRawSync when the worker
 * starts, and any probe the buffer cannot hold, fall back to deflateRawSync, so the decision
 * (and the output) is the same either way.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const zlib = require('node:zlib');
const probeLengthSlow = (b) => zlib.deflateRawSync(b, { level: 1 }).length;
let probeLength = probeLengthSlow;
try {
  const engine = zlib.createDeflateRaw({ level: 1 });
  const handle = engine._handle;
  const state = engine._writeState;
  const room = Buffer.allocUnsafe(${PROBE_SIZE} + 4096);
  const fast = (b) => {
    handle.reset();
    handle.writeSync(zlib.constants.Z_FINISH, b, 0, b.length, room, 0, room.length);
    // Input left over or no room left: the buffer was too small to finish, so ask zlib the usual way.
    return state[1] !== 0 || state[0] === 0 ? probeLengthSlow(b) : room.length - state[0];
  };
  const random = require('node:crypto').randomBytes(${PROBE_SIZE});
  const text = Buffer.from('usr/share/doc/tsbuild/copyright 0644 root root\\n'.repeat(${Math.ceil(PROBE_SIZE / 40)})).subarray(0, ${PROBE_SIZE});
  const mixed = Buffer.concat([random.subarray(0, ${PROBE_SIZE / 2}), text.subarray(0, ${PROBE_SIZE / 2})]);
  if ([random, text, mixed, random].every((b) => fast(b) === probeLengthSlow(b))) probeLength = fast;
} catch {
  // No usable handle: deflateRawSync it is.
}
parentPort.on('message', (m) => {
  try {
    const data = Buffer.from(m.input, 0, m.length);
    const incompressible = (at) => probeLength(data.subarray(at, at + ${PROBE_SIZE})) >= ${PROBE_SIZE} * ${STORE_RATIO};
    const probes = [0, (data.length >> 1) - ${PROBE_SIZE / 2}, data.length - ${PROBE_SIZE}];
    const level = m.level > 0 && data.length >= ${PROBE_SIZE * 4} && probes.every(incompressible) ? 0 : m.level;
    const options = { level, chunkSize: m.chunkSize, finishFlush: m.last ? zlib.constants.Z_FINISH : zlib.constants.Z_SYNC_FLUSH };
    const out = zlib.deflateRawSync(data, options);
    const crc = zlib.crc32(data);
    // Small outputs may share a pooled buffer, which cannot move: those are copied.
    const movable = out.buffer.byteLength >= m.chunkSize;
    const deflated = movable ? out.buffer : out.buffer.slice(out.byteOffset, out.byteOffset + out.byteLength);
    const offset = movable ? out.byteOffset : 0;
    parentPort.postMessage({ id: m.id, deflated, offset, length: out.byteLength, crc, input: m.input }, [deflated, m.input]);
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: String((err && err.stack) || err) });
  }
});
`;

/*
 * An output chunk larger than deflate's worst case for a block makes zlib produce each block in
 * one buffer that the worker hands over whole. Without that, every block leaves a megabyte of
 * 16 KiB pieces behind in the worker, and V8 lets each thread pile up ~64 MB of such garbage
 * before collecting it (measured: ~200 MB peak RSS for a 2-thread gzip of 128 MiB, ~140 MB after).
 */
const OUT_CHUNK = BLOCK_SIZE + (64 << 10);

function deflateBlock(data: Buffer, last: boolean, level: number): Buffer {
  return zlib().deflateRawSync(data, {
    level: storeLevel(data, level),
    chunkSize: OUT_CHUNK,
    finishFlush: last ? zlib().constants.Z_FINISH : zlib().constants.Z_SYNC_FLUSH,
  });
}

interface Job {
  id: number;
  input: ArrayBuffer;
  length: number;
  last: boolean;
  resolve: (r: BlockResult) => void;
  reject: (err: Error) => void;
}

interface WorkerReply {
  id: number;
  deflated?: ArrayBuffer;
  offset?: number;
  length?: number;
  crc?: number;
  input?: ArrayBuffer;
  error?: string;
}

/*
 * Each worker is given up to this many blocks at once, so that it starts on the next one
 * straight away instead of waiting for the main thread (busy reading the tree) to hear that it
 * finished and send more.
 */
const JOBS_PER_WORKER = 2;

/** A fixed set of deflate workers fed from a queue; lives for one compress call. */
class DeflatePool {
  readonly #level: number;
  /** Jobs each worker has been sent, in the order it answers them. */
  readonly #assigned = new Map<Worker, Job[]>();
  readonly #queue: Job[] = [];
  #failure: Error | undefined;
  #nextId = 0;

  constructor(threads: number, level: number) {
    this.#level = level;
    for (let i = 0; i < threads; i++) {
      // execArgv [] keeps the parent's loaders (tsx) out of a worker that does not need them.
      const worker = new (workerThreads().Worker)(WORKER_SOURCE, { eval: true, execArgv: [] });
      worker.unref();
      worker.on('message', (reply: WorkerReply) => this.#onReply(worker, reply));
      worker.on('error', (err) => this.#fail(err));
      worker.on('exit', (code) => {
        if ((this.#assigned.get(worker)?.length ?? 0) > 0) this.#fail(new InternalError(`deflate worker exited with code ${code}`));
      });
      this.#assigned.set(worker, []);
    }
  }

  run(input: ArrayBuffer, length: number, last: boolean): Promise<BlockResult> {
    return new Promise<BlockResult>((resolve, reject) => {
      if (this.#failure) return reject(this.#failure);
      this.#queue.push({ id: this.#nextId++, input, length, last, resolve, reject });
      this.#dispatch();
    });
  }

  fail(err: Error): void {
    this.#fail(err);
  }

  async close(): Promise<void> {
    await Promise.all([...this.#assigned.keys()].map((w) => w.terminate()));
  }

  #dispatch(): void {
    while (this.#queue.length > 0) {
      let target: Worker | undefined;
      let least = JOBS_PER_WORKER;
      for (const [worker, jobs] of this.#assigned) {
        if (jobs.length < least) {
          target = worker;
          least = jobs.length;
        }
      }
      if (!target) return;
      const job = this.#queue.shift()!;
      this.#assigned.get(target)!.push(job);
      target.postMessage(
        { id: job.id, input: job.input, length: job.length, last: job.last, level: this.#level, chunkSize: OUT_CHUNK },
        [job.input],
      );
    }
  }

  #onReply(worker: Worker, reply: WorkerReply): void {
    const job = this.#assigned.get(worker)?.shift();
    if (!job || job.id !== reply.id) return this.#fail(new InternalError('deflate worker answered out of turn'));
    if (reply.error !== undefined || !reply.deflated || reply.crc === undefined || !reply.input) {
      const err = new InternalError(`deflate worker failed: ${reply.error ?? 'incomplete reply'}`);
      job.reject(err);
      return this.#fail(err);
    }
    job.resolve({ deflated: Buffer.from(reply.deflated, reply.offset ?? 0, reply.length), crc: reply.crc, length: job.length, input: reply.input });
    this.#dispatch();
  }

  #fail(err: Error): void {
    if (this.#failure) return;
    this.#failure = err;
    for (const jobs of this.#assigned.values()) for (const job of jobs.splice(0)) job.reject(err);
    for (const job of this.#queue.splice(0)) job.reject(err);
  }
}

function gzipHeader(level: number): Buffer {
  // mtime 0 and no file name keep the bytes reproducible; XFL as RFC 1952 defines it; OS 3 = Unix.
  const xfl = level === 9 ? 2 : level === 1 ? 4 : 0;
  return Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, xfl, 0x03]);
}

async function gzipParallel(
  src: Readable,
  out: Writable,
  level: number,
  threads: number,
  hash: Hash | undefined,
  signal: AbortSignal | undefined,
): Promise<number> {
  let size = 0;
  let crc = 0;
  let total = 0;
  let pool: DeflatePool | undefined;
  // A failing destination is seen here, not as an unhandled 'error' event.
  let outError: Error | undefined;
  const onOutError = (err: Error): void => {
    outError ??= err;
    pool?.fail(err);
  };
  out.on('error', onOutError);
  const emit = async (buf: Buffer): Promise<void> => {
    if (outError) throw outError;
    hash?.update(buf);
    size += buf.length;
    if (!out.write(buf)) await drained(out);
  };

  // One more block per thread than the workers hold lets the main thread read ahead while every
  // worker has its next block queued; memory stays at a few MiB per thread.
  const maxInFlight = threads * (JOBS_PER_WORKER + 1);
  const pending: Promise<BlockResult>[] = [];
  const spare: ArrayBuffer[] = [];
  const onAbort = (): void => {
    // Destroying the streams also wakes a loop that waits for input or for the output to drain.
    const err = cancelled(signal!);
    pool?.fail(err);
    src.destroy(err);
    out.destroy();
  };
  signal?.addEventListener('abort', onAbort, { once: true });

  const settle = async (): Promise<void> => {
    const r = await pending.shift()!;
    crc = crc32Combine(crc, r.crc, r.length);
    total += r.length;
    spare.push(r.input);
    await emit(r.deflated);
  };

  const submit = async (block: ArrayBuffer, length: number, last: boolean): Promise<void> => {
    if (last && pending.length === 0 && pool === undefined) {
      // A layer that fits in one block is deflated right here: starting workers would cost more.
      const view = Buffer.from(block, 0, length);
      const deflated = deflateBlock(view, true, level);
      pending.push(Promise.resolve({ deflated, crc: zlib().crc32(view), length, input: block }));
    } else {
      pool ??= new DeflatePool(threads, level);
      const job = pool.run(block, length, last);
      job.catch(() => {}); // observed by settle(); this keeps an early failure from being unhandled
      pending.push(job);
    }
    while (pending.length >= maxInFlight || (last && pending.length > 0)) await settle();
  };

  try {
    await emit(gzipHeader(level));
    let block = new ArrayBuffer(BLOCK_SIZE);
    let fill = 0;
    for await (const chunk of src as AsyncIterable<Buffer | string>) {
      if (signal?.aborted) throw cancelled(signal);
      const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      let off = 0;
      while (off < buf.length) {
        if (fill === BLOCK_SIZE) {
          // Only now is it known that this full block is not the last one.
          await submit(block, fill, false);
          block = spare.pop() ?? new ArrayBuffer(BLOCK_SIZE);
          fill = 0;
        }
        const n = buf.copy(new Uint8Array(block), fill, off, Math.min(buf.length, off + BLOCK_SIZE - fill));
        fill += n;
        off += n;
      }
    }
    await submit(block, fill, true);

    const trailer = Buffer.alloc(8);
    trailer.writeUInt32LE(crc >>> 0, 0);
    trailer.writeUInt32LE(total % 2 ** 32, 4);
    await emit(trailer);
    out.end();
    await finished(out);
    return size;
  } finally {
    signal?.removeEventListener('abort', onAbort);
    out.off('error', onOutError);
    await pool?.close();
  }
}

// ---------------------------------------------------------------------------------------------
// CRC-32 combination: the CRC of A‖B from crc(A), crc(B) and len(B), so blocks can be
// checksummed in parallel. Arithmetic on polynomials over GF(2) modulo the (reflected) CRC-32
// polynomial, as described in zlib's crc32.c.

const CRC_POLY = 0xedb88320;

/** a·b mod P, with bit 31 as the x⁰ coefficient (the reflected representation). */
function multModP(a: number, b: number): number {
  let m = 0x80000000;
  let p = 0;
  for (;;) {
    if ((a & m) !== 0) {
      p ^= b;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = (b & 1) !== 0 ? (b >>> 1) ^ CRC_POLY : b >>> 1;
  }
  return p >>> 0;
}

/** X2N[k] = x^(2^k) mod P. */
const X2N: number[] = (() => {
  const t = [0x40000000];
  for (let k = 1; k < 32; k++) t.push(multModP(t[k - 1]!, t[k - 1]!));
  return t;
})();

/** x^(n·2^k) mod P. */
function x2nModP(n: number, k: number): number {
  let p = 0x80000000;
  while (n > 0) {
    if (n % 2 === 1) p = multModP(X2N[k & 31]!, p);
    n = Math.floor(n / 2);
    k++;
  }
  return p;
}

export function crc32Combine(crcA: number, crcB: number, lengthB: number): number {
  return (multModP(x2nModP(lengthB, 3), crcA >>> 0) ^ (crcB >>> 0)) >>> 0;
}

// ---------------------------------------------------------------------------------------------

function cancelled(signal: AbortSignal): CancelledError {
  return new CancelledError('compression cancelled', { cause: signal.reason });
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
