import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, existsSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseIndex, ANNOTATION_REF_NAME } from '@tsbuild/oci';
import { openStore } from './index.ts';
import type { Store } from './index.ts';
import { makeTar, tempRoot, writeTestImage } from './testutil.ts';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, '..', '..', '..');
const childScript = join(here, 'test-child.ts');

function child(args: string[]): ChildProcess & { exited: Promise<number | null>; ready: Promise<void> } {
  const cp = spawn(process.execPath, ['--import', 'tsx', childScript, ...args], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  cp.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<number | null>((res) => cp.on('close', (code) => res(code)));
  const ready = new Promise<void>((res, rej) => {
    cp.stdout!.on('data', (b: Buffer) => b.toString().includes('ready') && res());
    void exited.then((code) => rej(new Error(`child ${args[0]} exited ${code} before ready: ${stderr}`)));
  });
  ready.catch(() => undefined);
  return Object.assign(cp, {
    exited: exited.then((code) => {
      if (code !== 0 && cp.signalCode === null) throw new Error(`child ${args.join(' ')} exited ${code}: ${stderr}`);
      return code;
    }),
    ready,
  });
}

async function killHard(cp: ChildProcess & { exited: Promise<number | null> }): Promise<void> {
  cp.kill('SIGKILL');
  await cp.exited;
}

/** Every blob's content hashes to its name: no partial or torn blob is visible. */
function assertBlobsIntact(store: Store): number {
  const names = readdirSync(store.blobsDir);
  for (const name of names) {
    const hex = createHash('sha256').update(readFileSync(join(store.blobsDir, name))).digest('hex');
    assert.equal(hex, name, `blob ${name} is torn`);
  }
  return names.length;
}

test('4 processes × 25 tags: index.json loses none', async (t) => {
  const root = tempRoot(t);
  const store = await openStore({ root });
  const img = await writeTestImage(store, [makeTar({ 'a.txt': 'a' })]);
  const kids = [0, 1, 2, 3].map((n) => child(['tag', root, `p${n}`, '25', img.manifest.digest, String(img.manifest.size)]));
  await Promise.all(kids.map((k) => k.exited));
  const names = (await store.listImages()).map((i) => i.name);
  assert.equal(names.length, 100);
  for (let n = 0; n < 4; n++) for (let i = 0; i < 25; i++) assert.ok(names.includes(`p${n}:${i}`), `p${n}:${i}`);
  assert.deepEqual(readdirSync(store.ingestDir), []);
  assert.deepEqual(readdirSync(store.locksDir), []);
});

test('a lock whose holder was SIGKILLed is broken; a live holder is waited for', async (t) => {
  const root = tempRoot(t);
  const store = await openStore({ root, lockTimeoutMs: 300 });
  const img = await writeTestImage(store, [makeTar({ 'a.txt': 'a' })]);
  const holder = child(['hold-lock', root]);
  await holder.ready;
  const lockFile = join(store.locksDir, 'index.lock');
  assert.equal(readFileSync(lockFile, 'utf8').split(' ')[0], String(holder.pid));
  await assert.rejects(store.tag('blocked', img.manifest), new RegExp(`waiting for lock ${lockFile} held by pid ${holder.pid}`));
  await killHard(holder);
  assert.ok(existsSync(lockFile), 'the dead holder left its lock behind');
  await store.tag('after', img.manifest);
  assert.deepEqual((await store.listImages()).map((i) => i.name), ['after:latest']);

  // a lock file left empty (crash between create and write) is stale only once it is old
  writeFileSync(lockFile, '');
  await assert.rejects(store.tag('blocked', img.manifest), /timed out/);
  const old = new Date(Date.now() - 60_000);
  const { utimesSync } = await import('node:fs');
  utimesSync(lockFile, old, old);
  await store.tag('after2', img.manifest);
});

test('SIGKILL while tagging or writing blobs leaves a valid store with no partial blob', async (t) => {
  const root = tempRoot(t);
  const store = await openStore({ root });
  const img = await writeTestImage(store, [makeTar({ 'a.txt': 'a' })]);
  const tagger = child(['tag-forever', root, img.manifest.digest, String(img.manifest.size)]);
  const big = child(['big-blob', root]);
  const many = child(['many-blobs', root]);
  await Promise.all([tagger.ready, big.ready, many.ready]);
  await sleep(150);
  await Promise.all([killHard(tagger), killHard(big), killHard(many)]);

  const after = await openStore({ root });
  const idx = parseIndex(readFileSync(join(root, 'oci', 'index.json')));
  const crashTags = idx.manifests.filter((m) => m.annotations?.[ANNOTATION_REF_NAME]?.startsWith('crash:'));
  assert.ok(crashTags.length >= 1);
  const count = assertBlobsIntact(after);
  assert.ok(count > 3, 'the blob writer committed some blobs before it died');
  assert.ok(readdirSync(after.ingestDir).length >= 1, 'the big blob was still a temp file');
  // whatever lock the tagger held is broken and work goes on
  await after.tag('next', img.manifest);
  assert.ok(await after.resolve('next'));
  const res = await after.gc({ tempMaxAgeMs: 0 });
  assert.ok(res.removedTempFiles >= 1);
  assert.deepEqual(readdirSync(after.ingestDir), []);
  assertBlobsIntact(after);
});
