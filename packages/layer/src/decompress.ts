/**
 * Every decompression tsbuild does, as a stream: gzip through Node's zlib, zstd through zstd.ts
 * (the zstd-napi addon or Node's own zstd), and xz and bzip2, for which Node has no decoder,
 * through their command-line tools (the one place that spawns them). Whatever fails on the way (a
 * truncated or corrupt input, a missing tool, a broken source) reaches the reader as a
 * TsbuildError saying what went wrong.
 */
import type * as ChildProcess from 'node:child_process';
import { Duplex, PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type * as Zlib from 'node:zlib';
import { TsbuildError } from '@tsbuild/errors';
import type { Compression } from '@tsbuild/oci';
import { createZstdDecompressor } from './zstd.ts';

/** Loaded on first use: a cached build decompresses nothing and starts no tool. */
const zlib = (): typeof Zlib => process.getBuiltinModule('node:zlib');
const childProcess = (): typeof ChildProcess => process.getBuiltinModule('node:child_process');

/** What an archive (ADD's tarballs, a rootfs to import) may be compressed with; layers use only none, gzip and zstd. */
export type ArchiveCompression = 'none' | 'gzip' | 'bzip2' | 'xz' | 'zstd';

export interface DecompressOptions {
  signal?: AbortSignal;
  /**
   * The message of the error a failure becomes, from what went wrong (default: "cannot decompress
   * layer: …"). The error keeps the code and hint of a TsbuildError (ZSTD_UNAVAILABLE,
   * MISSING_TOOL); anything else is DECOMPRESS.
   */
  errorMessage?: (reason: string) => string;
}

/** Which compression a blob starts with, from its first bytes (at least 4 to tell zstd). */
export function sniffCompression(head: Uint8Array): Compression {
  const kind = sniffArchiveCompression(head);
  return kind === 'gzip' || kind === 'zstd' ? kind : 'none';
}

/** The compression an archive starts with, from its magic bytes (at least 6 to tell xz). */
export function sniffArchiveCompression(head: Uint8Array): ArchiveCompression {
  const at = (i: number): number | undefined => head[i];
  if (at(0) === 0x1f && at(1) === 0x8b) return 'gzip';
  if (at(0) === 0x42 && at(1) === 0x5a && at(2) === 0x68) return 'bzip2';
  if (at(0) === 0xfd && at(1) === 0x37 && at(2) === 0x7a && at(3) === 0x58 && at(4) === 0x5a && at(5) === 0x00) return 'xz';
  if (at(0) === 0x28 && at(1) === 0xb5 && at(2) === 0x2f && at(3) === 0xfd) return 'zstd';
  return 'none';
}

/**
 * The uncompressed bytes of a gzip, zstd or plain stream, told apart by their magic numbers, so a
 * pulled layer can be applied whatever its media type claims. With `archives`, xz and bzip2 are
 * undone too (ADD's tarballs); a layer that starts like them is passed through as it is.
 */
export function decompress(src: Readable, opts: DecompressOptions & { archives?: boolean } = {}): Readable {
  return run(src, opts, async () => {
    const { head, stream } = await peek(src, 6);
    const kind = sniffArchiveCompression(head);
    const layerKind = kind === 'gzip' || kind === 'zstd' ? kind : 'none';
    return { stream, kind: opts.archives ? kind : layerKind };
  });
}

/** The uncompressed bytes of `src`, compressed with `kind` as its media type or name says. */
export function decompressAs(src: Readable, kind: ArchiveCompression, opts: DecompressOptions = {}): Readable {
  return run(src, opts, async () => ({ stream: src, kind }));
}

/** What Debian calls the package holding each tool. */
const TOOLS = { xz: { cmd: 'xz', pkg: 'xz-utils' }, bzip2: { cmd: 'bzip2', pkg: 'bzip2' } } as const;

function run(src: Readable, opts: DecompressOptions, open: () => Promise<{ stream: Readable; kind: ArchiveCompression }>): Readable {
  const message = opts.errorMessage ?? ((reason: string) => `cannot decompress layer: ${reason}`);
  // A missing tool is what the user must hear about, not the broken pipe it leaves behind.
  let cause: Error | undefined;
  const toError = (err: Error): TsbuildError => {
    const e = cause ?? err;
    return e instanceof TsbuildError
      ? new TsbuildError(e.code, message(e.message), { ...(e.hint === undefined ? {} : { hint: e.hint }), cause: e })
      : new TsbuildError('DECOMPRESS', message(e.message), { cause: e });
  };
  let stopTool: (() => void) | undefined;
  const out = new PassThrough({
    destroy(err, callback) {
      stopTool?.();
      if (!src.destroyed) src.destroy();
      callback(err === null ? null : toError(err));
    },
  });
  void (async () => {
    const { stream, kind } = await open();
    const stages: Duplex[] = [];
    if (kind === 'gzip') stages.push(zlib().createGunzip());
    else if (kind === 'zstd') stages.push(createZstdDecompressor());
    else if (kind === 'xz' || kind === 'bzip2') {
      const tool = toolDecoder(TOOLS[kind], (e) => (cause ??= e));
      stopTool = tool.stop;
      stages.push(tool.stage);
    }
    await pipeline([stream, ...stages, out], { signal: opts.signal });
  })().catch((err: unknown) => {
    out.destroy(err instanceof Error ? err : new Error(String(err)));
  });
  return out;
}

/**
 * `cmd -dcq` as a stream stage: input on its stdin, output from its stdout, which ends only once
 * the tool has exited cleanly, so a corrupt input is an error and not a short file.
 */
function toolDecoder(tool: { cmd: string; pkg: string }, failed: (e: Error) => void): { stage: Duplex; stop: () => void } {
  const child = childProcess().spawn(tool.cmd, ['-dcq'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 4096) stderr += d;
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', (e: NodeJS.ErrnoException) => {
      const err =
        e.code === 'ENOENT'
          ? new TsbuildError('MISSING_TOOL', `the ${tool.cmd} command is not installed (Node has no ${tool.cmd} decoder)`, {
              hint: `install the "${tool.pkg}" package (apt-get install ${tool.pkg})`,
              cause: e,
            })
          : e;
      failed(err);
      reject(err);
    });
    child.on('close', (code) => resolve(code));
  });
  exited.catch(() => {});
  const gate = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      cb(null, chunk);
    },
    flush(cb) {
      exited.then(
        (code) => cb(code === 0 ? null : new Error(`${tool.cmd} exited with ${code}: ${stderr.trim()}`)),
        (e: unknown) => cb(e as Error),
      );
    },
  });
  child.stdout.pipe(gate);
  child.stdout.on('error', (e) => gate.destroy(e));
  // The tool stops reading once it has failed: its stdin then breaks, which says nothing new.
  child.stdin.on('error', () => {});
  const stop = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill();
  };
  return { stage: Duplex.from({ writable: child.stdin, readable: gate }), stop };
}

/**
 * Reads the first `n` bytes (fewer if the stream is shorter) and returns them with a stream
 * that still starts at byte 0.
 */
async function peek(src: Readable, n: number): Promise<{ head: Buffer; stream: Readable }> {
  const parts: Buffer[] = [];
  let have = 0;
  while (have < n && !src.readableEnded) {
    const chunk: unknown = src.read();
    if (chunk === null) {
      if (src.errored) throw src.errored;
      await nextReadable(src);
      continue;
    }
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : Buffer.from(chunk as Uint8Array);
    parts.push(buf);
    have += buf.length;
  }
  const head = Buffer.concat(parts);
  // unshift is refused once 'end' has been emitted; a stream that short is replayed instead.
  if (src.readableEnded) return { head, stream: Readable.from(head.length > 0 ? [head] : []) };
  if (head.length > 0) src.unshift(head);
  return { head, stream: src };
}

/** Resolves at the next 'readable' or 'end', rejects on 'error'. */
function nextReadable(src: Readable): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error): void => {
      src.off('readable', onReady);
      src.off('end', onReady);
      src.off('error', done);
      if (err) reject(err);
      else resolve();
    };
    const onReady = (): void => done();
    src.on('readable', onReady);
    src.on('end', onReady);
    src.on('error', done);
  });
}
