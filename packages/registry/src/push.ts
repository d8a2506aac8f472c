import { createHash } from 'node:crypto';
import { PassThrough, Writable, type Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { RegistryError, UsageError } from '@tsbuild/errors';
import type { Descriptor, Digest, Manifest } from '@tsbuild/oci';
import { pullScope, pushScope, type RegistryClient } from './client.ts';
import { responseError, type BodyFactory, type HttpResponse } from './http.ts';
import type { Reference } from './reference.ts';
import { parseManifestJson } from './verify.ts';
import { eachLimit } from './limit.ts';

/** Where a blob push reads from. */
export interface BlobSource {
  /** The blob's bytes; may be called again when an upload has to start over. */
  openBlob(desc: Descriptor): Promise<Readable>;
}

/** What an image push reads from: the manifest as bytes and each blob as a stream. */
export interface ImageSource extends BlobSource {
  manifest(): Promise<{ bytes: Uint8Array; mediaType: string }>;
}

export type BlobPushStatus = 'exists' | 'mounted' | 'uploaded';

export interface PushOptions {
  signal?: AbortSignal | undefined;
  /** Blobs pushed at once. Default 3. */
  concurrency?: number | undefined;
  /**
   * The repository of the same registry a blob already lives in, so the registry can link it
   * instead of receiving it again (cross-repository mount).
   */
  mountFrom?: string | ((desc: Descriptor) => string | undefined) | undefined;
  /** Blobs up to this size go up in one PUT; larger ones in PATCH chunks. Default 16 MiB. */
  monolithicMax?: number | undefined;
  /** Chunk size for chunked uploads (raised to the registry's OCI-Chunk-Min-Length). Default 8 MiB. */
  chunkSize?: number | undefined;
  onBlob?: ((event: { descriptor: Descriptor; status: BlobPushStatus }) => void) | undefined;
}

const OCTET = 'application/octet-stream';

/** Reads exact-size pieces from a stream (the last one may be short). */
class ChunkReader {
  private readonly it: AsyncIterator<Buffer>;
  private pending: Buffer = Buffer.alloc(0);
  private done = false;

  constructor(private readonly stream: Readable) {
    this.it = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  }

  async read(n: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let have = 0;
    while (have < n) {
      if (this.pending.length === 0) {
        if (this.done) break;
        const r = await this.it.next();
        if (r.done) {
          this.done = true;
          break;
        }
        this.pending = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
      }
      const take = this.pending.subarray(0, n - have);
      this.pending = this.pending.subarray(take.length);
      parts.push(take);
      have += take.length;
    }
    return Buffer.concat(parts);
  }

  close(): void {
    this.stream.destroy();
  }
}

class BlobPusher {
  constructor(
    private readonly client: RegistryClient,
    private readonly ref: Reference,
    private readonly source: BlobSource,
    private readonly opts: PushOptions,
  ) {}

  private get repo(): string {
    return this.ref.repository;
  }

  private async call(method: string, path: string, what: string, extra: { headers?: Record<string, string>; body?: () => Uint8Array | Readable | Promise<Uint8Array | Readable>; idempotent?: boolean; scopes?: string[] } = {}): Promise<HttpResponse> {
    return this.client.request(this.ref.registry, {
      method,
      path,
      what,
      signal: this.opts.signal,
      scopes: extra.scopes ?? [pushScope(this.repo)],
      ...(extra.headers ? { headers: extra.headers } : {}),
      ...(extra.body ? { body: extra.body } : {}),
      ...(extra.idempotent === undefined ? {} : { idempotent: extra.idempotent }),
    });
  }

  async exists(desc: Descriptor): Promise<boolean> {
    const what = `check blob ${desc.digest} in ${this.ref.registry}/${this.repo}`;
    const res = await this.call('HEAD', `/v2/${this.repo}/blobs/${desc.digest}`, what);
    res.discard();
    if (res.status === 200) return true;
    if (res.status === 404) return false;
    throw await responseError(res, what, this.ref.toString());
  }

  /** Starts an upload session, or mounts the blob from `from`; returns the upload URL or 'mounted'. */
  async start(desc: Descriptor, from: string | undefined): Promise<{ location: string; minChunk: number } | 'mounted'> {
    const what = `start upload of ${desc.digest} to ${this.ref.registry}/${this.repo}`;
    let path = `/v2/${this.repo}/blobs/uploads/`;
    const scopes = [pushScope(this.repo)];
    const mounting = from !== undefined && from !== this.repo;
    if (mounting) {
      path += `?mount=${encodeURIComponent(desc.digest)}&from=${encodeURIComponent(from)}`;
      scopes.push(pullScope(from));
    }
    const res = await this.call('POST', path, what, { scopes });
    res.discard();
    if (res.status === 201 && mounting) return 'mounted';
    if (res.status !== 202) throw await responseError(res, what, this.ref.toString());
    const location = res.header('location');
    if (!location) throw new RegistryError(`${what}: the registry gave no upload location`);
    const min = Number(res.header('oci-chunk-min-length') ?? 0);
    return { location: absoluteUrl(location, res.url), minChunk: Number.isSafeInteger(min) && min > 0 ? min : 0 };
  }


  async push(desc: Descriptor): Promise<BlobPushStatus> {
    if (await this.exists(desc)) return 'exists';
    const from = typeof this.opts.mountFrom === 'function' ? this.opts.mountFrom(desc) : this.opts.mountFrom;
    const monolithicMax = this.opts.monolithicMax ?? 16 * 1024 * 1024;
    const what = `push blob ${desc.digest} to ${this.ref.registry}/${this.repo}`;
    let mountTried = false;
    return this.client.retry(what, this.opts.signal, async () => {
      // A mount that the registry turned into a plain upload is not asked for again.
      const session = await this.start(desc, mountTried ? undefined : from);
      mountTried = true;
      if (session === 'mounted') return 'mounted';
      if (desc.size <= monolithicMax) await this.monolithic(desc, session.location, what);
      else await this.chunked(desc, session, what);
      return 'uploaded';
    });
  }

  private async monolithic(desc: Descriptor, location: string, what: string): Promise<void> {
    const res = await this.call('PUT', withDigestParam(location, desc.digest), what, {
      headers: { 'content-type': OCTET, 'content-length': String(desc.size) },
      body: () => this.source.openBlob(desc),
      idempotent: false,
    });
    await this.finish(res, desc, what);
  }

  private finish(res: HttpResponse, desc: Descriptor, what: string): Promise<void> {
    return finishUpload(res, desc, what, this.ref.toString());
  }

  /** Where the registry says an upload stands: the next offset it expects, or undefined when the session is gone. */
  private async uploadedUpTo(location: string, what: string): Promise<{ offset: number; location: string } | undefined> {
    const res = await this.call('GET', location, `${what} (upload status)`);
    res.discard();
    if (res.status === 404) return undefined;
    if (res.status !== 204 && res.status !== 200) throw await responseError(res, what, this.ref.toString());
    const next = res.header('location');
    return { offset: rangeEnd(res.header('range')), location: next ? absoluteUrl(next, res.url) : location };
  }

  private async chunked(desc: Descriptor, session: { location: string; minChunk: number }, what: string): Promise<void> {
    const chunkSize = Math.max(this.opts.chunkSize ?? 8 * 1024 * 1024, session.minChunk);
    let location = session.location;
    let reader = new ChunkReader(await this.source.openBlob(desc));
    let readerAt = 0; // where the reader's next byte is
    let offset = 0; // bytes the registry has confirmed
    let chunk: Buffer = Buffer.alloc(0);
    let chunkStart = 0;
    const hash = createHash('sha256');
    let hashed = 0;
    let failures = 0;
    try {
      while (offset < desc.size) {
        if (offset < chunkStart || offset >= chunkStart + chunk.length) {
          if (offset !== readerAt) {
            // The registry kept less than what was read: read the source again from there.
            reader.close();
            reader = new ChunkReader(await this.source.openBlob(desc));
            readerAt = 0;
            while (readerAt < offset) {
              const skipped = await reader.read(Math.min(chunkSize, offset - readerAt));
              if (skipped.length === 0) throw new RegistryError(`${what}: the local blob ended after ${readerAt} of ${desc.size} bytes`);
              readerAt += skipped.length;
            }
          }
          chunkStart = offset;
          chunk = await reader.read(Math.min(chunkSize, desc.size - offset));
          readerAt += chunk.length;
          if (chunk.length === 0) throw new RegistryError(`${what}: the local blob ended after ${offset} of ${desc.size} bytes`);
          if (chunkStart <= hashed && chunkStart + chunk.length > hashed) {
            hash.update(chunk.subarray(hashed - chunkStart));
            hashed = chunkStart + chunk.length;
          }
        }
        const body = chunk.subarray(offset - chunkStart);
        try {
          const res = await this.call('PATCH', location, what, {
            headers: { 'content-type': OCTET, 'content-range': `${offset}-${offset + body.length - 1}` },
            body: () => body,
            idempotent: false,
          });
          if (res.status !== 202) throw await responseError(res, what, this.ref.toString());
          res.discard();
          const next = res.header('location');
          if (next) location = absoluteUrl(next, res.url);
          const range = res.header('range');
          offset = range === undefined ? offset + body.length : rangeEnd(range);
          failures = 0;
          continue;
        } catch (e) {
          // 416: the registry holds a different amount than assumed; its status says how much.
          if (!(e instanceof RegistryError) || (!e.temporary && e.status !== 416) || failures >= this.client.retries) throw e;
          await backoff(this.client.retryDelayMs, failures++, this.opts.signal);
          const status = await this.uploadedUpTo(location, what);
          if (status === undefined) throw e;
          if (status.offset > chunkStart + chunk.length) throw new RegistryError(`${what}: the registry claims ${status.offset} bytes, more than were sent`);
          location = status.location;
          offset = status.offset;
        }
      }
    } finally {
      reader.close();
    }
    if (hashed === desc.size && `sha256:${hash.digest('hex')}` !== desc.digest) {
      throw new RegistryError(`${what}: the local content does not match ${desc.digest}; not committing the upload`);
    }
    const res = await this.call('PUT', withDigestParam(location, desc.digest), what, { idempotent: false });
    await this.finish(res, desc, what);
  }
}

/**
 * A blob upload whose digest is known only after its last byte: the bytes written to `stream` go
 * to the registry as they come, in one PATCH (chunked transfer encoding, as docker and skopeo
 * send a layer they compress on the way), and `commit` names the digest once they are all made.
 */
export interface BlobUpload {
  /**
   * Where the blob's bytes go; end it after the last. Writing never fails and never blocks for
   * good: once the transfer has failed, further bytes are dropped and `commit` reports the failure.
   */
  readonly stream: Writable;
  /**
   * After `stream` ended: waits for the registry to take the bytes, checks it received `blob.size`
   * of them and commits the upload as `blob.digest` (the registry checks that digest itself).
   * Rejects when any of it failed; the bytes are gone by then, so starting over is the caller's
   * choice (from wherever the blob is kept).
   */
  commit(blob: { digest: Digest; size: number }): Promise<void>;
  /** Gives the upload up: the transfer is cut and `commit` rejects. */
  cancel(reason?: Error): void;
}

/**
 * The streamed upload behind BlobUpload. Not retried by itself: what was sent cannot be sent again.
 */
class StreamedUpload implements BlobUpload {
  readonly stream: Writable;
  private readonly body = new PassThrough({ highWaterMark: 1 << 20 });
  private failure: Error | undefined;
  private readonly sent: Promise<{ location: string; received: string | undefined }>;

  constructor(
    private readonly client: RegistryClient,
    private readonly ref: Reference,
    private readonly signal: AbortSignal | undefined,
    location: string,
    private readonly what: string,
  ) {
    const body = this.body;
    // Until the request takes the body, a cancel must not turn into an unhandled 'error'.
    body.on('error', () => undefined);
    this.stream = new Writable({
      highWaterMark: 1 << 20,
      write: (chunk: Buffer, _enc, cb) => {
        if (this.failure !== undefined || body.destroyed || body.write(chunk)) {
          cb();
          return;
        }
        const go = (): void => {
          body.off('drain', go);
          body.off('close', go);
          cb();
        };
        body.on('drain', go);
        body.on('close', go);
      },
      final: (cb) => {
        if (!body.destroyed) body.end();
        cb();
      },
      destroy: (err, cb) => {
        // The producer gave up before the end: so does the upload.
        if (!body.writableEnded) this.cancel(err ?? new RegistryError(`${this.what}: cancelled`));
        cb(null);
      },
    });
    let taken = false;
    this.sent = (async () => {
      const res = await this.request('PATCH', location, {
        headers: { 'content-type': OCTET },
        body: () => {
          // A 401 answered mid-stream would ask for the body again: those bytes are gone.
          if (taken) throw new RegistryError(`${what}: a streamed upload cannot be sent twice`);
          if (this.failure !== undefined) throw this.failure;
          taken = true;
          return body;
        },
        idempotent: false,
      });
      if (res.status !== 202) throw await responseError(res, what, ref.toString());
      res.discard();
      const next = res.header('location');
      return { location: next ? absoluteUrl(next, res.url) : location, received: res.header('range') };
    })();
    this.sent.catch((e: unknown) => this.cancel(e instanceof Error ? e : new Error(String(e))));
  }

  cancel(reason?: Error): void {
    this.failure ??= reason ?? new RegistryError(`${this.what}: cancelled`);
    // Destroying with an error also cuts the request the body feeds (see Transport.send).
    if (!this.body.destroyed) this.body.destroy(this.failure);
  }

  async commit(blob: { digest: Digest; size: number }): Promise<void> {
    const { location, received } = await this.sent;
    if (this.failure !== undefined) throw this.failure;
    if (received !== undefined) {
      const got = rangeEnd(received);
      // distribution writes `0-0` for an empty upload, which rangeEnd reads as 0.
      if (got !== blob.size && !(got === 0 && blob.size <= 1)) {
        throw new RegistryError(`${this.what}: the registry received ${got} of ${blob.size} bytes`, { temporary: true });
      }
    }
    const res = await this.request('PUT', withDigestParam(location, blob.digest), { idempotent: false });
    await finishUpload(res, blob, this.what, this.ref.toString());
  }

  private request(method: string, path: string, extra: { headers?: Record<string, string>; body?: BodyFactory; idempotent: boolean }): Promise<HttpResponse> {
    return this.client.request(this.ref.registry, {
      method,
      path,
      what: this.what,
      signal: this.signal,
      scopes: [pushScope(this.ref.repository)],
      idempotent: extra.idempotent,
      ...(extra.headers ? { headers: extra.headers } : {}),
      ...(extra.body ? { body: extra.body } : {}),
    });
  }
}

function absoluteUrl(location: string, base: URL): string {
  return new URL(location, base).toString();
}

function withDigestParam(location: string, digest: Digest): string {
  const u = new URL(location);
  u.searchParams.set('digest', digest);
  return u.toString();
}

/** Judges the answer to an upload's final PUT. */
async function finishUpload(res: HttpResponse, desc: { digest: Digest; size: number }, what: string, reference: string): Promise<void> {
  if (res.status === 201 || res.status === 204) {
    res.discard();
    const got = res.header('docker-content-digest');
    if (got !== undefined && got !== desc.digest) throw new RegistryError(`${what}: the registry stored it as ${got}`);
    return;
  }
  const err = await responseError(res, what, reference);
  if (err.ociCode === 'DIGEST_INVALID' || err.ociCode === 'SIZE_INVALID') {
    throw new RegistryError(`${what}: the registry refused the content: it does not match ${desc.digest} (${desc.size} bytes)`, { status: err.status, ociCode: err.ociCode, reference });
  }
  throw err;
}

async function backoff(base: number, attempt: number, signal: AbortSignal | undefined): Promise<void> {
  await sleep(Math.min(base * 2 ** attempt, 30_000), undefined, { signal });
}

/** `Range: 0-N` → N + 1, the next byte the registry expects. distribution writes `0-0` for an empty upload. */
function rangeEnd(range: string | undefined): number {
  const m = /^(?:bytes=)?0-(\d+)$/.exec(range?.trim() ?? '');
  if (m === null) return 0;
  const end = Number(m[1]);
  return end === 0 ? 0 : end + 1;
}


/** Pushes one blob (HEAD, mount, monolithic or chunked upload); says what it had to do. */
export async function pushBlob(client: RegistryClient, ref: Reference, desc: Descriptor, source: BlobSource, opts: PushOptions = {}): Promise<BlobPushStatus> {
  return new BlobPusher(client, ref, source, opts).push(desc);
}

/**
 * Starts uploading a blob whose bytes are still being made (a layer compressed on the way): the
 * session is opened here, the bytes stream into the registry as they are written to the upload's
 * stream, and the digest is named at `commit`. No HEAD or mount is possible without the digest.
 */
export async function startBlobUpload(client: RegistryClient, ref: Reference, opts: { signal?: AbortSignal | undefined } = {}): Promise<BlobUpload> {
  const what = `push blob to ${ref.registry}/${ref.repository}`;
  const res = await client.request(ref.registry, {
    method: 'POST',
    path: `/v2/${ref.repository}/blobs/uploads/`,
    what: `start upload to ${ref.registry}/${ref.repository}`,
    signal: opts.signal,
    scopes: [pushScope(ref.repository)],
  });
  res.discard();
  if (res.status !== 202) throw await responseError(res, what, ref.toString());
  const location = res.header('location');
  if (!location) throw new RegistryError(`${what}: the registry gave no upload location`);
  return new StreamedUpload(client, ref, opts.signal, absoluteUrl(location, res.url), what);
}

/** PUTs manifest bytes under the reference's tag (or digest); returns their digest. */
export async function pushManifest(client: RegistryClient, ref: Reference, bytes: Uint8Array, mediaType: string, opts: { signal?: AbortSignal | undefined } = {}): Promise<Digest> {
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}` as Digest;
  if (ref.tag === undefined && ref.digest !== undefined && ref.digest !== digest) {
    throw new UsageError(`cannot push to ${ref.toString()}: the manifest's digest is ${digest}`);
  }
  const what = `push manifest to ${ref.toString()}`;
  const res = await client.request(ref.registry, {
    method: 'PUT',
    path: `/v2/${ref.repository}/manifests/${ref.tag ?? digest}`,
    headers: { 'content-type': mediaType },
    body: () => bytes,
    scopes: [pushScope(ref.repository)],
    what,
    signal: opts.signal,
  });
  if (res.status !== 201 && res.status !== 200 && res.status !== 202) throw await responseError(res, what, ref.toString());
  res.discard();
  const got = res.header('docker-content-digest');
  if (got !== undefined && got.startsWith('sha256:') && got !== digest) throw new RegistryError(`${what}: the registry stored the manifest as ${got}, expected ${digest}`);
  return digest;
}

/**
 * Pushes an image: every blob the manifest names (skipping what the registry has, mounting
 * what the caller says lives in a sibling repository), then the manifest.
 */
export async function pushImage(client: RegistryClient, ref: Reference, source: ImageSource, opts: PushOptions = {}): Promise<{ digest: Digest; descriptor: Descriptor }> {
  const { bytes, mediaType } = await source.manifest();
  const parsed = parseManifestJson(bytes, mediaType, `push ${ref.toString()}`);
  if (parsed.isIndex) throw new UsageError(`cannot push ${ref.toString()}: pushing an image index is not supported, push each platform's manifest`);
  const manifest = parsed.manifest as Manifest;
  const seen = new Set<string>();
  const blobs = [manifest.config, ...manifest.layers].filter((d) => !seen.has(d.digest) && seen.add(d.digest));
  const pusher = new BlobPusher(client, ref, source, opts);
  await eachLimit(blobs, opts.concurrency ?? 3, async (d) => {
    const status = await pusher.push(d);
    opts.onBlob?.({ descriptor: d, status });
  });
  const digest = await pushManifest(client, ref, bytes, mediaType, opts);
  return { digest, descriptor: { mediaType, digest, size: bytes.byteLength } };
}
