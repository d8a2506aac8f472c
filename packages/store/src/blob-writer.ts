import { createHash } from 'node:crypto';
import { open, rename, rm, utimes } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { TsbuildError } from '@tsbuild/errors';
import type { Digest } from '@tsbuild/oci';
import { errnoCode, exists, fsyncDir } from './fsutil.ts';

export interface Expected {
  digest?: Digest;
  size?: number;
}

export interface BlobWriter {
  /**
   * Write the blob here; it is hashed as it goes to a temp file. Once every byte written has been
   * hashed, and before they are made durable, the stream emits `'hashed'` with `{ digest, size }`:
   * a caller sending the same bytes elsewhere can name their digest without waiting for the disk
   * (the blob itself is stored only when `commit` resolves).
   */
  readonly stream: Writable;
  /**
   * Ends the stream if still open, makes the data durable, checks it against `expected` and moves
   * it into place (dropping it when the blob is already stored). Afterwards no temp file is left.
   */
  commit(expected?: Expected): Promise<{ digest: Digest; size: number }>;
  /** Discards what was written. */
  abort(): Promise<void>;
}

export function checkExpected(got: { digest: Digest; size: number }, expected: Expected | undefined): void {
  if (!expected) return;
  const badDigest = expected.digest !== undefined && expected.digest !== got.digest;
  const badSize = expected.size !== undefined && expected.size !== got.size;
  if (badDigest || badSize) {
    const want = `${expected.digest ?? 'any digest'}${expected.size !== undefined ? ` (${expected.size} bytes)` : ''}`;
    throw new TsbuildError('DIGEST_MISMATCH', `blob verification failed: expected ${want}, received ${got.digest} (${got.size} bytes)`);
  }
}

/** Writes every byte of `bufs`, in order, in as few system calls as the kernel allows. */
async function writeAll(fh: FileHandle, bufs: Buffer[]): Promise<void> {
  let rest = bufs;
  while (rest.length > 0) {
    let { bytesWritten } = rest.length === 1 ? await fh.write(rest[0]!) : await fh.writev(rest);
    // A short write: drop what went out and go on from there.
    let i = 0;
    while (i < rest.length && bytesWritten >= rest[i]!.length) bytesWritten -= rest[i++]!.length;
    rest = rest.slice(i);
    if (bytesWritten > 0) rest[0] = rest[0]!.subarray(bytesWritten);
  }
}

export class FileBlobWriter implements BlobWriter {
  readonly stream: Writable;
  private readonly hash = createHash('sha256');
  private size = 0;
  private hashed: { digest: Digest; size: number } | undefined;
  private fh: FileHandle | undefined;
  private settled = false;

  constructor(
    private readonly tmp: string,
    private readonly finalPath: (d: Digest) => string,
  ) {
    this.stream = new Writable({
      highWaterMark: 1 << 20,
      construct: (cb) => {
        open(this.tmp, 'wx', 0o644).then(
          (fh) => {
            this.fh = fh;
            cb();
          },
          (e: Error) => cb(e),
        );
      },
      writev: (chunks, cb) => {
        const bufs = chunks.map((c) => (typeof c.chunk === 'string' ? Buffer.from(c.chunk, c.encoding) : (c.chunk as Buffer)));
        for (const b of bufs) {
          this.hash.update(b);
          this.size += b.length;
        }
        // Written as they are (writev), not copied into one buffer first: a pull hands over
        // the socket's 64 KiB pieces, and copying every byte once more costs as much as the write.
        writeAll(this.fh!, bufs.filter((b) => b.length > 0)).then(() => cb(), (e: Error) => cb(e));
      },
      final: (cb) => {
        this.hashed = { digest: `sha256:${this.hash.digest('hex')}` as Digest, size: this.size };
        this.stream.emit('hashed', this.hashed);
        this.fh!.sync().then(() => cb(), (e: Error) => cb(e));
      },
      destroy: (err, cb) => {
        const fh = this.fh;
        this.fh = undefined;
        if (!fh) return cb(err);
        fh.close().then(() => cb(err), () => cb(err));
      },
    });
  }

  async commit(expected?: Expected): Promise<{ digest: Digest; size: number }> {
    if (this.settled) throw new TsbuildError('BLOB_WRITER_CLOSED', 'blob writer already committed or aborted');
    this.settled = true;
    try {
      if (!this.stream.writableEnded) this.stream.end();
      await finished(this.stream);
      const fh = this.fh;
      this.fh = undefined;
      await fh?.close();
      const got = this.hashed;
      if (got === undefined) throw new TsbuildError('BLOB_WRITER_CLOSED', 'blob writer finished without hashing its content');
      checkExpected(got, expected);
      const dest = this.finalPath(got.digest);
      if (await exists(dest)) {
        // Refreshing the time keeps a re-ingested blob inside gc's grace period.
        await touch(dest);
        await rm(this.tmp, { force: true });
      } else {
        await rename(this.tmp, dest);
        await fsyncDir(dest.slice(0, dest.lastIndexOf('/')));
      }
      return got;
    } catch (e) {
      await this.cleanup();
      throw e;
    }
  }

  async abort(): Promise<void> {
    this.settled = true;
    await this.cleanup();
  }

  private async cleanup(): Promise<void> {
    if (!this.stream.destroyed) {
      this.stream.destroy();
      await finished(this.stream).catch(() => undefined);
    }
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close().catch(() => undefined);
    await rm(this.tmp, { force: true });
  }
}


/** Sets a file's times to now; a file that vanished meanwhile is not an error. */
export async function touch(p: string): Promise<void> {
  const now = new Date();
  await utimes(p, now, now).catch((e: unknown) => {
    if (errnoCode(e) !== 'ENOENT') throw e;
  });
}
