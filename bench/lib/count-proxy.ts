/**
 * A counting HTTP proxy in front of a registry, run as its own process so that it keeps
 * answering while the benchmark waits on a build with spawnSync:
 *
 *   node --import tsx bench/lib/count-proxy.ts 127.0.0.1:UPSTREAM_PORT   # prints its own port
 *
 * It forwards every request unchanged (the Host header too, so the registry's upload Locations
 * point back at the proxy) and counts the body bytes each way. `GET /_bench/counters` answers the
 * counts as JSON and `POST /_bench/reset` zeroes them; registry paths all start with /v2/.
 * `startCountingProxy` starts it from a benchmark and stops it by its PID.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { Agent, createServer, request } from 'node:http';
import { fileURLToPath } from 'node:url';

export interface TrafficCounters {
  requests: number;
  /** Response body bytes, every request. */
  down: number;
  /** Request body bytes, every request. */
  up: number;
  /** GET …/blobs/sha256:… and the bytes they returned. */
  blobGets: number;
  blobBytes: number;
  manifestGets: number;
  /** Bytes sent to …/blobs/uploads/… (PATCH and PUT bodies) and the uploads committed. */
  uploadBytes: number;
  uploads: number;
  /** Cross-repository mounts asked for (POST …/blobs/uploads/?mount=…). */
  mounts: number;
  manifestPuts: number;
}

export const zeroCounters = (): TrafficCounters => ({ requests: 0, down: 0, up: 0, blobGets: 0, blobBytes: 0, manifestGets: 0, uploadBytes: 0, uploads: 0, mounts: 0, manifestPuts: 0 });

export interface CountingProxy {
  /** `127.0.0.1:PORT`, the registry part of references through the proxy. */
  readonly host: string;
  readonly pid: number;
  reset(): Promise<void>;
  counters(): Promise<TrafficCounters>;
  stop(): Promise<void>;
}

function serve(upstream: string): void {
  const [upHost, upPort] = upstream.split(':');
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  let c = zeroCounters();
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const method = req.method ?? 'GET';
    if (url.pathname === '/_bench/counters') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(c));
      return;
    }
    if (url.pathname === '/_bench/reset') {
      c = zeroCounters();
      res.writeHead(204);
      res.end();
      return;
    }
    const counts = c;
    counts.requests++;
    const p = url.pathname;
    const blob = /\/blobs\/sha256:[0-9a-f]{64}$/.test(p);
    const upload = /\/blobs\/uploads\/./.test(p);
    if (method === 'GET' && blob) counts.blobGets++;
    if (method === 'GET' && /\/manifests\//.test(p)) counts.manifestGets++;
    if (method === 'PUT' && /\/manifests\//.test(p)) counts.manifestPuts++;
    if (method === 'PUT' && upload) counts.uploads++;
    if (method === 'POST' && /\/blobs\/uploads\/?$/.test(p) && url.searchParams.has('mount')) counts.mounts++;
    const up = request({ host: upHost, port: Number(upPort), method, path: req.url, headers: req.headers, agent }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.on('data', (chunk: Buffer) => {
        counts.down += chunk.length;
        if (method === 'GET' && blob) counts.blobBytes += chunk.length;
      });
      upRes.pipe(res);
    });
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.on('data', (chunk: Buffer) => {
      counts.up += chunk.length;
      if (upload) counts.uploadBytes += chunk.length;
    });
    req.pipe(up);
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => {
    const addr = server.address();
    process.stdout.write(`${typeof addr === 'object' && addr !== null ? addr.port : 0}\n`);
  });
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}

/**
 * One request to the proxy's control paths on a connection of its own. A kept-alive connection
 * would go stale while the benchmark's event loop is blocked in spawnSync (the proxy closes it,
 * the close goes unread, and the next request on it fails), so every call connects afresh.
 */
function control(port: number, method: string, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => (res.statusCode !== undefined && res.statusCode < 300 ? resolve(body) : reject(new Error(`counting proxy: ${method} ${path} answered ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Starts the proxy in a child process in front of `upstream` (`127.0.0.1:PORT`). */
export async function startCountingProxy(upstream: string): Promise<CountingProxy> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), upstream], { stdio: ['ignore', 'pipe', 'inherit'] });
  const pid = child.pid;
  if (pid === undefined) throw new Error('the counting proxy did not start');
  // If the benchmark dies without its cleanups, the proxy goes with it.
  const kill = (): void => void child.kill('SIGKILL');
  process.once('exit', kill);
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = /^(\d+)\n/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`the counting proxy exited with ${code}`)));
  });
  return {
    host: `127.0.0.1:${port}`,
    pid,
    async reset() {
      await control(port, 'POST', '/_bench/reset');
    },
    async counters() {
      return JSON.parse(await control(port, 'GET', '/_bench/counters')) as TrafficCounters;
    },
    async stop() {
      process.removeListener('exit', kill);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const upstream = process.argv[2];
  if (!upstream || !/^127\.0\.0\.1:\d+$/.test(upstream)) {
    process.stderr.write('usage: count-proxy.ts 127.0.0.1:PORT\n');
    process.exit(2);
  }
  serve(upstream);
}
