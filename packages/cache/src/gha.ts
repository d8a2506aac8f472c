import { createHash } from 'node:crypto';
import type * as Http from 'node:http';
import type { Readable } from 'node:stream';
import { UsageError } from '@tsbuild/errors';
import { readAtMost } from '@tsbuild/registry';
import { AzureBlobClient, type GhaBodyFactory } from './gha-blob.ts';
import { RUNNER_STEP_HINT, readGhaEnv } from './gha-env.ts';
import { GhaCacheError, cancelled, redactUrl, safeUrl, type GhaTwirpMethod } from './gha-error.ts';
import { GhaHttp, firstHeader, parseRetryAfter, retryableStatus, type GhaRetryEvent } from './gha-http.ts';

/**
 * The client of the `gha` cache backend: GitHub's Actions cache service, v2 protocol (the one
 * actions/cache and @actions/cache ≥ 4 speak), and the Azure Blob Storage URLs it signs. The
 * Twirp calls are here; the HTTP and retry layer is gha-http.ts, the blob transfers gha-blob.ts.
 *
 * - Twirp JSON over POST to `${ACTIONS_RESULTS_URL}twirp/github.actions.results.api.v1.CacheService/`
 *   `CreateCacheEntry {key, version} → {ok, signed_upload_url, message}`,
 *   `FinalizeCacheEntryUpload {key, version, size_bytes} → {ok, entry_id, message}`,
 *   `GetCacheEntryDownloadURL {key, restore_keys, version} → {ok, signed_download_url, matched_key}`,
 *   with `Authorization: Bearer ${ACTIONS_RUNTIME_TOKEN}`. Field names are the proto names;
 *   int64 fields travel as JSON strings (proto3 JSON), and an answer may leave out fields at
 *   their defaults, so a missing `ok` is false.
 * - Entries are immutable: creating a key that exists, or that another job has reserved and not
 *   yet finalized, is HTTP 409 with Twirp code `already_exists` ("cache entry with the same key,
 *   version, and scope already exists"). A reservation that is never finalized holds its key for
 *   up to 24 hours (the maintainers' fix in actions/cache#1541).
 * - A lookup miss is 200 with `ok: false`. The service tries an exact match of `key`, then a
 *   prefix match of `key`, then a prefix match of each restore key in order, newest entry first,
 *   among entries of the same `version` in the scopes the token may read.
 * - The upload URL takes Put Blob, or Put Block + Put Block List (@actions/cache uploads with the
 *   Azure SDK in blocks); the download URL takes Get Blob with a Range. Both carry an Azure SAS
 *   whose `sig` is a secret: URLs are shown with their query string removed.
 * - Rate limits: 200 new cache entries per minute per repository (GitHub changelog, 2026-01-16);
 *   past it the service answers 429 with Retry-After, and GitHub asks clients not to retry before
 *   that time and to back off exponentially after it. 5xx and broken connections are retried too.
 */

/** Longest key the service takes (the documented actions/cache limit). */
export const GHA_CACHE_MAX_KEY_LENGTH = 512;
/** Most keys (the key plus restore keys) one lookup may carry. */
export const GHA_CACHE_MAX_KEYS = 10;

/**
 * The `version` every tsbuild entry is written and looked up with. actions/cache hashes its
 * paths, compression tool and OS into the version, because its entries are tarballs that only
 * make sense restored to the same paths with the same tool. tsbuild's entries are content-addressed
 * OCI blobs and cache manifests that mean the same on every runner, so the version is one fixed
 * string: any tsbuild on any OS reads what another wrote. It is still tsbuild's own, so a key that
 * happens to equal an actions/cache or BuildKit key never matches their entries (the service keeps
 * versions apart), and changing the label retires every old entry at once without renaming keys.
 * It keeps the toolkit's shape (64 hex digits of sha256) in case the service checks it.
 */
export function ghaCacheVersion(label = 'tsbuild-cache-v1'): string {
  return createHash('sha256').update(`tsbuild|${label}`).digest('hex');
}
export const GHA_CACHE_VERSION = ghaCacheVersion();

const SERVICE = 'github.actions.results.api.v1.CacheService';

export interface GhaCacheClientOptions {
  /** ACTIONS_RESULTS_URL: the base the Twirp paths are appended to. */
  resultsUrl: string | URL;
  /** ACTIONS_RUNTIME_TOKEN. */
  token: string;
  /** The version entries are partitioned by (default GHA_CACHE_VERSION). */
  version?: string;
  /** Whole-request limit for one Twirp call attempt (default 30 s). */
  timeoutMs?: number;
  /** A blob transfer with no byte moving for this long is given up and retried (default 60 s). */
  idleTimeoutMs?: number;
  /** Attempts per request, first one included (default 5). */
  maxAttempts?: number;
  /** First backoff delay; doubles per attempt, with jitter (default 1 s). */
  retryBaseMs?: number;
  /** Largest backoff delay (default 30 s). */
  retryMaxMs?: number;
  /** A Retry-After longer than this fails the call instead of sleeping (default 120 s). */
  maxRetryAfterMs?: number;
  /** Block size for bodies larger than `singleShotMaxBytes` (default 8 MiB). */
  blockSize?: number;
  /** Bodies up to this size go up in one Put Blob (default: the block size). */
  singleShotMaxBytes?: number;
  /** Blocks in flight at once; memory use is about (this + 1) × block size (default 2). */
  uploadConcurrency?: number;
  userAgent?: string;
  /** Told about every retry (for progress output: "rate limited, retrying in 30 s"). */
  onRetry?: (event: GhaRetryEvent) => void;
}

export type GhaFromEnvOptions = Omit<GhaCacheClientOptions, 'resultsUrl' | 'token'>;

export interface GhaCallOptions {
  signal?: AbortSignal | undefined;
}

export interface GhaCacheEntry {
  /** The key of the entry found: the key asked for, or one that a prefix matched. */
  matchedKey: string;
  /** True when `matchedKey` is exactly the key asked for. */
  exact: boolean;
  /**
   * Starts the download. Errors before the first byte (404, 403 that a fresh URL does not cure,
   * retries used up) reject here; a connection that breaks later is resumed with a Range request,
   * and what cannot be resumed errors the stream.
   */
  open(options?: GhaCallOptions): Promise<Readable>;
}

export type GhaSaveResult = 'saved' | 'exists';


export interface GhaTokenScope {
  /** The ref the scope covers, e.g. `refs/heads/main`. */
  scope: string;
  read: boolean;
  write: boolean;
}

function asRecord(value: unknown): Record<string, unknown> | undefined {
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

function str(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

function validateKeys(keys: readonly string[]): void {
  if (keys.length > GHA_CACHE_MAX_KEYS) {
    throw new UsageError(`a gha cache lookup takes at most ${GHA_CACHE_MAX_KEYS} keys (the key and its restore keys), got ${keys.length}`);
  }
  for (const key of keys) {
    const shown = key.length > 80 ? `${key.slice(0, 77)}...` : key;
    if (key === '') throw new UsageError('a gha cache key must not be empty');
    if (key.length > GHA_CACHE_MAX_KEY_LENGTH) {
      throw new UsageError(`gha cache key "${shown}" is ${key.length} characters long; the service takes at most ${GHA_CACHE_MAX_KEY_LENGTH}`, {
        hint: 'shorten the cache scope',
      });
    }
    // The toolkit refuses commas: the v1 protocol sent keys as one comma-separated list.
    if (key.includes(',')) throw new UsageError(`gha cache key "${shown}" contains a comma, which the cache service does not allow`, { hint: 'remove commas from the cache scope' });
  }
}
export class GhaCacheClient {
  readonly version: string;
  private readonly base: URL;
  private readonly token: string;
  private readonly timeoutMs: number;
  private readonly http: GhaHttp;
  private readonly blobs: AzureBlobClient;

  constructor(options: GhaCacheClientOptions) {
    const base = typeof options.resultsUrl === 'string' ? safeUrl(options.resultsUrl) : new URL(options.resultsUrl.href);
    if (base === undefined || (base.protocol !== 'https:' && base.protocol !== 'http:')) {
      throw new UsageError(`the gha cache URL is not an http(s) URL: ${redactUrl(String(options.resultsUrl))}`);
    }
    if (!base.pathname.endsWith('/')) base.pathname += '/';
    base.search = '';
    base.hash = '';
    if (options.token.trim() === '') throw new UsageError('the gha cache needs a runtime token (ACTIONS_RUNTIME_TOKEN)', { hint: RUNNER_STEP_HINT });
    this.base = base;
    this.token = options.token.trim();
    this.version = options.version ?? GHA_CACHE_VERSION;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.http = new GhaHttp({
      maxAttempts: Math.max(1, Math.floor(options.maxAttempts ?? 5)),
      retryBaseMs: options.retryBaseMs ?? 1000,
      retryMaxMs: options.retryMaxMs ?? 30_000,
      maxRetryAfterMs: options.maxRetryAfterMs ?? 120_000,
      userAgent: options.userAgent ?? 'tsbuild',
      onRetry: options.onRetry,
    });
    this.blobs = new AzureBlobClient(this.http, {
      idleTimeoutMs: options.idleTimeoutMs ?? 60_000,
      blockSize: options.blockSize,
      singleShotMaxBytes: options.singleShotMaxBytes,
      uploadConcurrency: options.uploadConcurrency,
    });
  }

  /**
   * A client for the service the runner describes in `env`; throws a UsageError that names what is
   * missing or wrong (no token, a `run:` step, only the retired v1 service, GitHub Enterprise Server).
   */
  static fromEnv(env: NodeJS.ProcessEnv = process.env, options: GhaFromEnvOptions = {}): GhaCacheClient {
    const r = readGhaEnv(env);
    if (!r.ok) throw r.error;
    return new GhaCacheClient({ ...options, resultsUrl: r.resultsUrl, token: r.token });
  }

  /** Like fromEnv, but undefined when the variables are simply absent (not in an action step). */
  static tryFromEnv(env: NodeJS.ProcessEnv = process.env, options: GhaFromEnvOptions = {}): GhaCacheClient | undefined {
    const r = readGhaEnv(env);
    if (!r.ok) {
      if (r.missing) return undefined;
      throw r.error;
    }
    return new GhaCacheClient({ ...options, resultsUrl: r.resultsUrl, token: r.token });
  }

  /**
   * The ref scopes the runtime token grants (its `ac` claim), as BuildKit reads them to name an
   * index per writable ref. The token is not verified here (the service does that); a token that
   * is not a JWT grants nothing we can see.
   */
  scopes(): GhaTokenScope[] {
    const payload = this.token.split('.')[1];
    if (payload === undefined) return [];
    try {
      const claims = asRecord(JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')));
      const ac: unknown = typeof claims?.ac === 'string' ? JSON.parse(claims.ac) : undefined;
      if (!Array.isArray(ac)) return [];
      const out: GhaTokenScope[] = [];
      for (const item of ac) {
        const rec = asRecord(item);
        const scope = rec?.Scope;
        const perm = rec?.Permission;
        if (typeof scope !== 'string' || typeof perm !== 'number') continue;
        out.push({ scope, read: (perm & 1) !== 0, write: (perm & 2) !== 0 });
      }
      return out;
    } catch {
      return [];
    }
  }

  /** Drops the kept-alive connections. */
  close(): void {
    this.http.close();
  }

  /**
   * Finds the entry for `key`, else the newest whose key starts with `key`, else the newest
   * matching each restore key as a prefix, in order. Undefined on a miss.
   */
  async lookup(key: string, restoreKeys: readonly string[] = [], options: GhaCallOptions = {}): Promise<GhaCacheEntry | undefined> {
    validateKeys([key, ...restoreKeys]);
    const found = await this.findEntry(key, restoreKeys, options.signal);
    if (found === undefined) return undefined;
    const { matchedKey } = found;
    let url = found.url;
    return {
      matchedKey,
      exact: matchedKey === key,
      open: async (openOptions: GhaCallOptions = {}) => {
        const signal = openOptions.signal ?? options.signal;
        // A signed URL expires (Azure says 403); one fresh lookup of the same key renews it.
        const refresh = async (): Promise<URL> => {
          const again = await this.findEntry(matchedKey, [], signal);
          if (again === undefined || again.matchedKey !== matchedKey) {
            throw new GhaCacheError(`gha cache entry ${matchedKey} disappeared while it was being downloaded`, { operation: 'GetCacheEntryDownloadURL' });
          }
          url = again.url;
          return url;
        };
        return this.blobs.download(url, refresh, signal);
      },
    };
  }

  /** True when an entry with exactly this key exists (a prefix match does not count). */
  async has(key: string, options: GhaCallOptions = {}): Promise<boolean> {
    validateKeys([key]);
    const found = await this.findEntry(key, [], options.signal);
    return found?.matchedKey === key;
  }

  /**
   * Stores `size` bytes under `key`: reserve, upload, finalize. 'exists' when the key is already
   * taken (saved, or reserved by a save still running elsewhere); nothing is uploaded then.
   */
  async save(key: string, size: number, openBody: GhaBodyFactory, options: GhaCallOptions = {}): Promise<GhaSaveResult> {
    validateKeys([key]);
    if (!Number.isSafeInteger(size) || size < 0) throw new GhaCacheError(`gha cache: invalid body size ${size} for ${key}`);
    const signal = options.signal;
    if (signal?.aborted) throw cancelled(signal, `saving ${key}`);

    let created: Record<string, unknown>;
    try {
      created = await this.twirp('CreateCacheEntry', { key, version: this.version }, signal);
    } catch (e) {
      // A retried create whose first answer was lost also lands here: the key is then held by our
      // own reservation, which nobody finalizes. Either way the entry is not ours to write.
      if (e instanceof GhaCacheError && e.serviceCode === 'already_exists') return 'exists';
      throw e;
    }
    if (created.ok !== true) {
      const message = str(created.message);
      if (/already exists/i.test(message)) return 'exists';
      throw new GhaCacheError(`gha cache: the service refused to create entry ${key}: ${message || 'no reason given'}`, { operation: 'CreateCacheEntry' });
    }
    const uploadUrl = this.signedUrl(created.signed_upload_url, 'CreateCacheEntry', 'signed_upload_url');

    await this.blobs.upload(uploadUrl, size, openBody, signal);

    const finalized = await this.twirp('FinalizeCacheEntryUpload', { key, version: this.version, size_bytes: String(size) }, signal, true);
    if (finalized.ok !== true) {
      const message = str(finalized.message);
      throw new GhaCacheError(`gha cache: the service refused to finalize entry ${key}: ${message || 'no reason given'}`, { operation: 'FinalizeCacheEntryUpload' });
    }
    return 'saved';
  }

  private async findEntry(key: string, restoreKeys: readonly string[], signal: AbortSignal | undefined): Promise<{ matchedKey: string; url: URL } | undefined> {
    const res = await this.twirp('GetCacheEntryDownloadURL', { key, restore_keys: [...restoreKeys], version: this.version }, signal);
    if (res.ok !== true) return undefined;
    const matchedKey = str(res.matched_key);
    // An answer for a key we did not ask about is a lie, and a lie is a miss.
    if (matchedKey === '' || ![key, ...restoreKeys].some((p) => matchedKey.startsWith(p))) return undefined;
    return { matchedKey, url: this.signedUrl(res.signed_download_url, 'GetCacheEntryDownloadURL', 'signed_download_url') };
  }

  private signedUrl(value: unknown, operation: GhaTwirpMethod, field: string): URL {
    const url = typeof value === 'string' ? safeUrl(value) : undefined;
    if (url === undefined || (url.protocol !== 'https:' && url.protocol !== 'http:')) {
      throw new GhaCacheError(`gha cache: ${operation} answered ok without a usable ${field}`, { operation });
    }
    return url;
  }


  // ---- Twirp ------------------------------------------------------------------------------------

  private async twirp(method: GhaTwirpMethod, body: Record<string, unknown>, signal: AbortSignal | undefined, conflictAfterRetryIsSuccess = false): Promise<Record<string, unknown>> {
    const url = new URL(`twirp/${SERVICE}/${method}`, this.base);
    const payload = Buffer.from(JSON.stringify(body));
    return this.http.withRetries(method, signal, async (attempt) => {
      const deadline = AbortSignal.timeout(this.timeoutMs);
      const combined = signal === undefined ? deadline : AbortSignal.any([signal, deadline]);
      let res: Http.IncomingMessage;
      let text: Buffer | undefined;
      try {
        res = await this.http.send({
          method: 'POST',
          url,
          headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json', accept: 'application/json', 'content-length': String(payload.length) },
          body: payload,
          signal: combined,
          idleTimeoutMs: this.timeoutMs,
        });
        text = await readAtMost(res, 256 * 1024);
      } catch (e) {
        if (!signal?.aborted && deadline.aborted) {
          throw new GhaCacheError(`gha cache: ${method} ${redactUrl(url)}: no answer within ${this.timeoutMs} ms`, { operation: method, url: redactUrl(url), temporary: true, cause: e });
        }
        throw this.http.connectionError(e, method, url, signal);
      }
      const status = res.statusCode ?? 0;
      if (text === undefined) {
        throw new GhaCacheError(`gha cache: ${method} ${redactUrl(url)}: answer larger than 256 KiB`, { operation: method, url: redactUrl(url), status });
      }
      if (status >= 200 && status < 300) {
        let parsed: Record<string, unknown> | undefined;
        try {
          parsed = asRecord(JSON.parse(text.toString('utf8')));
        } catch {
          parsed = undefined;
        }
        if (parsed === undefined) {
          throw new GhaCacheError(`gha cache: ${method} ${redactUrl(url)}: answered ${status} with a body that is not a JSON object`, { operation: method, url: redactUrl(url), status });
        }
        return parsed;
      }
      const err = this.twirpError(method, url, res, text);
      if (conflictAfterRetryIsSuccess && attempt > 1 && err.serviceCode === 'already_exists') {
        // The attempt whose answer was lost finalized the entry.
        return { ok: true };
      }
      throw err;
    });
  }

  private twirpError(method: GhaTwirpMethod, url: URL, res: Http.IncomingMessage, body: Buffer): GhaCacheError {
    const status = res.statusCode ?? 0;
    let code: string | undefined;
    let msg = '';
    try {
      const parsed = asRecord(JSON.parse(body.toString('utf8')));
      code = typeof parsed?.code === 'string' ? parsed.code : undefined;
      msg = (str(parsed?.msg) || str(parsed?.message)).split(this.token).join('[redacted]');
    } catch {
      // Not Twirp's error JSON (a proxy's page, say): the status says enough.
    }
    if (code === undefined && status === 409) code = 'already_exists';
    const retryAfterMs = status === 429 ? parseRetryAfter(firstHeader(res, 'retry-after')) : undefined;
    const temporary = retryableStatus(status);
    const detail = [code, msg.slice(0, 300)].filter((s) => s !== undefined && s !== '').join(': ');
    let message = `gha cache: ${method} ${redactUrl(url)}: ${status} ${process.getBuiltinModule('node:http').STATUS_CODES[status] ?? ''}`.trimEnd();
    if (detail !== '') message += ` (${detail})`;
    let hint: string | undefined;
    if (status === 401 || status === 403) {
      hint = 'the cache service refused ACTIONS_RUNTIME_TOKEN: it is valid only for the job that received it and only while that job runs';
    } else if (status === 429) {
      hint = 'GitHub limits new cache entries to 200 a minute per repository';
    } else if (/insufficient usage/i.test(msg)) {
      hint = "the repository's cache storage quota is used up";
    }
    return new GhaCacheError(message, {
      operation: method,
      status,
      url: redactUrl(url),
      serviceCode: code,
      temporary,
      retryAfterMs,
      ...(hint === undefined ? {} : { hint }),
    });
  }
}
