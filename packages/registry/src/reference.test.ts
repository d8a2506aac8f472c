import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UsageError } from '@tsbuild/errors';
import { parseReference, registryApiHost, withDigest } from './reference.ts';

const D = `sha256:${'ab'.repeat(32)}` as const;

test('normalises references the way docker does', () => {
  const cases: Array<[string, string, string, string, string | undefined, string | undefined]> = [
    ['busybox', 'docker.io/library/busybox:latest', 'docker.io', 'library/busybox', 'latest', undefined],
    ['user/app', 'docker.io/user/app:latest', 'docker.io', 'user/app', 'latest', undefined],
    ['docker.io/busybox:1.36', 'docker.io/library/busybox:1.36', 'docker.io', 'library/busybox', '1.36', undefined],
    ['index.docker.io/user/app', 'docker.io/user/app:latest', 'docker.io', 'user/app', 'latest', undefined],
    ['host:5000/a/b:tag', 'host:5000/a/b:tag', 'host:5000', 'a/b', 'tag', undefined],
    ['127.0.0.1:5000/x', '127.0.0.1:5000/x:latest', '127.0.0.1:5000', 'x', 'latest', undefined],
    ['localhost/a', 'localhost/a:latest', 'localhost', 'a', 'latest', undefined],
    ['ghcr.io/o/r/s', 'ghcr.io/o/r/s:latest', 'ghcr.io', 'o/r/s', 'latest', undefined],
    [`a@${D}`, `docker.io/library/a@${D}`, 'docker.io', 'library/a', undefined, D],
    [`a:tag@${D}`, `docker.io/library/a:tag@${D}`, 'docker.io', 'library/a', 'tag', D],
    ['[::1]:5000/a:v', '[::1]:5000/a:v', '[::1]:5000', 'a', 'v', undefined],
    ['a-b__c_d/e.f--g', 'docker.io/a-b__c_d/e.f--g:latest', 'docker.io', 'a-b__c_d/e.f--g', 'latest', undefined],
  ];
  for (const [input, full, registry, repository, tag, digest] of cases) {
    const r = parseReference(input);
    assert.equal(r.toString(), full, input);
    assert.equal(r.registry, registry, input);
    assert.equal(r.repository, repository, input);
    assert.equal(r.tag, tag, input);
    assert.equal(r.digest, digest, input);
  }
});

test('familiar form and identifier', () => {
  assert.equal(parseReference('docker.io/library/busybox').familiar, 'busybox:latest');
  assert.equal(parseReference('user/app:1').familiar, 'user/app:1');
  assert.equal(parseReference('localhost:5000/a').familiar, 'localhost:5000/a:latest');
  assert.equal(parseReference(`a:t@${D}`).identifier, D);
  assert.equal(parseReference('a:t').identifier, 't');
  assert.equal(withDigest(parseReference('a:t'), D).toString(), `docker.io/library/a@${D}`);
});

test('docker.io is served by registry-1.docker.io', () => {
  assert.equal(registryApiHost(parseReference('busybox').registry), 'registry-1.docker.io');
  assert.equal(registryApiHost('localhost:5000'), 'localhost:5000');
});

test('bad references are usage errors naming the reference', () => {
  const bad: Array<[string, RegExp]> = [
    ['', /empty/],
    ['Busybox', /lowercase/],
    ['user/App', /lowercase/],
    ['a b', /white space/],
    ['a:', /not a valid tag/],
    ['a:-x', /not a valid tag/],
    ['a@sha256:abc', /64 lower-case hex/],
    [`a@md5:${'a'.repeat(32)}`, /only sha256/],
    ['host:5000/', /empty/],
    ['a//b', /not a valid repository path component/],
    ['-a', /not a valid repository path component/],
    ['a..b', /not a valid repository path component/],
    [`${'a'.repeat(300)}`, /longer than 255/],
    ['ho_st.io/a', /not a valid registry host/],
  ];
  for (const [input, re] of bad) {
    assert.throws(() => parseReference(input), (e: unknown) => {
      assert.ok(e instanceof UsageError, input);
      assert.match(e.message, re, input);
      assert.ok(e.message.includes(JSON.stringify(input)), e.message);
      return true;
    });
  }
});
