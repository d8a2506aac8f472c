import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

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
 */

export type GhaServerMethod =
  | 'CreateCacheEntry'
  | 'FinalizeCacheEntryUpload'
  | 'GetCacheEntryDownloadURL'
  | 'PutBlob'
  | 'PutBlock'
  | 'PutBlockList'
  | 'GetBlob';

const METHODS: readonly GhaServerMethod[] = [
  'CreateCacheEntry',
  'FinalizeCacheEntryUpload',
  'GetCacheEntryDownloadURL',
  'PutBlob',
  'PutBlock',
  'PutBlockList',
  'GetBlob',
];

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

export interface GhaServerCounters {
  requests: Record<GhaServerMethod, number>;
  /** Requests refused for a missing or wrong bearer token or signature. */
  unauthorized: number;
  faults: number;
  /** Blob bytes accepted by Put Blob and Put Block. */
  bytesUploaded: number;
  /** Blob bytes written to Get Blob responses (including those of broken responses). */
  bytesDownloaded: number;
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

interface Entry {
  id: number;
  key: string;
  version: string;
  /** Creation order: "most recently created" is the highest. */
  seq: number;
  finalized: boolean;
  committed: Buffer | undefined;
  committedBlocks: Map<string, Buffer>;
  uncommitted: Map<string, Buffer>;
  blockIdLength: number | undefined;
  blocks: number;
}

const SERVICE_PREFIX = '/twirp/github.actions.results.api.v1.CacheService/';
const MAX_KEY_LENGTH = 512;
const MAX_KEYS = 10;
const MAX_BLOCKS = 50_000;

const TWIRP_CODES: Record<number, string> = {
  400: 'invalid_argument',
  401: 'unauthenticated',
  403: 'permission_denied',
  404: 'not_found',
  408: 'deadline_exceeded',
  409: 'already_exists',
  412: 'failed_precondition',
  429: 'resource_exhausted',
  500: 'internal',
  501: 'unimplemented',
  503: 'unavailable',
};

const AZURE_CODES: Record<number, string> = {
  400: 'InvalidInput',
  403: 'AuthenticationFailed',
  404: 'BlobNotFound',
  409: 'BlobAlreadyExists',
  429: 'ServerBusy',
  500: 'InternalError',
  503: 'ServerBusy',
};

function zero(): GhaServerCounters {
  const requests = Object.fromEntries(METHODS.map((m) => [m, 0])) as Record<GhaServerMethod, number>;
  return { requests, unauthorized: 0, faults: 0, bytesUploaded: 0, bytesDownloaded: 0 };
}

function twirpError(res: ServerResponse, status: number, code: string, msg: string, headers: Record<string, string> = {}): void {
  const body = JSON.stringify({ code, msg });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), ...headers });
  res.end(body);
}

function twirpOk(res: ServerResponse, body: Record<string, unknown>): void {
  const text = JSON.stringify(body);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) });
  res.end(text);
}

function azureError(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  const body =
    `<?xml version="1.0" encoding="utf-8"?><Error><Code>${code}</Code>` +
    `<Message>${message}\nRequestId:${randomBytes(8).toString('hex')}\nTime:${new Date().toISOString()}</Message></Error>`;
  res.writeHead(status, {
    'content-type': 'application/xml',
    'content-length': String(Buffer.byteLength(body)),
    'x-ms-error-code': code,
    'x-ms-version': '2023-11-03',
    ...headers,
  });
  res.end(body);
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n <= limit) chunks.push(c);
    });
    req.on('end', () => resolve(n <= limit ? Buffer.concat(chunks) : undefined));
    req.on('error', () => resolve(undefined));
    req.on('close', () => resolve(undefined));
  });
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

function parseBlockList(xml: string): Array<{ list: 'Latest' | 'Uncommitted' | 'Committed'; id: string }> | undefined {
  const body = /^\s*(?:<\?xml[^>]*\?>)?\s*<BlockList>([\s\S]*)<\/BlockList>\s*$/.exec(xml);
  if (body === null) return undefined;
  const out: Array<{ list: 'Latest' | 'Uncommitted' | 'Committed'; id: string }> = [];
  const re = /\s*<(Latest|Uncommitted|Committed)>([^<]*)<\/\1>\s*/gy;
  const inner = body[1] ?? '';
  let m: RegExpExecArray | null;
  let end = 0;
  while ((m = re.exec(inner)) !== null) {
    out.push({ list: m[1] as 'Latest' | 'Uncommitted' | 'Committed', id: m[2] ?? '' });
    end = re.lastIndex;
  }
  if (inner.slice(end).trim() !== '') return undefined;
  return out;
}

function validBlockId(id: string): Buffer | undefined {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(id) || id.length === 0 || id.length % 4 !== 0) return undefined;
  const raw = Buffer.from(id, 'base64');
  return raw.length <= 64 ? raw : undefined;
}

/** Parses `bytes=a-b` / `bytes=a-` against a blob of `size` bytes. */
function parseRange(header: string, size: number): { start: number; end: number } | 'invalid' {
  const m = /^bytes=(\d+)-(\d*)$/.exec(header.trim());
  if (m === null) return 'invalid';
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (start >= size || end < start) return 'invalid';
  return { start, end };
}

export async function startGhaServer(options: GhaServerOptions = {}): Promise<GhaServer> {
  const token = options.token ?? `gha-test-token-${randomBytes(12).toString('hex')}`;
  let signingKey = randomBytes(32);
  let counters = zero();
  const faults: Array<GhaFault & { left: number; skip: number }> = [];
  const byId = new Map<number, Entry>();
  const signedUrls: string[] = [];
  const sockets = new Set<Socket>();
  let nextId = 1;
  let seq = 0;
  let origin = '';

  const partition = (version: string, key: string): Entry | undefined => {
    for (const e of byId.values()) if (e.version === version && e.key === key) return e;
    return undefined;
  };

  const sign = (perm: string, id: number, expiry: string): string =>
    createHmac('sha256', signingKey).update(`${perm}\n${id}\n${expiry}`).digest('base64');

  const signedUrl = (id: number, perm: 'cw' | 'r'): string => {
    const se = new Date(Date.now() + 3_600_000).toISOString().replace(/\.\d+Z$/, 'Z');
    const q = new URLSearchParams({ sv: '2023-11-03', sr: 'b', sp: perm, se, sig: sign(perm, id, se) });
    const url = `${origin}/blob/${id}?${q.toString()}`;
    signedUrls.push(url);
    return url;
  };

  /** Checks a blob request's SAS; answers and returns undefined when it fails. */
  const authorizeBlob = (res: ServerResponse, url: URL, need: 'w' | 'r'): Entry | undefined => {
    const id = Number(url.pathname.slice('/blob/'.length));
    const sp = url.searchParams.get('sp') ?? '';
    const se = url.searchParams.get('se') ?? '';
    const sig = url.searchParams.get('sig') ?? '';
    const expected = Buffer.from(sign(sp, id, se));
    const given = Buffer.from(sig);
    if (given.length !== expected.length || !timingSafeEqual(given, expected) || !(Date.parse(se) > Date.now())) {
      counters.unauthorized++;
      azureError(res, 403, 'AuthenticationFailed', 'Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.');
      return undefined;
    }
    if (!sp.includes(need)) {
      counters.unauthorized++;
      azureError(res, 403, 'AuthorizationPermissionMismatch', 'This request is not authorized to perform this operation using this permission.');
      return undefined;
    }
    const entry = byId.get(id);
    if (entry === undefined) {
      azureError(res, 404, 'BlobNotFound', 'The specified blob does not exist.');
      return undefined;
    }
    return entry;
  };

  const takeFault = (method: GhaServerMethod): GhaFault | undefined => {
    for (const f of faults) {
      if (f.left <= 0 || f.method !== method) continue;
      if (f.skip > 0) {
        f.skip--;
        continue;
      }
      f.left--;
      counters.faults++;
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
      void serveBlob(req, res, 'half');
      return;
    }
    req.resume();
    req.on('end', () => req.socket.destroy());
  };

  const handleTwirp = async (req: IncomingMessage, res: ServerResponse, method: GhaServerMethod): Promise<void> => {
    if (req.method !== 'POST') {
      req.resume();
      twirpError(res, 404, 'bad_route', `unsupported method ${req.method ?? ''} (only POST is allowed)`);
      return;
    }
    const auth = req.headers.authorization ?? '';
    if (auth !== `Bearer ${token}`) {
      req.resume();
      counters.unauthorized++;
      twirpError(res, 401, 'unauthenticated', auth === '' ? 'missing authorization header' : 'invalid runtime token');
      return;
    }
    const contentType = (req.headers['content-type'] ?? '').split(';')[0]?.trim();
    if (contentType !== 'application/json') {
      req.resume();
      twirpError(res, 404, 'bad_route', `unexpected Content-Type: ${contentType ?? ''}`);
      return;
    }
    const raw = await readBody(req, 1 << 20);
    if (raw === undefined) return;
    let body: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(raw.toString('utf8'));
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
      body = parsed as Record<string, unknown>;
    } catch {
      twirpError(res, 400, 'malformed', 'the json request could not be decoded');
      return;
    }
    const key = typeof body.key === 'string' ? body.key : '';
    const version = typeof body.version === 'string' ? body.version : '';
    if (key === '' || version === '') {
      twirpError(res, 400, 'invalid_argument', key === '' ? 'key is required' : 'version is required');
      return;
    }
    if (key.length > MAX_KEY_LENGTH) {
      twirpError(res, 400, 'invalid_argument', `key is longer than ${MAX_KEY_LENGTH} characters`);
      return;
    }

    if (method === 'CreateCacheEntry') {
      if (partition(version, key) !== undefined) {
        twirpError(res, 409, 'already_exists', 'cache entry with the same key, version, and scope already exists');
        return;
      }
      const entry: Entry = {
        id: nextId++,
        key,
        version,
        seq: ++seq,
        finalized: false,
        committed: undefined,
        committedBlocks: new Map(),
        uncommitted: new Map(),
        blockIdLength: undefined,
        blocks: 0,
      };
      byId.set(entry.id, entry);
      twirpOk(res, { ok: true, signed_upload_url: signedUrl(entry.id, 'cw'), message: '' });
      return;
    }

    if (method === 'FinalizeCacheEntryUpload') {
      const entry = partition(version, key);
      const sizeField = body.size_bytes;
      const size = typeof sizeField === 'string' && /^\d+$/.test(sizeField) ? Number(sizeField) : typeof sizeField === 'number' ? sizeField : NaN;
      if (entry === undefined) {
        twirpError(res, 404, 'not_found', 'no cache entry is reserved for that key and version');
        return;
      }
      if (entry.finalized) {
        twirpError(res, 409, 'already_exists', 'cache entry with the same key, version, and scope already exists');
        return;
      }
      if (!Number.isSafeInteger(size) || size < 0) {
        twirpError(res, 400, 'invalid_argument', 'size_bytes must be a non-negative integer');
        return;
      }
      if (entry.committed === undefined) {
        twirpError(res, 400, 'invalid_argument', 'nothing was uploaded for this cache entry');
        return;
      }
      if (entry.committed.length !== size) {
        twirpError(res, 400, 'invalid_argument', `size_bytes ${size} does not match the uploaded ${entry.committed.length} bytes`);
        return;
      }
      entry.finalized = true;
      entry.uncommitted.clear();
      twirpOk(res, { ok: true, entry_id: String(entry.id), message: '' });
      return;
    }

    // GetCacheEntryDownloadURL
    const restoreField = body.restore_keys ?? [];
    if (!Array.isArray(restoreField) || !restoreField.every((k): k is string => typeof k === 'string')) {
      twirpError(res, 400, 'invalid_argument', 'restore_keys must be a list of strings');
      return;
    }
    if (restoreField.length + 1 > MAX_KEYS) {
      twirpError(res, 400, 'invalid_argument', `at most ${MAX_KEYS} keys may be looked up at once`);
      return;
    }
    const visible = [...byId.values()].filter((e) => e.finalized && e.version === version).sort((a, b) => b.seq - a.seq);
    let hit = visible.find((e) => e.key === key);
    for (const prefix of [key, ...restoreField]) {
      if (hit !== undefined) break;
      hit = visible.find((e) => e.key.startsWith(prefix));
    }
    if (hit === undefined) {
      twirpOk(res, { ok: false, signed_download_url: '', matched_key: '' });
      return;
    }
    twirpOk(res, { ok: true, signed_download_url: signedUrl(hit.id, 'r'), matched_key: hit.key });
  };

  const serveBlob = async (req: IncomingMessage, res: ServerResponse, mode: 'full' | 'half'): Promise<void> => {
    req.resume();
    const url = new URL(req.url ?? '/', 'http://x');
    const entry = authorizeBlob(res, url, 'r');
    if (entry === undefined) return;
    const blob = entry.committed;
    if (!entry.finalized || blob === undefined) {
      azureError(res, 404, 'BlobNotFound', 'The specified blob does not exist.');
      return;
    }
    const rangeHeader = req.headers['x-ms-range'] ?? req.headers.range;
    let start = 0;
    let end = blob.length - 1;
    let status = 200;
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes', 'x-ms-blob-type': 'BlockBlob', 'x-ms-version': '2023-11-03' };
    if (typeof rangeHeader === 'string' && blob.length > 0) {
      const r = parseRange(rangeHeader, blob.length);
      if (r === 'invalid') {
        azureError(res, 416, 'InvalidRange', 'The range specified is invalid for the current size of the resource.', { 'content-range': `bytes */${blob.length}` });
        return;
      }
      ({ start, end } = r);
      status = 206;
      headers['content-range'] = `bytes ${start}-${end}/${blob.length}`;
    }
    const slice = blob.subarray(start, end + 1);
    headers['content-length'] = String(slice.length);
    res.writeHead(status, headers);
    if (mode === 'half') {
      const half = slice.subarray(0, Math.floor(slice.length / 2));
      counters.bytesDownloaded += half.length;
      res.write(half, () => res.socket?.destroy());
      return;
    }
    counters.bytesDownloaded += slice.length;
    res.end(slice);
  };

  const handleUpload = async (req: IncomingMessage, res: ServerResponse, method: GhaServerMethod): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://x');
    const entry = authorizeBlob(res, url, 'w');
    if (entry === undefined) {
      req.resume();
      return;
    }
    if (entry.finalized) {
      req.resume();
      azureError(res, 409, 'BlobImmutable', 'The cache entry is finalized; its blob cannot change.');
      return;
    }
    if (req.headers['x-ms-version'] === undefined) {
      req.resume();
      azureError(res, 400, 'MissingRequiredHeader', 'An HTTP header that is mandatory for this request is not specified: x-ms-version.');
      return;
    }
    if (req.headers['content-length'] === undefined) {
      req.resume();
      azureError(res, 411, 'MissingContentLengthHeader', 'Content-Length HTTP header is missing.');
      return;
    }
    if (method === 'PutBlob' && req.headers['x-ms-blob-type'] !== 'BlockBlob') {
      req.resume();
      azureError(res, 400, 'MissingRequiredHeader', 'An HTTP header that is mandatory for this request is not specified: x-ms-blob-type.');
      return;
    }
    let blockId: string | undefined;
    if (method === 'PutBlock') {
      blockId = url.searchParams.get('blockid') ?? '';
      const raw = validBlockId(blockId);
      if (raw === undefined || (entry.blockIdLength !== undefined && entry.blockIdLength !== raw.length)) {
        req.resume();
        azureError(res, 400, 'InvalidBlobOrBlock', 'The specified blob or block content is invalid.');
        return;
      }
      if (entry.uncommitted.size >= 100_000 && !entry.uncommitted.has(blockId)) {
        req.resume();
        azureError(res, 409, 'BlockCountExceedsLimit', 'The uncommitted block count cannot exceed the maximum limit of 100,000 blocks.');
        return;
      }
      entry.blockIdLength = raw.length;
    }
    const body = await readBody(req, 64 << 20);
    if (body === undefined) return;
    if (body.length !== Number(req.headers['content-length'])) {
      azureError(res, 400, 'InvalidInput', 'The body does not match its Content-Length.');
      return;
    }
    const ok = (): void => {
      res.writeHead(201, { 'content-length': '0', etag: `"0x${randomBytes(8).toString('hex').toUpperCase()}"`, 'x-ms-request-server-encrypted': 'true', 'x-ms-version': '2023-11-03' });
      res.end();
    };
    if (method === 'PutBlob') {
      counters.bytesUploaded += body.length;
      entry.committed = body;
      entry.committedBlocks = new Map();
      entry.uncommitted.clear();
      entry.blockIdLength = undefined;
      entry.blocks = 0;
      ok();
      return;
    }
    if (method === 'PutBlock' && blockId !== undefined) {
      counters.bytesUploaded += body.length;
      entry.uncommitted.set(blockId, body);
      ok();
      return;
    }
    // PutBlockList
    const list = parseBlockList(body.toString('utf8'));
    if (list === undefined || list.length > MAX_BLOCKS) {
      azureError(res, 400, 'InvalidXmlDocument', 'XML specified is not syntactically valid.');
      return;
    }
    const parts: Buffer[] = [];
    const committed = new Map<string, Buffer>();
    for (const { list: which, id } of list) {
      const block =
        which === 'Committed'
          ? entry.committedBlocks.get(id)
          : which === 'Uncommitted'
            ? entry.uncommitted.get(id)
            : (entry.uncommitted.get(id) ?? entry.committedBlocks.get(id));
      if (block === undefined) {
        azureError(res, 400, 'InvalidBlockList', 'The specified block list is invalid.');
        return;
      }
      parts.push(block);
      committed.set(id, block);
    }
    entry.committed = Buffer.concat(parts);
    entry.committedBlocks = committed;
    entry.uncommitted.clear();
    entry.blocks = list.length;
    ok();
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
    counters.requests[method]++;
    const fault = takeFault(method);
    if (fault !== undefined) {
      applyFault(req, res, method, fault);
      return;
    }
    const done = (p: Promise<void>): void => {
      p.catch(() => res.socket?.destroy());
    };
    if (method === 'GetBlob') done(serveBlob(req, res, 'full'));
    else if (method === 'PutBlob' || method === 'PutBlock' || method === 'PutBlockList') done(handleUpload(req, res, method));
    else done(handleTwirp(req, res, method));
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  origin = `http://127.0.0.1:${port}`;

  return {
    url: `${origin}/`,
    token,
    env: () => ({ ACTIONS_RESULTS_URL: `${origin}/`, ACTIONS_RUNTIME_TOKEN: token, ACTIONS_CACHE_SERVICE_V2: 'True' }),
    get counters() {
      return counters;
    },
    inject: (...fs) => {
      for (const f of fs) faults.push({ ...f, left: f.times ?? 1, skip: f.after ?? 0 });
    },
    pending: () => faults.filter((f) => f.left > 0).map(({ left: _l, skip: _s, ...f }) => f),
    signedUrls,
    entries: () =>
      [...byId.values()]
        .sort((a, b) => a.seq - b.seq)
        .map((e) => ({ id: e.id, key: e.key, version: e.version, finalized: e.finalized, size: e.committed?.length ?? 0, blocks: e.blocks })),
    blob: (key, version) => {
      const e = partition(version, key);
      return e?.finalized ? e.committed : undefined;
    },
    rotateSigningKey: () => {
      signingKey = randomBytes(32);
    },
    resetCounters: () => {
      counters = zero();
    },
    stop: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
