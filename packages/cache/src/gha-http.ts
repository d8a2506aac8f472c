import type * as Http from 'node:http';

import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { CancelledError } from '@tsbuild/errors';
import { sendRequest } from '@tsbuild/registry';
import { GhaCacheError, cancelled, errorFields, redactUrl, type GhaOperation } from './gha-error.ts';

/*
 * The HTTP layer under the Twirp calls and the Azure blob transfers of the `gha` cache backend:
 * one request on kept-alive connections, the mapping of connection failures to errors that say
 * whether another try may help, and the retry loop (exponential backoff with jitter, never before
 * a Retry-After, and not at all when the wait asked for is longer than tsbuild is willing to wait).
 */

export interface GhaRetryEvent {
  operation: GhaOperation;
  /** The attempt that failed (1-based). */
  attempt: number;
  maxAttempts: number;
  delayMs: number;
  status: number | undefined;
  reason: string;
}

export interface GhaHttpOptions {
  /** Attempts per request, first one included. */
  maxAttempts: number;
  /** First backoff delay; doubles per attempt, with jitter. */
  retryBaseMs: number;
  /** Largest backoff delay. */
  retryMaxMs: number;
  /** A Retry-After longer than this fails the call instead of sleeping. */
  maxRetryAfterMs: number;
  userAgent: string;
  onRetry: ((event: GhaRetryEvent) => void) | undefined;
}

const CONNECTION_CODES = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH', 'ERR_STREAM_PREMATURE_CLOSE']);

class IdleTimeout extends Error {
  constructor(ms: number) {
    super(`no data moved for ${ms} ms`);
  }
}

export interface SendRequest {
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

export function parseRetryAfter(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** The HTTP answers of the cache service and of Azure that another attempt may cure. */
export function retryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status === 500 || status === 502 || status === 503 || status === 504;
}

export function firstHeader(res: Http.IncomingMessage, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

export class GhaHttp {
  readonly maxAttempts: number;
  readonly onRetry: ((event: GhaRetryEvent) => void) | undefined;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  private readonly maxRetryAfterMs: number;
  private readonly userAgent: string;
  private readonly httpAgent = new (process.getBuiltinModule('node:http').Agent)({ keepAlive: true, maxSockets: 16 });
  private readonly httpsAgent = new (process.getBuiltinModule('node:https').Agent)({ keepAlive: true, maxSockets: 16 });

  constructor(options: GhaHttpOptions) {
    this.maxAttempts = options.maxAttempts;
    this.retryBaseMs = options.retryBaseMs;
    this.retryMaxMs = options.retryMaxMs;
    this.maxRetryAfterMs = options.maxRetryAfterMs;
    this.userAgent = options.userAgent;
    this.onRetry = options.onRetry;
  }

  /** Drops the kept-alive connections. */
  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }

  send(req: SendRequest): Promise<Http.IncomingMessage> {
    return sendRequest({
      method: req.method,
      url: req.url,
      headers: { 'user-agent': this.userAgent, ...req.headers },
      body: req.body,
      signal: req.signal,
      agent: req.url.protocol === 'https:' ? this.httpsAgent : this.httpAgent,
      // The socket's idle timer also covers the response body, so a stalled download breaks too.
      idleTimeoutMs: req.idleTimeoutMs,
      stalled: () => new IdleTimeout(req.idleTimeoutMs),
    });
  }

  /** Turns a failure to get an answer into a GhaCacheError saying whether retrying may help. */
  connectionError(err: unknown, operation: GhaOperation, url: URL, signal: AbortSignal | undefined): Error {
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

  retryDelay(attempt: number, retryAfterMs: number | undefined): number {
    const backoff = randomJitter(Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** (attempt - 1)));
    if (retryAfterMs === undefined) return backoff;
    // Never before the time the service named; a little spread so jobs told the same second do not return together.
    return Math.max(retryAfterMs + Math.random() * Math.min(1000, retryAfterMs * 0.1), backoff);
  }

  /** Runs `attempt` until it succeeds, fails for good, or the attempts are used up. */
  async withRetries<T>(operation: GhaOperation, signal: AbortSignal | undefined, attemptFn: (attempt: number) => Promise<T>): Promise<T> {
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
        await sleep(delayMs, undefined, { signal });
      } catch {
        throw cancelled(signal, operation);
      }
    }
  }
}
