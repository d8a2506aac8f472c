import { createHash } from 'node:crypto';
import type { Hash } from 'node:crypto';
import { Duplex } from 'node:stream';
import type { Writable } from 'node:stream';

/** The size of one batch of archive bytes handed to the destination. */
export const CHUNK = 1 << 20;
/** Batches written but not yet released by the destination before a writer waits for one. */
const MAX_IN_FLIGHT = 2;
/** Released batches kept for reuse. */
const SPARE_BATCHES = 3;
/** Batches written without waiting between turns given to the event loop. */
const SENDS_PER_TURN = 64;

/** Resolves at 'drain'; rejects if the stream fails or closes first (`what` names it in the error). */
export function drained(out: Writable, what = 'destination'): Promise<void> {
  if (out.destroyed) return Promise.reject(out.errored ?? new Error(`${what} closed early`));
  return new Promise((resolve, reject) => {
    const done = (err?: Error): void => {
      out.off('drain', onDrain);
      out.off('error', done);
      out.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = (): void => done();
    const onClose = (): void => done(out.errored ?? new Error(`${what} closed early`));
    out.on('drain', onDrain);
    out.on('error', done);
    out.on('close', onClose);
  });
}

/**
 * An archive written to `out` in batches of up to CHUNK bytes, the way diff and writeEntries write
 * theirs: callers fill `batch` from `pos` and `flush()` it; headers and small files are copied in
 * rather than sent one buffer each. When `out` is a plain Writable (not a Duplex), a batch's memory
 * is used again once `out` has called back for it, so `out` must be done with a chunk by then, as
 * file streams and the store's blob writer are; a Duplex hands chunks on, so it gets fresh ones.
 * What is sent is counted (`size`) and, unless asked not to, hashed. A failing destination is
 * seen here (not as an unhandled 'error' event), and an abort destroys it, which also wakes a
 * write waiting for it to drain. `dispose()` stops listening to the signal.
 */
export class BatchedOutput {
  batch: Buffer = Buffer.allocUnsafe(CHUNK);
  pos = 0;
  size = 0;
  private readonly hash: Hash | undefined;
  private outError: Error | undefined;
  private readonly reuse: boolean;
  private readonly spare: Buffer[] = [];
  private inFlight = 0;
  private wake: (() => void) | undefined;
  private sends = 0;
  private readonly onOutError = (err: Error): void => {
    this.outError ??= err;
  };
  private readonly onAbort = (): void => void this.out.destroy();
  private readonly woken = (): void => {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  };

  constructor(
    private readonly out: Writable,
    private readonly opts: { signal?: AbortSignal | undefined; hash?: boolean } = {},
  ) {
    this.hash = opts.hash === false ? undefined : createHash('sha256');
    this.reuse = !(out instanceof Duplex);
    out.on('error', this.onOutError);
    // Kept until the destination closes: destroying it with an error emits that error later.
    out.once('close', () => {
      out.off('error', this.onOutError);
      this.woken();
    });
    opts.signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  /** The first error the destination reported, if any. */
  get error(): Error | undefined {
    return this.outError;
  }

  fits(n: number): boolean {
    return this.pos + n <= CHUNK;
  }

  put(b: Buffer): void {
    b.copy(this.batch, this.pos);
    this.pos += b.length;
  }

  private closedEarly(): Error {
    return this.outError ?? this.out.errored ?? new Error('the layer destination closed early');
  }

  /** Sends `b`; `owner` is the batch it lies in, to be reused once released (none for a one-off buffer). */
  async send(b: Buffer, owner: Buffer | undefined): Promise<void> {
    if (this.outError || this.out.destroyed) throw this.closedEarly();
    this.hash?.update(b);
    this.size += b.length;
    let ok: boolean;
    if (this.reuse && owner) {
      this.inFlight++;
      ok = this.out.write(b, this.released(owner));
    } else ok = this.out.write(b);
    // Writers read synchronously: a destination that never pushes back (a hash, /dev/null) would
    // otherwise keep the event loop from timers, signals and I/O to the end.
    if (!ok) await drained(this.out);
    else if (++this.sends >= SENDS_PER_TURN) await this.turn();
    this.opts.signal?.throwIfAborted();
  }

  /** Sends the batch filled so far and starts the next one. */
  async flush(): Promise<void> {
    await this.send(this.batch.subarray(0, this.pos), this.batch);
    this.batch = await this.fresh();
    this.pos = 0;
  }

  /** Gives the event loop a turn. */
  async turn(): Promise<void> {
    this.sends = 0;
    await new Promise((r) => setImmediate(r));
  }

  /** The sha256 of everything sent, as a digest string (undefined when not hashing). */
  digest(): `sha256:${string}` | undefined {
    return this.hash ? `sha256:${this.hash.digest('hex')}` : undefined;
  }

  dispose(): void {
    this.opts.signal?.removeEventListener('abort', this.onAbort);
  }

  private released(owner: Buffer): (err: Error | null | undefined) => void {
    return (err) => {
      this.inFlight--;
      if (!err && this.spare.length < SPARE_BATCHES) this.spare.push(owner);
      this.woken();
    };
  }

  /*
   * A batch to fill: a released one, or a new one. A destination that calls back on the next tick
   * (most do, even when write() returned true) would otherwise see a new batch for every write
   * until the event loop gets a turn, and V8 lets such memory pile up before collecting it.
   */
  private async fresh(): Promise<Buffer> {
    while (this.reuse && this.spare.length === 0 && this.inFlight >= MAX_IN_FLIGHT) {
      if (this.out.destroyed) throw this.closedEarly();
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
    return this.spare.pop() ?? Buffer.allocUnsafe(CHUNK);
  }
}
