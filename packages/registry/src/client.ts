import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { CancelledError, RegistryError, TsbuildError, UsageError } from '@tsbuild/errors';
import { parseChallenges, type Challenge } from './challenge.ts';
import { dockerConfigCredentials, type CredentialSource, type Credentials } from './credentials.ts';
import { Transport, connectionError, responseError, type BodyFactory, type HttpResponse } from './http.ts';
import { registryApiHost } from './reference.ts';

export interface ClientOptions {
  /** Registries (host[:port]) reached over plain HTTP; loopback hosts always are. */
  insecure?: string[] | undefined;
  /** A PEM file of extra CAs trusted for HTTPS registries. */
  caFile?: string | undefined;
  /** Where credentials come from; defaults to the docker config.json. */
  credentials?: CredentialSource | undefined;
  /** Attempts after the first for temporary failures (5xx, 429, resets, stalls). Default 4. */
  retries?: number | undefined;
  /** First backoff delay; doubles each attempt. Default 500 ms. */
  retryDelayMs?: number | undefined;
  /** A connection idle this long counts as stalled and is retried. Default 60 s. */
  timeoutMs?: number | undefined;
  userAgent?: string | undefined;
  /** Clock for token expiry (tests move it). */
  now?: (() => number) | undefined;
}

export interface RegistryRequest {
  method: string;
  /** Path below the registry root (`/v2/…`) or an absolute URL the registry handed out (upload locations). */
  path: string;
  headers?: Record<string, string>;
  body?: BodyFactory;
  /** Safe to send again after a failure. Upload chunks are not: their resume logic lives with the upload. */
  idempotent?: boolean;
  /** Repository scopes the request needs: `repository:<name>:pull` etc. */
  scopes?: string[];
  /** What the request does, for error messages (`pull docker.io/library/busybox:latest`). */
  what: string;
  signal?: AbortSignal | undefined;
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

interface HostState {
  /** undefined: not asked yet; null: the registry wants no authentication. */
  challenge: Challenge | null | undefined;
  tokens: Map<string, Promise<CachedToken>>;
  credentials: Credentials | null | undefined;
}

const LOOPBACK = /^(?:localhost|127(?:\.\d+){3}|\[::1\]|::1)(?::\d+)?$/;
const TOKEN_LIMIT = 1024 * 1024;
const DEFAULT_TOKEN_LIFETIME_S = 60;
const REDIRECTS = 5;

/**
 * Talks to OCI registries: picks HTTP or HTTPS, answers the auth challenge (Basic or the Bearer
 * token flow with a per-scope token cache), retries temporary failures with exponential backoff,
 * and follows redirects (dropping credentials when the host changes).
 */
export class RegistryClient {
  private readonly transport: Transport;
  private readonly insecure: Set<string>;
  private readonly credentialSource: CredentialSource;
  private readonly hosts = new Map<string, HostState>();
  readonly retries: number;
  readonly retryDelayMs: number;
  private readonly now: () => number;

  constructor(opts: ClientOptions = {}) {
    let ca: string | undefined;
    if (opts.caFile !== undefined) {
      try {
        ca = readFileSync(opts.caFile, 'utf8');
      } catch (e) {
        throw new UsageError(`cannot read CA file ${opts.caFile}: ${(e as Error).message}`, { cause: e });
      }
    }
    this.transport = new Transport({ ca, timeoutMs: opts.timeoutMs, userAgent: opts.userAgent });
    this.insecure = new Set(opts.insecure ?? []);
    this.credentialSource = opts.credentials ?? dockerConfigCredentials();
    this.retries = opts.retries ?? 4;
    this.retryDelayMs = opts.retryDelayMs ?? 500;
    this.now = opts.now ?? Date.now;
  }

  /** Closes pooled connections (a CLI exits faster). */
  close(): void {
    this.transport.close();
  }

  baseUrl(registry: string): URL {
    const host = registryApiHost(registry);
    const plain = LOOPBACK.test(host) || this.insecure.has(host) || this.insecure.has(registry);
    return new URL(`${plain ? 'http' : 'https'}://${host}/`);
  }

  private state(registry: string): HostState {
    let s = this.hosts.get(registry);
    if (s === undefined) {
      s = { challenge: undefined, tokens: new Map(), credentials: undefined };
      this.hosts.set(registry, s);
    }
    return s;
  }

  private async credentials(registry: string): Promise<Credentials | undefined> {
    const s = this.state(registry);
    if (s.credentials === undefined) s.credentials = (await this.credentialSource(registry)) ?? null;
    return s.credentials ?? undefined;
  }

  /**
   * Runs `fn` again on temporary failures, waiting 1×, 2×, 4×… the base delay (or the server's
   * Retry-After when it is longer). Used for whole operations such as one blob transfer.
   */
  async retry<T>(what: string, signal: AbortSignal | undefined, fn: (attempt: number) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (signal?.aborted) throw new CancelledError(`${what}: cancelled`);
      try {
        return await fn(attempt);
      } catch (e) {
        if (signal?.aborted) throw new CancelledError(`${what}: cancelled`, { cause: e });
        if (!(e instanceof RegistryError) || !e.temporary || attempt >= this.retries) throw e;
        const wait = Math.min(this.retryDelayMs * 2 ** attempt, 30_000) * (0.75 + Math.random() * 0.5);
        await sleep(Math.max(wait, retryAfterMs(e)), undefined, { signal }).catch(() => undefined);
      }
    }
  }

  /**
   * Sends one request with authentication. 5xx/429/connection failures of idempotent requests
   * are retried here; other statuses are returned for the caller to judge.
   */
  async request(registry: string, req: RegistryRequest): Promise<HttpResponse> {
    const once = async (): Promise<HttpResponse> => {
      const res = await this.authorizedSend(registry, req);
      if (res.status >= 500 || res.status === 429) {
        const err = await responseError(res, req.what);
        (err as RegistryError & { retryAfter?: string }).retryAfter = res.header('retry-after');
        throw err;
      }
      return res;
    };
    if (req.idempotent === false) return once();
    return this.retry(req.what, req.signal, once);
  }

  private resolve(registry: string, path: string): URL {
    return /^https?:\/\//i.test(path) ? new URL(path) : new URL(path, this.baseUrl(registry));
  }

  private async authorizedSend(registry: string, req: RegistryRequest): Promise<HttpResponse> {
    const scopes = req.scopes ?? [];
    let auth = await this.authorization(registry, scopes, req.signal);
    let res = await this.sendFollowing(registry, req, auth);
    if (res.status !== 401) return res;

    // A Bearer token may have expired or lack a scope: ask again once with what the 401 says.
    const s = this.state(registry);
    const fresh = parseChallenges(res.headerAll('www-authenticate'))[0];
    const hadAuth = auth !== undefined;
    if (fresh !== undefined) s.challenge = fresh;
    s.tokens.delete(scopeKey(scopes));
    if (!hadAuth && fresh === undefined) return res;
    res.discard();
    if (hadAuth && s.challenge?.scheme === 'basic') throw await this.unauthorized(registry, req.what, 401);
    auth = await this.authorization(registry, scopes, req.signal);
    if (auth === undefined) throw await this.unauthorized(registry, req.what, undefined);
    res = await this.sendFollowing(registry, req, auth);
    if (res.status === 401) {
      res.discard();
      throw await this.unauthorized(registry, req.what, 401);
    }
    return res;
  }

  private async unauthorized(registry: string, what: string, status: number | undefined): Promise<RegistryError> {
    const creds = await this.credentials(registry);
    if (creds === undefined) {
      return new RegistryError(`${what}: ${registry} requires authentication and no credentials are configured for it`, {
        status: 401,
        ociCode: 'UNAUTHORIZED',
        hint: `run \`tsbuild login ${registry}\``,
      });
    }
    return new RegistryError(`${what}: ${registry} refused the credentials${status ? ` (${status} Unauthorized)` : ''}`, {
      status: 401,
      ociCode: 'UNAUTHORIZED',
      hint: `check the user name and password for ${registry} (\`tsbuild login ${registry}\`)`,
    });
  }

  private async sendFollowing(registry: string, req: RegistryRequest, auth: string | undefined): Promise<HttpResponse> {
    let url = this.resolve(registry, req.path);
    const origin = this.baseUrl(registry).origin;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { ...req.headers };
      // Blob storage behind a redirect must never see the registry's credentials.
      if (auth !== undefined && url.origin === origin) headers['authorization'] = auth;
      let res: HttpResponse;
      try {
        res = await this.transport.send({ method: req.method, url, headers, body: req.body, signal: req.signal });
      } catch (e) {
        if (req.signal?.aborted) throw new CancelledError(`${req.what}: cancelled`, { cause: e });
        throw connectionError(e, req.what, url);
      }
      const location = res.header('location');
      const redirect = [301, 302, 303, 307, 308].includes(res.status) && location !== undefined;
      if (!redirect || (req.method !== 'GET' && req.method !== 'HEAD')) return res;
      res.discard();
      if (hop >= REDIRECTS) throw new RegistryError(`${req.what}: too many redirects from ${url.host}`);
      url = new URL(location, url);
    }
  }

  /** Finds out once per registry which authentication it wants (`GET /v2/`). */
  private async challenge(registry: string, signal: AbortSignal | undefined): Promise<Challenge | null> {
    const s = this.state(registry);
    if (s.challenge !== undefined) return s.challenge;
    const what = `contact registry ${registry}`;
    const res = await this.retry(what, signal, async () => {
      const r = await this.sendFollowing(registry, { method: 'GET', path: '/v2/', what, signal }, undefined);
      if (r.status >= 500 || r.status === 429) throw await responseError(r, what);
      return r;
    });
    res.discard();
    if (res.status === 401) {
      const all = parseChallenges(res.headerAll('www-authenticate'));
      s.challenge = all.find((c) => c.scheme === 'bearer') ?? all.find((c) => c.scheme === 'basic') ?? all[0] ?? null;
      if (s.challenge === null) throw new RegistryError(`${what}: 401 without a WWW-Authenticate challenge`, { status: 401 });
    } else if (res.status >= 200 && res.status < 300) {
      s.challenge = null;
    } else if (res.status === 404) {
      throw new RegistryError(`${what}: ${registry} does not serve the registry API (GET /v2/ answered 404)`, { status: 404 });
    } else {
      // Some registries answer /v2/ oddly but serve repositories; let the real request decide.
      s.challenge = null;
    }
    return s.challenge;
  }

  private async authorization(registry: string, scopes: string[], signal: AbortSignal | undefined): Promise<string | undefined> {
    const ch = await this.challenge(registry, signal);
    if (ch === null) return undefined;
    if (ch.scheme === 'basic') {
      const c = await this.credentials(registry);
      if (c === undefined) return undefined;
      if (!('password' in c)) throw new UsageError(`${registry} uses Basic authentication, which cannot use an identity token`);
      return `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
    }
    if (ch.scheme === 'bearer') return `Bearer ${await this.token(registry, ch, scopes, signal)}`;
    throw new RegistryError(`${registry} asks for unsupported authentication scheme "${ch.scheme}"`, { status: 401 });
  }

  private async token(registry: string, ch: Challenge, scopes: string[], signal: AbortSignal | undefined): Promise<string> {
    const s = this.state(registry);
    const key = scopeKey(scopes);
    const cached = s.tokens.get(key);
    if (cached !== undefined) {
      const t = await cached.catch(() => undefined);
      if (t !== undefined && t.expiresAt > this.now()) return t.token;
      if (s.tokens.get(key) !== cached) return this.token(registry, ch, scopes, signal);
    }
    // Concurrent requests for one scope share a single token fetch.
    const pending = this.fetchToken(registry, ch, scopes, signal);
    s.tokens.set(key, pending);
    try {
      return (await pending).token;
    } catch (e) {
      if (s.tokens.get(key) === pending) s.tokens.delete(key);
      throw e;
    }
  }

  private async fetchToken(registry: string, ch: Challenge, scopes: string[], signal: AbortSignal | undefined): Promise<CachedToken> {
    const realm = ch.params['realm'];
    const what = `get a token for ${registry}`;
    if (!realm) throw new RegistryError(`${what}: the Bearer challenge names no realm`);
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new RegistryError(`${what}: the realm ${JSON.stringify(realm.slice(0, 200))} is not a URL`);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new RegistryError(`${what}: the realm must be an http(s) URL`);
    const creds = await this.credentials(registry);
    const service = ch.params['service'];
    const started = this.now();

    const res = await this.retry(what, signal, async () => {
      let r: HttpResponse;
      try {
        if (creds !== undefined && 'identityToken' in creds) {
          // OAuth2 refresh-token grant: the identity token never goes out as a password.
          const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: creds.identityToken, client_id: 'tsbuild' });
          if (service) form.set('service', service);
          if (scopes.length > 0) form.set('scope', scopes.join(' '));
          const body = Buffer.from(form.toString());
          r = await this.transport.send({ method: 'POST', url, headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: () => body, signal });
        } else {
          const u = new URL(url);
          if (service) u.searchParams.set('service', service);
          for (const sc of scopes) u.searchParams.append('scope', sc);
          const headers: Record<string, string> = {};
          if (creds !== undefined) {
            u.searchParams.set('account', creds.username);
            headers['authorization'] = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
          }
          r = await this.transport.send({ method: 'GET', url: u, headers, signal });
        }
      } catch (e) {
        throw connectionError(e, what, url);
      }
      if (r.status >= 500 || r.status === 429) throw await responseError(r, what);
      return r;
    });
    if (res.status === 401 || res.status === 403) {
      res.discard();
      throw new RegistryError(`${what}: the token server ${url.host} refused ${creds ? 'the credentials' : 'anonymous access'} (${res.status})`, {
        status: res.status,
        ociCode: 'UNAUTHORIZED',
        hint: creds ? `check the credentials for ${registry}` : `run \`tsbuild login ${registry}\``,
      });
    }
    if (res.status !== 200) throw await responseError(res, what);
    let parsed: { token?: unknown; access_token?: unknown; expires_in?: unknown; issued_at?: unknown };
    try {
      parsed = JSON.parse((await res.bytes(TOKEN_LIMIT)).toString('utf8')) as typeof parsed;
    } catch (e) {
      if (e instanceof TsbuildError) throw e;
      throw new RegistryError(`${what}: the token server answered something that is not JSON`);
    }
    const token = typeof parsed.token === 'string' && parsed.token ? parsed.token : typeof parsed.access_token === 'string' ? parsed.access_token : '';
    if (!token) throw new RegistryError(`${what}: the token server's answer has no token`);
    const lifetime = typeof parsed.expires_in === 'number' && parsed.expires_in > 0 ? parsed.expires_in : DEFAULT_TOKEN_LIFETIME_S;
    // Renew a little early so a token does not expire in flight.
    const margin = Math.min(10, lifetime / 10);
    return { token, expiresAt: started + (lifetime - margin) * 1000 };
  }

  /**
   * Checks credentials against a registry without storing them: the registry (or its token
   * server) must accept them. Used by `login`.
   */
  async verifyCredentials(registry: string, signal?: AbortSignal): Promise<void> {
    const ch = await this.challenge(registry, signal);
    if (ch === null) return;
    const what = `log in to ${registry}`;
    if (ch.scheme === 'bearer') {
      this.state(registry).tokens.clear();
      await this.token(registry, ch, [], signal);
      return;
    }
    const res = await this.request(registry, { method: 'GET', path: '/v2/', what, signal });
    res.discard();
    if (res.status === 401) throw await this.unauthorized(registry, what, 401);
    if (res.status < 200 || res.status >= 300) throw await responseError(res, what);
  }
}

function scopeKey(scopes: string[]): string {
  return [...scopes].sort().join(' ');
}

function retryAfterMs(e: RegistryError): number {
  const v = (e as RegistryError & { retryAfter?: string }).retryAfter;
  if (v === undefined) return 0;
  const secs = Number(v);
  // Capped: a hostile or confused registry must not park a build for hours.
  if (Number.isFinite(secs)) return Math.min(secs * 1000, 30_000);
  const at = Date.parse(v);
  return Number.isFinite(at) ? Math.min(Math.max(at - Date.now(), 0), 30_000) : 0;
}

export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

export function pushScope(repository: string): string {
  return `repository:${repository}:pull,push`;
}
