import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import { listenOnLoopback } from './loopback.ts';

/**
 * What the proxy does to a matching request instead of (or while) forwarding it:
 * - a status code: answer it without forwarding;
 * - `drop`: close the connection without answering;
 * - `drop-request-midway`: forward half of the request body (the first MiB of a chunked one),
 *   then cut both connections;
 * - `drop-response-midway`: forward the answer's headers and half its body, then cut;
 * - `stall`: never answer (the client's timeout must fire);
 * - `corrupt`: forward, flipping one byte of the answer's body.
 */
export type FaultAction = number | 'drop' | 'drop-request-midway' | 'drop-response-midway' | 'stall' | 'corrupt';

export interface FaultRule {
  method?: string;
  path?: RegExp;
  action: FaultAction;
  /** How many matching requests get the fault (default 1). */
  times?: number;
  /** Matching requests let through untouched before the fault starts (default 0). */
  after?: number;
}

export interface ProxyCounters {
  requests: number;
  blobHeads: number;
  blobGets: number;
  /** POST …/blobs/uploads/ without a mount. */
  uploadStarts: number;
  mounts: number;
  /** PATCH chunks sent to an upload. */
  uploadPatches: number;
  /** PUT …/blobs/uploads/…?digest= (monolithic bodies and chunked commits). */
  uploadPuts: number;
  manifestPuts: number;
  faults: number;
  /** `METHOD /path` of every request, in order. */
  log: string[];
}

export interface FaultProxy {
  url: string;
  host: string;
  counters: ProxyCounters;
  /** Adds rules; earlier rules are matched first. */
  inject(...rules: FaultRule[]): void;
  /** Rules not yet used up (a test can assert every fault really fired). */
  pending(): FaultRule[];
  resetCounters(): void;
  stop(): Promise<void>;
}

function zero(): ProxyCounters {
  return { requests: 0, blobHeads: 0, blobGets: 0, uploadStarts: 0, mounts: 0, uploadPatches: 0, uploadPuts: 0, manifestPuts: 0, faults: 0, log: [] };
}

function count(c: ProxyCounters, method: string, url: URL): void {
  c.requests++;
  const p = url.pathname;
  c.log.push(`${method} ${p}`);
  if (/\/blobs\/sha256:/.test(p)) {
    if (method === 'HEAD') c.blobHeads++;
    if (method === 'GET') c.blobGets++;
  } else if (/\/blobs\/uploads\/?$/.test(p) && method === 'POST') {
    if (url.searchParams.has('mount')) c.mounts++;
    else c.uploadStarts++;
  } else if (/\/blobs\/uploads\/./.test(p)) {
    if (method === 'PATCH') c.uploadPatches++;
    if (method === 'PUT') c.uploadPuts++;
  } else if (/\/manifests\//.test(p) && method === 'PUT') {
    c.manifestPuts++;
  }
}

/** A loopback HTTP proxy in front of `upstream` (`127.0.0.1:PORT`) that injects failures. */
export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const [upHost, upPort] = upstream.split(':');
  let counters = zero();
  const rules: Array<FaultRule & { left: number; skip: number }> = [];

  const take = (method: string, path: string): FaultAction | undefined => {
    for (const r of rules) {
      if (r.left <= 0) continue;
      if (r.method !== undefined && r.method !== method) continue;
      if (r.path !== undefined && !r.path.test(path)) continue;
      if (r.skip > 0) {
        r.skip--;
        continue;
      }
      r.left--;
      counters.faults++;
      return r.action;
    }
    return undefined;
  };

  const forward = (req: IncomingMessage, res: ServerResponse, action: FaultAction | undefined): void => {
    const up = request({ host: upHost, port: Number(upPort), method: req.method, path: req.url, headers: req.headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      const declared = Number(upRes.headers['content-length'] ?? 0);
      if (action === 'drop-response-midway' && declared > 1) {
        let sent = 0;
        upRes.on('data', (chunk: Buffer) => {
          const room = Math.floor(declared / 2) - sent;
          if (room > 0) res.write(chunk.subarray(0, room));
          sent += Math.min(chunk.length, Math.max(room, 0));
          if (sent >= Math.floor(declared / 2)) {
            upRes.destroy();
            req.socket.destroy();
          }
        });
        return;
      }
      if (action === 'corrupt') {
        let flipped = false;
        upRes.on('data', (chunk: Buffer) => {
          if (!flipped && chunk.length > 0) {
            const copy = Buffer.from(chunk);
            copy[0] = (copy[0] ?? 0) ^ 0xff;
            flipped = true;
            res.write(copy);
          } else res.write(chunk);
        });
        upRes.on('end', () => res.end());
        return;
      }
      upRes.pipe(res);
    });
    up.on('error', () => req.socket.destroy());
    if (action === 'drop-request-midway') {
      // A streamed (chunked) body has no length: it is cut after its first MiB.
      const length = req.headers['content-length'];
      const half = length === undefined ? 1 << 20 : Math.floor(Number(length) / 2);
      let sent = 0;
      req.on('data', (chunk: Buffer) => {
        const room = half - sent;
        if (room > 0) up.write(chunk.subarray(0, room));
        sent += chunk.length;
        if (sent >= half) {
          // Cutting the upstream request mid-body is what a dying network does to the registry.
          up.destroy();
          req.socket.destroy();
        }
      });
      return;
    }
    req.pipe(up);
  };

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const method = req.method ?? 'GET';
    count(counters, method, url);
    const action = take(method, url.pathname);
    if (typeof action === 'number') {
      req.resume();
      res.writeHead(action, { 'content-type': 'application/json', ...(action === 429 ? { 'retry-after': '0' } : {}) });
      res.end(JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: 'injected fault' }] }));
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
    forward(req, res, action);
  });
  const { port, origin, stop } = await listenOnLoopback(server);
  return {
    url: origin,
    host: `127.0.0.1:${port}`,
    get counters() {
      return counters;
    },
    inject: (...rs) => {
      for (const r of rs) rules.push({ ...r, left: r.times ?? 1, skip: r.after ?? 0 });
    },
    pending: () => rules.filter((r) => r.left > 0),
    resetCounters: () => {
      counters = zero();
    },
    stop,
  };
}
