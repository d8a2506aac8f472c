/**
 * Layer benchmark: tsbuild's `diff` (tar + sha256) and `compress` against GNU tar, sha256sum,
 * pigz and zstd on the same trees in the same run. See bench/README.md.
 *
 *   node --import tsx bench/layer.ts [--quick] [--runs N] [--dir PATH] [--write] [--profile]
 *
 * tsbuild's side runs in a child process started from an esbuild bundle of this file (as the
 * CLI ships), so its peak RSS is that of a real process, not of a test harness.
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { closeSync, createReadStream, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os';
import { dirname, resolve } from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
// @tsbuild/layer's entry point (the repository root does not depend on workspace packages).
import { compress, createZstdCompressor, createZstdDecompressor, diff } from '../packages/layer/src/index.ts';
import type { ZstdEngine } from '../packages/layer/src/index.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..');
const MiB = 1 << 20;

interface ChildReport {
  ms: number;
  /** User + system CPU time of the whole child process, worker threads included. */
  cpuMs: number;
  maxRssKb: number;
  size: number;
  digest: string;
}

// ---------------------------------------------------------------------------------------------
// Child: one measured operation, reported as JSON on stdout.

async function child(mode: string, dir: string): Promise<void> {
  const sink = new Writable({
    write(_chunk, _enc, done) {
      done();
    },
  });
  const start = process.hrtime.bigint();
  let size: number;
  let digest: string;
  if (mode === 'diff') {
    // diff hashes what it writes (the diff_id), so a discarding sink equals `tar | sha256sum`.
    const r = await diff(dir, sink);
    size = r.size;
    digest = r.diffId;
  } else if (mode === 'gzip' || mode === 'zstd') {
    const tar = new PassThrough({ highWaterMark: MiB });
    const [, r] = await Promise.all([diff(dir, tar), compress(tar, sink, { algorithm: mode })]);
    size = r.size;
    digest = r.digest;
  } else {
    throw new Error(`unknown child mode ${mode}`);
  }
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  const ru = process.resourceUsage();
  const report: ChildReport = { ms, cpuMs: (ru.userCPUTime + ru.systemCPUTime) / 1000, maxRssKb: ru.maxRSS, size, digest };
  process.stdout.write(JSON.stringify(report) + '\n');
}

// ---------------------------------------------------------------------------------------------
// zstd engines: Node's zlib against zstd-napi, each direction, on the same realistic layer data.

/** Child side: one engine, one direction, over `file`; the output is hashed and dropped. */
async function engineChild(mode: string, file: string): Promise<void> {
  const [direction, engine] = mode.split(':') as ['compress' | 'decompress', ZstdEngine];
  const hash = createHash('sha256');
  let size = 0;
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      size += chunk.length;
      done();
    },
  });
  const start = process.hrtime.bigint();
  const codec =
    direction === 'compress'
      ? createZstdCompressor({ level: 3, workers: availableParallelism(), jobSize: 2 << 20 }, engine)
      : createZstdDecompressor(engine);
  await pipeline(createReadStream(file, { highWaterMark: MiB }), codec, sink);
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  const ru = process.resourceUsage();
  const report: ChildReport = { ms, cpuMs: (ru.userCPUTime + ru.systemCPUTime) / 1000, maxRssKb: ru.maxRSS, size, digest: `sha256:${hash.digest('hex')}` };
  process.stdout.write(JSON.stringify(report) + '\n');
}

// ---------------------------------------------------------------------------------------------
// Trees

/** A small deterministic generator: the trees are the same on every run and machine. */
function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

function makeSmallTree(root: string, files: number): void {
  const rnd = xorshift(42);
  const words = ['lib', 'usr', 'share', 'doc', 'config', 'value', 'python3', 'node_modules', 'index', 'return'];
  const perDir = 100;
  for (let i = 0; i < files; i++) {
    const d = `${root}/d${Math.floor(i / (perDir * 10)) % 100}/e${Math.floor(i / perDir) % 10}`;
    if (i % perDir === 0) mkdirSync(d, { recursive: true });
    // Sizes like a package tree: mostly a few hundred bytes to a few KiB, text-like.
    const size = rnd() % 6000;
    let body = '';
    while (body.length < size) body += words[rnd() % words.length] + (rnd() % 7 === 0 ? '\n' : ' ');
    writeFileSync(`${d}/f${i}.txt`, body.slice(0, size));
  }
}

function makeLargeTree(root: string, bytesEach: number): void {
  mkdirSync(root, { recursive: true });
  const buf = Buffer.allocUnsafe(4 * MiB);
  const write = (name: string, fill: (b: Buffer) => void): void => {
    const fd = openSync(`${root}/${name}`, 'w');
    try {
      for (let left = bytesEach; left > 0; ) {
        fill(buf);
        const n = Math.min(left, buf.length);
        writeSync(fd, buf, 0, n);
        left -= n;
      }
    } finally {
      closeSync(fd);
    }
  };
  write('random.bin', (b) => randomFillSync(b));
  buf.fill(0);
  // Real zero blocks, not a sparse file: both sides must read every byte.
  write('zeros.bin', () => undefined);
}

// ---------------------------------------------------------------------------------------------
// Measuring

/** Runs a pipeline; GNU time reports the CPU time of bash and every process it waited for. */
function shell(cmd: string): { ms: number; cpuMs: number; stdout: string } {
  const start = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S', 'bash', '-o', 'pipefail', '-c', cmd], { encoding: 'utf8', maxBuffer: 16 * MiB });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (r.status !== 0) throw new Error(`${cmd} failed (${r.status}): ${r.stderr}`);
  const [user, sys] = r.stderr.trim().split('\n').pop()!.split(' ').map(Number);
  return { ms, cpuMs: ((user ?? NaN) + (sys ?? NaN)) * 1000, stdout: r.stdout.trim() };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

interface Case {
  /** For --cases: diff-small, diff-large, gzip-large, gzip-small, zstd-large. */
  id: string;
  name: string;
  tree: string;
  reference: string;
  referenceCmd: (dir: string) => string;
  mode: 'diff' | 'gzip' | 'zstd';
  goal: string;
  goalRatio: number;
}

interface Row {
  c: Case;
  refMs: number[];
  ourMs: number[];
  refCpuMs: number[];
  ourCpuMs: number[];
  ourRssKb: number[];
  ourSize: number;
  refSize: number | undefined;
  ourDigest: string;
  /** The --compare-bundle child's figures, when one is given. */
  before: { ms: number[]; cpuMs: number[]; rssKb: number[]; digest: string } | undefined;
}

/*
 * The bundle is written under packages/layer, so that the native addons the layer package loads
 * (@napi-rs/xattr, and zstd-napi, which it requires at run time) resolve from there, as from the sources.
 */
const BUNDLE_DIR = resolve(REPO, 'packages/layer/node_modules/.cache/tsbuild-bench');

async function bundle(): Promise<string> {
  const { build } = await import('esbuild');
  mkdirSync(BUNDLE_DIR, { recursive: true });
  const outfile = `${BUNDLE_DIR}/bench-layer.mjs`;
  await build({
    entryPoints: [fileURLToPath(import.meta.url)],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    logLevel: 'warning',
    external: ['esbuild'],
    plugins: [
      {
        // Native addons stay out of the bundle and load from where pnpm put them for the layer package.
        name: 'native-external',
        setup(b) {
          b.onResolve({ filter: /^@napi-rs\/xattr$/ }, (args) => ({ path: args.path, external: true }));
        },
      },
    ],
    banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  });
  return outfile;
}

function runChild(script: string, mode: string, dir: string, profileDir: string | undefined): ChildReport {
  const args = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
  const r = spawnSync(process.execPath, [...args, script, '--child', mode, dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`tsbuild ${mode} of ${dir} failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildReport;
}

/** The functions with the most self time in a .cpuprofile, for finding where diff spends it. */
function topFunctions(file: string, n: number): string[] {
  interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number }
  const prof = JSON.parse(readFileSync(file, 'utf8')) as { nodes: Node[]; samples: number[] };
  const hits = new Map<string, number>();
  let total = 0;
  for (const node of prof.nodes) {
    const h = node.hitCount ?? 0;
    total += h;
    const f = node.callFrame;
    const key = `${f.functionName || '(anonymous)'} ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber + 1}`;
    hits.set(key, (hits.get(key) ?? 0) + h);
  }
  return [...hits.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([k, h]) => `${((100 * h) / total).toFixed(1).padStart(5)}%  ${k}`);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const flag = (name: string): boolean => argv.includes(name);
  const value = (name: string): string | undefined => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  if (flag('--child')) {
    const mode = value('--child')!;
    const target = argv[argv.indexOf('--child') + 2]!;
    return mode.includes(':') ? engineChild(mode, target) : child(mode, target);
  }
  if (flag('--zstd-engines')) return zstdEngines(value);

  const quick = flag('--quick');
  const runs = Number(value('--runs') ?? 3);
  const smallFiles = quick ? 5_000 : 50_000;
  const largeBytes = quick ? 128 * MiB : 1024 * MiB;
  const base = value('--dir') ?? tmpdir();
  const workDir = resolve(REPO, 'bench/work');
  mkdirSync(workDir, { recursive: true });
  const tmp = mkdtempSync(`${base}/tsbuild-bench-`);
  const small = `${tmp}/small`;
  const large = `${tmp}/large`;

  try {
    const script = await bundle();
    const log = (s: string): void => void process.stderr.write(s + '\n');
    log(`building trees in ${tmp}: ${smallFiles} small files; ${largeBytes / MiB} MiB random + ${largeBytes / MiB} MiB zeros`);
    const only = value('--cases')?.split(',');
    // Only the trees the chosen cases use are built (2 GiB of large tree takes a while).
    const wanted = (tree: 'small' | 'large'): boolean => !only || only.some((id) => id.endsWith(`-${tree}`));
    if (wanted('small')) makeSmallTree(small, smallFiles);
    else mkdirSync(small);
    if (wanted('large')) makeLargeTree(large, largeBytes);
    else mkdirSync(large);
    // Both sides read from the page cache: warm it once.
    shell(`tar -cf - -C ${small} . | cat >/dev/null; tar -cf - -C ${large} . | cat >/dev/null`);

    const cases: Case[] = [
      { id: 'diff-small', name: `diff, ${smallFiles} small files`, tree: small, reference: 'tar -c | sha256sum', referenceCmd: (d) => `tar -cf - -C ${d} . | sha256sum`, mode: 'diff', goal: '≤ 1.5× tar', goalRatio: 1.5 },
      { id: 'diff-large', name: `diff, ${(2 * largeBytes) / MiB} MiB (random + zeros)`, tree: large, reference: 'tar -c | sha256sum', referenceCmd: (d) => `tar -cf - -C ${d} . | sha256sum`, mode: 'diff', goal: '≤ 1.2× tar', goalRatio: 1.2 },
      { id: 'gzip-large', name: `diff + gzip, ${(2 * largeBytes) / MiB} MiB`, tree: large, reference: 'tar -c | pigz | sha256sum', referenceCmd: (d) => `tar -cf - -C ${d} . | pigz -6 | sha256sum`, mode: 'gzip', goal: '≤ 1.0× pigz', goalRatio: 1.0 },
      { id: 'gzip-small', name: `diff + gzip, ${smallFiles} small files`, tree: small, reference: 'tar -c | pigz | sha256sum', referenceCmd: (d) => `tar -cf - -C ${d} . | pigz -6 | sha256sum`, mode: 'gzip', goal: '≤ 1.0× pigz', goalRatio: 1.0 },
      { id: 'zstd-large', name: `diff + zstd, ${(2 * largeBytes) / MiB} MiB`, tree: large, reference: 'tar -c | zstd -3 -T0 | sha256sum', referenceCmd: (d) => `tar -cf - -C ${d} . | zstd -3 -T0 -q -c | sha256sum`, mode: 'zstd', goal: '(none)', goalRatio: Infinity },
    ];
    const unknown = only?.filter((id) => !cases.some((c) => c.id === id)) ?? [];
    if (unknown.length > 0) throw new Error(`unknown --cases ${unknown.join(',')}: use ${cases.map((c) => c.id).join(',')}`);
    // Another bundle of this benchmark (a copy of bench-layer.mjs made before a change) measured in the same runs.
    const compare = value('--compare-bundle');
    const rows: Row[] = cases
      .filter((c) => !only || only.includes(c.id))
      .map((c) => ({ c, refMs: [], ourMs: [], refCpuMs: [], ourCpuMs: [], ourRssKb: [], ourSize: 0, refSize: undefined, ourDigest: '', before: compare ? { ms: [], cpuMs: [], rssKb: [], digest: '' } : undefined }));

    const loadStart = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
    for (let run = 0; run < runs; run++) {
      for (const row of rows) {
        // Alternate which side goes first so neither always gets the warmer machine.
        const ours = (): void => {
          const r = runChild(script, row.c.mode, row.c.tree, undefined);
          row.ourMs.push(r.ms);
          row.ourCpuMs.push(r.cpuMs);
          row.ourRssKb.push(r.maxRssKb);
          row.ourSize = r.size;
          row.ourDigest = r.digest;
        };
        const before = (): void => {
          const b = row.before!;
          const r = runChild(compare!, row.c.mode, row.c.tree, undefined);
          b.ms.push(r.ms);
          b.cpuMs.push(r.cpuMs);
          b.rssKb.push(r.maxRssKb);
          b.digest = r.digest;
        };
        const theirs = (): void => {
          const r = shell(row.c.referenceCmd(row.c.tree));
          row.refMs.push(r.ms);
          row.refCpuMs.push(r.cpuMs);
        };
        // Rotate which side goes first so none always gets the warmer (or quieter) machine.
        const sides = compare ? [ours, before, theirs] : [ours, theirs];
        for (let i = 0; i < sides.length; i++) sides[(i + run) % sides.length]!();
        if (row.before && row.before.digest !== row.ourDigest) {
          throw new Error(`${row.c.name}: this build wrote ${row.ourDigest}, the compared bundle ${row.before.digest}: the output bytes changed`);
        }
        log(
          `run ${run + 1}/${runs} ${row.c.name}: tsbuild ${row.ourMs.at(-1)!.toFixed(0)} ms (${(row.ourRssKb.at(-1)! / 1024).toFixed(0)} MB)` +
            (row.before ? `, before ${row.before.ms.at(-1)!.toFixed(0)} ms (${(row.before.rssKb.at(-1)! / 1024).toFixed(0)} MB)` : '') +
            `, ${row.c.reference} ${row.refMs.at(-1)!.toFixed(0)} ms`,
        );
      }
    }
    for (const row of rows) {
      if (row.c.mode === 'diff') continue;
      const cmd = row.c.referenceCmd(row.c.tree).replace(/\| sha256sum$/, '| wc -c');
      row.refSize = Number(shell(cmd).stdout);
    }

    const profiles: string[] = [];
    if (flag('--profile')) {
      for (const [label, tree] of [['small', small], ['large', large]] as const) {
        const dir = `${workDir}/prof-${label}`;
        rmSync(dir, { recursive: true, force: true });
        runChild(script, 'diff', tree, dir);
        const file = readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
        if (file) profiles.push(`diff, ${label} tree (${dir}/${file}):`, ...topFunctions(`${dir}/${file}`, 15).map((l) => '    ' + l), '');
      }
    }

    const report = render(rows, { quick, runs, smallFiles, largeBytes, compare, loads: [loadStart, readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')] }, profiles);
    process.stdout.write(report);
    if (!flag('--no-write') && (flag('--write') || (!quick && !only))) writeSection(report);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

const BEGIN = '<!-- layer-bench:begin -->';
const END = '<!-- layer-bench:end -->';

/** Other benchmarks keep their own sections of RESULTS.md: only this one's is replaced. */
function writeSection(report: string): void {
  const file = resolve(HERE, 'RESULTS.md');
  const old = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmark results\n';
  const block = `${BEGIN}\n${report}${END}`;
  const a = old.indexOf(BEGIN);
  const b = old.indexOf(END);
  writeFileSync(file, a >= 0 && b > a ? old.slice(0, a) + block + old.slice(b + END.length) : `${old.replace(/\n*$/, '\n\n')}${block}\n`);
}

function render(rows: Row[], p: { quick: boolean; runs: number; smallFiles: number; largeBytes: number; compare: string | undefined; loads: string[] }, profiles: string[]): string {
  const tarVersion = spawnSync('tar', ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0];
  const pigzVersion = spawnSync('pigz', ['--version'], { encoding: 'utf8' }).stdout.trim() || spawnSync('pigz', ['--version'], { encoding: 'utf8' }).stderr.trim();
  const lines = [
    '## Layer writing and compression (`bench/layer.ts`)',
    '',
    `Recorded ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC with \`node --import tsx bench/layer.ts${p.quick ? ' --quick' : ''}\`` +
      ` (${p.runs} runs each, medians).`,
    `Machine: ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown CPU'}), ${Math.round(totalmem() / 2 ** 30)} GiB RAM, Node ${process.version}, ${tarVersion}, ${pigzVersion}.`,
    `Trees: ${p.smallFiles} files of 0–6000 bytes in 1000 directories; one file of ${p.largeBytes / MiB} MiB random bytes plus one of ${p.largeBytes / MiB} MiB zeros.`,
    'Both sides read from a warm page cache and write nothing to disk. tsbuild times are of the operation inside a',
    'child process started from an esbuild bundle (as the CLI ships); its peak RSS is that child\'s whole maxRSS, worker threads included.',
    `Load average (1, 5, 15 min) at the start and at the end: ${p.loads.join('; ')} (2 cores; a shared machine).`,
    ...(p.compare ? [`"before" columns: ${p.compare}, another bundle measured in the same runs; it wrote the same bytes (same digests) in every case.`] : []),
    '',
    '| case | reference | reference ms | tsbuild ms | ratio | goal | CPU s (tsbuild / reference) | tsbuild peak RSS | output size (tsbuild / reference) |',
    '|---|---|---:|---:|---:|---|---:|---:|---|',
  ];
  for (const r of rows) {
    const ref = median(r.refMs);
    const ours = median(r.ourMs);
    const ratio = ours / ref;
    const met = ratio <= r.c.goalRatio ? 'met' : 'missed';
    const sizes = r.refSize === undefined ? `${r.ourSize} B tar` : `${(r.ourSize / MiB).toFixed(1)} / ${(r.refSize / MiB).toFixed(1)} MiB`;
    lines.push(
      `| ${r.c.name} | \`${r.c.reference}\` | ${ref.toFixed(0)} | ${ours.toFixed(0)} | ${ratio.toFixed(2)}× | ${r.c.goal}${r.c.goalRatio === Infinity ? '' : ` (${met})`} | ${(median(r.ourCpuMs) / 1000).toFixed(2)} / ${(median(r.refCpuMs) / 1000).toFixed(2)} | ${(Math.max(...r.ourRssKb) / 1024).toFixed(0)} MB | ${sizes} |`,
    );
  }
  if (p.compare) {
    lines.push(
      '',
      '| case | before ms | tsbuild ms | tsbuild ÷ before | CPU s (before / tsbuild) | peak RSS (before / tsbuild) |',
      '|---|---:|---:|---:|---:|---:|',
    );
    for (const r of rows) {
      const b = r.before!;
      lines.push(
        `| ${r.c.name} | ${median(b.ms).toFixed(0)} | ${median(r.ourMs).toFixed(0)} | ${(median(r.ourMs) / median(b.ms)).toFixed(2)}× | ${(median(b.cpuMs) / 1000).toFixed(2)} / ${(median(r.ourCpuMs) / 1000).toFixed(2)} | ${(Math.max(...b.rssKb) / 1024).toFixed(0)} / ${(Math.max(...r.ourRssKb) / 1024).toFixed(0)} MB |`,
      );
    }
  }
  lines.push('', `Raw times (ms), reference / tsbuild${p.compare ? ' / before' : ''}, in run order:`, '');
  for (const r of rows) {
    const before = r.before ? ` / ${r.before.ms.map((x) => x.toFixed(0)).join(', ')}` : '';
    lines.push(`- ${r.c.name}: ${r.refMs.map((x) => x.toFixed(0)).join(', ')} / ${r.ourMs.map((x) => x.toFixed(0)).join(', ')}${before}`);
  }
  if (profiles.length > 0) lines.push('', 'Self time of `diff` (`--cpu-prof`), top functions:', '', '```', ...profiles, '```');
  return lines.join('\n') + '\n';
}

if (!existsSync(REPO)) throw new Error('run from the repository');
await main();

// ---------------------------------------------------------------------------------------------
// --zstd-engines: Node's zlib zstd against zstd-napi, in both directions (Node 22.15+ only).

async function zstdEngines(value: (name: string) => string | undefined): Promise<void> {
  const layerSources = ['/var/cache/tsbuild-test/debian-bookworm.tar'];
  const runs = Number(value('--runs') ?? 3);
  const mib = Number(value('--mib') ?? 400);
  const log = (s: string): void => void process.stderr.write(s + '\n');
  const tmp = mkdtempSync(`${value('--dir') ?? tmpdir()}/tsbuild-zstd-`);
  try {
    const script = await bundle();
    const data = `${tmp}/layer.tar`;
    // Realistic layer bytes: a Debian root filesystem (made by fixtures/bases/debian.sh for the
    // tests) followed by a tar of this machine's /usr/lib and /usr/share, cut at --mib MiB.
    const sources = layerSources.filter((f) => existsSync(f));
    const r = spawnSync('bash', ['-c', `{ cat ${sources.join(' ')}; tar -cf - -C / usr/lib/x86_64-linux-gnu usr/share 2>/dev/null; } | head -c ${mib * MiB} > ${data}`]);
    if (r.status !== 0) throw new Error(`cannot make ${data}: ${r.stderr}`);
    // statSync, not readFileSync: a child's maxRSS starts from its parent's at the fork.
    const size = statSync(data).size;
    shell(`zstd -3 -T0 -q -c ${data} > ${data}.zst`);
    shell(`cat ${data} ${data}.zst > /dev/null`);
    const engines: ZstdEngine[] = ['node', 'zstd-napi'];
    type Cell = { ms: number[]; cpuMs: number[]; rssKb: number[]; digests: Set<string>; out: number };
    const cells = new Map<string, Cell>();
    const refs = new Map<string, { ms: number[]; cpuMs: number[] }>();
    for (let run = 0; run < runs; run++) {
      for (const direction of ['compress', 'decompress'] as const) {
        const order = run % 2 === 0 ? engines : [...engines].reverse();
        for (const engine of order) {
          const key = `${direction}:${engine}`;
          const rep = runChild(script, key, direction === 'compress' ? data : `${data}.zst`, undefined);
          const c = cells.get(key) ?? { ms: [], cpuMs: [], rssKb: [], digests: new Set(), out: 0 };
          c.ms.push(rep.ms);
          c.cpuMs.push(rep.cpuMs);
          c.rssKb.push(rep.maxRssKb);
          c.digests.add(rep.digest);
          c.out = rep.size;
          cells.set(key, c);
          log(`run ${run + 1}/${runs} ${key}: ${rep.ms.toFixed(0)} ms`);
        }
        const cmd = direction === 'compress' ? `zstd -3 -T0 -q -c ${data} | sha256sum` : `zstd -dc -q ${data}.zst | sha256sum`;
        const ref = shell(cmd);
        const rr = refs.get(direction) ?? { ms: [], cpuMs: [] };
        rr.ms.push(ref.ms);
        rr.cpuMs.push(ref.cpuMs);
        refs.set(direction, rr);
      }
    }
    const zstdVersion = spawnSync('zstd', ['--version'], { encoding: 'utf8' }).stdout.trim();
    const lines = [
      `zstd engines, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, \`node --import tsx bench/layer.ts --zstd-engines --runs ${runs}\`:`,
      `Node ${process.version} (zlib zstd ${process.versions['zstd' as keyof typeof process.versions] ?? 'none'}), ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown CPU'}), ${zstdVersion}.`,
      `Input: ${(size / MiB).toFixed(0)} MiB (${sources.join(', ') || 'no Debian rootfs'} + tar of /usr/lib/x86_64-linux-gnu and /usr/share); level 3, ${availableParallelism()} workers, 2 MiB jobs, checksums, as \`compress\` uses.`,
      '',
      '| direction | engine | median ms | MB/s | CPU s | peak RSS | output |',
      '|---|---|---:|---:|---:|---:|---|',
    ];
    for (const direction of ['compress', 'decompress'] as const) {
      for (const engine of engines) {
        const c = cells.get(`${direction}:${engine}`)!;
        const ms = median(c.ms);
        lines.push(`| ${direction} | ${engine} | ${ms.toFixed(0)} | ${(size / 1e6 / (ms / 1000)).toFixed(0)} | ${(median(c.cpuMs) / 1000).toFixed(2)} | ${(Math.max(...c.rssKb) / 1024).toFixed(0)} MB | ${(c.out / MiB).toFixed(1)} MiB, ${[...c.digests].map((d) => d.slice(7, 19)).join(' / ')} |`);
      }
      const rr = refs.get(direction)!;
      lines.push(`| ${direction} | zstd CLI (\`${direction === 'compress' ? 'zstd -3 -T0' : 'zstd -d'} \| sha256sum\`) | ${median(rr.ms).toFixed(0)} | ${(size / 1e6 / (median(rr.ms) / 1000)).toFixed(0)} | ${(median(rr.cpuMs) / 1000).toFixed(2)} | | |`);
    }
    lines.push('', 'Raw times (ms), in run order:', '');
    for (const [key, c] of cells) lines.push(`- ${key}: ${c.ms.map((x) => x.toFixed(0)).join(', ')}`);
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
