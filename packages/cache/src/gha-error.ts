import { CancelledError, TsbuildError, redactSecrets } from '@tsbuild/errors';

/*
 * The errors of the `gha` cache backend, and the redaction that keeps the runtime token and the
 * Azure SAS signatures out of every message and URL they carry.
 */

export type GhaTwirpMethod = 'CreateCacheEntry' | 'FinalizeCacheEntryUpload' | 'GetCacheEntryDownloadURL';
/** What an error or retry was doing: a Twirp method or an Azure blob operation. */
export type GhaOperation = GhaTwirpMethod | 'PutBlob' | 'PutBlock' | 'PutBlockList' | 'GetBlob';

export interface GhaCacheErrorOptions {
  operation?: GhaOperation | undefined;
  status?: number | undefined;
  /** The URL with its query string (the SAS) removed. */
  url?: string | undefined;
  /** Twirp error code or Azure `x-ms-error-code`. */
  serviceCode?: string | undefined;
  temporary?: boolean | undefined;
  retryAfterMs?: number | undefined;
  hint?: string | undefined;
  cause?: unknown;
}

/** The cache service or its blob store refused, failed or sent something malformed. */
export class GhaCacheError extends TsbuildError {
  readonly operation: GhaOperation | undefined;
  readonly status: number | undefined;
  readonly url: string | undefined;
  readonly serviceCode: string | undefined;
  readonly temporary: boolean;
  readonly retryAfterMs: number | undefined;

  constructor(message: string, options: GhaCacheErrorOptions = {}) {
    super('GHA_CACHE', redactText(message), {
      ...(options.hint === undefined ? {} : { hint: options.hint }),
      ...(options.cause === undefined ? {} : { cause: options.cause }),
    });
    this.operation = options.operation;
    this.status = options.status;
    this.url = options.url;
    this.serviceCode = options.serviceCode;
    this.temporary = options.temporary ?? false;
    this.retryAfterMs = options.retryAfterMs;
  }
}

/** `https://host/path` with any query string (an Azure SAS, whose `sig` is a secret) removed. */
export function redactUrl(url: URL | string): string {
  const u = typeof url === 'string' ? safeUrl(url) : url;
  if (u === undefined) return '[unparseable URL]';
  return `${u.protocol}//${u.host}${u.pathname}${u.search === '' ? '' : '?[redacted]'}`;
}

export function safeUrl(text: string): URL | undefined {
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}

/** Removes SAS signatures and query strings of URLs, bearer tokens and password-like values. */
function redactText(text: string): string {
  return redactSecrets(text)
    .replace(/https?:\/\/[^\s"'<>?]+\?(?!\[redacted\])[^\s"'<>]*/gi, (m) => redactUrl(m))
    .replace(/\bsig=[^&\s"'<>]+/gi, 'sig=[redacted]');
}

/** The fields of `e` for a new error that wraps it. */
export function errorFields(e: GhaCacheError): GhaCacheErrorOptions {
  return {
    operation: e.operation,
    status: e.status,
    url: e.url,
    serviceCode: e.serviceCode,
    ...(e.hint === undefined ? {} : { hint: e.hint }),
    cause: e.cause ?? e,
  };
}

export function cancelled(signal: AbortSignal | undefined, what: string): CancelledError {
  const reason: unknown = signal?.reason;
  return new CancelledError(`gha cache: ${what} cancelled`, reason === undefined ? {} : { cause: reason });
}
