import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Transform } from 'node:stream';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { TsbuildError } from '@tsbuild/errors';
import { apply } from '@tsbuild/layer';
import type { Owner } from './chown.ts';
import { BuildContext } from './context.ts';
import { copyInto } from './copy.ts';
import { NO_IGNORE } from './ignore.ts';

export type ArchiveCompression = 'none' | 'gzip' | 'bzip2' | 'xz' | 'zstd';

/** The compression a file starts with, from its magic bytes. */
export function sniffArchiveCompression(head: Uint8Array): ArchiveCompression {
  const at = (i: number): number | undefined => head[i];
  if (at(0) === 0x1f && at(1) === 0x8b) return 'gzip';
  if (at(0) === 0x42 && at(1) === 0x5a && at(2) === 0x68) return 'bzip2';
  if (at(0) === 0xfd && at(1) === 0x37 && at(2) === 0x7a && at(3) === 0x58 && at(4) === 0x5a && at(5) === 0x00) return 'xz';
  if (at(0) === 0x28 && at(1) === 0xb5 && at(2) === 0x2f && at(3) === 0xfd) return 'zstd';
  return 'none';
}

/**
 * Whether a 512-byte block is a tar header: its checksum must hold (ustar, GNU and old V7
 * headers all carry one). An all-zero block is the end of an archive, not a header.
 */
export function isTarHeader(block: Uint8Array): boolean {
  if (block.length < 512) return false;
  let unsigned = 0;
  let signed = 0;
  let zero = true;
  for (let i = 0; i < 512; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : (block[i] as number);
    if (block[i] !== 0) zero = false;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  if (zero) return false;
  const field = Buffer.from(block.subarray(148, 156)).toString('latin1').replace(/[\0 ]+$/, '').trim();
  if (!/^[0-7]+$/.test(field)) return false;
  const want = parseInt(field, 8);
  return want === unsigned || want === signed;
}

const TOOL: Partial<Record<ArchiveCompression, string>> = { bzip2: 'bzip2', xz: 'xz', zstd: 'zstd' };

function readHead(file: string, n: number): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(n);
    const got = fs.readSync(fd, buf, 0, n, 0);
    return buf.subarray(0, got);
  } finally {
    fs.closeSync(fd);
  }
}

/** The decompressed bytes of `file` (gzip in-process; bzip2, xz and zstd through their tools). */
export function openDecompressed(file: string, opts: { signal?: AbortSignal } = {}): Readable {
  const kind = sniffArchiveCompression(readHead(file, 6));
  if (kind === 'none') return fs.createReadStream(file);
  const out = new PassThrough();
  if (kind === 'gzip') {
    pipeline(fs.createReadStream(file), zlib.createGunzip(), out, opts.signal ? { signal: opts.signal } : {}).catch((e: unknown) => {
      out.destroy(new TsbuildError('DECOMPRESS', `cannot decompress ${path.basename(file)} (gzip): ${(e as Error).message}`, { cause: e }));
    });
    return out;
  }
  const tool = TOOL[kind] as string;
  const child = spawn(tool, ['-dcq', '--', file], { stdio: ['ignore', 'pipe', 'pipe'], ...(opts.signal ? { signal: opts.signal } : {}) });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => {
    if (stderr.length < 4096) stderr += d;
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve(code));
  });
  exited.catch(() => {});
  // The stream ends only once the tool has exited cleanly, so a corrupt input is an error, not a short file.
  const gate = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      cb(null, chunk);
    },
    flush(cb) {
      exited.then(
        (code) => cb(code === 0 ? null : new Error(`${tool} exited with ${code}: ${stderr.trim()}`)),
        (e: unknown) => cb(e as Error),
      );
    },
  });
  pipeline(child.stdout, gate, out).catch((e: unknown) => {
    if (child.exitCode === null) child.kill();
    const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? `${tool} is not installed` : (e as Error).message;
    out.destroy(new TsbuildError('DECOMPRESS', `cannot decompress ${path.basename(file)} (${kind}): ${why}`, { cause: e }));
  });
  out.on('close', () => {
    if (child.exitCode === null && child.signalCode === null) child.kill();
  });
  return out;
}

/**
 * Whether ADD unpacks `file`: it must be a tar, plain or compressed with gzip, bzip2, xz or
 * zstd. Anything else, including a corrupt compressed file, is copied as it is (Docker's rule).
 */
export async function isArchive(file: string, opts: { signal?: AbortSignal } = {}): Promise<boolean> {
  const head = readHead(file, 512);
  if (sniffArchiveCompression(head) === 'none') return isTarHeader(head);
  const stream = openDecompressed(file, opts);
  const parts: Buffer[] = [];
  let have = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      parts.push(chunk);
      have += chunk.length;
      if (have >= 512) break;
    }
  } catch {
    return false;
  } finally {
    stream.destroy();
  }
  return isTarHeader(Buffer.concat(parts).subarray(0, 512));
}

export interface ExtractOptions {
  /** Owner for every extracted entry; without it the archive's owners are kept. */
  chown?: Owner;
  /** Where to unpack before merging into `destDir` (default: the OS temp dir). */
  tmpDir?: string;
  signal?: AbortSignal;
}

export interface ExtractResult {
  /** Entries merged into the destination. */
  entries: number;
}

/**
 * ADD's unpacking: the archive is decompressed and applied into a private directory with the
 * layer package's hostile-archive checks, then merged into `destDir` by the COPY rules, so
 * that neither the archive's names nor its symlinks can reach outside `destDir`, and existing
 * directories keep their own metadata.
 */
export async function extractArchive(file: string, destDir: string, opts: ExtractOptions = {}): Promise<ExtractResult> {
  const staging = await fs.promises.mkdtemp(path.join(opts.tmpDir ?? os.tmpdir(), 'tsbuild-add-'));
  try {
    await apply(openDecompressed(file, opts.signal ? { signal: opts.signal } : {}), staging, opts.signal ? { signal: opts.signal } : {});
    await fs.promises.mkdir(destDir, { recursive: true });
    const ctx = await BuildContext.open(staging, { ignore: NO_IGNORE });
    const matches = await ctx.resolveSources(['.']);
    const copyOpts: Parameters<typeof copyInto>[4] = { workdir: '/', keepOwnership: true };
    if (opts.chown) copyOpts.chown = opts.chown;
    if (opts.signal) copyOpts.signal = opts.signal;
    const r = await copyInto(ctx, matches, destDir, '/', copyOpts);
    return { entries: r.entries };
  } finally {
    await fs.promises.rm(staging, { recursive: true, force: true });
  }
}
