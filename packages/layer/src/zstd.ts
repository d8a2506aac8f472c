/**
 * zstd streams, from the optional `zstd-napi` addon or from Node's own zlib, which has zstd from
 * 22.15 and 23.8 on. zstd-napi builds with node-gyp (a compiler, make and python3), so a machine
 * may lack it; on a Node with zstd of its own tsbuild then still reads and writes zstd.
 *
 * Which one serves each direction was measured on this kind of machine (bench/RESULTS.md, "zstd:
 * Node's zlib against zstd-napi"); see ENGINE_ORDER. Node's compressor (24.22) cannot run zstd's
 * worker threads from a stream (nodejs/node#59899: "stream.push() after EOF" at the end) and
 * appends an empty frame when end() finds writes still queued (nodejs/node#66078), so it serves
 * only where zstd-napi is missing, single-threaded and fed one write at a time. Its output is
 * deterministic but not the addon's multi-threaded bytes: the digest of a zstd layer made on
 * such a machine differs from one made with the addon (both decompress to the same tar).
 */
import { createRequire } from 'node:module';
import { Transform } from 'node:stream';
import type * as Zlib from 'node:zlib';
import { TsbuildError } from '@tsbuild/errors';

export type ZstdEngine = 'node' | 'zstd-napi';

export interface ZstdCompressParams {
  level: number;
  /** zstd-napi's worker threads, at least 1 (the multi-threaded format, the same for any count). */
  workers: number;
  /** Bytes per worker job (zstd-napi). */
  jobSize: number;
}

/** What tsbuild uses of zstd-napi (declared here: the addon may be absent, its types with it). */
interface ZstdAddon {
  CompressStream: new (params: { compressionLevel: number; nbWorkers: number; jobSize: number; checksumFlag: boolean }) => Transform;
  DecompressStream: new () => Transform;
}

/** Node's zstd API, which @types/node for Node 20 does not declare. */
interface NodeZstd {
  createZstdCompress?: (opts: { params: Record<number, number>; chunkSize?: number }) => Transform;
  createZstdDecompress?: (opts?: { chunkSize?: number }) => Transform;
}

/** node:zlib loads when zstd is first used (a build that compresses nothing never needs it). */
const zlib = (): typeof Zlib => process.getBuiltinModule('node:zlib');
const nodeZstd = (): NodeZstd => zlib() as unknown as NodeZstd;
const zc = (): Record<string, number | undefined> => zlib().constants as unknown as Record<string, number | undefined>;

/*
 * Output chunks of Node's zstd streams: with its 16 KiB default, decompression ran at a third of
 * zstd-napi's speed (a thread-pool round trip per chunk); with 1 MiB at the same speed.
 */
const NODE_CHUNK = 1 << 20;

/**
 * Preferred engine first, per direction; the first one available serves. Measured on Node 24.22
 * over 400 MiB of layer data, 2 cores: compressing, zstd-napi 1206 ms (its 2 worker threads)
 * against Node's 2205 ms (one thread, see above); decompressing, zstd-napi 873 ms against 1040 ms
 * (0.92 against 1.04 CPU s). Node's needs no addon, so it serves wherever zstd-napi is missing.
 */
const ENGINE_ORDER: Record<'compress' | 'decompress', readonly ZstdEngine[]> = {
  compress: ['zstd-napi', 'node'],
  decompress: ['zstd-napi', 'node'],
};

let addon: { mod?: ZstdAddon; why?: string } | undefined;

/** zstd-napi, loaded on first use; `why` tells what is wrong when it cannot be. */
function loadAddon(): { mod?: ZstdAddon; why?: string } {
  if (addon) return addon;
  try {
    addon = { mod: createRequire(import.meta.url)('zstd-napi') as ZstdAddon };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    addon = {
      why:
        err.code === 'MODULE_NOT_FOUND' && /'zstd-napi'/.test(err.message)
          ? 'zstd-napi is not installed'
          : `zstd-napi does not load: ${err.message.split('\n')[0]}`,
    };
  }
  return addon;
}

function available(engine: ZstdEngine): boolean {
  return engine === 'node' ? typeof nodeZstd().createZstdCompress === 'function' : loadAddon().mod !== undefined;
}

/** The engine that would serve `direction` here, or undefined when neither can. */
export function zstdEngine(direction: 'compress' | 'decompress'): ZstdEngine | undefined {
  return ENGINE_ORDER[direction].find(available);
}

function unavailable(): TsbuildError {
  return new TsbuildError(
    'ZSTD_UNAVAILABLE',
    `zstd is not available: Node ${process.version} has no zstd of its own (it came in Node 22.15) and ${loadAddon().why ?? 'zstd-napi is missing'}`,
    {
      hint: 'run tsbuild on Node 22.15 or newer (24 recommended), or install zstd-napi, which builds with node-gyp: apt-get install g++ make python3, then pnpm install (or npm install zstd-napi); gzip works without either',
    },
  );
}

function pick(direction: 'compress' | 'decompress', engine: ZstdEngine | undefined): ZstdEngine {
  if (engine !== undefined) {
    if (!available(engine)) {
      throw engine === 'node'
        ? new TsbuildError('ZSTD_UNAVAILABLE', `Node ${process.version} has no zstd of its own`)
        : new TsbuildError('ZSTD_UNAVAILABLE', loadAddon().why ?? 'zstd-napi is missing');
    }
    return engine;
  }
  const e = zstdEngine(direction);
  if (e === undefined) throw unavailable();
  return e;
}

/**
 * A zstd compressor with a checksum, in the multi-threaded format. `engine` forces one (for
 * measuring them); without it the faster available one serves. Throws ZSTD_UNAVAILABLE when none can.
 */
export function createZstdCompressor(p: ZstdCompressParams, engine?: ZstdEngine): Transform {
  if (pick('compress', engine) === 'node') {
    const level = zc().ZSTD_c_compressionLevel;
    const checksum = zc().ZSTD_c_checksumFlag;
    if (level === undefined || checksum === undefined) throw new TsbuildError('ZSTD_UNAVAILABLE', `Node ${process.version}'s zlib lacks zstd's parameters`);
    return new OneWriteAtATime(nodeZstd().createZstdCompress!({ params: { [level]: p.level, [checksum]: 1 }, chunkSize: NODE_CHUNK }));
  }
  const { CompressStream } = loadAddon().mod!;
  return new CompressStream({ compressionLevel: p.level, nbWorkers: p.workers, jobSize: p.jobSize, checksumFlag: true });
}

/**
 * Feeds `inner` one chunk at a time, the next only once it has taken the last, and ends it only
 * then: Node's zstd compressor ends its frame early, and adds an empty one, when end() is called
 * with writes still queued (nodejs/node#66078), which would make the bytes depend on timing.
 */
class OneWriteAtATime extends Transform {
  readonly #inner: Transform;

  constructor(inner: Transform) {
    super();
    this.#inner = inner;
    inner.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) inner.pause();
    });
    inner.on('error', (err) => this.destroy(err));
  }

  override _read(size: number): void {
    this.#inner.resume();
    super._read(size);
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.#inner.write(chunk, (err) => done(err));
  }

  override _flush(done: (err?: Error | null) => void): void {
    this.#inner.once('end', () => done());
    this.#inner.end();
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.#inner.destroy();
    done(err);
  }
}

/** A zstd decompressor; the same choice of engine as createZstdCompressor. */
export function createZstdDecompressor(engine?: ZstdEngine): Transform {
  if (pick('decompress', engine) === 'node') return nodeZstd().createZstdDecompress!({ chunkSize: NODE_CHUNK });
  const { DecompressStream } = loadAddon().mod!;
  return new DecompressStream();
}
