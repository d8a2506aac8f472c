import { randomBytes } from 'node:crypto';
import { createServer, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { AZURE_CODES, azureError, handleUpload, serveBlob } from './gha-server-azure.ts';
import { GhaServerState, type GhaServerCounters, type GhaServerMethod } from './gha-server-state.ts';
import { SERVICE_PREFIX, TWIRP_CODES, handleTwirp, twirpError } from './gha-server-twirp.ts';
import { listenOnLoopback } from './loopback.ts';

export type { GhaServerCounters, GhaServerMethod } from './gha-server-state.ts';

/**
 * A loopback stand-in for GitHub's Actions cache service (v2) and the Azure Blob Storage account
 * behind it, built from what @actions/cache and the service's published proto definitions say:
 *
 * - Twirp JSON at `POST /twirp/github.actions.results.api.v1.CacheService/{Method}`, proto field
 *   names (`signed_upload_url`, `restore_keys`, `size_bytes`, …), `Authorization: Bearer`; errors
 *   are Twirp's `{"code","msg"}` with the matching HTTP status (401 unauthenticated, 409
 *   already_exists for a key that exists or is reserved, 429 resource_exhausted, …).
 * - A miss is `200 {"ok": false}`, as the toolkit reads it (it treats any non-2xx as a failure).
 * - Lookup: an exact match of `key`, then a prefix match of `key`, then of each restore key in
 *   order, the most recently created entry first; only finalized entries of the same `version`.
 * - Signed URLs point back here (`/blob/<id>?sv=…&sp=…&se=…&sig=…`); the signature is an HMAC the
 *   server checks, so a tampered, expired (`rotateSigningKey`) or wrong-permission URL gets
 *   Azure's 403 `AuthenticationFailed` / `AuthorizationPermissionMismatch`.
 * - Azure Block Blob semantics: Put Blob (`x-ms-blob-type: BlockBlob`, Content-Length required),
 *   Put Block (`comp=block&blockid=`, base64 ids of one length per blob, at most 64 bytes
 *   decoded), Put Block List (`comp=blocklist`, XML `<Latest>/<Uncommitted>/<Committed>`), Get
 *   Blob with `Range`/`x-ms-range` (206 + Content-Range); errors are Azure's XML with
 *   `x-ms-error-code`.
 *
 * What it leaves out: branch scopes (every token sees every entry), eviction, quotas, and the
 * 24-hour expiry of reservations that were never finalized.
 *
 * This file routes requests and injects faults; the Twirp half is gha-server-twirp.ts, the Azure
 * half gha-server-azure.ts, and what they share gha-server-state.ts.
 */

/**
 * What an injected fault does to a matching request:
 * - a status: answer it (Twirp JSON or Azure XML, as the method would), with `retryAfter` if given;
 * - `drop`: close the connection without answering;
 * - `drop-midway`: for an upload, read half the body then cut; for Get Blob, send the headers and
 *   half the body then cut; for a Twirp call, the same as `drop` once the body has arrived;
 * - `stall`: never answer (the client's timeout has to fire).
 */
export type GhaFaultAction = number | 'drop' | 'drop-midway' | 'stall';

export interface GhaFault {
  method: GhaServerMethod;
  action: GhaFaultAction;
  /** Value of the Retry-After header sent with a status fault. */
  retryAfter?: string;
  /** How many matching requests get it (default 1). */
  times?: number;
  /** Matching requests let through untouched before it starts (default 0). */
  after?: number;
}

export interface GhaServerEntry {
  id: number;
  key: string;
  version: string;
  finalized: boolean;
  size: number;
  /** The blocks the blob was committed from (0 for Put Blob). */
  blocks: number;
}

export interface GhaServer {
  /** ACTIONS_RESULTS_URL (with the trailing slash the runner gives it). */
  url: string;
  token: string;
  /** The variables a runner gives a JavaScript action step for this service. */
  env(): Record<string, string>;
  readonly counters: GhaServerCounters;
  inject(...faults: GhaFault[]): void;
  /** Faults not yet used up (a test can assert every one fired). */
  pending(): GhaFault[];
  /** Every signed URL handed out so far, in order. */
  readonly signedUrls: string[];
  entries(): GhaServerEntry[];
  /** The committed bytes of an entry, for tests that look behind the client. */
  blob(key: string, version: string): Buffer | undefined;
  /** Invalidates every signed URL handed out so far, as their expiry would. */
  rotateSigningKey(): void;
  resetCounters(): void;
  stop(): Promise<void>;
}

export interface GhaServerOptions {
  token?: string;
}

/** The Twirp method or Azure operation a request is for, or undefined for anything else. */
function classify(req: IncomingMessage, url: URL): GhaServerMethod | undefined {
  if (url.pathname.startsWith(SERVICE_PREFIX)) {
    const m = url.pathname.slice(SERVICE_PREFIX.length);
    return m === 'CreateCacheEntry' || m === 'FinalizeCacheEntryUpload' || m === 'GetCacheEntryDownloadURL' ? m : undefined;
  }
  if (/^\/blob\/\d+$/.test(url.pathname)) {
    if (req.method === 'GET') return 'GetBlob';
    if (req.method === 'PUT') {
      const comp = url.searchParams.get('comp');
      if (comp === 'block') return 'PutBlock';
      if (comp === 'blocklist') return 'PutBlockList';
      if (comp === null) return 'PutBlob';
    }
  }
  return undefined;
}

export async function startGhaServer(options: GhaServerOptions = {}): Promise<GhaServer> {
  const token = options.token ?? `gha-test-token-${randomBytes(12).toString('hex')}`;
  const state = new GhaServerState(token);
  const faults: Array<GhaFault & { left: number; skip: number }> = [];

  const takeFault = (method: GhaServerMethod): GhaFault | undefined => {
    for (const f of faults) {
      if (f.left <= 0 || f.method !== method) continue;
      if (f.skip > 0) {
        f.skip--;
        continue;
      }
      f.left--;
      state.counters.faults++;
      return f;
    }
    return undefined;
  };

  const applyFault = (req: IncomingMessage, res: ServerResponse, method: GhaServerMethod, fault: GhaFault): void => {
    const action = fault.action;
    if (typeof action === 'number') {
      req.resume();
      req.on('end', () => {
        const headers: Record<string, string> = fault.retryAfter === undefined ? {} : { 'retry-after': fault.retryAfter };
        const text = `injected ${action} ${STATUS_CODES[action] ?? ''}`.trim();
        if (method.startsWith('Put') || method === 'GetBlob') azureError(res, action, AZURE_CODES[action] ?? 'InternalError', text, headers);
        else twirpError(res, action, TWIRP_CODES[action] ?? 'unknown', text, headers);
      });
      return;
    }
    if (action === 'drop') {
      req.socket.destroy();
      return;
    }
    if (action === 'stall') {
      req.resume();
      return;
    }
    // drop-midway
    if (method === 'PutBlob' || method === 'PutBlock' || method === 'PutBlockList') {
      const declared = Number(req.headers['content-length'] ?? 0);
      let seen = 0;
      req.on('data', (c: Buffer) => {
        seen += c.length;
        if (seen >= declared / 2) req.socket.destroy();
      });
      req.on('end', () => req.socket.destroy());
      return;
    }
    if (method === 'GetBlob') {
      void serveBlob(state, req, res, 'half');
      return;
    }
    req.resume();
    req.on('end', () => req.socket.destroy());
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const method = classify(req, url);
    if (method === undefined) {
      req.resume();
      if (url.pathname.startsWith('/twirp/')) twirpError(res, 404, 'bad_route', `no handler for path ${url.pathname}`);
      else azureError(res, 400, 'UnsupportedHttpVerb', 'The resource doesn\'t support specified Http Verb.');
      return;
    }
    state.counters.requests[method]++;
    const fault = takeFault(method);
    if (fault !== undefined) {
      applyFault(req, res, method, fault);
      return;
    }
    const done = (p: Promise<void>): void => {
      p.catch(() => res.socket?.destroy());
    };
    if (method === 'GetBlob') done(serveBlob(state, req, res, 'full'));
    else if (method === 'PutBlob' || method === 'PutBlock' || method === 'PutBlockList') done(handleUpload(state, req, res, method));
    else done(handleTwirp(state, req, res, method));
  });
  const { origin, stop } = await listenOnLoopback(server);
  state.origin = origin;

  return {
    url: `${origin}/`,
    token,
    env: () => ({ ACTIONS_RESULTS_URL: `${origin}/`, ACTIONS_RUNTIME_TOKEN: token, ACTIONS_CACHE_SERVICE_V2: 'True' }),
    get counters() {
      return state.counters;
    },
    inject: (...fs) => {
      for (const f of fs) faults.push({ ...f, left: f.times ?? 1, skip: f.after ?? 0 });
    },
    pending: () => faults.filter((f) => f.left > 0).map(({ left: _l, skip: _s, ...f }) => f),
    signedUrls: state.signedUrls,
    entries: () =>
      [...state.byId.values()]
        .sort((a, b) => a.seq - b.seq)
        .map((e) => ({ id: e.id, key: e.key, version: e.version, finalized: e.finalized, size: e.committed?.length ?? 0, blocks: e.blocks })),
    blob: (key, version) => {
      const e = state.partition(version, key);
      return e?.finalized ? e.committed : undefined;
    },
    rotateSigningKey: () => state.rotateSigningKey(),
    resetCounters: () => state.resetCounters(),
    stop,
  };
}
