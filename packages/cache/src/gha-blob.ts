import type * as Http from 'node:http';
import { Readable, Transform, pipeline, type TransformCallback } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { readAtMost } from '@tsbuild/registry';
import { GhaCacheError, cancelled, errorFields, redactUrl, type GhaOperation } from './gha-error.ts';
import { firstHeader, parseRetryAfter, retryableStatus, type GhaHttp } from './gha-http.ts';

/*
 * The Azure Blob Storage half of the `gha` cache backend: the signed URLs the cache service hands
 * out take Put Blob, or Put Block + Put Block List for larger bodies (uploaded a few blocks at a
 * time), and Get Blob with a Range, which is how a download that breaks is resumed.
 */

const AZURE_VERSION = '2023-11-03';
/** Azure limits for a block blob (service version 2019-12-12 and later). */
const AZURE_MAX_BLOCKS = 50_000;
const AZURE_MAX_BLOCK = 4000 * 1024 * 1024;
const AZURE_MAX_PUT_BLOB = 5000 * 1024 * 1024;
const MIB = 1024 * 1024;

/** Gives the body from its start; may be called again when an upload attempt must be resent. */
export type GhaBodyFactory = () => Readable | Promise<Readable>;

export interface AzureBlobOptions {
  /** A transfer with no byte moving for this long is given up and retried. */
  idleTimeoutMs: number;
  /** Block size for bodies larger than `singleShotMaxBytes` (default 8 MiB). */
  blockSize?: number | undefined;
  /** Bodies up to this size go up in one Put Blob (default: the block size). */
  singleShotMaxBytes?: number | undefined;
  /** Blocks in flight at once (default 2). */
  uploadConcurrency?: number | undefined;
}

/** Passes a body through, failing it when it is longer or shorter than declared. */
function sizeChecked(expected: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      seen += chunk.length;
      if (seen > expected) cb(new GhaCacheError(`the body to upload is longer than the ${expected} bytes declared`));
      else cb(null, chunk);
    },
    flush(cb: TransformCallback) {
      if (seen !== expected) cb(new GhaCacheError(`the body to upload ended after ${seen} of the ${expected} bytes declared`));
      else cb();
    },
  });
}

/** Cuts a stream into buffers of exactly `size` bytes (the last may be shorter). */
async function* blocksOf(body: AsyncIterable<Buffer | string>, size: number): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let have = 0;
  for await (const piece of body) {
    let chunk = typeof piece === 'string' ? Buffer.from(piece) : piece;
    while (chunk.length > 0) {
      const take = Math.min(size - have, chunk.length);
      parts.push(chunk.subarray(0, take));
      have += take;
      chunk = chunk.subarray(take);
      if (have === size) {
        yield Buffer.concat(parts, have);
        parts = [];
        have = 0;
      }
    }
  }
  if (have > 0) yield Buffer.concat(parts, have);
}

/** The signed URL with more query parameters, its SAS left exactly as the service wrote it. */
function withQuery(url: URL, extra: string): URL {
  const u = new URL(url.href);
  u.search = u.search === '' ? `?${extra}` : `${u.search}&${extra}`;
  return u;
}

export class AzureBlobClient {
  private readonly idleTimeoutMs: number;
  private readonly blockSize: number;
  private readonly singleShotMax: number;
  private readonly concurrency: number;

  constructor(private readonly http: GhaHttp, options: AzureBlobOptions) {
    this.idleTimeoutMs = options.idleTimeoutMs;
    this.blockSize = Math.min(AZURE_MAX_BLOCK, Math.max(1, Math.floor(options.blockSize ?? 8 * MIB)));
    this.singleShotMax = Math.min(AZURE_MAX_PUT_BLOB, Math.max(0, Math.floor(options.singleShotMaxBytes ?? this.blockSize)));
    this.concurrency = Math.max(1, Math.floor(options.uploadConcurrency ?? 2));
  }

  /** Uploads exactly `size` bytes to a signed upload URL: in one Put Blob when small, else in blocks. */
  async upload(url: URL, size: number, openBody: GhaBodyFactory, signal: AbortSignal | undefined): Promise<void> {
    if (size <= this.singleShotMax) await this.putBlob(url, size, openBody, signal);
    else await this.putBlocks(url, size, openBody, signal);
  }

  private async blobError(operation: GhaOperation, url: URL, res: Http.IncomingMessage): Promise<GhaCacheError> {
    const status = res.statusCode ?? 0;
    let code = firstHeader(res, 'x-ms-error-code');
    try {
      const body = await readAtMost(res, 16 * 1024);
      if (code === undefined && body !== undefined) code = /<Code>([^<]{1,100})<\/Code>/.exec(body.toString('utf8'))?.[1];
    } catch {
      // The code from the header, if any, is all there is.
    }
    // Azure throttles with 503 ServerBusy and 500 OperationTimedOut; both are worth another try.
    const temporary = retryableStatus(status);
    let message = `gha cache: ${operation} ${redactUrl(url)}: ${status} ${process.getBuiltinModule('node:http').STATUS_CODES[status] ?? ''}`.trimEnd();
    // Azure's own message can quote the request; only its error code is shown.
    if (code !== undefined) message += ` (${code})`;
    const hint = status === 403 ? 'the signed blob URL was refused (it may have expired)' : undefined;
    return new GhaCacheError(message, {
      operation,
      status,
      url: redactUrl(url),
      serviceCode: code,
      temporary,
      retryAfterMs: parseRetryAfter(firstHeader(res, 'retry-after')),
      ...(hint === undefined ? {} : { hint }),
    });
  }

  private blobHeaders(extra: Record<string, string>): Record<string, string> {
    return { 'x-ms-version': AZURE_VERSION, ...extra };
  }

  private async expectCreated(operation: GhaOperation, url: URL, res: Http.IncomingMessage): Promise<void> {
    if (res.statusCode === 201) {
      res.resume();
      return;
    }
    throw await this.blobError(operation, url, res);
  }

  /** One PUT that Azure must answer 201 Created, retried whole; `body` gives the body afresh for each attempt. */
  private async put(operation: GhaOperation, url: URL, headers: Record<string, string>, body: () => Buffer | Readable | Promise<Buffer | Readable>, signal: AbortSignal | undefined): Promise<void> {
    await this.http.withRetries(operation, signal, async () => {
      let res: Http.IncomingMessage;
      try {
        res = await this.http.send({ method: 'PUT', url, headers: this.blobHeaders(headers), body: await body(), signal, idleTimeoutMs: this.idleTimeoutMs });
      } catch (e) {
        throw this.http.connectionError(e, operation, url, signal);
      }
      await this.expectCreated(operation, url, res);
    });
  }

  private async putBlob(url: URL, size: number, openBody: GhaBodyFactory, signal: AbortSignal | undefined): Promise<void> {
    const headers = { 'x-ms-blob-type': 'BlockBlob', 'content-type': 'application/octet-stream', 'content-length': String(size) };
    // pipeline, not pipe: an error of the source must fail the request, not leave it waiting.
    await this.put('PutBlob', url, headers, async () => pipeline(await openBody(), sizeChecked(size), () => undefined), signal);
  }

  private async putBlocks(url: URL, size: number, openBody: GhaBodyFactory, signal: AbortSignal | undefined): Promise<void> {
    // Azure allows 50,000 blocks per blob; a body that needs more gets bigger blocks.
    const blockSize = Math.max(this.blockSize, Math.ceil(size / AZURE_MAX_BLOCKS));
    const inner = new AbortController();
    const linked = signal === undefined ? inner.signal : AbortSignal.any([signal, inner.signal]);
    const ids: string[] = [];
    const inflight = new Set<Promise<void>>();
    let failure: unknown;
    let total = 0;
    const body = await openBody();
    try {
      for await (const block of blocksOf(body, blockSize)) {
        if (failure !== undefined || linked.aborted) break;
        total += block.length;
        if (total > size) throw new GhaCacheError(`the body to upload is longer than the ${size} bytes declared`);
        // Every id has the same length, as Azure requires of one blob's blocks.
        const id = Buffer.from(`tsbuild-block-${String(ids.length).padStart(6, '0')}`).toString('base64');
        ids.push(id);
        const p: Promise<void> = this.putBlock(url, id, block, linked)
          .catch((e: unknown) => {
            failure ??= e;
            inner.abort();
          })
          .finally(() => inflight.delete(p));
        inflight.add(p);
        while (inflight.size >= this.concurrency) await Promise.race(inflight);
      }
    } catch (e) {
      failure ??= e;
      inner.abort();
    } finally {
      await Promise.all(inflight);
      body.destroy();
    }
    if (signal?.aborted) throw cancelled(signal, 'upload');
    if (failure !== undefined) throw failure;
    if (total !== size) throw new GhaCacheError(`the body to upload ended after ${total} of the ${size} bytes declared`);

    const xml = Buffer.from(`<?xml version="1.0" encoding="utf-8"?><BlockList>${ids.map((id) => `<Latest>${id}</Latest>`).join('')}</BlockList>`);
    const listUrl = withQuery(url, 'comp=blocklist');
    const headers = { 'content-type': 'application/xml', 'content-length': String(xml.length), 'x-ms-blob-content-type': 'application/octet-stream' };
    await this.put('PutBlockList', listUrl, headers, () => xml, signal);
  }

  private async putBlock(url: URL, id: string, block: Buffer, signal: AbortSignal): Promise<void> {
    const blockUrl = withQuery(url, `comp=block&blockid=${encodeURIComponent(id)}`);
    const headers = { 'content-type': 'application/octet-stream', 'content-length': String(block.length) };
    await this.put('PutBlock', blockUrl, headers, () => block, signal);
  }

  /** One Get Blob from `offset`, checked to be the part asked for. */
  private async getBlob(url: URL, offset: number, expectedTotal: number | undefined, signal: AbortSignal | undefined): Promise<{ res: Http.IncomingMessage; total: number }> {
    let res: Http.IncomingMessage;
    try {
      res = await this.http.send({
        method: 'GET',
        url,
        headers: this.blobHeaders(offset > 0 ? { range: `bytes=${offset}-` } : {}),
        signal,
        idleTimeoutMs: this.idleTimeoutMs,
      });
    } catch (e) {
      throw this.http.connectionError(e, 'GetBlob', url, signal);
    }
    const status = res.statusCode ?? 0;
    if (status !== 200 && status !== 206) throw await this.blobError('GetBlob', url, res);
    let total: number;
    if (status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(firstHeader(res, 'content-range') ?? '');
      if (m === null || Number(m[1]) !== offset) {
        res.destroy();
        throw new GhaCacheError(`gha cache: GetBlob ${redactUrl(url)}: answered a range other than the one asked for`, { operation: 'GetBlob', url: redactUrl(url), status });
      }
      total = Number(m[3]);
    } else {
      if (offset > 0) {
        res.destroy();
        throw new GhaCacheError(`gha cache: GetBlob ${redactUrl(url)}: ignored the Range of a resumed download`, { operation: 'GetBlob', url: redactUrl(url), status });
      }
      total = Number(firstHeader(res, 'content-length') ?? NaN);
      if (!Number.isSafeInteger(total) || total < 0) {
        res.destroy();
        throw new GhaCacheError(`gha cache: GetBlob ${redactUrl(url)}: answered without a Content-Length`, { operation: 'GetBlob', url: redactUrl(url), status });
      }
    }
    if (expectedTotal !== undefined && total !== expectedTotal) {
      res.destroy();
      throw new GhaCacheError(`gha cache: GetBlob ${redactUrl(url)}: the blob changed size while it was being downloaded`, { operation: 'GetBlob', url: redactUrl(url), status });
    }
    return { res, total };
  }

  /**
   * Streams a blob from a signed download URL. `refresh` gets a fresh URL once when Azure refuses
   * this one (it expires); a broken response is resumed where it stopped.
   */
  async download(initial: URL, refresh: () => Promise<URL>, signal: AbortSignal | undefined): Promise<Readable> {
    let url = initial;
    let refreshed = false;
    const open = async (offset: number, total: number | undefined): Promise<{ res: Http.IncomingMessage; total: number }> =>
      this.http.withRetries('GetBlob', signal, async () => {
        try {
          return await this.getBlob(url, offset, total, signal);
        } catch (e) {
          if (e instanceof GhaCacheError && e.status === 403 && !refreshed) {
            refreshed = true;
            url = await refresh();
            return this.getBlob(url, offset, total, signal);
          }
          throw e;
        }
      });

    const first = await open(0, undefined);
    const total = first.total;
    const self = this;
    async function* chunks(): AsyncGenerator<Buffer> {
      let res = first.res;
      let offset = 0;
      let breaks = 0;
      for (;;) {
        try {
          for await (const chunk of res as AsyncIterable<Buffer>) {
            offset += chunk.length;
            if (offset > total) throw new GhaCacheError(`gha cache: GetBlob ${redactUrl(url)}: sent more than the ${total} bytes it declared`, { operation: 'GetBlob', url: redactUrl(url) });
            breaks = 0;
            yield chunk;
          }
          if (offset === total) return;
          throw new GhaCacheError(`gha cache: GetBlob ${redactUrl(url)}: the download ended after ${offset} of ${total} bytes`, { operation: 'GetBlob', url: redactUrl(url), temporary: true });
        } catch (e) {
          res.destroy();
          const err = self.http.connectionError(e, 'GetBlob', url, signal);
          if (!(err instanceof GhaCacheError) || !err.temporary) throw err;
          breaks++;
          if (breaks >= self.http.maxAttempts) throw new GhaCacheError(`${err.message} (the download broke ${breaks} times in a row at byte ${offset})`, { ...errorFields(err), temporary: false });
          const delayMs = self.http.retryDelay(breaks, undefined);
          self.http.onRetry?.({ operation: 'GetBlob', attempt: breaks, maxAttempts: self.http.maxAttempts, delayMs, status: undefined, reason: err.message });
          try {
            await sleep(delayMs, undefined, { signal });
          } catch {
            throw cancelled(signal, 'download');
          }
          // Resume where the broken response stopped.
          res = (await open(offset, total)).res;
        }
      }
    }

    const stream = Readable.from(chunks(), { objectMode: false });
    if (signal !== undefined) {
      const onAbort = (): void => {
        stream.destroy(cancelled(signal, 'download'));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      stream.once('close', () => signal.removeEventListener('abort', onAbort));
    }
    return stream;
  }
}
