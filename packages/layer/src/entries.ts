/**
 * Writes a layer tar from entries planned elsewhere: each entry is its header plus, for a regular
 * file, where its bytes come from (a host path read as the archive is written, or bytes in
 * memory). The archive is hashed as it streams out (the diff_id), as `diff` does for an upper
 * dir, and in the same byte layout: headers and small files share 1 MiB batches, large files pass
 * through in 1 MiB reads, mtimes are clamped to SOURCE_DATE_EPOCH. The caller decides the order,
 * names and metadata; this module only encodes and reads. Reads are synchronous: for many small
 * files a promise per file costs several times more than the I/O itself.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CancelledError, TsbuildError } from '@tsbuild/errors';
import type { DiffResult } from './diff.ts';
import { BLOCK, encodeHeader, encodeHeaderInto, endOfArchive, padding } from './tar.ts';
import type { TarHeader } from './tar.ts';

export interface LayerEntry {
  /** The entry as it goes into the archive; `size` is the body length of a regular file, else 0. */
  header: TarHeader;
  /** A regular file's bytes: a host path (read while the archive is written) or the bytes themselves. */
  body?: string | Uint8Array;
  /**
   * Sees a file body's bytes in order as they pass (one call for a small file, 1 MiB pieces for a
   * large one, `last` on the final piece; an empty body gives one empty piece). The buffer is only
   * valid during the call.
   */
  onBody?: (chunk: Buffer, last: boolean) => void;
}

export interface WriteEntriesOptions {
  /** Clamp every mtime to at most this (seconds since the epoch), for reproducible layers. */
  sourceDateEpoch?: number;
  signal?: AbortSignal;
}

const CHUNK = 1 << 20;
const EMPTY = Buffer.alloc(0);

/** Thrown when a file's size is no longer the size its header promised. */
function changed(path: string, size: number): TsbuildError {
  return new TsbuildError('LAYER_SOURCE_CHANGED', `${path} changed while it was being read (expected ${size} bytes)`, {
    hint: 'something modified the file during the build; run the build again',
  });
}

/**
 * Writes `entries` to `out` as one tar (end-of-archive marker included) and ends `out`. Resolves
 * once `out` has finished, with the sha256 and length of what was written.
 */
export async function writeEntries(entries: Iterable<LayerEntry>, out: Writable, opts: WriteEntriesOptions = {}): Promise<DiffResult> {
  const { signal } = opts;
  const epoch = opts.sourceDateEpoch;
  if (epoch !== undefined && (!Number.isFinite(epoch) || epoch < 0)) {
    out.destroy();
    throw new TsbuildError('BAD_SOURCE_DATE_EPOCH', `SOURCE_DATE_EPOCH must be a non-negative number of seconds, got ${epoch}`);
  }
  const clamp = epoch === undefined ? undefined : Math.floor(epoch);
  const hash = createHash('sha256');
  let size = 0;

  async function* chunks(): AsyncGenerator<Buffer> {
    let batch = Buffer.allocUnsafe(CHUNK);
    let pos = 0;
    const take = (): Buffer => {
      const b = batch.subarray(0, pos);
      batch = Buffer.allocUnsafe(CHUNK);
      pos = 0;
      hash.update(b);
      size += b.length;
      return b;
    };
    const fits = (n: number): boolean => pos + n <= CHUNK;

    for (const entry of entries) {
      const h0 = entry.header;
      const h = clamp !== undefined && h0.mtime > clamp ? { ...h0, mtime: clamp } : h0;
      if (!fits(BLOCK)) yield take();
      const n = encodeHeaderInto(h, batch, pos);
      if (n > 0) pos += n;
      else {
        const b = encodeHeader(h);
        if (!fits(b.length)) yield take();
        if (fits(b.length)) {
          b.copy(batch, pos);
          pos += b.length;
        } else {
          // Only xattrs can make a header larger than a batch.
          hash.update(b);
          size += b.length;
          yield b;
        }
      }
      if (h.type === 'file') {
        const body = entry.body;
        const len = h.size;
        const padded = len + padding(len);
        if (typeof body === 'string') {
          if (len === 0) entry.onBody?.(EMPTY, true);
          else {
            let fd: number;
            try {
              fd = openSync(body, 'r');
            } catch (e) {
              throw new TsbuildError('LAYER_SOURCE', `cannot read ${body}: ${(e as Error).message}`, { cause: e });
            }
            try {
              // Reads ask for one byte more than expected, so a file that grew is noticed without another call.
              const readExactly = (off: number, want: number, atEnd: boolean): void => {
                let got = 0;
                const ask = atEnd && off + want < batch.length ? want + 1 : want;
                while (got < want) {
                  const r = readSync(fd, batch, off + got, ask - got, null);
                  if (r === 0) throw changed(body, len);
                  got += r;
                }
                if (got > want) throw changed(body, len);
              };
              if (padded <= CHUNK) {
                if (!fits(padded)) yield take();
                readExactly(pos, len, true);
                entry.onBody?.(batch.subarray(pos, pos + len), true);
                batch.fill(0, pos + len, pos + padded);
                pos += padded;
              } else {
                if (pos > 0) yield take();
                let left = len;
                while (left > 0) {
                  const want = Math.min(left, CHUNK);
                  left -= want;
                  readExactly(0, want, left === 0);
                  entry.onBody?.(batch.subarray(0, want), left === 0);
                  pos = want;
                  if (left === 0) {
                    // CHUNK is a multiple of the block size, so the padding always fits after the tail.
                    const pad = padding(len);
                    batch.fill(0, pos, pos + pad);
                    pos += pad;
                  }
                  if (pos >= CHUNK) {
                    yield take();
                    signal?.throwIfAborted();
                  }
                }
              }
            } finally {
              closeSync(fd);
            }
          }
        } else {
          const bytes = body === undefined ? EMPTY : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
          if (bytes.length !== len) throw new TsbuildError('LAYER_ENTRY', `${h.path}: header says ${len} bytes, body has ${bytes.length}`);
          entry.onBody?.(bytes, true);
          for (let off = 0; off < len; ) {
            if (pos >= CHUNK) yield take();
            const k = Math.min(len - off, CHUNK - pos);
            bytes.copy(batch, pos, off, off + k);
            pos += k;
            off += k;
          }
          const pad = padding(len);
          if (!fits(pad)) yield take();
          batch.fill(0, pos, pos + pad);
          pos += pad;
        }
      }
      if (pos >= CHUNK - BLOCK) {
        yield take();
        signal?.throwIfAborted();
      }
    }
    const end = endOfArchive();
    if (!fits(end.length)) yield take();
    end.copy(batch, pos);
    pos += end.length;
    yield take();
  }

  try {
    await pipeline(Readable.from(chunks(), { objectMode: false, highWaterMark: CHUNK }), out, ...(signal ? [{ signal }] : []));
  } catch (e) {
    if (signal?.aborted) throw new CancelledError('writing the layer was cancelled', { cause: e });
    throw e;
  }
  return { diffId: `sha256:${hash.digest('hex')}`, size };
}
