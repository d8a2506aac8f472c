import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { CancelledError, TsbuildError, redactSecrets } from '@tsbuild/errors';

export interface FetchOptions {
  /** Expected digest of the body, `sha256:<hex>` (also sha384/sha512), from `ADD --checksum`. */
  checksum?: string;
  signal?: AbortSignal;
}

const ALGORITHMS: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };
const UNNAMED = '__unnamed__';

function fetchError(url: string, message: string, cause?: unknown): TsbuildError {
  return new TsbuildError('FETCH', redactSecrets(`ADD ${url}: ${message}`), cause === undefined ? {} : { cause });
}

function parseChecksum(checksum: string): [algorithm: string, hex: string] {
  const m = /^([a-z0-9]+):([0-9a-f]+)$/.exec(checksum);
  const want = m ? ALGORITHMS[m[1] as string] : undefined;
  if (!m || want === undefined || (m[2] as string).length !== want) {
    throw new TsbuildError('BAD_CHECKSUM', `invalid --checksum "${checksum}": expected sha256:<64 hex digits> (or sha384/sha512)`);
  }
  return [m[1] as string, m[2] as string];
}

/** A safe single file name, or undefined when the candidate cannot be one. */
function safeName(candidate: string | undefined): string | undefined {
  if (candidate === undefined) return undefined;
  const name = candidate.trim();
  if (name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) return undefined;
  return name;
}

function nameFromDisposition(header: string | null): string | undefined {
  if (!header) return undefined;
  const star = /filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)/.exec(header);
  if (star) {
    try {
      return decodeURIComponent((star[1] as string).trim());
    } catch {
      return undefined;
    }
  }
  const plain = /filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))/.exec(header);
  if (!plain) return undefined;
  return plain[1] !== undefined ? plain[1].replace(/\\(.)/g, '$1') : plain[2];
}

/**
 * The file name ADD gives a download: the last segment of the URL path as written (what
 * BuildKit uses, even across redirects), else the server's Content-Disposition, else
 * `__unnamed__`.
 */
export function downloadName(url: URL, contentDisposition: string | null): string {
  let base: string | undefined;
  try {
    base = decodeURIComponent(path.posix.basename(url.pathname));
  } catch {
    base = path.posix.basename(url.pathname);
  }
  return safeName(base) ?? safeName(nameFromDisposition(contentDisposition)) ?? UNNAMED;
}

/**
 * Downloads an `ADD <url>` source into `destDir` and returns the file's path. Redirects are
 * followed; the body is hashed as it streams and, with a checksum, must match before the
 * file appears; the file is 0600 (as Docker makes it) with mtime from Last-Modified.
 */
export async function fetchUrl(url: string, destDir: string, opts: FetchOptions = {}): Promise<string> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw fetchError(url, 'not a valid URL');
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw fetchError(url, 'only http and https URLs can be fetched');
  const expected = opts.checksum !== undefined ? parseChecksum(opts.checksum) : undefined;
  const algorithm = expected?.[0] ?? 'sha256';

  let res: Response;
  try {
    res = await fetch(parsed, { redirect: 'follow', signal: opts.signal });
  } catch (e) {
    if (opts.signal?.aborted) throw new CancelledError(`download of ${redactSecrets(url)} cancelled`, { cause: e });
    const cause = (e as { cause?: { message?: string } }).cause;
    throw fetchError(url, `request failed: ${cause?.message ?? (e as Error).message}`, e);
  }
  if (!res.ok || res.body === null) {
    await res.body?.cancel().catch(() => {});
    throw fetchError(url, `server answered ${res.status} ${res.statusText}`.trim());
  }

  const name = downloadName(parsed, res.headers.get('content-disposition'));
  // `name` is a single checked component, so plain concatenation stays inside destDir.
  const final = `${destDir}/${name}`;
  const tmp = `${destDir}/.${name}.${process.pid}.partial`;
  const hash = createHash(algorithm);
  const tee = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  });
  try {
    await pipeline(
      Readable.fromWeb(res.body as unknown as WebReadableStream<Uint8Array>),
      tee,
      fs.createWriteStream(tmp, { mode: 0o600 }),
      { signal: opts.signal },
    );
    const got = `${algorithm}:${hash.digest('hex')}`;
    if (expected && got !== `${expected[0]}:${expected[1]}`) {
      throw new TsbuildError(
        'CHECKSUM_MISMATCH',
        redactSecrets(`ADD ${url}: checksum mismatch: expected ${expected[0]}:${expected[1]}, got ${got}`),
      );
    }
    await fs.promises.chmod(tmp, 0o600);
    const lastModified = res.headers.get('last-modified');
    const mtime = lastModified ? Date.parse(lastModified) : NaN;
    if (Number.isFinite(mtime)) await fs.promises.utimes(tmp, mtime / 1000, mtime / 1000);
    await fs.promises.rename(tmp, final);
    return final;
  } catch (e) {
    await fs.promises.rm(tmp, { force: true });
    if (e instanceof TsbuildError) throw e;
    if (opts.signal?.aborted) throw new CancelledError(`download of ${redactSecrets(url)} cancelled`, { cause: e });
    throw fetchError(url, `download failed: ${(e as Error).message}`, e);
  }
}
