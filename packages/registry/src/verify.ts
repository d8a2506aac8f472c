import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { RegistryError } from '@tsbuild/errors';
import { isDigest, type Descriptor, type Digest, type Index, type Manifest } from '@tsbuild/oci';

export interface DigestVerifierOptions {
  /**
   * false: count the bytes only, leaving the digest to the writer downstream, which must hash
   * exactly the bytes it commits (a store's blob writer does): a second hash of the same bytes
   * would cost as much CPU as the first. Default true.
   */
  hash?: boolean | undefined;
}

/**
 * Passes bytes through while hashing them; fails the stream (so nothing downstream commits) when
 * the content overruns the descriptor's size or does not hash to its digest.
 */
export class DigestVerifier extends Transform {
  private readonly hash: Hash | undefined;
  private seen = 0;

  constructor(
    private readonly expected: { digest: Digest; size: number },
    private readonly what: string,
    opts: DigestVerifierOptions = {},
  ) {
    super();
    this.hash = opts.hash === false ? undefined : createHash('sha256');
  }

  get bytesSeen(): number {
    return this.seen;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.expected.size) {
      cb(new RegistryError(`${this.what}: blob ${this.expected.digest} is larger than its descriptor's ${this.expected.size} bytes`));
      return;
    }
    this.hash?.update(chunk);
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.seen !== this.expected.size) {
      cb(new RegistryError(`${this.what}: blob ${this.expected.digest} ended after ${this.seen} of ${this.expected.size} bytes`, { temporary: true }));
      return;
    }
    if (this.hash === undefined) {
      cb();
      return;
    }
    const got = `sha256:${this.hash.digest('hex')}`;
    if (got !== this.expected.digest) {
      cb(new RegistryError(`${this.what}: the registry served content for ${this.expected.digest} that hashes to ${got}; refusing it`));
      return;
    }
    cb();
  }
}

export function verifyBytes(bytes: Uint8Array, expected: { digest: Digest; size: number }, what: string): void {
  if (bytes.byteLength !== expected.size) {
    throw new RegistryError(`${what}: ${expected.digest} is ${bytes.byteLength} bytes, its descriptor says ${expected.size}`);
  }
  const got = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  if (got !== expected.digest) throw new RegistryError(`${what}: the registry served content for ${expected.digest} that hashes to ${got}; refusing it`);
}

function checkDescriptor(d: unknown, where: string, what: string): Descriptor {
  const o = d as Partial<Descriptor> | null;
  if (o === null || typeof o !== 'object') throw new RegistryError(`${what}: ${where} is not a descriptor`);
  if (typeof o.mediaType !== 'string') throw new RegistryError(`${what}: ${where} has no mediaType`);
  if (!isDigest(o.digest)) throw new RegistryError(`${what}: ${where} has an invalid or non-sha256 digest`);
  if (typeof o.size !== 'number' || !Number.isSafeInteger(o.size) || o.size < 0) throw new RegistryError(`${what}: ${where} has an invalid size`);
  return o as Descriptor;
}

/** Parses manifest or index JSON from a registry, checking every descriptor in it. */
export function parseManifestJson(bytes: Uint8Array, contentType: string | undefined, what: string): { mediaType: string; manifest: Manifest | Index; isIndex: boolean } {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new RegistryError(`${what}: the manifest is not valid JSON`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new RegistryError(`${what}: the manifest is not a JSON object`);
  const o = json as Record<string, unknown>;
  if (o['schemaVersion'] === 1) throw new RegistryError(`${what}: Docker schema 1 manifests are not supported`, { hint: 'push the image again with a current client' });
  if (o['schemaVersion'] !== 2) throw new RegistryError(`${what}: unsupported manifest schemaVersion ${JSON.stringify(o['schemaVersion'])}`);
  const ct = contentType?.split(';')[0]?.trim();
  const mediaType = typeof o['mediaType'] === 'string' ? o['mediaType'] : ct ?? '';
  if (Array.isArray(o['manifests'])) {
    o['manifests'].forEach((d, i) => checkDescriptor(d, `manifests[${i}]`, what));
    return { mediaType: mediaType || 'application/vnd.oci.image.index.v1+json', manifest: o as unknown as Index, isIndex: true };
  }
  checkDescriptor(o['config'], 'config', what);
  if (!Array.isArray(o['layers'])) throw new RegistryError(`${what}: the manifest has no layers array`);
  o['layers'].forEach((d, i) => checkDescriptor(d, `layers[${i}]`, what));
  return { mediaType: mediaType || 'application/vnd.oci.image.manifest.v1+json', manifest: o as unknown as Manifest, isIndex: false };
}
