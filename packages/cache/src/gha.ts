import { createHash } from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import { Readable, Transform, pipeline, type TransformCallback } from 'node:stream';
import { CancelledError, TsbuildError, UsageError, redactSecrets } from '@tsbuild/errors';

/**
 * The transport of the `gha` cache backend: GitHub's Actions cache service, v2 protocol (the one
 * actions/cache and @actions/cache ≥ 4 speak), and the Azure Blob Storage URLs it signs.
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

export type GhaTwirpMethod = 'CreateCacheEntry' | 'FinalizeCacheEntryUpload' | 'GetCacheEntryDownloadURL';
/** What an error or retry was doing: a Twirp method or an Azure blob operation. */
export type GhaOperation = GhaTwirpMethod | 'PutBlob' | 'PutBlock' | 'PutBlockList' | 'GetBlob';

const SERVICE = 'github.actions.results.api.v1.CacheService';
const AZURE_VERSION = '2023-11-03';
/** Azure limits for a block blob (service version 2019-12-12 and later). */
const AZURE_MAX_BLOCKS = 50_000;
const AZURE_MAX_BLOCK = 4000 * 1024 * 1024;
const AZURE_MAX_PUT_BLOB = 5000 * 1024 * 1024;
const MIB = 1024 * 1024;

export interface GhaRetryEvent {
  operation: GhaOperation;
  /** The attempt that failed (1-based). */
  attempt: number;
  maxAttempts: number;
  delayMs: number;
  status: number | undefined;
  reason: string;
}

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

/** Gives the body from its start; may be called again when an upload attempt must be resent. */
export type GhaBodyFactory = () => Readable | Promise<Readable>;

export interface GhaTokenScope {
  /** The ref the scope covers, e.g. `refs/heads/main`. */
  scope: string;
  read: boolean;
  write: boolean;
}

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

function safeUrl(text: string): URL | undefined {
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

const RUNNER_STEP_HINT =
  'the runner gives ACTIONS_RUNTIME_TOKEN and ACTIONS_RESULTS_URL only to JavaScript (and container) action steps, ' +
  'not to `run:` steps: run tsbuild through its action, or expose them to the step first ' +
  '(for example with crazy-max/ghaction-github-runtime)';

/** Reads a boolean the way the runner and BuildKit write it ("True", "true", "1"). */
function envFlag(value: string | undefined): boolean | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  return /^(?:1|t|true|y|yes|on)$/i.test(value.trim());
}

function isGhes(serverUrl: string | undefined): string | undefined {
  if (serverUrl === undefined || serverUrl.trim() === '') return undefined;
  const host = safeUrl(serverUrl.trim())?.hostname.toLowerCase();
  if (host === undefined) return undefined;
  if (host === 'github.com' || host.endsWith('.ghe.com') || host.endsWith('.localhost')) return undefined;
  return host;
}

type EnvResult = { ok: true; resultsUrl: string; token: string } | { ok: false; missing: boolean; error: UsageError };

function readEnv(env: NodeJS.ProcessEnv): EnvResult {
  const token = env.ACTIONS_RUNTIME_TOKEN?.trim() ?? '';
  const resultsUrl = env.ACTIONS_RESULTS_URL?.trim() ?? '';
  const cacheUrl = env.ACTIONS_CACHE_URL?.trim() ?? '';
  const v2 = envFlag(env.ACTIONS_CACHE_SERVICE_V2);

  // GitHub Enterprise Server has no v2 cache service; @actions/cache itself falls back to v1 there.
  const ghes = isGhes(env.GITHUB_SERVER_URL);
  if (ghes !== undefined && v2 !== true) {
    return {
      ok: false,
      missing: false,
      error: new UsageError(`the gha cache needs GitHub's v2 cache service, and GitHub Enterprise Server (${ghes}) offers only the v1 service`, {
        hint: 'use --cache-to/--cache-from type=registry or type=local on GitHub Enterprise Server',
      }),
    };
  }
  // The v1 service (ACTIONS_CACHE_URL, artifactcache.actions.githubusercontent.com) is gone from
  // github.com: every repository was moved to v2 in February 2025 and the legacy endpoints were
  // shut down on April 15, 2025 (the maintainers' notices, e.g. google/wireit#1297); @actions/cache
  // 6.0.1 (June 2026) still speaks v2 and nothing newer. The runner marks v2 with
  // ACTIONS_CACHE_SERVICE_V2 (actions/runner#3548) and still exports ACTIONS_CACHE_URL beside the
  // v2 variables, so only ACTIONS_CACHE_URL on its own means an old or GHES-style setup.
  if (v2 === false || (v2 === undefined && resultsUrl === '' && cacheUrl !== '')) {
    return {
      ok: false,
      missing: false,
      error: new UsageError(
        (v2 === false
          ? `ACTIONS_CACHE_SERVICE_V2=${env.ACTIONS_CACHE_SERVICE_V2 ?? ''} puts this job on the v1 cache service`
          : 'the gha cache found only the v1 cache service (ACTIONS_CACHE_URL, without ACTIONS_RESULTS_URL)') +
          '; GitHub retired the v1 service on github.com in 2025, and tsbuild speaks only v2 (ACTIONS_RESULTS_URL)',
        { hint: 'run on a current GitHub-hosted or self-hosted runner, which sets ACTIONS_CACHE_SERVICE_V2 and ACTIONS_RESULTS_URL for action steps' },
      ),
    };
  }
  const missing = [resultsUrl === '' ? 'ACTIONS_RESULTS_URL' : '', token === '' ? 'ACTIONS_RUNTIME_TOKEN' : ''].filter((s) => s !== '');
  if (missing.length > 0) {
    return {
      ok: false,
      missing: true,
      error: new UsageError(`the gha cache needs ${missing.join(' and ')}, which ${missing.length === 1 ? 'is' : 'are'} not set`, { hint: RUNNER_STEP_HINT }),
    };
  }
  const parsed = safeUrl(resultsUrl);
  if (parsed === undefined || (parsed.protocol !== 'https:' && parsed.protocol !== 'http:')) {
    return { ok: false, missing: false, error: new UsageError(`ACTIONS_RESULTS_URL is not an http(s) URL: ${redactUrl(resultsUrl)}`) };
  }
  return { ok: true, resultsUrl, token };
}

const CONNECTION_CODES = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH', 'ERR_STREAM_PREMATURE_CLOSE']);

class IdleTimeout extends Error {
  constructor(ms: number) {
    super(`no data moved for ${ms} ms`);
  }
}

interface SendRequest {
  method: 'GET' | 'PUT' | 'POST';
  url: URL;
  headers: Record<string, string>;
  body?: Buffer | Readable;
  signal: AbortSignal | undefined;
  idleTimeoutMs: number;
}

function randomJitter(ms: number): number {
  return ms / 2 + Math.random() * (ms / 2);
}

function parseRetryAfter(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

function cancelled(signal: AbortSignal | undefined, what: string): CancelledError {
  const reason: unknown = signal?.reason;
  return new CancelledError(`gha cache: ${what} cancelled`, reason === undefined ? {} : { cause: reason });
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

async function readLimited(res: http.IncomingMessage, limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > limit) {
      res.destroy();
      return undefined;
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
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
  private readonly idleTimeoutMs: number;
  private readonly maxAttempts: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  private readonly maxRetryAfterMs: number;
  private readonly blockSize: number;
  private readonly singleShotMax: number;
  private readonly concurrency: number;
  private readonly userAgent: string;
  private readonly onRetry: ((event: GhaRetryEvent) => void) | undefined;
  private readonly httpAgent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  private readonly httpsAgent = new https.Agent({ keepAlive: true, maxSockets: 16 });

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
    this.idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
    this.maxAttempts = Math.max(1, Math.floor(options.maxAttempts ?? 5));
    this.retryBaseMs = options.retryBaseMs ?? 1000;
    this.retryMaxMs = options.retryMaxMs ?? 30_000;
    this.maxRetryAfterMs = options.maxRetryAfterMs ?? 120_000;
    this.blockSize = Math.min(AZURE_MAX_BLOCK, Math.max(1, Math.floor(options.blockSize ?? 8 * MIB)));
    this.singleShotMax = Math.min(AZURE_MAX_PUT_BLOB, Math.max(0, Math.floor(options.singleShotMaxBytes ?? this.blockSize)));
    this.concurrency = Math.max(1, Math.floor(options.uploadConcurrency ?? 2));
    this.userAgent = options.userAgent ?? 'tsbuild';
    this.onRetry = options.onRetry;
  }

  /**
   * A client for the service the runner describes in `env`; throws a UsageError that names what is
   * missing or wrong (no token, a `run:` step, only the retired v1 service, GitHub Enterprise Server).
   */
  static fromEnv(env: NodeJS.ProcessEnv = process.env, options: GhaFromEnvOptions = {}): GhaCacheClient {
    const r = readEnv(env);
    if (!r.ok) throw r.error;
    return new GhaCacheClient({ ...options, resultsUrl: r.resultsUrl, token: r.token });
  }

  /** Like fromEnv, but undefined when the variables are simply absent (not in an action step). */
  static tryFromEnv(env: NodeJS.ProcessEnv = process.env, options: GhaFromEnvOptions = {}): GhaCacheClient | undefined {
    const r = readEnv(env);
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
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
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
        return this.download(url, refresh, signal);
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

    if (size <= this.singleShotMax) await this.putBlob(uploadUrl, size, openBody, signal);
    else await this.putBlocks(uploadUrl, size, openBody, signal);

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

  // ---- HTTP -------------------------------------------------------------------------------------

  private send(req: SendRequest): Promise<http.IncomingMessage> {
    const isHttps = req.url.protocol === 'https:';
    const mod = isHttps ? https : http;
    return new Promise((resolve, reject) => {
      let settled = false;
      const body = req.body;
      const fail = (e: unknown): void => {
        if (body instanceof Readable) body.destroy();
        if (settled) return;
        settled = true;
        reject(e);
      };
      const cr = mod.request(
        req.url,
        {
          method: req.method,
          headers: { 'user-agent': this.userAgent, ...req.headers },
          agent: isHttps ? this.httpsAgent : this.httpAgent,
          ...(req.signal === undefined ? {} : { signal: req.signal }),
        },
        (res) => {
          if (settled) {
            res.resume();
            return;
          }
          settled = true;
          resolve(res);
        },
      );
      // The socket's idle timer also covers the response body, so a stalled download breaks too.
      cr.setTimeout(req.idleTimeoutMs, () => cr.destroy(new IdleTimeout(req.idleTimeoutMs)));
      cr.on('error', fail);
      if (body === undefined) cr.end();
      else if (Buffer.isBuffer(body)) cr.end(body);
      else {
        body.on('error', (e) => cr.destroy(e));
        body.pipe(cr);
      }
    });
  }

  /** Turns a failure to get an answer into a GhaCacheError saying whether retrying may help. */
  private connectionError(err: unknown, operation: GhaOperation, url: URL, signal: AbortSignal | undefined): Error {
    if (err instanceof GhaCacheError || err instanceof CancelledError) return err;
    if (signal?.aborted) return cancelled(signal, operation);
    const code = (err as { code?: unknown } | null)?.code;
    const msg = err instanceof Error ? err.message : String(err);
    const where = `${operation} ${redactUrl(url)}`;
    if (err instanceof IdleTimeout || (err instanceof Error && err.name === 'TimeoutError')) {
      return new GhaCacheError(`gha cache: ${where}: timed out (${msg})`, { operation, url: redactUrl(url), temporary: true, cause: err });
    }
    if (code === 'ECONNREFUSED' || code === 'ENOTFOUND') {
      return new GhaCacheError(`gha cache: ${where}: cannot connect to ${url.host} (${String(code)})`, {
        operation,
        url: redactUrl(url),
        cause: err,
        hint: 'a self-hosted runner must reach the GitHub Actions endpoints (results-receiver.actions.githubusercontent.com and *.blob.core.windows.net)',
      });
    }
    const temporary = (typeof code === 'string' && CONNECTION_CODES.has(code)) || /socket hang up|aborted|premature|reset/i.test(msg);
    return new GhaCacheError(`gha cache: ${where}: connection failed: ${msg}`, { operation, url: redactUrl(url), temporary, cause: err });
  }

  private retryDelay(attempt: number, retryAfterMs: number | undefined): number {
    const backoff = randomJitter(Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** (attempt - 1)));
    if (retryAfterMs === undefined) return backoff;
    // Never before the time the service named; a little spread so jobs told the same second do not return together.
    return Math.max(retryAfterMs + Math.random() * Math.min(1000, retryAfterMs * 0.1), backoff);
  }

  /** Runs `attempt` until it succeeds, fails for good, or the attempts are used up. */
  private async withRetries<T>(operation: GhaOperation, signal: AbortSignal | undefined, attemptFn: (attempt: number) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      if (signal?.aborted) throw cancelled(signal, operation);
      let error: GhaCacheError;
      try {
        return await attemptFn(attempt);
      } catch (e) {
        if (signal?.aborted) throw cancelled(signal, operation);
        if (!(e instanceof GhaCacheError) || !e.temporary) throw e;
        error = e;
      }
      if (error.retryAfterMs !== undefined && error.retryAfterMs > this.maxRetryAfterMs) {
        throw new GhaCacheError(
          `${error.message}; the service asks to wait ${Math.ceil(error.retryAfterMs / 1000)} s before retrying, longer than the ${Math.ceil(this.maxRetryAfterMs / 1000)} s tsbuild waits`,
          { ...errorFields(error), temporary: false, hint: 'GitHub limits new cache entries to 200 a minute per repository; fewer, larger entries stay under it' },
        );
      }
      if (attempt >= this.maxAttempts) {
        throw new GhaCacheError(`${error.message} (gave up after ${attempt} attempt${attempt === 1 ? '' : 's'})`, {
          ...errorFields(error),
          temporary: false,
          ...(error.status === 429 ? { hint: 'GitHub limits new cache entries to 200 a minute per repository' } : {}),
        });
      }
      const delayMs = this.retryDelay(attempt, error.retryAfterMs);
      this.onRetry?.({ operation, attempt, maxAttempts: this.maxAttempts, delayMs, status: error.status, reason: error.message });
      try {
        await sleep(delayMs, signal);
      } catch {
        throw cancelled(signal, operation);
      }
    }
  }

  // ---- Twirp ------------------------------------------------------------------------------------

  private async twirp(method: GhaTwirpMethod, body: Record<string, unknown>, signal: AbortSignal | undefined, conflictAfterRetryIsSuccess = false): Promise<Record<string, unknown>> {
    const url = new URL(`twirp/${SERVICE}/${method}`, this.base);
    const payload = Buffer.from(JSON.stringify(body));
    return this.withRetries(method, signal, async (attempt) => {
      const deadline = AbortSignal.timeout(this.timeoutMs);
      const combined = signal === undefined ? deadline : AbortSignal.any([signal, deadline]);
      let res: http.IncomingMessage;
      let text: Buffer | undefined;
      try {
        res = await this.send({
          method: 'POST',
          url,
          headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json', accept: 'application/json', 'content-length': String(payload.length) },
          body: payload,
          signal: combined,
          idleTimeoutMs: this.timeoutMs,
        });
        text = await readLimited(res, 256 * 1024);
      } catch (e) {
        if (!signal?.aborted && deadline.aborted) {
          throw new GhaCacheError(`gha cache: ${method} ${redactUrl(url)}: no answer within ${this.timeoutMs} ms`, { operation: method, url: redactUrl(url), temporary: true, cause: e });
        }
        throw this.connectionError(e, method, url, signal);
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

  private twirpError(method: GhaTwirpMethod, url: URL, res: http.IncomingMessage, body: Buffer): GhaCacheError {
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
    const temporary = status === 408 || status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
    const detail = [code, msg.slice(0, 300)].filter((s) => s !== undefined && s !== '').join(': ');
    let message = `gha cache: ${method} ${redactUrl(url)}: ${status} ${http.STATUS_CODES[status] ?? ''}`.trimEnd();
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

  // ---- Azure blobs ------------------------------------------------------------------------------

  private async blobError(operation: GhaOperation, url: URL, res: http.IncomingMessage): Promise<GhaCacheError> {
    const status = res.statusCode ?? 0;
    let code = firstHeader(res, 'x-ms-error-code');
    try {
      const body = await readLimited(res, 16 * 1024);
      if (code === undefined && body !== undefined) code = /<Code>([^<]{1,100})<\/Code>/.exec(body.toString('utf8'))?.[1];
    } catch {
      // The code from the header, if any, is all there is.
    }
    // Azure throttles with 503 ServerBusy and 500 OperationTimedOut; both are worth another try.
    const temporary = status === 408 || status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
    let message = `gha cache: ${operation} ${redactUrl(url)}: ${status} ${http.STATUS_CODES[status] ?? ''}`.trimEnd();
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

  private async expectCreated(operation: GhaOperation, url: URL, res: http.IncomingMessage): Promise<void> {
    if (res.statusCode === 201) {
      res.resume();
      return;
    }
    throw await this.blobError(operation, url, res);
  }

  private async putBlob(url: URL, size: number, openBody: GhaBodyFactory, signal: AbortSignal | undefined): Promise<void> {
    await this.withRetries('PutBlob', signal, async () => {
      let res: http.IncomingMessage;
      try {
        const source = await openBody();
        // pipeline, not pipe: an error of the source must fail the request, not leave it waiting.
        const body = pipeline(source, sizeChecked(size), () => undefined);
        res = await this.send({
          method: 'PUT',
          url,
          headers: this.blobHeaders({ 'x-ms-blob-type': 'BlockBlob', 'content-type': 'application/octet-stream', 'content-length': String(size) }),
          body,
          signal,
          idleTimeoutMs: this.idleTimeoutMs,
        });
      } catch (e) {
        throw this.connectionError(e, 'PutBlob', url, signal);
      }
      await this.expectCreated('PutBlob', url, res);
    });
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
    await this.withRetries('PutBlockList', signal, async () => {
      let res: http.IncomingMessage;
      try {
        res = await this.send({
          method: 'PUT',
          url: listUrl,
          headers: this.blobHeaders({ 'content-type': 'application/xml', 'content-length': String(xml.length), 'x-ms-blob-content-type': 'application/octet-stream' }),
          body: xml,
          signal,
          idleTimeoutMs: this.idleTimeoutMs,
        });
      } catch (e) {
        throw this.connectionError(e, 'PutBlockList', listUrl, signal);
      }
      await this.expectCreated('PutBlockList', listUrl, res);
    });
  }

  private async putBlock(url: URL, id: string, block: Buffer, signal: AbortSignal): Promise<void> {
    const blockUrl = withQuery(url, `comp=block&blockid=${encodeURIComponent(id)}`);
    await this.withRetries('PutBlock', signal, async () => {
      let res: http.IncomingMessage;
      try {
        res = await this.send({
          method: 'PUT',
          url: blockUrl,
          headers: this.blobHeaders({ 'content-type': 'application/octet-stream', 'content-length': String(block.length) }),
          body: block,
          signal,
          idleTimeoutMs: this.idleTimeoutMs,
        });
      } catch (e) {
        throw this.connectionError(e, 'PutBlock', blockUrl, signal);
      }
      await this.expectCreated('PutBlock', blockUrl, res);
    });
  }

  /** One Get Blob from `offset`, checked to be the part asked for. */
  private async getBlob(url: URL, offset: number, expectedTotal: number | undefined, signal: AbortSignal | undefined): Promise<{ res: http.IncomingMessage; total: number }> {
    let res: http.IncomingMessage;
    try {
      res = await this.send({
        method: 'GET',
        url,
        headers: this.blobHeaders(offset > 0 ? { range: `bytes=${offset}-` } : {}),
        signal,
        idleTimeoutMs: this.idleTimeoutMs,
      });
    } catch (e) {
      throw this.connectionError(e, 'GetBlob', url, signal);
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

  private async download(initial: URL, refresh: () => Promise<URL>, signal: AbortSignal | undefined): Promise<Readable> {
    let url = initial;
    let refreshed = false;
    const open = async (offset: number, total: number | undefined): Promise<{ res: http.IncomingMessage; total: number }> =>
      this.withRetries('GetBlob', signal, async () => {
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
          const err = self.connectionError(e, 'GetBlob', url, signal);
          if (!(err instanceof GhaCacheError) || !err.temporary) throw err;
          breaks++;
          if (breaks >= self.maxAttempts) throw new GhaCacheError(`${err.message} (the download broke ${breaks} times in a row at byte ${offset})`, { ...errorFields(err), temporary: false });
          const delayMs = self.retryDelay(breaks, undefined);
          self.onRetry?.({ operation: 'GetBlob', attempt: breaks, maxAttempts: self.maxAttempts, delayMs, status: undefined, reason: err.message });
          try {
            await sleep(delayMs, signal);
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

function errorFields(e: GhaCacheError): GhaCacheErrorOptions {
  return {
    operation: e.operation,
    status: e.status,
    url: e.url,
    serviceCode: e.serviceCode,
    ...(e.hint === undefined ? {} : { hint: e.hint }),
    cause: e.cause ?? e,
  };
}

function firstHeader(res: http.IncomingMessage, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** The signed URL with more query parameters, its SAS left exactly as the service wrote it. */
function withQuery(url: URL, extra: string): URL {
  const u = new URL(url.href);
  u.search = u.search === '' ? `?${extra}` : `${u.search}&${extra}`;
  return u;
}
