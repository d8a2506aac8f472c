import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { sha256 } from '@tsbuild/oci';
import type { Digest } from '@tsbuild/oci';
import { openStore } from './store.ts';
import { tempRoot } from './testutil.ts';

test('the writer names the digest of what it was given before it is durable, and commits exactly that', async (t) => {
  const store = await openStore({ root: tempRoot(t) });
  const parts = [Buffer.alloc(700_000, 1), Buffer.alloc(5, 2), Buffer.alloc(1_300_000, 3)];
  const whole = Buffer.concat(parts);
  const w = store.blobWriter();
  const events: string[] = [];
  const hashed = new Promise<{ digest: Digest; size: number }>((resolve) => w.stream.once('hashed', resolve));
  w.stream.on('finish', () => events.push('finish'));
  void hashed.then(() => events.push('hashed'));
  for (const p of parts) w.stream.write(p);
  w.stream.end();
  assert.deepEqual(await hashed, { digest: sha256(whole), size: whole.length });
  assert.equal(await store.hasBlob(sha256(whole)), false, 'named, not yet stored');
  assert.deepEqual(await w.commit({ digest: sha256(whole), size: whole.length }), { digest: sha256(whole), size: whole.length });
  assert.deepEqual(events, ['hashed', 'finish']);
  assert.deepEqual(await store.readBlob(sha256(whole), { maxSize: whole.length }), whole);

  // An expectation the bytes do not meet is refused all the same, and nothing is left behind.
  const bad = store.blobWriter();
  bad.stream.end(Buffer.from('not it'));
  await assert.rejects(bad.commit({ digest: sha256(Buffer.from('it')) }), /blob verification failed/);
  assert.deepEqual(await readdir(store.ingestDir), []);
});
