import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { RegistryError } from '@tsbuild/errors';
import type { Descriptor, Digest } from '@tsbuild/oci';
import { openStore } from '@tsbuild/store';
import { storeSink } from './adapters.ts';
import { RegistryClient } from './client.ts';
import { pullBlob, type BlobSink } from './pull.ts';
import { parseReference } from './reference.ts';
import { DigestVerifier } from './verify.ts';

const sha = (b: Uint8Array): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A registry that serves `body` for every blob, whatever digest is asked for. */
async function blobServer(t: { after(fn: () => Promise<void>): void }, body: () => Buffer): Promise<string> {
  const server = createServer((req, res) => {
    if (req.url === '/v2/') return void res.writeHead(200).end('{}');
    const b = body();
    res.writeHead(200, { 'content-length': String(b.length) }).end(b);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });
  const addr = server.address();
  return `127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
}

function client(t: { after(fn: () => void): void }): RegistryClient {
  const c = new RegistryClient({ credentials: async () => undefined, retryDelayMs: 1, timeoutMs: 5000, retries: 1 });
  t.after(() => c.close());
  return c;
}

async function tempStore(t: { after(fn: () => Promise<void>): void }) {
  const root = await mkdtemp(join(tmpdir(), 'tsbuild-pull-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  return openStore({ root });
}

test('a pull into the store verifies through the store writer: good content lands, a lie is refused and leaves nothing', async (t) => {
  const good = Buffer.alloc(300_000, 9);
  const lie = Buffer.alloc(300_000, 8);
  let serve = good;
  const host = await blobServer(t, () => serve);
  const store = await tempStore(t);
  const c = client(t);
  const ref = parseReference(`${host}/x:v`);
  const desc: Descriptor = { mediaType: 'application/octet-stream', digest: sha(good), size: good.length };

  await pullBlob(c, ref, desc, storeSink(store));
  assert.deepEqual(await store.readBlob(desc.digest, { maxSize: good.length }), good);

  serve = lie;
  const other: Descriptor = { ...desc, digest: sha(Buffer.alloc(300_000, 7)) };
  await assert.rejects(pullBlob(c, ref, other, storeSink(store)), (e: unknown) => {
    assert.ok(e instanceof RegistryError, String(e));
    assert.ok(e.message.includes(other.digest), e.message);
    assert.match(e.message, /refusing it/);
    return true;
  });
  assert.equal(await store.hasBlob(other.digest), false);
  assert.equal(await store.hasBlob(sha(lie)), false, 'the wrong bytes are not kept under their own digest either');
  assert.deepEqual(await readdir(store.ingestDir), [], 'no temp file is left behind');
});

test('a sink that verifies gets every byte once and no second hash; one that does not is still checked here', async (t) => {
  const data = Buffer.alloc(200_000, 3);
  const wrong = Buffer.alloc(200_000, 4);
  let serve = data;
  const host = await blobServer(t, () => serve);
  const c = client(t);
  const ref = parseReference(`${host}/x:v`);
  const desc: Descriptor = { mediaType: 'application/octet-stream', digest: sha(data), size: data.length };
  const events: string[] = [];
  const sink = (verifies: boolean): BlobSink => ({
    has: async () => false,
    write: () => {
      const parts: Buffer[] = [];
      return {
        stream: new Writable({ write: (chunk: Buffer, _e, cb) => (parts.push(chunk), cb()) }),
        commit: async () => void events.push(`commit ${sha(Buffer.concat(parts)) === desc.digest ? 'right' : 'wrong'} bytes`),
        abort: async () => void events.push('abort'),
        verifies,
      };
    },
  });

  // A sink that says it verifies is trusted with the digest: it is given the bytes as served.
  serve = wrong;
  await pullBlob(c, ref, desc, sink(true));
  assert.deepEqual(events.splice(0), ['commit wrong bytes']);
  // One that does not is protected by the pull's own hash.
  await assert.rejects(pullBlob(c, ref, desc, sink(false)), /refusing it/);
  assert.deepEqual(events.splice(0), ['abort']);
  serve = data;
  await pullBlob(c, ref, desc, sink(false));
  assert.deepEqual(events.splice(0), ['commit right bytes']);
});

test('a registry that sends more than the descriptor says is cut off, hashing or not', async (t) => {
  const desc: Descriptor = { mediaType: 'application/octet-stream', digest: sha(Buffer.alloc(10)), size: 10 };
  for (const hash of [true, false]) {
    const v = new DigestVerifier(desc, 'pull x', { hash });
    await assert.rejects(
      pipeline(Readable.from([Buffer.alloc(8), Buffer.alloc(8)]), v, new Writable({ write: (_c, _e, cb) => cb() })),
      /larger than its descriptor's 10 bytes/,
    );
  }
  // Counting only: the digest is the writer's business, the size is still checked.
  const short = new DigestVerifier(desc, 'pull x', { hash: false });
  await assert.rejects(pipeline(Readable.from([Buffer.alloc(4)]), short, new Writable({ write: (_c, _e, cb) => cb() })), /ended after 4 of 10 bytes/);
  const counted = new DigestVerifier(desc, 'pull x', { hash: false });
  await pipeline(Readable.from([Buffer.alloc(10, 1)]), counted, new Writable({ write: (_c, _e, cb) => cb() }));
  assert.equal(counted.bytesSeen, 10);
});
