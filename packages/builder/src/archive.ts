import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { TsbuildError } from '@tsbuild/errors';
import { apply, decompressAs, isTarHeader, sniffArchiveCompression } from '@tsbuild/layer';
import type { ArchiveCompression } from '@tsbuild/layer';
import type { Owner } from './chown.ts';
import { BuildContext } from './context.ts';
import { copyInto } from './copy.ts';
import type { CopyOptions } from './copy.ts';
import { NO_IGNORE } from './ignore.ts';

// The magic numbers live with every other decompression, and the tar header check with the rest
// of the tar format, in @tsbuild/layer.
export { isTarHeader, sniffArchiveCompression };
export type { ArchiveCompression };

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

/** The decompressed bytes of `file` (gzip, zstd, xz or bzip2, told by its first bytes). */
export function openDecompressed(file: string, opts: { signal?: AbortSignal } = {}): Readable {
  const kind: ArchiveCompression = sniffArchiveCompression(readHead(file, 6));
  if (kind === 'none') return fs.createReadStream(file);
  return decompressAs(fs.createReadStream(file), kind, {
    signal: opts.signal,
    errorMessage: (reason) => `cannot decompress ${path.basename(file)} (${kind}): ${reason}`,
  });
}

/** Failures that say the machine lacks something, not that the file is no archive. */
const MISSING = new Set(['MISSING_TOOL', 'ZSTD_UNAVAILABLE']);

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
  } catch (e) {
    // Copying a .tar.xz as it is because xz is not installed would be a silent wrong result.
    if (e instanceof TsbuildError && MISSING.has(e.code)) throw e;
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
    await apply(openDecompressed(file, { signal: opts.signal }), staging, { signal: opts.signal });
    await fs.promises.mkdir(destDir, { recursive: true });
    const ctx = await BuildContext.open(staging, { ignore: NO_IGNORE });
    const matches = await ctx.resolveSources(['.']);
    const copyOpts: CopyOptions = { workdir: '/', keepOwnership: true };
    if (opts.chown) copyOpts.chown = opts.chown;
    if (opts.signal) copyOpts.signal = opts.signal;
    const r = await copyInto(ctx, matches, destDir, '/', copyOpts);
    return { entries: r.entries };
  } finally {
    await fs.promises.rm(staging, { recursive: true, force: true });
  }
}
