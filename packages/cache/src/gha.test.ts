import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { inspect } from 'node:util';
import { CancelledError, TsbuildError, UsageError } from '@tsbuild/errors';
import { startGhaServer, type GhaServer } from '../../../test/helpers/gha-server.ts';
import { GHA_CACHE_VERSION, GhaCacheClient, ghaCacheVersion, type GhaCacheClientOptions } from './gha.ts';
import { GhaCacheError } from './gha-error.ts';
import type { GhaRetryEvent } from './gha-http.ts';

const MIB = 1024 * 1024;

type T = { after(fn: () => void | Promise<void>): void };

async function server(t: T): Promise<GhaServer> {
  const s = await startGhaServer();
  t.after(() => s.stop());
  return s;
}

function client(t: T, s: GhaServer, opts: Partial<GhaCacheClientOptions> = {}): GhaCacheClient {
  const c = new GhaCacheClient({
    resultsUrl: s.url,
    token: s.token,
    retryBaseMs: 1,
    retryMaxMs: 5,
    timeoutMs: 5000,
    idleTimeoutMs: 5000,
    blockSize: 4 * MIB,
    ...opts,
  });
  t.after(() => c.close());
  return c;
}

/** A body factory that hands out `data` in 64 KiB pieces, as a file stream would. */
function bodyOf(data: Buffer): () => Readable {
  return () =>
    Readable.from(
      (function* () {
        for (let i = 0; i < data.length; i += 64 * 1024) yield data.subarray(i, i + 64 * 1024);
      })(),
      { objectMode: false },
    );
}

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function fetchBack(c: GhaCacheClient, key: string): Promise<Buffer> {
  const entry = await c.lookup(key);
  assert.ok(entry, `expected a hit for ${key}`);
  assert.equal(entry.matchedKey, key);
  assert.equal(entry.exact, true);
  return readAll(await entry.open());
}

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof Error);
    return e;
  }
  assert.fail('expected a rejection');
}

test('fromEnv: missing variables, a run: step, the retired v1 service and GHES give clear usage errors', async (t) => {
  const s = await server(t);

  const none = (() => {
    try {
      GhaCacheClient.fromEnv({});
    } catch (e) {
      return e;
    }
    return undefined;
  })();
  assert.ok(none instanceof UsageError);
  assert.match(none.message, /ACTIONS_RESULTS_URL and ACTIONS_RUNTIME_TOKEN/);
  assert.match(none.hint ?? '', /only to JavaScript .*action steps, not to `run:` steps/);
  assert.equal(GhaCacheClient.tryFromEnv({}), undefined);

  assert.throws(() => GhaCacheClient.fromEnv({ ACTIONS_RESULTS_URL: s.url, ACTIONS_CACHE_SERVICE_V2: 'True' }), (e: unknown) => {
    assert.ok(e instanceof UsageError);
    assert.match(e.message, /needs ACTIONS_RUNTIME_TOKEN, which is not set/);
    assert.doesNotMatch(e.message, /ACTIONS_RESULTS_URL/);
    return true;
  });

  const v1Only = { ACTIONS_CACHE_URL: 'https://artifactcache.actions.githubusercontent.com/abc/', ACTIONS_RUNTIME_TOKEN: 'x' };
  for (const env of [v1Only, { ...s.env(), ACTIONS_CACHE_SERVICE_V2: 'false' }]) {
    assert.throws(() => GhaCacheClient.fromEnv(env), (e: unknown) => e instanceof UsageError && /v1 cache service.*GitHub retired the v1 service on github\.com/.test(e.message));
    // A contradiction is not an absence: tryFromEnv reports it too.
    assert.throws(() => GhaCacheClient.tryFromEnv(env), UsageError);
  }
  assert.throws(
    () => GhaCacheClient.fromEnv({ ...v1Only, GITHUB_SERVER_URL: 'https://ghes.example.com' }),
    (e: unknown) => e instanceof UsageError && /GitHub Enterprise Server \(ghes\.example\.com\) offers only the v1 service/.test(e.message),
  );

  // What a current runner gives an action step: the v2 variables, with the legacy URL beside them.
  const c = GhaCacheClient.fromEnv({ ...s.env(), ACTIONS_CACHE_URL: 'https://artifactcache.actions.githubusercontent.com/abc/', GITHUB_SERVER_URL: 'https://github.com' }, { retryBaseMs: 1 });
  t.after(() => c.close());
  assert.equal(await c.save('from-env', 3, bodyOf(Buffer.from('abc'))), 'saved');
  assert.equal((await fetchBack(c, 'from-env')).toString(), 'abc');
});

test('a small body goes up in one Put Blob and comes back byte for byte', async (t) => {
  const s = await server(t);
  const c = client(t, s);
  const data = randomBytes(100_000);
  assert.equal(await c.save('tsbuild-blob-sha256:small', data.length, bodyOf(data)), 'saved');
  assert.deepEqual(await fetchBack(c, 'tsbuild-blob-sha256:small'), data);

  const r = s.counters.requests;
  assert.equal(r.CreateCacheEntry, 1);
  assert.equal(r.PutBlob, 1);
  assert.equal(r.PutBlock, 0);
  assert.equal(r.PutBlockList, 0);
  assert.equal(r.FinalizeCacheEntryUpload, 1);
  assert.equal(s.counters.bytesUploaded, data.length);
  assert.equal(s.counters.bytesDownloaded, data.length);
  assert.deepEqual(
    s.entries().map((e) => [e.key, e.version, e.finalized, e.size]),
    [['tsbuild-blob-sha256:small', GHA_CACHE_VERSION, true, data.length]],
  );

  // An empty body is an entry too.
  assert.equal(await c.save('empty', 0, bodyOf(Buffer.alloc(0))), 'saved');
  assert.equal((await fetchBack(c, 'empty')).length, 0);
});

test('a 20 MiB body goes up in 4 MiB blocks and a block list, and comes back identical', async (t) => {
  const s = await server(t);
  const c = client(t, s);
  const data = randomBytes(20 * MIB + 12345);
  assert.equal(await c.save('big', data.length, bodyOf(data)), 'saved');

  const r = s.counters.requests;
  assert.equal(r.PutBlob, 0);
  assert.equal(r.PutBlock, 6, '5 full blocks and a short one');
  assert.equal(r.PutBlockList, 1);
  assert.equal(s.counters.bytesUploaded, data.length);
  assert.equal(s.entries()[0]?.blocks, 6);

  const back = await fetchBack(c, 'big');
  assert.equal(back.length, data.length);
  assert.equal(sha(back), sha(data));
});

test('saving a key that exists answers exists without reading the body', async (t) => {
  const s = await server(t);
  const c = client(t, s);
  assert.equal(await c.save('k', 1, bodyOf(Buffer.from('a'))), 'saved');
  let opened = 0;
  const result = await c.save('k', 1, () => {
    opened++;
    return bodyOf(Buffer.from('b'))();
  });
  assert.equal(result, 'exists');
  assert.equal(opened, 0);
  assert.equal(s.counters.requests.CreateCacheEntry, 2);
  assert.equal(s.counters.requests.PutBlob, 1);
  assert.equal((await fetchBack(c, 'k')).toString(), 'a', 'the first entry is kept');
});

test('lookup: exact key, then prefix of the key, then restore keys in order, newest first', async (t) => {
  const s = await server(t);
  const c = client(t, s);
  for (const k of ['deps-a-1', 'deps-a-2', 'deps-b-1']) assert.equal(await c.save(k, k.length, bodyOf(Buffer.from(k))), 'saved');

  const newest = await c.lookup('deps-a-3', ['deps-a-']);
  assert.equal(newest?.matchedKey, 'deps-a-2');
  assert.equal(newest?.exact, false);
  assert.equal((await readAll(await newest.open())).toString(), 'deps-a-2');

  assert.equal((await c.lookup('deps-c', ['deps-x-', 'deps-b-']))?.matchedKey, 'deps-b-1', 'restore keys are tried in order');
  assert.equal((await c.lookup('deps-a-1', ['deps-']))?.matchedKey, 'deps-a-1', 'an exact match beats a newer prefix match');
  assert.equal((await c.lookup('deps-a-1'))?.exact, true);

  // The key itself is matched as a prefix when nothing has it exactly, as the service does.
  const partial = await c.lookup('deps-a');
  assert.equal(partial?.matchedKey, 'deps-a-2');
  assert.equal(partial?.exact, false);
  assert.equal(await c.has('deps-a'), false, 'has() wants the exact key');
  assert.equal(await c.has('deps-a-1'), true);
  assert.equal(await c.lookup('nothing', ['none-']), undefined);
});

test('scopes stay apart when the scope ends in a delimiter inside the key', async (t) => {
  const s = await server(t);
  const c = client(t, s);
  await c.save('tsbuild-index-main#1', 4, bodyOf(Buffer.from('main')));
  await c.save('tsbuild-index-mainline#1', 8, bodyOf(Buffer.from('mainline')));
  await c.save('tsbuild-index-main#2', 5, bodyOf(Buffer.from('main2')));
  assert.equal((await c.lookup('tsbuild-index-main#', ['tsbuild-index-main#']))?.matchedKey, 'tsbuild-index-main#2');
  assert.equal((await c.lookup('tsbuild-index-mainline#'))?.matchedKey, 'tsbuild-index-mainline#1');
  // Without the delimiter one scope's prefix reaches into the other's: why the delimiter matters.
  assert.equal((await c.lookup('tsbuild-index-main'))?.matchedKey, 'tsbuild-index-main#2');
  assert.equal(await c.lookup('tsbuild-index-staging#'), undefined);
});

test('the version partitions entries: another version neither sees nor blocks a key', async (t) => {
  const s = await server(t);
  const a = client(t, s);
  const b = client(t, s, { version: ghaCacheVersion('tsbuild-cache-v2') });
  assert.notEqual(a.version, b.version);
  assert.match(a.version, /^[0-9a-f]{64}$/);

  assert.equal(await a.save('same-key', 1, bodyOf(Buffer.from('A'))), 'saved');
  assert.equal(await b.lookup('same-key'), undefined);
  assert.equal(await b.has('same-key'), false);
  assert.equal(await b.save('same-key', 1, bodyOf(Buffer.from('B'))), 'saved');
  assert.equal((await fetchBack(a, 'same-key')).toString(), 'A');
  assert.equal((await fetchBack(b, 'same-key')).toString(), 'B');
  assert.equal(s.entries().length, 2);
});

test('a wrong token is refused at once with a clear error that does not show it', async (t) => {
  const s = await server(t);
  const secret = 'wrong-token-1234567890';
  const c = client(t, s, { token: secret });
  const e = await rejection(c.lookup('k'));
  assert.ok(e instanceof GhaCacheError);
  assert.equal(e.status, 401);
  assert.equal(e.operation, 'GetCacheEntryDownloadURL');
  assert.equal(e.serviceCode, 'unauthenticated');
  assert.match(e.message, /GetCacheEntryDownloadURL http:\/\/127\.0\.0\.1:\d+\/twirp\/github\.actions\.results\.api\.v1\.CacheService\/GetCacheEntryDownloadURL: 401 Unauthorized/);
  assert.match(e.hint ?? '', /ACTIONS_RUNTIME_TOKEN/);
  assert.ok(!inspect(e, { depth: 5 }).includes(secret));
  assert.equal(s.counters.requests.GetCacheEntryDownloadURL, 1, 'not retried');
  assert.equal(s.counters.unauthorized, 1);
});

test('429 with Retry-After, 503s and dropped connections are retried through, on every request kind', async (t) => {
  const s = await server(t);
  const events: GhaRetryEvent[] = [];
  const c = client(t, s, { onRetry: (ev) => events.push(ev) });
  const data = randomBytes(9 * MIB);
  s.inject(
    { method: 'CreateCacheEntry', action: 429, retryAfter: '1' },
    { method: 'CreateCacheEntry', action: 'drop' },
    { method: 'PutBlock', action: 503, times: 2 },
    { method: 'PutBlock', action: 'drop-midway', after: 1 },
    { method: 'PutBlockList', action: 500 },
    { method: 'FinalizeCacheEntryUpload', action: 'drop' },
    { method: 'GetCacheEntryDownloadURL', action: 503 },
    { method: 'GetBlob', action: 429, retryAfter: '0' },
    { method: 'GetBlob', action: 'drop-midway' },
  );
  assert.equal(await c.save('flaky', data.length, bodyOf(data)), 'saved');
  const back = await fetchBack(c, 'flaky');
  assert.equal(sha(back), sha(data));
  assert.deepEqual(s.pending(), [], 'every fault fired');

  const r = s.counters.requests;
  assert.equal(r.CreateCacheEntry, 3);
  assert.equal(r.PutBlock, 3 + 3, 'three blocks, three retried');
  assert.equal(r.PutBlockList, 2);
  assert.equal(r.FinalizeCacheEntryUpload, 2);
  assert.equal(r.GetCacheEntryDownloadURL, 2);
  assert.equal(r.GetBlob, 3, 'a 429, a response cut in half, then the rest by Range');
  assert.ok(s.counters.bytesUploaded >= data.length);
  // The broken response sent half; the resumed one sent only what was missing.
  assert.equal(s.counters.bytesDownloaded, data.length);

  const rateLimited = events.find((ev) => ev.operation === 'CreateCacheEntry' && ev.status === 429);
  assert.ok(rateLimited, 'the 429 was reported');
  assert.ok(rateLimited.delayMs >= 1000, `waited at least the Retry-After second, not ${rateLimited.delayMs} ms`);
  assert.equal(events.length, 10, events.map((ev) => `${ev.operation} ${ev.status} ${ev.reason}`).join("\n"));
});

test('a stalled answer times out and is retried', async (t) => {
  const s = await server(t);
  const c = client(t, s, { timeoutMs: 1000, idleTimeoutMs: 1000 });
  s.inject({ method: 'GetCacheEntryDownloadURL', action: 'stall' }, { method: 'PutBlob', action: 'stall' }, { method: 'GetBlob', action: 'stall' });
  assert.equal(await c.save('slow', 5, bodyOf(Buffer.from('hello'))), 'saved');
  assert.equal((await fetchBack(c, 'slow')).toString(), 'hello');
  assert.equal(s.counters.requests.GetCacheEntryDownloadURL, 2);
  assert.equal(s.counters.requests.PutBlob, 2);
  assert.equal(s.counters.requests.GetBlob, 2);
});

test('retries are bounded and the final error says what failed and how often', async (t) => {
  const s = await server(t);
  const c = client(t, s, { maxAttempts: 3 });
  s.inject({ method: 'CreateCacheEntry', action: 503, times: 3 });
  const e = await rejection(c.save('k', 1, bodyOf(Buffer.from('x'))));
  assert.ok(e instanceof GhaCacheError);
  assert.equal(e.status, 503);
  assert.equal(e.operation, 'CreateCacheEntry');
  assert.equal(e.temporary, false);
  assert.match(e.message, /CreateCacheEntry .*: 503 Service Unavailable \(unavailable: injected 503 Service Unavailable\) \(gave up after 3 attempts\)/);
  assert.equal(s.counters.requests.CreateCacheEntry, 3);
  assert.deepEqual(s.pending(), []);

  // A Retry-After longer than the client waits fails at once, saying so.
  const patient = client(t, s, { maxRetryAfterMs: 10_000 });
  s.inject({ method: 'GetCacheEntryDownloadURL', action: 429, retryAfter: '3600' });
  const limited = await rejection(patient.lookup('k'));
  assert.ok(limited instanceof GhaCacheError);
  assert.equal(limited.status, 429);
  assert.match(limited.message, /asks to wait 3600 s before retrying, longer than the 10 s tsbuild waits/);
  assert.match(limited.hint ?? '', /200 a minute/);

  // Blob uploads are bounded the same way, and nothing is finalized.
  const blocks = client(t, s, { maxAttempts: 2 });
  s.inject({ method: 'PutBlock', action: 500, times: 4 });
  const up = await rejection(blocks.save('big', 5 * MIB, bodyOf(randomBytes(5 * MIB))));
  assert.ok(up instanceof GhaCacheError);
  assert.equal(up.operation, 'PutBlock');
  assert.match(up.message, /PutBlock http:\/\/127\.0\.0\.1:\d+\/blob\/\d+\?\[redacted\]: 500 Internal Server Error \(InternalError\) \(gave up after 2 attempts\)/);
  assert.equal(s.entries().find((x) => x.key === 'big')?.finalized, false);
  assert.equal(s.counters.requests.FinalizeCacheEntryUpload, 0);
});

test('the SAS signature and the token never appear in errors', async (t) => {
  const s = await server(t);
  const c = client(t, s, { maxAttempts: 2 });
  const secrets = (): string[] => [s.token, ...s.signedUrls.map((u) => new URL(u).searchParams.get('sig') ?? 'missing')];

  s.inject({ method: 'PutBlob', action: 503, times: 2 });
  const up = await rejection(c.save('k', 3, bodyOf(Buffer.from('abc'))));
  assert.ok(up instanceof GhaCacheError);
  assert.match(up.message, /PutBlob http:\/\/127\.0\.0\.1:\d+\/blob\/1\?\[redacted\]: 503/);
  assert.equal(up.url?.endsWith('?[redacted]'), true);

  await c.save('k2', 3, bodyOf(Buffer.from('abc')));
  const entry = await c.lookup('k2');
  assert.ok(entry);
  s.inject({ method: 'GetBlob', action: 500, times: 2 });
  const down = await rejection(entry.open());
  assert.ok(down instanceof GhaCacheError);
  assert.equal(down.operation, 'GetBlob');

  // A signed URL that is refused for good (and cannot be renewed) is not shown either.
  const tampered = await c.lookup('k2');
  assert.ok(tampered);
  s.rotateSigningKey();
  s.inject({ method: 'GetCacheEntryDownloadURL', action: 404, times: 5 });
  const denied = await rejection(tampered.open());
  assert.ok(denied instanceof GhaCacheError);

  assert.ok(s.signedUrls.length >= 3);
  for (const err of [up, down, denied]) {
    const text = `${err.message}\n${err instanceof TsbuildError ? (err.hint ?? '') : ''}\n${err.stack ?? ''}\n${inspect(err, { depth: 8 })}`;
    for (const secret of secrets()) assert.ok(!text.includes(secret) && !text.includes(encodeURIComponent(secret)), `leaked ${secret.slice(0, 6)}… in: ${err.message}`);
  }
});

test('an expired download URL is renewed with one more lookup', async (t) => {
  const s = await server(t);
  const c = client(t, s);
  await c.save('k', 4, bodyOf(Buffer.from('data')));
  const entry = await c.lookup('k');
  assert.ok(entry);
  s.rotateSigningKey();
  assert.equal((await readAll(await entry.open())).toString(), 'data');
  assert.equal(s.counters.requests.GetCacheEntryDownloadURL, 2);
  assert.equal(s.counters.requests.GetBlob, 2);
  assert.equal(s.counters.unauthorized, 1);
});

test('abort: before the first request, during an upload, during a stall, during a download', async (t) => {
  const s = await server(t);
  const c = client(t, s);

  const pre = new AbortController();
  pre.abort();
  assert.ok((await rejection(c.lookup('k', [], { signal: pre.signal }))) instanceof CancelledError);
  assert.ok((await rejection(c.save('k', 1, bodyOf(Buffer.from('x')), { signal: pre.signal }))) instanceof CancelledError);
  assert.equal(s.counters.requests.GetCacheEntryDownloadURL + s.counters.requests.CreateCacheEntry, 0);

  // Aborted once the first block has been read: the upload stops and nothing is finalized.
  const mid = new AbortController();
  const data = randomBytes(24 * MIB);
  let read = 0;
  const body = (): Readable =>
    Readable.from(
      (function* () {
        for (let i = 0; i < data.length; i += MIB) {
          read += MIB;
          if (read === 5 * MIB) mid.abort();
          yield data.subarray(i, i + MIB);
        }
      })(),
      { objectMode: false },
    );
  const e = await rejection(c.save('aborted', data.length, body, { signal: mid.signal }));
  assert.ok(e instanceof CancelledError, String(e));
  assert.ok(read < data.length, 'the body was not read to its end');
  assert.equal(s.counters.requests.FinalizeCacheEntryUpload, 0);
  assert.equal(await c.lookup('aborted'), undefined);
  // The reservation it left holds the key, as the service's does.
  assert.equal(await c.save('aborted', 1, bodyOf(Buffer.from('x'))), 'exists');

  const stall = new AbortController();
  s.inject({ method: 'GetCacheEntryDownloadURL', action: 'stall' });
  const pending = c.lookup('k', [], { signal: stall.signal });
  setImmediate(() => stall.abort());
  assert.ok((await rejection(pending)) instanceof CancelledError);

  const big = randomBytes(3 * MIB);
  await c.save('down', big.length, bodyOf(big));
  const dl = new AbortController();
  const entry = await c.lookup('down');
  assert.ok(entry);
  const stream = await entry.open({ signal: dl.signal });
  let got = 0;
  const consumed = (async () => {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      got += chunk.length;
      if (got > 0) dl.abort();
    }
  })();
  assert.ok((await rejection(consumed)) instanceof CancelledError);
  assert.ok(got < big.length);
});

test('a body that is not the declared size is refused and never finalized', async (t) => {
  const s = await server(t);
  const c = client(t, s);
  const short = await rejection(c.save('short', 10, bodyOf(Buffer.from('abc'))));
  assert.ok(short instanceof GhaCacheError);
  assert.match(short.message, /ended after 3 of the 10 bytes declared/);
  const long = await rejection(c.save('long', 5 * MIB, bodyOf(randomBytes(6 * MIB))));
  assert.match(long.message, /longer than the 5242880 bytes declared/);
  assert.equal(s.counters.requests.FinalizeCacheEntryUpload, 0);
  assert.deepEqual(
    s.entries().map((e) => e.finalized),
    [false, false],
  );
});

test('keys the service would refuse are refused before any request', async (t) => {
  const s = await server(t);
  const c = client(t, s);
  await assert.rejects(c.save('x'.repeat(513), 1, bodyOf(Buffer.from('x'))), (e: unknown) => e instanceof UsageError && /513 characters long; the service takes at most 512/.test(e.message));
  await assert.rejects(c.lookup('a,b'), (e: unknown) => e instanceof UsageError && /comma/.test(e.message));
  await assert.rejects(c.lookup('a', Array.from({ length: 10 }, (_, i) => `r${i}`)), (e: unknown) => e instanceof UsageError && /at most 10 keys/.test(e.message));
  assert.equal(Object.values(s.counters.requests).reduce((a, b) => a + b, 0), 0);
});

test('the token scopes are read from its ac claim', () => {
  const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  const ac = JSON.stringify([
    { Scope: 'refs/heads/feature', Permission: 3 },
    { Scope: 'refs/heads/main', Permission: 1 },
  ]);
  const jwt = `${b64({ alg: 'RS256' })}.${b64({ ac, exp: 1 })}.sig`;
  const c = new GhaCacheClient({ resultsUrl: 'https://results.example/', token: jwt });
  assert.deepEqual(c.scopes(), [
    { scope: 'refs/heads/feature', read: true, write: true },
    { scope: 'refs/heads/main', read: true, write: false },
  ]);
  assert.deepEqual(new GhaCacheClient({ resultsUrl: 'https://results.example/', token: 'opaque' }).scopes(), []);
  c.close();
});
