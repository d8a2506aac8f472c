import { createHash } from 'node:crypto';
import { TsbuildError } from '@tsbuild/errors';

/** A sha256 content digest as the OCI spec writes it. */
export type Digest = `sha256:${string}`;

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

/** The single place a digest string from outside becomes a Digest. */
export function parseDigest(s: string): Digest {
  if (!DIGEST_RE.test(s)) {
    throw new TsbuildError('BAD_DIGEST', `invalid digest ${JSON.stringify(s.slice(0, 100))}: expected sha256:<64 hex digits>`);
  }
  return s as Digest;
}

export function isDigest(s: unknown): s is Digest {
  return typeof s === 'string' && DIGEST_RE.test(s);
}

/** The hex part of a digest (safe to use as a file name). */
export function digestHex(d: Digest): string {
  return d.slice('sha256:'.length);
}

export function sha256(data: string | Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}
