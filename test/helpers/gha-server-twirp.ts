import type { IncomingMessage, ServerResponse } from 'node:http';
import { readBody, type GhaServerMethod, type GhaServerState } from './gha-server-state.ts';

/** The Twirp half of the loopback cache service: CreateCacheEntry, FinalizeCacheEntryUpload, GetCacheEntryDownloadURL. */

export const SERVICE_PREFIX = '/twirp/github.actions.results.api.v1.CacheService/';
const MAX_KEY_LENGTH = 512;
const MAX_KEYS = 10;

export const TWIRP_CODES: Record<number, string> = {
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

export function twirpError(res: ServerResponse, status: number, code: string, msg: string, headers: Record<string, string> = {}): void {
  const body = JSON.stringify({ code, msg });
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), ...headers });
  res.end(body);
}

function twirpOk(res: ServerResponse, body: Record<string, unknown>): void {
  const text = JSON.stringify(body);
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) });
  res.end(text);
}

export async function handleTwirp(state: GhaServerState, req: IncomingMessage, res: ServerResponse, method: GhaServerMethod): Promise<void> {
  if (req.method !== 'POST') {
    req.resume();
    twirpError(res, 404, 'bad_route', `unsupported method ${req.method ?? ''} (only POST is allowed)`);
    return;
  }
  const auth = req.headers.authorization ?? '';
  if (auth !== `Bearer ${state.token}`) {
    req.resume();
    state.counters.unauthorized++;
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
    if (state.partition(version, key) !== undefined) {
      twirpError(res, 409, 'already_exists', 'cache entry with the same key, version, and scope already exists');
      return;
    }
    const entry = state.create(key, version);
    twirpOk(res, { ok: true, signed_upload_url: state.signedUrl(entry.id, 'cw'), message: '' });
    return;
  }

  if (method === 'FinalizeCacheEntryUpload') {
    const entry = state.partition(version, key);
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
  const visible = [...state.byId.values()].filter((e) => e.finalized && e.version === version).sort((a, b) => b.seq - a.seq);
  let hit = visible.find((e) => e.key === key);
  for (const prefix of [key, ...restoreField]) {
    if (hit !== undefined) break;
    hit = visible.find((e) => e.key.startsWith(prefix));
  }
  if (hit === undefined) {
    twirpOk(res, { ok: false, signed_download_url: '', matched_key: '' });
    return;
  }
  twirpOk(res, { ok: true, signed_download_url: state.signedUrl(hit.id, 'r'), matched_key: hit.key });
}
