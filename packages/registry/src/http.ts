import type * as Http from 'node:http';
import type * as Https from 'node:https';
import type { Readable } from 'node:stream';
import { RegistryError } from '@tsbuild/errors';
import type { RegistryErrorOptions } from '@tsbuild/errors';

/** Loaded on first use: a build that talks to no registry loads no HTTP or TLS code. */
const http = (): typeof Http => process.getBuiltinModule('node:http');
const https = (): typeof Https => process.getBuiltinModule('node:https');

/** A request body that can be produced again, so a failed attempt can be resent. */
export type BodyFactory = () => Uint8Array | Readable | Promise<Uint8Array | Readable>;

export interface HttpRequest {
  method: string;
  url: URL;
  headers?: Record<string, string>;
  body?: BodyFactory;
  signal?: AbortSignal | undefined;
}

export interface HttpResponse {
  readonly status: number;
  readonly url: URL;
  header(name: string): string | undefined;
  /** Every value of a header that may repeat (WWW-Authenticate). */
  headerAll(name: string): string[];
  readonly body: Readable;
  /** Reads the body as bytes, refusing more than `limit` bytes (a hostile server can send forever). */
  bytes(limit: number): Promise<Buffer>;
  /** Drops the rest of the body so the connection can be reused. */
  discard(): void;
}

export interface TransportOptions {
  /** Extra PEM certificates trusted besides the system CAs. */
  ca?: string | undefined;
  /** Idle time after which a connection is given up as stalled. */
  timeoutMs?: number | undefined;
  userAgent?: string | undefined;
}

const CONNECTION_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'EAI_AGAIN', 'UND_ERR_SOCKET', 'ERR_STREAM_PREMATURE_CLOSE']);

/** A failure of the connection itself, as opposed to an HTTP answer. */
export function connectionError(err: unknown, what: string, url: URL): RegistryError {
  const code = (err as { code?: unknown } | null)?.code;
  const msg = err instanceof Error ? err.message : String(err);
  if (code === 'ECONNREFUSED') {
    return new RegistryError(`${what}: cannot connect to ${url.host}: connection refused (is the registry running?)`, { cause: err, temporary: false });
  }
  if (code === 'ENOTFOUND') {
    return new RegistryError(`${what}: cannot resolve host ${url.hostname}`, { cause: err, temporary: false });
  }
  if (typeof code === 'string' && /^(?:CERT_|UNABLE_TO_|DEPTH_ZERO|SELF_SIGNED|ERR_TLS)/.test(code)) {
    return new RegistryError(`${what}: TLS verification of ${url.host} failed: ${msg}`, {
      cause: err,
      hint: 'pass the registry CA with --ca-file, or mark the registry insecure to use plain HTTP',
    });
  }
  if (url.protocol === 'https:' && /wrong version number|packet length too long|http request/i.test(msg)) {
    // A plain-HTTP server answering a TLS handshake.
    return new RegistryError(`${what}: ${url.host} does not speak HTTPS (it looks like a plain-HTTP registry)`, {
      cause: err,
      temporary: false,
      hint: `to use it over plain HTTP, pass --insecure-registry ${url.host} (the insecure-registry input of the Action)`,
    });
  }
  const temporary = (typeof code === 'string' && CONNECTION_ERRORS.has(code)) || /socket hang up|stalled|aborted|premature/i.test(msg);
  return new RegistryError(`${what}: connection to ${url.host} failed: ${msg}`, { cause: err, temporary });
}

export class Transport {
  private httpAgent: Http.Agent | undefined;
  private httpsAgent: Https.Agent | undefined;
  private readonly timeoutMs: number;
  private readonly userAgent: string;
  private readonly ca: string | undefined;

  constructor(opts: TransportOptions = {}) {
    this.timeoutMs = opts.timeoutMs ?? 60_000;
    this.userAgent = opts.userAgent ?? 'tsbuild';
    this.ca = opts.ca;
  }

  /** The keep-alive agent for one protocol, made on its first request. */
  private agent(isHttps: boolean): Http.Agent {
    if (!isHttps) return (this.httpAgent ??= new (http().Agent)({ keepAlive: true, maxSockets: 8 }));
    const ca = this.ca;
    return (this.httpsAgent ??= new (https().Agent)({
      keepAlive: true,
      maxSockets: 8,
      ...(ca === undefined ? {} : { ca: [...process.getBuiltinModule('node:tls').rootCertificates, ca] }),
    }));
  }

  close(): void {
    this.httpAgent?.destroy();
    this.httpsAgent?.destroy();
  }

  async send(req: HttpRequest): Promise<HttpResponse> {
    const body = req.body === undefined ? undefined : await req.body();
    const isHttps = req.url.protocol === 'https:';
    const headers: Record<string, string> = { 'user-agent': this.userAgent, ...req.headers };
    if (body instanceof Uint8Array) headers['content-length'] = String(body.byteLength);
    else if (body === undefined && (req.method === 'PUT' || req.method === 'POST' || req.method === 'PATCH')) headers['content-length'] = '0';
    const res = await sendRequest({
      method: req.method,
      url: req.url,
      headers,
      body,
      signal: req.signal,
      agent: this.agent(isHttps),
      idleTimeoutMs: this.timeoutMs,
      stalled: () => new Error(`connection stalled for ${this.timeoutMs} ms`),
    });
    return wrapResponse(res, req.url);
  }
}

export interface RawRequest {
  method: string;
  url: URL;
  /** Sent as they are: the caller adds user-agent and content-length. */
  headers: Record<string, string>;
  body?: Uint8Array | Readable | undefined;
  signal?: AbortSignal | undefined;
  /** The agent for the URL's protocol. */
  agent: Http.Agent;
  /** With no byte moving for this long the request is destroyed with `stalled()`; the timer covers the response body too. */
  idleTimeoutMs: number;
  stalled: () => Error;
}

/**
 * One HTTP(S) request, resolved with the response as soon as its head arrives. A streamed body is
 * piped in, and destroyed when the request fails, so a failed attempt leaves no reader open. The
 * one request primitive of tsbuild's HTTP clients (the registry's and the gha cache's).
 */
export function sendRequest(req: RawRequest): Promise<Http.IncomingMessage> {
  const mod = req.url.protocol === 'https:' ? https() : http();
  const body = req.body;
  return new Promise((resolve, reject) => {
    let settled = false;
    const fail = (e: unknown): void => {
      if (body !== undefined && !(body instanceof Uint8Array)) body.destroy();
      if (settled) return;
      settled = true;
      reject(e);
    };
    const cr = mod.request(
      req.url,
      { method: req.method, headers: req.headers, agent: req.agent, signal: req.signal },
      (res) => {
        if (settled) {
          res.resume();
          return;
        }
        settled = true;
        resolve(res);
      },
    );
    cr.setTimeout(req.idleTimeoutMs, () => cr.destroy(req.stalled()));
    cr.on('error', fail);
    if (body === undefined) cr.end();
    else if (body instanceof Uint8Array) cr.end(body);
    else {
      body.on('error', (e) => cr.destroy(e));
      body.pipe(cr);
    }
  });
}

/** A body of at most `limit` bytes; undefined, with the stream destroyed, when it is longer. */
export async function readAtMost(body: Readable, limit: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > limit) {
      body.destroy();
      return undefined;
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function wrapResponse(res: Http.IncomingMessage, url: URL): HttpResponse {
  return {
    status: res.statusCode ?? 0,
    url,
    body: res,
    header(name) {
      const v = res.headers[name.toLowerCase()];
      return Array.isArray(v) ? v[0] : v;
    },
    headerAll(name) {
      const v = res.headers[name.toLowerCase()];
      return v === undefined ? [] : Array.isArray(v) ? v : [v];
    },
    async bytes(limit) {
      const declared = Number(res.headers['content-length'] ?? NaN);
      if (declared > limit) {
        res.destroy();
        throw new RegistryError(`response from ${url.host}${url.pathname} is ${declared} bytes, more than the ${limit} allowed`);
      }
      const bytes = await readAtMost(res, limit);
      if (bytes === undefined) throw new RegistryError(`response from ${url.host}${url.pathname} is larger than the ${limit} bytes allowed`);
      return bytes;
    },
    discard() {
      res.resume();
    },
  };
}

interface OciErrorBody {
  errors?: Array<{ code?: unknown; message?: unknown; detail?: unknown }>;
}

/** Turns a failed HTTP answer into a RegistryError, with the registry's own error code when it sent one. */
export async function responseError(res: HttpResponse, what: string, reference?: string): Promise<RegistryError> {
  let ociCode: string | undefined;
  let detail = '';
  try {
    const text = (await res.bytes(64 * 1024)).toString('utf8');
    const parsed = JSON.parse(text) as OciErrorBody;
    const first = parsed.errors?.[0];
    if (first !== undefined) {
      ociCode = typeof first.code === 'string' ? first.code : undefined;
      const m = typeof first.message === 'string' ? first.message : '';
      detail = `${ociCode ?? 'error'}${m ? `: ${m}` : ''}`;
    }
  } catch {
    // A body that is not the OCI error JSON carries nothing worth showing.
  }
  const status = res.status;
  const temporary = status >= 500 || status === 429 || status === 408;
  let message = `${what}: ${status} ${http().STATUS_CODES[status] ?? ''}`.trimEnd();
  if (detail) message += ` (${detail.slice(0, 300)})`;
  const options: RegistryErrorOptions = { status, temporary };
  if (ociCode !== undefined) options.ociCode = ociCode;
  if (reference !== undefined) options.reference = reference;
  return new RegistryError(message, options);
}
