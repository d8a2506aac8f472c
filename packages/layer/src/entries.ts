/**
 * Writes a layer tar from entries planned elsewhere: each entry is its header plus, for a regular
 * file, where its bytes come from (a host path read as the archive is written, or bytes in
 * memory). The archive is hashed as it streams out (the diff_id), in `diff`'s byte layout:
 * headers and small files share 1 MiB batches, large files pass through in 1 MiB reads, mtimes
 * are clamped to SOURCE_DATE_EPOCH. The caller decides order, names and metadata; this module
 * encodes and reads. Any walk that can say what each entry is and where its bytes are (an upper
 * dir, a COPY's sources) can write its layer through it.
 *
 * Reads are synchronous: for many small files a promise per file costs several times more than
 * the I/O itself.
 */
import { closeSync, constants, openSync, readSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { CancelledError, TsbuildError } from '@tsbuild/errors';
import type { Digest } from '@tsbuild/oci';
import type { DiffResult } from './diff.ts';
import { BatchedOutput, CHUNK } from './batches.ts';
import { BLOCK, encodeHeader, encodeHeaderInto, endOfArchive, padding } from './tar.ts';
import type { TarHeader } from './tar.ts';

export interface LayerEntry {
  /** The entry as it goes into the archive; `size` is the body length of a regular file, else 0. */
  header: TarHeader;
  /** A regular file's bytes: a host path (read while the archive is written) or the bytes themselves. */
  body?: string | Uint8Array;
  /**
   * Sees a file body's bytes in order as they pass (one call for a file of up to 1 MiB, 1 MiB
   * pieces for a larger one, `last` on the final piece; an empty body gives one empty piece). The
   * buffer is only valid during the call.
   */
  onBody?: (chunk: Buffer, last: boolean) => void;
}

export interface WriteEntriesOptions {
  /** Clamp every mtime to at most this (seconds since the epoch), for reproducible layers. */
  sourceDateEpoch?: number;
  signal?: AbortSignal;
  /**
   * Hash the archive for its diff_id (default true). A destination that hashes what it is given
   * (the store's blob writer) can have it left off: the result then has no `diffId`.
   */
  hash?: boolean;
}

/** Bytes written, and the sha256 of them unless `hash: false`. */
export interface WriteEntriesResult {
  size: number;
  diffId?: Digest;
}

const EMPTY = Buffer.alloc(0);
/** Entries between turns given to the event loop. */
const ENTRIES_PER_TURN = 4096;

function changed(path: string, size: number): TsbuildError {
  return new TsbuildError('LAYER_SOURCE_CHANGED', `${path} changed while it was being read (expected ${size} bytes)`, {
    hint: 'something modified the file during the build; run the build again',
  });
}

/**
 * Writes `entries` to `out` as one tar (end-of-archive marker included) and ends `out`. Resolves
 * once `out` has finished, with the sha256 and length of what was written; on failure `out` is
 * destroyed.
 *
 * When `out` is a plain Writable (not a Duplex), a batch's memory is used again once `out` has
 * called back for it, so `out` must be done with a chunk by then, as file streams and the store's
 * blob writer are. A Duplex (PassThrough, Transform) hands chunks on, so it gets fresh buffers.
 */
export function writeEntries(entries: Iterable<LayerEntry>, out: Writable, opts?: WriteEntriesOptions & { hash?: true }): Promise<DiffResult>;
export function writeEntries(entries: Iterable<LayerEntry>, out: Writable, opts: WriteEntriesOptions): Promise<WriteEntriesResult>;
export async function writeEntries(entries: Iterable<LayerEntry>, out: Writable, opts: WriteEntriesOptions = {}): Promise<WriteEntriesResult> {
  const { signal } = opts;
  const epoch = opts.sourceDateEpoch;
  if (epoch !== undefined && (!Number.isFinite(epoch) || epoch < 0)) {
    out.destroy();
    throw new TsbuildError('BAD_SOURCE_DATE_EPOCH', `SOURCE_DATE_EPOCH must be a non-negative number of seconds, got ${epoch}`);
  }
  const clamp = epoch === undefined ? Infinity : Math.floor(epoch);
  const done = finished(out);
  done.catch(() => {});
  const o = new BatchedOutput(out, { signal, hash: opts.hash !== false });
  const flush = (): Promise<void> => o.flush();

  try {
    signal?.throwIfAborted();
    let sinceTurn = 0;
    for (const entry of entries) {
      if (++sinceTurn >= ENTRIES_PER_TURN) {
        sinceTurn = 0;
        await o.turn();
        signal?.throwIfAborted();
      }
      const h = entry.header.mtime > clamp ? { ...entry.header, mtime: clamp } : entry.header;
      if (o.pos + BLOCK > CHUNK) await flush();
      const n = encodeHeaderInto(h, o.batch, o.pos);
      if (n > 0) o.pos += n;
      else {
        const b = encodeHeader(h);
        if (o.pos + b.length > CHUNK) await flush();
        if (b.length <= CHUNK) {
          b.copy(o.batch, o.pos);
          o.pos += b.length;
        } else await o.send(b, undefined); // only xattrs make a header larger than a batch
      }
      if (h.type !== 'file') continue;
      const len = h.size;
      const body = entry.body;
      const onBody = entry.onBody;
      if (typeof body !== 'string') {
        const bytes = body === undefined ? EMPTY : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
        if (bytes.length !== len) throw new TsbuildError('LAYER_ENTRY', `${h.path}: the header says ${len} bytes, the body has ${bytes.length}`);
        onBody?.(bytes, true);
        for (let off = 0; off < len; ) {
          if (o.pos === CHUNK) await flush();
          const k = Math.min(len - off, CHUNK - o.pos);
          bytes.copy(o.batch, o.pos, off, off + k);
          o.pos += k;
          off += k;
        }
      } else if (len === 0) {
        onBody?.(EMPTY, true);
      } else {
        let fd: number;
        try {
          fd = openSync(body, constants.O_RDONLY);
        } catch (e) {
          throw new TsbuildError('LAYER_SOURCE', `cannot read ${body}: ${(e as Error).message}`, { cause: e });
        }
        try {
          if (len + padding(len) <= CHUNK) {
            if (o.pos + len + padding(len) > CHUNK) await flush();
            // One byte more than expected is asked for where there is room, so a file that grew
            // is noticed without another call.
            const ask = o.pos + len < CHUNK ? len + 1 : len;
            let got = 0;
            while (got < len) {
              const r = readSync(fd, o.batch, o.pos + got, ask - got, null);
              if (r === 0) throw changed(body, len);
              got += r;
            }
            if (got > len) throw changed(body, len);
            onBody?.(o.batch.subarray(o.pos, o.pos + len), true);
            o.pos += len;
          } else {
            // Large files pass through in CHUNK-sized reads; memory stays flat.
            if (o.pos > 0) await flush();
            let left = len;
            while (left > 0) {
              const want = Math.min(left, CHUNK);
              left -= want;
              const ask = left === 0 && want < CHUNK ? want + 1 : want;
              let got = 0;
              while (got < want) {
                const r = readSync(fd, o.batch, got, ask - got, null);
                if (r === 0) throw changed(body, len);
                got += r;
              }
              if (got > want) throw changed(body, len);
              onBody?.(o.batch.subarray(0, want), left === 0);
              o.pos = want;
              if (left > 0) await flush();
            }
          }
        } finally {
          closeSync(fd);
        }
      }
      const pad = padding(len);
      if (o.pos + pad > CHUNK) await flush();
      o.batch.fill(0, o.pos, o.pos + pad);
      o.pos += pad;
    }
    const end = endOfArchive();
    if (o.pos + end.length > CHUNK) await flush();
    end.copy(o.batch, o.pos);
    o.pos += end.length;
    await o.send(o.batch.subarray(0, o.pos), undefined);
    out.end();
    await done;
    if (o.error) throw o.error;
  } catch (e) {
    out.destroy();
    if (signal?.aborted) throw new CancelledError('writing the layer was cancelled', { cause: e });
    throw e;
  } finally {
    o.dispose();
  }
  const diffId = o.digest();
  return diffId ? { diffId, size: o.size } : { size: o.size };
}
