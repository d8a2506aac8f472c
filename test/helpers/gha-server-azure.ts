import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { readBody, type Entry, type GhaServerMethod, type GhaServerState } from './gha-server-state.ts';

/** The Azure Blob Storage half of the loopback cache service: Put Blob, Put Block, Put Block List, Get Blob. */

const MAX_BLOCKS = 50_000;

export const AZURE_CODES: Record<number, string> = {
  400: 'InvalidInput',
  403: 'AuthenticationFailed',
  404: 'BlobNotFound',
  409: 'BlobAlreadyExists',
  429: 'ServerBusy',
  500: 'InternalError',
  503: 'ServerBusy',
};

export function azureError(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
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

/** Checks a blob request's SAS; answers and returns undefined when it fails. */
function authorizeBlob(state: GhaServerState, res: ServerResponse, url: URL, need: 'w' | 'r'): Entry | undefined {
  const id = Number(url.pathname.slice('/blob/'.length));
  const sp = url.searchParams.get('sp') ?? '';
  const se = url.searchParams.get('se') ?? '';
  const sig = url.searchParams.get('sig') ?? '';
  const expected = Buffer.from(state.sign(sp, id, se));
  const given = Buffer.from(sig);
  if (given.length !== expected.length || !timingSafeEqual(given, expected) || !(Date.parse(se) > Date.now())) {
    state.counters.unauthorized++;
    azureError(res, 403, 'AuthenticationFailed', 'Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature.');
    return undefined;
  }
  if (!sp.includes(need)) {
    state.counters.unauthorized++;
    azureError(res, 403, 'AuthorizationPermissionMismatch', 'This request is not authorized to perform this operation using this permission.');
    return undefined;
  }
  const entry = state.byId.get(id);
  if (entry === undefined) {
    azureError(res, 404, 'BlobNotFound', 'The specified blob does not exist.');
    return undefined;
  }
  return entry;
}

export async function serveBlob(state: GhaServerState, req: IncomingMessage, res: ServerResponse, mode: 'full' | 'half'): Promise<void> {
  req.resume();
  const url = new URL(req.url ?? '/', 'http://x');
  const entry = authorizeBlob(state, res, url, 'r');
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
    state.counters.bytesDownloaded += half.length;
    res.write(half, () => res.socket?.destroy());
    return;
  }
  state.counters.bytesDownloaded += slice.length;
  res.end(slice);
}

export async function handleUpload(state: GhaServerState, req: IncomingMessage, res: ServerResponse, method: GhaServerMethod): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://x');
  const entry = authorizeBlob(state, res, url, 'w');
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
    state.counters.bytesUploaded += body.length;
    entry.committed = body;
    entry.committedBlocks = new Map();
    entry.uncommitted.clear();
    entry.blockIdLength = undefined;
    entry.blocks = 0;
    ok();
    return;
  }
  if (method === 'PutBlock' && blockId !== undefined) {
    state.counters.bytesUploaded += body.length;
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
}
