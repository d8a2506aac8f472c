/**
 * COPY steps whose layers are written from their sources, through `build`: the same keys and
 * images whichever way the key was hashed (the layer written ahead while hashing a cold context,
 * or the stat cache first), a layer that is a blob only until a later step needs its filesystem,
 * and nothing left behind when a layer written ahead is thrown away on a cache hit.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { blake3 } from '@napi-rs/blake-hash';
import { readTar } from '@tsbuild/layer';
import type { Digest } from '@tsbuild/oci';
import type { BuildEvent } from './events.ts';
import { tempDir } from './testing.ts';

// Spans tell which way each step went; tracing is read from the environment when trace.ts loads.
const traceFile = path.join(fs.mkdtempSync('/tmp/tsbuild-copystep-trace-'), 'trace.jsonl');
process.env.TSBUILD_TRACE = traceFile;
const { build, openRoot } = await import('./build.ts');
const { writeTrace } = await import('./trace.ts');

const EPOCH = 1_700_000_000;

function spanNames(): string[] {
  writeTrace();
  return fs
    .readFileSync(traceFile, 'utf8')
    .trim()
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => (JSON.parse(l) as { name: string }).name);
}

interface Built {
  config: Digest;
  layers: Digest[];
  /** Of the steps after FROM. */
  cached: boolean[];
  spans: string[];
}

async function run(root: string, context: string, dockerfile: string, noCache = false): Promise<Built> {
  const before = spanNames().length;
  const cached: boolean[] = [];
  const onEvent = (e: BuildEvent): void => {
    if (e.type === 'step-done') cached.push(e.cached);
  };
  const r = await build({ root, context, dockerfileText: dockerfile, sourceDateEpoch: EPOCH, noCache, onEvent, tags: ['copystep:latest'] });
  const { store } = await openRoot(root);
  const manifest = JSON.parse((await store.readBlob(r.manifest.digest)).toString()) as { layers: { digest: Digest }[] };
  return { config: r.configDigest, layers: manifest.layers.map((l) => l.digest), cached: cached.slice(1), spans: spanNames().slice(before) };
}

async function layerFiles(root: string, digest: Digest): Promise<Map<string, string>> {
  const { store } = await openRoot(root);
  const out = new Map<string, string>();
  for await (const e of readTar(await store.openBlob(digest))) {
    const parts: Buffer[] = [];
    for await (const c of e.body) parts.push(c);
    out.set(e.header.path, e.header.type === 'file' ? Buffer.concat(parts).toString() : e.header.type);
  }
  return out;
}

test('a COPY of a cold context writes its layer while hashing, with the keys of a warm one', async (t) => {
  const base = tempDir(t, 'tsbuild-copystep-');
  const root = path.join(base, 'root');
  const ctx = path.join(base, 'ctx');
  for (let d = 0; d < 4; d++) {
    fs.mkdirSync(path.join(ctx, `tree/d${d}`), { recursive: true });
    for (let i = 0; i < 100; i++) fs.writeFileSync(path.join(ctx, `tree/d${d}/f${i}`), `file ${d}/${i}\n`.repeat(i));
  }
  fs.writeFileSync(path.join(ctx, 'big'), Buffer.alloc(3 << 20, 7));
  fs.writeFileSync(path.join(ctx, 'extra'), 'extra\n');
  // Old enough for the stat cache to trust what it hashed.
  await new Promise((r) => setTimeout(r, 150));
  const dockerfile = 'FROM scratch\nCOPY tree/ big /data/\nCOPY extra /data/more/\nCOPY --link extra /linked\n';

  const cold = await run(root, ctx, dockerfile);
  assert.deepEqual(cold.cached, [false, false, false]);
  assert.ok(cold.spans.includes('copy.ahead'), 'the cold context is hashed while its layer is written');
  assert.ok(!cold.spans.includes('snapshot.commit') && !cold.spans.includes('copy.files'), 'no overlay');
  const files = await layerFiles(root, cold.layers[0] as Digest);
  assert.equal(files.get('data/d2/f7'), 'file 2/7\n'.repeat(7));
  assert.equal(files.get('data/big'), Buffer.alloc(3 << 20, 7).toString());
  assert.equal([...files.keys()].filter((p) => p.startsWith('data/d')).length, 404);
  // The second COPY planned its layer over a view of the first, unpacked from its blob.
  assert.deepEqual([...(await layerFiles(root, cold.layers[1] as Digest)).keys()], ['data/', 'data/more/', 'data/more/extra']);
  assert.deepEqual([...(await layerFiles(root, cold.layers[2] as Digest)).keys()], ['linked']);

  // The stat cache holds BLAKE3 of what was read.
  const stat = JSON.parse(fs.readFileSync(path.join(root, 'stat-cache.json'), 'utf8')) as { entries: Record<string, string[]> };
  const row = stat.entries[fs.realpathSync(path.join(ctx, 'tree/d1/f3'))] as string[];
  assert.equal(row[6], blake3(fs.readFileSync(path.join(ctx, 'tree/d1/f3'))).toString('hex'));

  const warm = await run(root, ctx, dockerfile);
  assert.deepEqual(warm.cached, [true, true, true]);
  assert.equal(warm.config, cold.config);
  assert.ok(!warm.spans.includes('copy.ahead'));

  // A cold stat cache and a warm build cache: the layer written ahead is dropped, nothing is left.
  fs.rmSync(path.join(root, 'stat-cache.json'));
  const again = await run(root, ctx, dockerfile);
  assert.deepEqual(again.cached, [true, true, true]);
  assert.equal(again.config, cold.config);
  assert.ok(again.spans.includes('copy.ahead'));
  assert.deepEqual(fs.readdirSync(path.join(root, 'ingest')), []);

  // --no-cache with a warm stat cache writes the same bytes the usual way.
  const rebuilt = await run(root, ctx, dockerfile, true);
  assert.deepEqual(rebuilt.cached, [false, false, false]);
  assert.ok(!rebuilt.spans.includes('copy.ahead'));
  assert.deepEqual(rebuilt.layers, cold.layers);

  fs.writeFileSync(path.join(ctx, 'tree/d3/f50'), 'changed\n');
  const changed = await run(root, ctx, dockerfile);
  assert.deepEqual(changed.cached, [false, false, false]);
  assert.notEqual(changed.layers[0], cold.layers[0]);
  assert.equal((await layerFiles(root, changed.layers[0] as Digest)).get('data/d3/f50'), 'changed\n');
  assert.deepEqual(changed.layers.slice(1), cold.layers.slice(1));
});

test('a WORKDIR the parent already has and COPYs over several layers read the layers without mounting them', async (t) => {
  const base = tempDir(t, 'tsbuild-copystep-');
  const root = path.join(base, 'root');
  const ctx = path.join(base, 'ctx');
  fs.mkdirSync(ctx);
  for (const f of ['a', 'b', 'c']) fs.writeFileSync(path.join(ctx, f), `${f}\n`);
  fs.mkdirSync(path.join(ctx, 'links'));
  fs.symlinkSync('x/y', path.join(ctx, 'links/l'));
  const dockerfile = 'FROM scratch\nCOPY a /x/a\nCOPY b /x/y/b\nCOPY links/ /\nWORKDIR /x/y\nWORKDIR /l\nCOPY c ./\nWORKDIR /new\n';
  const r = await run(root, ctx, dockerfile, true);
  // Only the WORKDIR of a directory that does not exist yet mounts a snapshot.
  assert.equal(r.spans.filter((s) => s === 'snapshot.prepare').length, 1, r.spans.join(' '));
  assert.equal(r.layers.length, 5, 'the WORKDIRs of existing directories (one through a symlink) make no layer');
  assert.deepEqual([...(await layerFiles(root, r.layers[3] as Digest)).keys()], ['x/', 'x/y/', 'x/y/c']);
  assert.deepEqual([...(await layerFiles(root, r.layers[4] as Digest)).keys()], ['new/']);
});
