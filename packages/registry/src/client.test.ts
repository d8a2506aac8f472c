import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer as createHttpsServer } from 'node:https';
import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { RegistryError, redactSecrets } from '@tsbuild/errors';
import { MediaType, type Descriptor, type Digest } from '@tsbuild/oci';
import { RegistryClient, type ClientOptions } from './client.ts';
import { Transport, connectionError } from './http.ts';
import { getConfig, getManifest, pullImage, resolveImage, type BlobSink } from './pull.ts';
import { pushBlob } from './push.ts';
import { parseReference } from './reference.ts';

type Handler = (req: IncomingMessage, res: ServerResponse, body: Buffer) => void;

async function serve(t: { after(fn: () => Promise<void>): void }, handler: Handler): Promise<{ host: string; server: Server }> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => handler(req, res, Buffer.concat(chunks)));
    req.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  const addr = server.address();
  return { host: `127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`, server };
}

const sha = (b: Uint8Array | string): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function client(t: { after(fn: () => void): void }, opts: ClientOptions = {}): RegistryClient {
  const c = new RegistryClient({ credentials: async () => undefined, retryDelayMs: 1, timeoutMs: 2000, ...opts });
  t.after(() => c.close());
  return c;
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

const CONFIG = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
const MANIFEST = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: MediaType.OciConfig, digest: sha(CONFIG), size: CONFIG.length }, layers: [] }));

/** A registry behind a token server on the same port, with a clock the test moves. */
test('Bearer tokens are cached per scope, renewed on expiry and on 401, and never shown', async (t) => {
  let now = 1_000_000;
  let issued = 0;
  let revoked = new Set<string>();
  const { host } = await serve(t, (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/token') {
      assert.equal(url.searchParams.get('service'), 'svc');
      assert.equal(req.headers.authorization, `Basic ${Buffer.from('u:pw-123').toString('base64')}`);
      issued++;
      // The older `access_token` spelling.
      json(res, 200, { access_token: `tok-${issued}-${url.searchParams.getAll('scope').join('+')}`, expires_in: 120 });
      return;
    }
    const auth = req.headers.authorization ?? '';
    if (!auth.startsWith('Bearer tok-') || revoked.has(auth)) {
      json(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: `bad ${auth}` }] }, { 'www-authenticate': `Bearer realm="http://${req.headers.host}/token",service="svc",scope="repository:a/b:pull"` });
      return;
    }
    if (url.pathname === '/v2/a/b/manifests/boom') {
      // A registry that echoes the credentials it got into its error.
      json(res, 500, { errors: [{ code: 'UNKNOWN', message: `failed for ${auth}` }] });
      return;
    }
    res.writeHead(200, { 'content-type': MediaType.OciManifest });
    res.end(MANIFEST);
  });
  const c = client(t, { credentials: async () => ({ username: 'u', password: 'pw-123' }), now: () => now, retries: 0 });
  const ref = parseReference(`${host}/a/b:v1`);
  await getManifest(c, ref);
  await getManifest(c, ref);
  assert.equal(issued, 1);
  now += 200_000;
  await getManifest(c, ref);
  assert.equal(issued, 2, 'an expired token is renewed');
  revoked = new Set([`Bearer tok-2-repository:a/b:pull`]);
  await getManifest(c, ref);
  assert.equal(issued, 3, 'a 401 with a cached token fetches a new one');

  await assert.rejects(getManifest(c, parseReference(`${host}/a/b:boom`)), (e: unknown) => {
    assert.ok(e instanceof RegistryError);
    assert.ok(e.temporary);
    assert.ok(!e.message.includes('tok-3'), e.message);
    assert.ok(!e.message.includes('pw-123'));
    assert.match(e.message, /Bearer \[redacted\]/);
    return true;
  });
});

test('redactSecrets hides tokens, basic credentials and secret query values', () => {
  const s = redactSecrets('Authorization: Bearer eyJhbGciOi.abc-def_ghi Basic dTpwdw== https://u:pw@host/x?token=abc&scope=x access_token=zzz password=hunter2');
  for (const secret of ['eyJhbGciOi', 'dTpwdw==', 'u:pw@', 'token=abc', 'zzz', 'hunter2']) assert.ok(!s.includes(secret), `${secret} in ${s}`);
  assert.ok(s.includes('scope=x'));
});

test('an index resolves to linux/amd64; a missing platform lists what there is', async (t) => {
  const arm = Buffer.from(MANIFEST.toString().replace('"layers":[]', '"layers":[],"annotations":{"a":"arm"}'));
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: [
        { mediaType: MediaType.OciManifest, digest: sha(arm), size: arm.length, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
        { mediaType: MediaType.OciManifest, digest: sha(MANIFEST), size: MANIFEST.length, platform: { os: 'linux', architecture: 'amd64' } },
        { mediaType: MediaType.OciManifest, digest: sha('x'), size: 1, platform: { os: 'unknown', architecture: 'unknown' } },
      ],
    }),
  );
  const { host } = await serve(t, (req, res) => {
    const p = req.url ?? '';
    if (p === '/v2/') return json(res, 200, {});
    const blobs: Record<string, Buffer> = { [`/v2/x/manifests/${sha(arm)}`]: arm, [`/v2/x/manifests/${sha(MANIFEST)}`]: MANIFEST, '/v2/x/manifests/multi': index, [`/v2/x/blobs/${sha(CONFIG)}`]: CONFIG };
    const b = blobs[p];
    if (b === undefined) return json(res, 404, { errors: [{ code: 'MANIFEST_UNKNOWN' }] });
    res.writeHead(200, { 'content-type': p.includes('multi') ? MediaType.OciIndex : MediaType.OciManifest, 'docker-content-digest': sha(b) });
    res.end(b);
  });
  const c = client(t);
  const ref = parseReference(`${host}/x:multi`);
  const img = await resolveImage(c, ref);
  assert.equal(img.manifestDescriptor.digest, sha(MANIFEST));
  assert.equal((await resolveImage(c, ref, { platform: 'linux/arm64' })).manifestDescriptor.digest, sha(arm));
  assert.equal((await getConfig(c, ref)).config.architecture, 'amd64');
  await assert.rejects(resolveImage(c, ref, { platform: 'linux/s390x' }), (e: unknown) => {
    assert.ok(e instanceof RegistryError);
    assert.match(e.message, /has no image for linux\/s390x; it has: linux\/arm64\/v8, linux\/amd64$/);
    return true;
  });
  await assert.rejects(getManifest(c, parseReference(`${host}/x:nope`)), /manifest not found/);
});

test('manifests that do not match their digest are refused', async (t) => {
  const { host } = await serve(t, (req, res) => {
    if (req.url === '/v2/') return json(res, 200, {});
    // Claims one digest, serves other bytes.
    res.writeHead(200, { 'content-type': MediaType.OciManifest, 'docker-content-digest': sha('something else') });
    res.end(MANIFEST);
  });
  const c = client(t, { retries: 0 });
  await assert.rejects(getManifest(c, parseReference(`${host}/x:tag`)), /says the manifest is sha256:.* but it hashes to/);
  const wanted = sha('other');
  await assert.rejects(getManifest(c, parseReference(`${host}/x@${wanted}`)), (e: unknown) => e instanceof RegistryError && e.message.includes(wanted));
});

test('blob redirects are followed without the registry credentials', async (t) => {
  const layer = Buffer.from('layer bytes');
  let storageAuth: string | undefined = 'unset';
  const storage = await serve(t, (req, res) => {
    storageAuth = req.headers.authorization;
    res.writeHead(200);
    res.end(layer);
  });
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: MediaType.OciConfig, digest: sha(CONFIG), size: CONFIG.length }, layers: [{ mediaType: MediaType.OciLayer, digest: sha(layer), size: layer.length }] }));
  const { host } = await serve(t, (req, res) => {
    const auth = req.headers.authorization;
    if (auth !== `Basic ${Buffer.from('u:p').toString('base64')}`) return json(res, 401, {}, { 'www-authenticate': 'Basic realm="r"' });
    if (req.url === '/v2/') return json(res, 200, {});
    if (req.url?.includes('/manifests/')) {
      res.writeHead(200, { 'content-type': MediaType.OciManifest });
      return res.end(manifest);
    }
    if (req.url === `/v2/x/blobs/${sha(CONFIG)}`) {
      res.writeHead(200);
      return res.end(CONFIG);
    }
    res.writeHead(307, { location: `http://${storage.host}/bucket/${sha(layer)}?sig=abc` });
    res.end();
  });
  const c = client(t, { credentials: async () => ({ username: 'u', password: 'p' }) });
  const stored = new Map<string, Buffer>();
  const sink: BlobSink = {
    has: async (d) => stored.has(d),
    write: (desc: Descriptor) => {
      const parts: Buffer[] = [];
      return {
        stream: new Writable({ write: (c: Buffer, _e, cb) => (parts.push(c), cb()) }),
        commit: async () => void stored.set(desc.digest, Buffer.concat(parts)),
        abort: async () => undefined,
      };
    },
  };
  await pullImage(c, parseReference(`${host}/x:v`), sink);
  assert.deepEqual(stored.get(sha(layer)), layer);
  assert.equal(storageAuth, undefined);
});

for (const lost of [false, true]) {
test(`a chunked upload resumes from the Range the registry reports (${lost ? 'registry lost earlier chunks' : 'mid-chunk'})`, async (t) => {
  const blob = Buffer.alloc(250_000);
  for (let i = 0; i < blob.length; i++) blob[i] = (i * 7) % 251;
  const desc: Descriptor = { mediaType: MediaType.OciLayer, digest: sha(blob), size: blob.length };
  let held = Buffer.alloc(0);
  let patches = 0;
  let committed: Buffer | undefined;
  const { host } = await serve(t, (req, res, body) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/v2/') return json(res, 200, {});
    if (req.method === 'HEAD') return json(res, 404, {});
    if (req.method === 'POST') {
      res.writeHead(202, { location: '/v2/x/blobs/uploads/u1', range: '0-0', 'oci-chunk-min-length': '100000' });
      return res.end();
    }
    const range = () => ({ location: '/v2/x/blobs/uploads/u1', range: `0-${held.length - 1}` });
    if (req.method === 'GET') {
      res.writeHead(204, range());
      return res.end();
    }
    if (req.method === 'PATCH') {
      patches++;
      const [start] = (req.headers['content-range'] ?? '').split('-').map(Number);
      if (start !== held.length) return json(res, 416, { errors: [{ code: 'BLOB_UPLOAD_INVALID' }] });
      if (patches === 2) {
        // Keep a third of the chunk (or lose data already confirmed), then fail as a proxy in the way would.
        held = lost ? held.subarray(0, 40_000) : Buffer.concat([held, body.subarray(0, Math.floor(body.length / 3))]);
        return json(res, 503, { errors: [{ code: 'UNAVAILABLE' }] });
      }
      held = Buffer.concat([held, body]);
      res.writeHead(202, range());
      return res.end();
    }
    if (req.method === 'PUT') {
      assert.equal(url.searchParams.get('digest'), desc.digest);
      committed = held;
      res.writeHead(201, { 'docker-content-digest': desc.digest });
      return res.end();
    }
    json(res, 400, {});
  });
  const c = client(t);
  const opened: number[] = [];
  const status = await pushBlob(c, parseReference(`${host}/x:v`), desc, {
    openBlob: async () => {
      opened.push(0);
      return Readable.from([blob.subarray(0, 70_000), blob.subarray(70_000)]);
    },
  }, { monolithicMax: 1000, chunkSize: 50_000 });
  assert.equal(status, 'uploaded');
  assert.deepEqual(committed, blob);
  if (lost) {
    // The source is read again and its first 40000 bytes skipped.
    assert.deepEqual(opened, [0, 0]);
  } else {
    // Chunks honour OCI-Chunk-Min-Length (100000): 3 chunks plus the resend of the failed one's rest.
    assert.equal(patches, 4);
    assert.deepEqual(opened, [0], 'the rest of the chunk came from memory, not a re-read');
  }
});
}

test('TLS: a private CA is trusted only when given; failures say so', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tsbuild-tls-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'), '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  const cert = await readFile(join(dir, 'c.pem'), 'utf8');
  const server = createHttpsServer({ key: await readFile(join(dir, 'k.pem')), cert }, (_req, res) => res.end('{}'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  const addr = server.address();
  const url = new URL(`https://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/v2/`);

  const trusted = new Transport({ ca: cert });
  t.after(() => trusted.close());
  const res = await trusted.send({ method: 'GET', url });
  assert.equal(res.status, 200);
  res.discard();

  const plain = new Transport();
  t.after(() => plain.close());
  const err = await plain.send({ method: 'GET', url }).then(() => undefined, (e: unknown) => connectionError(e, 'ping', url));
  assert.ok(err instanceof RegistryError);
  assert.match(err.message, /TLS verification of 127\.0\.0\.1:\d+ failed/);

  const c = new RegistryClient({ insecure: ['reg.internal:5000'] });
  t.after(() => c.close());
  assert.equal(c.baseUrl('reg.internal:5000').protocol, 'http:');
  assert.equal(c.baseUrl('localhost:5000').protocol, 'http:');
  assert.equal(c.baseUrl('[::1]:5000').protocol, 'http:');
  assert.equal(c.baseUrl('ghcr.io').protocol, 'https:');
  assert.equal(c.baseUrl('docker.io').host, 'registry-1.docker.io');
});

test('an aborted pull stops at once, aborts the blob writer and commits nothing', async (t) => {
  const layer = Buffer.alloc(100_000, 1);
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: MediaType.OciConfig, digest: sha(CONFIG), size: CONFIG.length }, layers: [{ mediaType: MediaType.OciLayer, digest: sha(layer), size: layer.length }] }));
  const { host } = await serve(t, (req, res) => {
    if (req.url === '/v2/') return json(res, 200, {});
    if (req.url?.includes('/manifests/')) {
      res.writeHead(200, { 'content-type': MediaType.OciManifest });
      return res.end(manifest);
    }
    if (req.url === `/v2/x/blobs/${sha(CONFIG)}`) return res.end(CONFIG);
    // Half the layer, then nothing more: the pull hangs until it is cancelled.
    res.writeHead(200, { 'content-length': String(layer.length) });
    res.write(layer.subarray(0, 50_000));
  });
  const c = client(t, { timeoutMs: 60_000 });
  const ac = new AbortController();
  const events: string[] = [];
  const sink: BlobSink = {
    has: async () => false,
    write: () => ({
      stream: new Writable({
        write: (_c: Buffer, _e, cb) => {
          if (!ac.signal.aborted) ac.abort();
          cb();
        },
      }),
      commit: async () => void events.push('commit'),
      abort: async () => void events.push('abort'),
    }),
  };
  await assert.rejects(pullImage(c, parseReference(`${host}/x:v`), sink, { signal: ac.signal }), (e: unknown) => {
    assert.equal((e as { code?: string }).code, 'CANCELLED');
    return true;
  });
  assert.deepEqual(events, ['abort']);
});
