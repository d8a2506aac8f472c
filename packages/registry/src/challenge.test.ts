import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseChallenges } from './challenge.ts';

test('parses Bearer and Basic challenges with quoted values', () => {
  assert.deepEqual(
    parseChallenges(['Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"']),
    [{ scheme: 'bearer', params: { realm: 'https://auth.example.com/token', service: 'registry.example.com', scope: 'repository:a/b:pull,push' } }],
  );
  assert.deepEqual(parseChallenges(['Basic realm="Registry Realm"']), [{ scheme: 'basic', params: { realm: 'Registry Realm' } }]);
});

test('several challenges in one header, tokens without quotes, escapes', () => {
  const got = parseChallenges(['Basic realm="a, b", Bearer realm=https://x/token, service=svc, error="insufficient_scope"', 'Negotiate']);
  assert.deepEqual(got, [
    { scheme: 'basic', params: { realm: 'a, b' } },
    { scheme: 'bearer', params: { realm: 'https://x/token', service: 'svc', error: 'insufficient_scope' } },
    { scheme: 'negotiate', params: {} },
  ]);
  assert.deepEqual(parseChallenges(['Bearer realm="q\\"uote"']), [{ scheme: 'bearer', params: { realm: 'q"uote' } }]);
});

test('junk does not hang or throw', () => {
  assert.deepEqual(parseChallenges(['', ',,,', '=== "']).length, 0);
});
