import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { downloadName, fetchUrl } from './fetch.ts';
import { tempDir } from './testing.ts';

const BODY = 'hello from the server\n';
const SHA = 'sha256:' + createHash('sha256').update(BODY).digest('hex');
const LAST_MODIFIED = 'Wed, 21 Oct 2015 07:28:00 GMT';

async function server(t: { after(fn: () => Promise<void> | void): void }): Promise<string> {
  const srv = http.createServer((req, res) => {
    const url = req.url ?? '/';
    if (url === '/files/hello.txt') {
      res.writeHead(200, { 'content-type': 'text/plain', 'last-modified': LAST_MODIFIED });
      res.end(BODY);
    } else if (url === '/hop') {
      res.writeHead(302, { location: '/hop2' });
      res.end();
    } else if (url === '/hop2') {
      res.writeHead(301, { location: '/files/hello.txt' });
      res.end();
    } else if (url === '/') {
      res.writeHead(200, { 'content-disposition': 'attachment; filename="report.csv"' });
      res.end('a,b\n');
    } else if (url === '/dl/') {
      res.writeHead(200, { 'content-disposition': 'attachment; filename="../../etc/passwd"' });
      res.end('x');
    } else if (url === '/slow') {
      res.writeHead(200);
      res.write('partial');
    } else {
      res.writeHead(404);
      res.end('nope');
    }
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    srv.closeAllConnections();
    return new Promise<void>((resolve) => srv.close(() => resolve()));
  });
  return `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
}

test('fetchUrl downloads, names and dates the file', async (t) => {
  const base = await server(t);
  const dir = tempDir(t, 'tsbuild-fetch-');
  const file = await fetchUrl(`${base}/files/hello.txt`, dir, { checksum: SHA });
  assert.equal(file, path.join(dir, 'hello.txt'));
  assert.equal(fs.readFileSync(file, 'utf8'), BODY);
  const st = fs.statSync(file);
  assert.equal(st.mode & 0o777, 0o600);
  assert.equal(st.mtimeMs, Date.parse(LAST_MODIFIED));

  const hopped = await fetchUrl(`${base}/hop`, dir);
  assert.equal(path.basename(hopped), 'hop', 'named after the URL as written');
  assert.equal(fs.readFileSync(hopped, 'utf8'), BODY);
  assert.equal(path.basename(await fetchUrl(`${base}/`, dir)), 'report.csv');
  assert.equal(path.basename(await fetchUrl(`${base}/dl/`, dir)), 'dl', 'a hostile Content-Disposition is never used as a path');
  assert.deepEqual(fs.readdirSync(dir).sort(), ['dl', 'hello.txt', 'hop', 'report.csv']);
});

test('fetchUrl failures are clear and leave nothing behind', async (t) => {
  const base = await server(t);
  const dir = tempDir(t, 'tsbuild-fetch-');
  const wrong = 'sha256:' + '0'.repeat(64);
  await assert.rejects(fetchUrl(`${base}/files/hello.txt`, dir, { checksum: wrong }), (e: Error) => {
    assert.match(e.message, new RegExp(`expected ${wrong}, got ${SHA}`));
    return true;
  });
  await assert.rejects(fetchUrl(`${base}/missing`, dir), /ADD http:\/\/127\.0\.0\.1:\d+\/missing: server answered 404/);
  await assert.rejects(fetchUrl(`${base}/x`, dir, { checksum: 'md5:abc' }), /invalid --checksum/);
  await assert.rejects(fetchUrl('ftp://127.0.0.1/x', dir), /only http and https/);
  await assert.rejects(fetchUrl('http://127.0.0.1:1/x', dir), /request failed/);
  const ac = new AbortController();
  const pending = fetchUrl(`${base}/slow`, dir, { signal: ac.signal });
  setTimeout(() => ac.abort(), 50);
  await assert.rejects(pending, { code: 'CANCELLED' });
  assert.deepEqual(fs.readdirSync(dir), []);
});

test('downloadName', () => {
  const cases: [string, string | null, string][] = [
    ['http://h/a/b.tar.gz', null, 'b.tar.gz'],
    ['http://h/a/b%20c.txt?x=1', null, 'b c.txt'],
    ['http://h/', 'attachment; filename="r.csv"', 'r.csv'],
    ['http://h/', "attachment; filename*=UTF-8''%C3%A9t%C3%A9.txt", 'été.txt'],
    ['http://h/', 'attachment; filename=..', '__unnamed__'],
    ['http://h/', null, '__unnamed__'],
    ['http://h/a/%2e%2e', null, '__unnamed__'],
    ['http://h/a/x%2fy', null, '__unnamed__'],
  ];
  for (const [url, cd, want] of cases) assert.equal(downloadName(new URL(url), cd), want, url);
});
