import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { finished } from 'node:stream/promises';
import { RegistryError } from '@tsbuild/errors';
import type { Digest } from '@tsbuild/oci';
import { RegistryClient } from './client.ts';
import { startBlobUpload } from './push.ts';
import { parseReference } from './reference.ts';

const sha = (b: Uint8Array): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}`;

interface Seen {
  method: string;
  url: URL;
  headers: IncomingMessage['headers'];
}

/**
 * A registry that opens uploads at /v2/x/blobs/uploads/u1 and hands each PATCH and PUT to the test.
 * Requests are recorded as they arrive, before their bodies.
 */
async function registry(
  t: { after(fn: () => Promise<void>): void },
  handle: (req: IncomingMessage, res: ServerResponse, url: URL) => void,
): Promise<{ host: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    seen.push({ method: req.method ?? '', url, headers: req.headers });
    req.on('error', () => undefined);
    if (url.pathname === '/v2/') {
      res.writeHead(200).end('{}');
      return;
    }
    if (req.method === 'POST' && url.pathname === '/v2/x/blobs/uploads/') {
      req.resume();
      res.writeHead(202, { location: '/v2/x/blobs/uploads/u1', range: '0-0' }).end();
      return;
    }
    handle(req, res, url);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  const addr = server.address();
  return { host: `127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`, seen };
}

function client(t: { after(fn: () => void): void }): RegistryClient {
  const c = new RegistryClient({ credentials: async () => undefined, retryDelayMs: 1, timeoutMs: 5000 });
  t.after(() => c.close());
  return c;
}

/** Writes `chunks` to `w` one after the other, honouring backpressure, then ends it. */
async function writeAll(w: NodeJS.WritableStream & { writableFinished?: boolean }, chunks: Buffer[]): Promise<void> {
  for (const c of chunks) {
    if (!w.write(c)) await new Promise((r) => w.once('drain', r));
  }
  w.end();
}

test('a streamed upload sends the bytes in one PATCH as they are made and commits them under the digest named at the end', { timeout: 20_000 }, async (t) => {
  const parts = [Buffer.alloc(70_000, 1), Buffer.alloc(50_000, 2), Buffer.from('tail')];
  const whole = Buffer.concat(parts);
  let firstBytes: () => void = () => undefined;
  const serverHasBytes = new Promise<void>((r) => (firstBytes = r));
  const received: Buffer[] = [];
  let committedWith: string | null = null;
  const { host, seen } = await registry(t, (req, res, url) => {
    if (req.method === 'PATCH' && url.pathname === '/v2/x/blobs/uploads/u1') {
      req.on('data', (c: Buffer) => {
        received.push(c);
        firstBytes();
      });
      req.on('end', () => {
        const n = Buffer.concat(received).length;
        res.writeHead(202, { location: '/v2/x/blobs/uploads/u1?state=after-patch', range: `0-${n - 1}` }).end();
      });
      return;
    }
    if (req.method === 'PUT' && url.pathname === '/v2/x/blobs/uploads/u1') {
      const body: Buffer[] = [];
      req.on('data', (c: Buffer) => body.push(c));
      req.on('end', () => {
        assert.equal(Buffer.concat(body).length, 0, 'the commit carries no bytes');
        assert.equal(url.searchParams.get('state'), 'after-patch', 'the commit goes to the location the PATCH answered with');
        committedWith = url.searchParams.get('digest');
        res.writeHead(201, { 'docker-content-digest': committedWith ?? '' }).end();
      });
      return;
    }
    res.writeHead(400).end();
  });
  const upload = await startBlobUpload(client(t), parseReference(`${host}/x:v`));
  // The first part reaches the registry before the rest exists: nothing waits for the end.
  upload.stream.write(parts[0]);
  await serverHasBytes;
  await writeAll(upload.stream, parts.slice(1));
  await upload.commit({ digest: sha(whole), size: whole.length });

  assert.deepEqual(Buffer.concat(received), whole);
  assert.equal(committedWith, sha(whole));
  const patch = seen.find((s) => s.method === 'PATCH');
  assert.ok(patch);
  assert.equal(patch.headers['content-length'], undefined, 'the length is not known in advance');
  assert.equal(patch.headers['transfer-encoding'], 'chunked');
  assert.deepEqual(seen.map((s) => s.method), ['GET', 'POST', 'PATCH', 'PUT']);
});

test('a PATCH cut mid-stream: writing still completes, commit rejects and nothing is committed', { timeout: 20_000 }, async (t) => {
  let got = 0;
  const { host, seen } = await registry(t, (req, res) => {
    if (req.method === 'PATCH') {
      req.on('data', (c: Buffer) => {
        got += c.length;
        if (got > 100_000) req.socket.destroy();
      });
      return;
    }
    res.writeHead(400).end();
  });
  const upload = await startBlobUpload(client(t), parseReference(`${host}/x:v`));
  // Far more than the socket and the stream buffer: a writer blocked on a dead upload would hang here.
  const chunks = Array.from({ length: 256 }, (_, i) => Buffer.alloc(64 * 1024, i));
  await writeAll(upload.stream, chunks);
  await finished(upload.stream);
  await assert.rejects(upload.commit({ digest: sha(Buffer.concat(chunks)), size: 256 * 64 * 1024 }), RegistryError);
  assert.ok(!seen.some((s) => s.method === 'PUT'), 'no commit was attempted');
});

test('a registry that received fewer bytes than were sent is not asked to commit', async (t) => {
  const { host, seen } = await registry(t, (req, res) => {
    if (req.method === 'PATCH') {
      req.resume();
      req.on('end', () => res.writeHead(202, { location: '/v2/x/blobs/uploads/u1', range: '0-9' }).end());
      return;
    }
    res.writeHead(201).end();
  });
  const upload = await startBlobUpload(client(t), parseReference(`${host}/x:v`));
  const data = Buffer.alloc(100, 7);
  await writeAll(upload.stream, [data]);
  await assert.rejects(upload.commit({ digest: sha(data), size: data.length }), /received 10 of 100 bytes/);
  assert.ok(!seen.some((s) => s.method === 'PUT'));
});

test('a registry that refuses the digest at commit is a clear error', async (t) => {
  const { host } = await registry(t, (req, res) => {
    req.resume();
    if (req.method === 'PATCH') {
      req.on('end', () => res.writeHead(202, { location: '/v2/x/blobs/uploads/u1', range: '0-2' }).end());
      return;
    }
    req.on('end', () => {
      res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'DIGEST_INVALID', message: 'digest did not match' }] }));
    });
  });
  const upload = await startBlobUpload(client(t), parseReference(`${host}/x:v`));
  await writeAll(upload.stream, [Buffer.from('abc')]);
  const claimed = sha(Buffer.from('abd'));
  await assert.rejects(upload.commit({ digest: claimed, size: 3 }), (e: unknown) => {
    assert.ok(e instanceof RegistryError);
    assert.equal(e.ociCode, 'DIGEST_INVALID');
    assert.ok(e.message.includes(claimed), e.message);
    return true;
  });
});

test('a cancelled upload cuts the transfer and never commits', { timeout: 20_000 }, async (t) => {
  let patchStarted: () => void = () => undefined;
  const started = new Promise<void>((r) => (patchStarted = r));
  let patchClosed: () => void = () => undefined;
  const closed = new Promise<void>((r) => (patchClosed = r));
  const { host, seen } = await registry(t, (req, res) => {
    if (req.method === 'PATCH') {
      req.on('data', () => patchStarted());
      req.on('close', () => patchClosed());
      return;
    }
    res.writeHead(201).end();
  });
  const c = client(t);
  const upload = await startBlobUpload(c, parseReference(`${host}/x:v`));
  upload.stream.write(Buffer.alloc(1000, 1));
  await started;
  upload.cancel(new Error('the layer could not be read'));
  await closed;
  await assert.rejects(upload.commit({ digest: sha(Buffer.alloc(1000, 1)), size: 1000 }));
  // Writes after the cancel are dropped, not errors.
  await writeAll(upload.stream, [Buffer.alloc(10)]);

  // Cancelled before its PATCH even went out: commit rejects at once instead of waiting for a timeout.
  const early = await startBlobUpload(c, parseReference(`${host}/x:v`));
  early.cancel();
  await assert.rejects(early.commit({ digest: sha(Buffer.alloc(0)), size: 0 }), RegistryError);
  assert.ok(!seen.some((s) => s.method === 'PUT'));
});
