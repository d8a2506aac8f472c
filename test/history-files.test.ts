/**
 * `tsbuild history --files`: what each layer adds, changes and removes, the bytes a later layer
 * throws away and dive's efficiency score, through the bundled CLI, for images in the store and
 * in a registry (streamed, nothing stored, a cut download retried, a corrupt one refused).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { gunzipSync as gunzip, gzipSync } from 'node:zlib';
import { encodeHeader, endOfArchive } from '../packages/layer/src/index.ts';
import { busyboxTar } from './helpers/base.ts';
import { ensureCli, tsbuild, tsbuildNonBlocking, type CliResult } from './helpers/cli.ts';
import { startRegistry, type RunningRegistry } from './helpers/registry.ts';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.ts';
import { writeContext } from './helpers/context.ts';

const MIB = 1048576;

let work: string;
let root: string;

interface Analysis {
  id: string;
  layers: Array<{
    index: number;
    digest: string;
    createdBy: string;
    size: number;
    added: Array<{ path: string; size: number }>;
    changed: Array<{ path: string; size: number }>;
    removed: Array<{ path: string; size: number }>;
  }>;
  totalSize: number;
  wastedBytes: number;
  wasted: Array<{ path: string; bytes: number; copies: number }>;
  efficiency: number;
}

function ok(r: CliResult, what: string): CliResult {
  assert.equal(r.code, 0, `${what} failed:\n${r.stderr}`);
  return r;
}

function noStack(s: string): void {
  assert.doesNotMatch(s, /\n\s+at .+\(.*:\d+:\d+\)/, `unexpected stack trace:\n${s}`);
}

function build(tag: string, dockerfile: string, files: Record<string, string> = {}): void {
  const dir = writeContext(join(work, `ctx-${tag}`), dockerfile, files);
  ok(tsbuild(root, ['build', '-q', '-t', tag, dir]), `build ${tag}`);
}

/** The lines of one layer's section of the table, header first. */
function section(out: string, index: number): string[] {
  const lines = out.split('\n');
  const start = lines.findIndex((l) => l.startsWith(`Layer ${index} `));
  assert.ok(start >= 0, `no section for layer ${index} in:\n${out}`);
  const end = lines.findIndex((l, i) => i > start && l === '');
  return lines.slice(start, end < 0 ? undefined : end);
}

function efficiencyOf(out: string): number {
  const m = /^Efficiency:\s+(\d+\.\d\d)%$/m.exec(out);
  assert.ok(m, `no efficiency line in:\n${out}`);
  return Number(m[1]);
}

before(() => {
  ensureCli();
  work = mkdtempSync(join(tmpdir(), 'tsbuild-history-files-'));
  root = join(work, 'root');
  ok(tsbuild(root, ['import', busyboxTar(), '-t', 'busybox:latest']), 'import');
  build('wasteful', [
    'FROM busybox:latest',
    'RUN head -c 1048576 /dev/zero > /data.bin && echo kept > /kept',
    'ENV STAGE=cleanup',
    'RUN rm /data.bin',
    '',
  ].join('\n'));
  build('tidy', 'FROM busybox:latest\nRUN echo tidy > /tidy.txt\nCOPY hello.txt /app/hello.txt\n', { 'hello.txt': 'hello\n' });
});

after(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

test('a layer that removes what an earlier one wrote: the file is D there, 1 MiB is wasted, efficiency is below 100%', () => {
  const out = ok(tsbuild(root, ['history', '--files', 'wasteful']), 'history --files').stdout;
  // Bottom first, numbered from 0 at the base; ENV made no layer so it has no section.
  const heads = out.split('\n').filter((l) => l.startsWith('Layer '));
  assert.equal(heads.length, 3, out);
  assert.match(heads[0]!, /^Layer 0 .*tsbuild import busybox\.tar/);
  assert.match(heads[1]!, /^Layer 1 {3}1\.05MB {3}RUN .*head -c 1048576/);
  assert.match(heads[2]!, /^Layer 2 .*RUN .*rm \/data\.bin/);
  assert.ok(section(out, 1).some((l) => /^ {2}A {2}1\.05MB {2}\/data\.bin$/.test(l)), out);
  assert.ok(section(out, 1).some((l) => /^ {2}A {2}5B +\/kept$/.test(l)), out);
  assert.deepEqual(section(out, 2).filter((l) => l.startsWith('  ') && l.includes('/data.bin')), ['  D  1.05MB  /data.bin']);
  assert.match(out, /^Wasted space: +1\.05MB \(1048576 bytes\)$/m);
  assert.match(out, /^1\.05MB +1 +\/data\.bin$/m, 'the wasted path is listed');
  const eff = efficiencyOf(out);
  assert.ok(eff > 0 && eff < 100, `efficiency ${eff}`);

  // The base layer's ~300 entries are capped unless --no-trunc.
  const base = section(out, 0);
  assert.equal(base.filter((l) => /^ {2}[AMD] /.test(l)).length, 20);
  assert.match(base.at(-1)!, /^ {2}… and \d+ more \(/);
  const full = ok(tsbuild(root, ['history', '--files', '--no-trunc', '--human=false', 'wasteful']), '--no-trunc').stdout;
  const fullBase = section(full, 0);
  assert.ok(fullBase.filter((l) => /^ {2}A /.test(l)).length > 100);
  assert.ok(!fullBase.some((l) => l.includes('… and')));
  assert.ok(section(full, 2).includes('  D  1048576  /data.bin'), full);
  assert.match(full, /^Wasted space: +1048576 bytes$/m);
});

test('--layer N shows that layer only, counted from 0 at the bottom; a layer that is not there is a usage error', () => {
  const out = ok(tsbuild(root, ['history', '--files', '--layer', '2', 'wasteful']), '--layer 2').stdout;
  assert.match(out, /^Layer 2 .*rm \/data\.bin/);
  assert.match(out, /^ {2}D {2}1\.05MB {2}\/data\.bin$/m);
  assert.doesNotMatch(out, /Layer [01] |Total size|Efficiency/);
  // --layer alone implies --files.
  assert.equal(ok(tsbuild(root, ['history', '--layer', '2', 'wasteful']), '--layer without --files').stdout, out);

  const missing = tsbuild(root, ['history', '--files', '--layer', '3', 'wasteful']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /layer 3 does not exist: the image has 3 layers \(0 to 2, from the bottom\)/);
  noStack(missing.stderr);
  for (const bad of ['-1', 'top', '1.5']) {
    const r = tsbuild(root, ['history', '--layer', bad, 'wasteful']);
    assert.equal(r.code, 2, `--layer ${bad}`);
    assert.match(r.stderr, /--layer: expected a whole number/);
  }
  const q = tsbuild(root, ['history', '--files', '-q', 'wasteful']);
  assert.equal(q.code, 2);
  assert.match(q.stderr, /--quiet cannot be combined with --files/);
});

test('--format json gives the whole analysis; with --layer, that layer', () => {
  const a = JSON.parse(ok(tsbuild(root, ['history', '--files', '--format', 'json', 'wasteful']), 'json').stdout) as Analysis;
  assert.match(a.id, /^sha256:[0-9a-f]{64}$/);
  assert.deepEqual(a.layers.map((l) => l.index), [0, 1, 2]);
  assert.match(a.layers[1]!.createdBy, /head -c 1048576/);
  assert.deepEqual(a.layers[1]!.added.find((p) => p.path === '/data.bin'), { path: '/data.bin', size: MIB });
  assert.deepEqual(a.layers[2]!.removed, [{ path: '/data.bin', size: MIB }]);
  assert.ok(a.layers[2]!.added.length === 0 && a.layers[2]!.size === 0);
  assert.equal(a.wastedBytes, MIB);
  assert.deepEqual(a.wasted, [{ path: '/data.bin', bytes: MIB, copies: 1 }]);
  assert.equal(a.totalSize, a.layers.reduce((s, l) => s + l.size, 0));
  // dive's score: the smallest size each path had (data.bin's is 0, once removed) over every size written.
  assert.equal(a.efficiency, (a.totalSize - MIB) / a.totalSize);

  const one = JSON.parse(ok(tsbuild(root, ['history', '--files', '--layer', '1', '--format', 'json', 'wasteful']), 'json --layer').stdout) as Analysis['layers'][number];
  assert.equal(one.index, 1);
  assert.deepEqual(one, a.layers[1]);
});

test('an image that wastes nothing scores 100%', () => {
  const out = ok(tsbuild(root, ['history', '--files', 'tidy']), 'tidy').stdout;
  assert.match(out, /^Wasted space: +0B \(0 bytes\)$/m);
  assert.equal(efficiencyOf(out), 100);
  assert.doesNotMatch(out, /^WASTED/m);
  assert.ok(section(out, 1).includes('  A  5B  /tidy.txt'), out);
  assert.ok(section(out, 2).some((l) => /^ {2}A {2}6B +\/app\/hello\.txt$/.test(l)), out);
  const a = JSON.parse(ok(tsbuild(root, ['history', '--files', '--format', 'json', 'tidy']), 'tidy json').stdout) as Analysis;
  assert.equal(a.wastedBytes, 0);
  assert.equal(a.efficiency, 1);
});

test('a missing local image is named', () => {
  const r = tsbuild(root, ['history', '--files', 'nope:1']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /no such image: nope:1/);
  noStack(r.stderr);
});

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Puts a blob into the registry's `repo` with a monolithic upload. */
async function putBlob(reg: RunningRegistry, repo: string, bytes: Buffer): Promise<{ digest: string; size: number }> {
  const start = await fetch(`${reg.url}/v2/${repo}/blobs/uploads/`, { method: 'POST' });
  assert.equal(start.status, 202);
  const loc = new URL(start.headers.get('location')!, reg.url);
  loc.searchParams.set('digest', sha(bytes));
  const put = await fetch(loc, { method: 'PUT', body: bytes, headers: { 'content-type': 'application/octet-stream' } });
  assert.equal(put.status, 201);
  return { digest: sha(bytes), size: bytes.length };
}

/** Blob files under a root's store. */
function blobsIn(r: string): string[] {
  const dir = join(r, 'oci', 'blobs', 'sha256');
  return existsSync(dir) ? readdirSync(dir) : [];
}

test('a registry image: layers streamed and verified, nothing stored, a cut download read again, hostile or corrupt ones refused', async () => {
  let reg: RunningRegistry | undefined;
  let px: FaultProxy | undefined;
  try {
    reg = await startRegistry();
    px = await startFaultProxy(reg.host);
    ok(tsbuild(root, ['push', 'wasteful', `${reg.host}/wasteful:1`]), 'push');
    const local = JSON.parse(ok(tsbuild(root, ['history', '--files', '--format', 'json', 'wasteful']), 'local json').stdout) as Analysis;
    const ref = `${px.host}/wasteful:1`;
    const paths = (a: Analysis) => a.layers.map((l) => ({ size: l.size, createdBy: l.createdBy, added: l.added, changed: l.changed, removed: l.removed }));

    const fresh = join(work, 'fresh');
    const r = await tsbuildNonBlocking(fresh, ['history', '--files', '--format', 'json', ref]);
    ok(r, 'remote --files');
    const remote = JSON.parse(r.stdout) as Analysis;
    assert.deepEqual(paths(remote), paths(local), 'the same changes as the local image');
    assert.equal(remote.wastedBytes, MIB);
    assert.equal(remote.efficiency, local.efficiency);
    assert.equal(remote.id, local.id);
    assert.ok(remote.layers.every((l, i) => l.digest !== local.layers[i]!.digest), 'the pushed (gzip) blobs were read');
    assert.equal(px.counters.blobGets, 1 + 3, 'the config and each layer once');
    assert.deepEqual(blobsIn(fresh), [], 'nothing was stored');

    // A download cut halfway is read again from its first byte, and counted once.
    const big = remote.layers[1]!.digest;
    px.inject({ method: 'GET', path: new RegExp(`/blobs/${big}`), action: 'drop-response-midway' });
    const again = await tsbuildNonBlocking(fresh, ['history', '--files', '--format', 'json', ref]);
    ok(again, 'remote --files after a cut');
    assert.deepEqual(px.pending(), [], 'the fault fired');
    assert.deepEqual(JSON.parse(again.stdout), remote);

    // --layer reads only the layers up to it.
    px.resetCounters();
    const low = await tsbuildNonBlocking(fresh, ['history', '--layer', '1', ref]);
    ok(low, 'remote --layer 1');
    assert.match(low.stdout, /^ {2}A {2}1\.05MB {2}\/data\.bin$/m);
    assert.equal(px.counters.blobGets, 1 + 2, 'the config and layers 0 and 1');

    // A hostile layer is refused by name, after its download completed (not retried as a cut one).
    const evil = gzipSync(Buffer.concat([encodeHeader({ path: '../../etc/evil', type: 'file', mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 0 }), endOfArchive()]));
    const layer = await putBlob(reg, 'evil', evil);
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha(gunzip(evil))] } }));
    const cfg = await putBlob(reg, 'evil', config);
    const manifest = {
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...layer }],
    };
    const mput = await fetch(`${reg.url}/v2/evil/manifests/1`, { method: 'PUT', body: JSON.stringify(manifest), headers: { 'content-type': manifest.mediaType } });
    assert.equal(mput.status, 201);
    px.resetCounters();
    const hostile = await tsbuildNonBlocking(fresh, ['history', '--files', `${px.host}/evil:1`]);
    assert.equal(hostile.code, 1, hostile.stderr);
    assert.match(hostile.stderr, /escapes the root/);
    noStack(hostile.stderr);
    assert.equal(px.counters.blobGets, 2, 'the config and the layer, once');

    // Content that does not match its digest is refused, whatever it parsed as.
    px.inject({ method: 'GET', path: new RegExp(`/blobs/${big}`), action: 'corrupt' });
    const bad = await tsbuildNonBlocking(fresh, ['history', '--files', ref]);
    assert.notEqual(bad.code, 0);
    assert.equal(bad.stdout, '');
    assert.match(bad.stderr, new RegExp(`${big}.*hashes to`));
    noStack(bad.stderr);
    assert.deepEqual(blobsIn(fresh), []);
  } finally {
    await px?.stop();
    await reg?.stop();
  }
});
