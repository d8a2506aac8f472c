/**
 * Registry benchmark: `tsbuild push` / `tsbuild pull` of the C3 image (one RUN layer of random
 * bytes plus as many zeros) against `skopeo copy` of the same image, to and from a loopback
 * docker-registry, in the same run. See bench/README.md.
 *
 *   node --import tsx bench/registry.ts [--quick] [--runs N] [--dir PATH] [--write] [--profile]
 */
import { spawnSync } from 'node:child_process';
import { createReadStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { busyboxTar } from '../test/helpers/base.ts';
import { startRegistry, type RunningRegistry } from '../test/helpers/registry.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..');
const MiB = 1 << 20;

const args = process.argv.slice(2);
const flag = (f: string): boolean => args.includes(f);
const option = (f: string): string | undefined => {
  const i = args.indexOf(f);
  return i >= 0 ? args[i + 1] : undefined;
};
// Another build of the CLI (a copy of packages/cli/dist made before a change) can be measured instead.
const CLI = resolve(option('--cli') ?? join(REPO, 'packages/cli/dist/tsbuild.js'));
const quick = flag('--quick');
const runs = Number(option('--runs') ?? 3);
const mib = quick ? 64 : 1024;
const base = option('--dir') ?? tmpdir();

interface Timed {
  ms: number;
  cpuMs: number;
  maxRssKb: number;
}

/** Runs a command under GNU time: wall clock from here, CPU and peak RSS of the whole process tree. */
function timed(cmd: string, argv: string[], env: Record<string, string> = {}): Timed {
  const out = join(work, 'time.txt');
  // Each command writes a GiB or two: flushing what the one before left dirty keeps that
  // writeback out of the next one's time.
  spawnSync('sync');
  const start = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-o', out, '-f', '%U %S %M', cmd, ...argv], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    maxBuffer: 64 * MiB,
  });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  const [u, s, m] = readFileSync(out, 'utf8').trim().split('\n').pop()!.split(' ').map(Number);
  return { ms, cpuMs: ((u ?? 0) + (s ?? 0)) * 1000, maxRssKb: m ?? 0 };
}

function tsbuild(root: string, argv: string[], nodeFlags: string[] = [], cli = CLI): Timed {
  return timed('node', [...nodeFlags, cli, ...argv], { TSBUILD_ROOT: root });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

function blobNames(root: string): Set<string> {
  const d = join(root, 'oci/blobs/sha256');
  return new Set(existsSync(d) ? readdirSync(d) : []);
}

function dirBytes(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) n += statSync(join(e.parentPath, e.name)).size;
  }
  return n;
}

// ---------------------------------------------------------------------------------------------

if (flag('--child-compress')) {
  // The floor of a cold push's CPU side: tsbuild's gzip of the stored layer, output hashed and dropped.
  const { compress } = await import('../packages/layer/src/index.ts');
  const sink = new Writable({ write: (_c, _e, cb) => cb() });
  await compress(createReadStream(option('--child-compress')!, { highWaterMark: MiB }), sink, { algorithm: 'gzip' });
  process.exit(0);
}

if (!existsSync(CLI) && option('--cli') === undefined) spawnSync('node', [join(REPO, 'scripts/build.mjs')], { stdio: 'inherit' });
mkdirSync(base, { recursive: true });
const work = mkdtempSync(join(base, 'tsbuild-bench-registry-'));
const root = join(work, 'root');
const registries: RunningRegistry[] = [];
const fresh = async (): Promise<RunningRegistry> => {
  const r = await startRegistry();
  registries.push(r);
  return r;
};
const stopAll = async (): Promise<void> => {
  for (const r of registries.splice(0)) await r.stop();
};

const rows: Record<string, Timed[]> = {};
const record = (name: string, t: Timed): void => {
  (rows[name] ??= []).push(t);
  process.stderr.write(`  ${name.padEnd(44)} ${(t.ms / 1000).toFixed(2)} s  cpu ${(t.cpuMs / 1000).toFixed(2)} s  rss ${Math.round(t.maxRssKb / 1024)} MB\n`);
};
let pushedBytes = 0;
let skopeoBytes = 0;
const profiles: string[] = [];
const loads: string[] = [];
/** The CLIs measured: this checkout's, and with --compare-cli another build of it (say, before a change). */
const compare = option('--compare-cli');
const clis: Array<{ label: string; path: string }> = [{ label: '', path: CLI }, ...(compare ? [{ label: ' [before]', path: resolve(compare) }] : [])];
const COLD = 'tsbuild push (cold: gzip + upload)';
const WARM = 'tsbuild push (warm: upload only)';
const PULL = 'tsbuild pull (fresh root)';
const SK_PUSH = 'skopeo copy oci: → docker://';
const SK_PULL = 'skopeo copy docker:// → oci:';
const SK_WARM = 'skopeo copy gzip oci: → docker://';
const FL_GZIP = 'floor: gzip of the layer alone (tsbuild compress)';
const FL_PIGZ = 'floor: pigz -6 of the layer alone';
const FL_PUT = 'floor: curl PUT of the gzip layer';
const FL_GET = 'floor: curl GET of the gzip layer to a file';

/** Makes the next push cold: the compressed layers and what the store knows about them go. */
function forgetCompressed(built: Set<string>): void {
  for (const b of blobNames(root)) if (!built.has(b)) rmSync(join(root, 'oci/blobs/sha256', b));
  // Without this the store would still count the deleted blobs as fetchable from the registries
  // they were pushed to (stopped by now) and never compress again.
  for (const ns of ['blobmap', 'blob-origins']) rmSync(join(root, 'meta', ns), { recursive: true, force: true });
}

/** curl, timed like the others; the registry API directly, no client logic. */
function curl(argv: string[]): Timed {
  return timed('curl', ['-sSf', ...argv]);
}

try {
  process.stderr.write(`building C3 (${mib} MiB random + ${mib} MiB zeros) in ${root}\n`);
  tsbuild(root, ['import', busyboxTar(), '-t', 'busybox:latest']);
  const ctx = join(work, 'ctx');
  mkdirSync(ctx);
  writeFileSync(
    join(ctx, 'Dockerfile'),
    `FROM busybox:latest\nRUN head -c ${mib}m /dev/urandom > /r; head -c ${mib}m /dev/zero > /z\n`,
  );
  tsbuild(root, ['build', '-q', '-t', 'c3:latest', ctx]);
  // Everything the build left: pushing adds only the compressed layers, which a cold run removes.
  const built = blobNames(root);
  const ociRef = `oci:${root}/oci:c3:latest`;
  // The big layer: the largest blob of the build, uncompressed.
  const bigTar = [...built].map((b) => join(root, 'oci/blobs/sha256', b)).sort((a, b) => statSync(b).size - statSync(a).size)[0]!;
  let bigGzip: { file: string; digest: string } | undefined;

  for (let run = 0; run < runs; run++) {
    loads.push(readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '));
    process.stderr.write(`run ${run + 1}/${runs} (load ${loads.at(-1)})\n`);

    const pushSide = (cli: { label: string; path: string }) => async (): Promise<void> => {
      forgetCompressed(built);
      const cold = await fresh();
      record(COLD + cli.label, tsbuild(root, ['push', 'c3:latest', `${cold.host}/c3:1`], [], cli.path));
      if (cli.label === '') pushedBytes = dirBytes(join(cold.dir, 'data'));
      const warm = await fresh();
      record(WARM + cli.label, tsbuild(root, ['push', 'c3:latest', `${warm.host}/c3:1`], [], cli.path));
      const dest = join(work, `pull-tsbuild-${run}`);
      record(PULL + cli.label, tsbuild(dest, ['pull', `${warm.host}/c3:1`], [], cli.path));
      if (bigGzip === undefined) {
        const big = [...blobNames(dest)].map((b) => join(dest, 'oci/blobs/sha256', b)).sort((a, b) => statSync(b).size - statSync(a).size)[0]!;
        bigGzip = { file: join(work, 'big.gz'), digest: `sha256:${big.split('/').pop()}` };
        spawnSync('cp', [big, bigGzip.file]);
      }
      rmSync(dest, { recursive: true, force: true });
    };
    const skopeoSide = async (): Promise<void> => {
      const reg = await fresh();
      record(SK_PUSH, timed('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', ociRef, `docker://${reg.host}/c3-skopeo:1`]));
      skopeoBytes = dirBytes(join(reg.dir, 'data'));
      const dest = join(work, `pull-skopeo-${run}`);
      record(SK_PULL, timed('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${reg.host}/c3-skopeo:1`, `oci:${dest}:c3`]));
      // The layout just pulled holds gzip layers: pushing it is skopeo's equivalent of a warm push.
      const empty = await fresh();
      record(SK_WARM, timed('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${dest}:c3`, `docker://${empty.host}/c3-skopeo:1`]));
      rmSync(dest, { recursive: true, force: true });
    };
    // What the machine allows: compressing alone, and the registry taking or serving the compressed layer.
    const floorSide = async (): Promise<void> => {
      record(FL_GZIP, timed('node', ['--import', 'tsx', join(HERE, 'registry.ts'), '--child-compress', bigTar]));
      record(FL_PIGZ, timed('bash', ['-c', `pigz -6 < ${bigTar} > /dev/null`]));
      if (bigGzip === undefined) return;
      const reg = await fresh();
      const loc = spawnSync('curl', ['-sSf', '-X', 'POST', '-o', '/dev/null', '-w', '%header{location}', `${reg.url}/v2/floor/blobs/uploads/`], { encoding: 'utf8' }).stdout.trim();
      const put = new URL(loc, reg.url);
      put.searchParams.set('digest', bigGzip.digest);
      record(FL_PUT, curl(['-X', 'PUT', '-H', 'content-type: application/octet-stream', '-T', bigGzip.file, '-o', '/dev/null', put.toString()]));
      const out = join(work, 'get.gz');
      record(FL_GET, curl(['-o', out, `${reg.url}/v2/floor/blobs/${bigGzip.digest}`]));
      rmSync(out, { force: true });
    };
    const sides = [...clis.map(pushSide), skopeoSide, floorSide];
    // Rotate the order from run to run so no side always gets the warmer (or quieter) machine.
    for (let i = 0; i < sides.length; i++) await sides[(i + run) % sides.length]!();
    await stopAll();
  }

  if (flag('--profile')) {
    // One more cold push and one pull under the V8 profiler, to see where the time goes.
    const profDir = join(HERE, 'work', 'prof-registry');
    rmSync(profDir, { recursive: true, force: true });
    mkdirSync(profDir, { recursive: true });
    forgetCompressed(built);
    const reg = await fresh();
    tsbuild(root, ['push', 'c3:latest', `${reg.host}/c3:1`], ['--cpu-prof', '--cpu-prof-dir', join(profDir, 'push')]);
    tsbuild(join(work, 'pull-prof'), ['pull', `${reg.host}/c3:1`], ['--cpu-prof', '--cpu-prof-dir', join(profDir, 'pull')]);
    for (const kind of ['push', 'pull']) profiles.push(`${kind}: ${topFunctions(join(profDir, kind)).join('; ')}`);
    await stopAll();
  }
} finally {
  await stopAll();
  rmSync(work, { recursive: true, force: true });
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

/** The functions with the most self time in the .cpuprofile files of a directory. */
function topFunctions(dir: string): string[] {
  const self = new Map<string, number>();
  let total = 0;
  for (const f of readdirSync(dir)) {
    const p = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] };
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    p.samples.forEach((id, i) => {
      const n = byId.get(id);
      const dt = p.timeDeltas[i] ?? 0;
      if (!n) return;
      const name = `${n.callFrame.functionName || '(anonymous)'} ${n.callFrame.url.split('/').pop() ?? ''}:${n.callFrame.lineNumber + 1}`;
      self.set(name, (self.get(name) ?? 0) + dt);
      total += dt;
    });
  }
  return [...self.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 6)
    .map(([k, v]) => `${k} ${((100 * v) / Math.max(total, 1)).toFixed(0)}%`);
}

// ---------------------------------------------------------------------------------------------
// Report

const s = (name: string): number => median((rows[name] ?? []).map((t) => t.ms)) / 1000;
const line = (name: string): string => {
  const ts = rows[name] ?? [];
  return `| ${name} | ${s(name).toFixed(2)} s | ${(median(ts.map((t) => t.cpuMs)) / 1000).toFixed(2)} s | ${Math.round(median(ts.map((t) => t.maxRssKb)) / 1024)} MB |`;
};
const ratio = (a: string, b: string): string => (rows[a] && rows[b] ? (s(a) / s(b)).toFixed(2) : 'n/a');
const cpu = cpus()[0]?.model ?? 'unknown CPU';
const ratios = (label: string): string =>
  `- tsbuild${label}: cold push ÷ skopeo push **${ratio(COLD + label, SK_PUSH)}**; ` +
  `warm push ÷ skopeo push of gzip layers **${ratio(WARM + label, SK_WARM)}**; ` +
  `pull ÷ skopeo pull **${ratio(PULL + label, SK_PULL)}** (below 1 = tsbuild faster).`;
const coldFloor = Math.max(s(FL_GZIP), s(FL_PUT));
const section = [
  '<!-- registry-bench:begin -->',
  '## Registry: push and pull of C3 (`bench/registry.ts`)',
  '',
  `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB RAM; ` +
    `image: busybox + one layer of ${mib} MiB random and ${mib} MiB zeros (${quick ? 'quick' : 'full'} size); ` +
    `loopback docker-registry 2.8, a fresh one for every push; medians of ${runs} runs, the sides in a different order each run; ` +
    `wall time includes process start. Load average (1, 5, 15 min) at the start of each run: ${loads.join('; ')}.`,
  ...(compare ? [`\`[before]\` rows: ${compare}, another build of the CLI measured in the same runs.`] : []),
  '',
  '| operation | wall (median) | CPU user+sys | peak RSS |',
  '|---|---|---|---|',
  ...Object.keys(rows).map(line),
  '',
  ...clis.map((c) => ratios(c.label)),
  ...(compare ? [`- this build ÷ [before]: cold push **${ratio(COLD, COLD + clis[1]!.label)}**, warm push **${ratio(WARM, WARM + clis[1]!.label)}**, pull **${ratio(PULL, PULL + clis[1]!.label)}**.`] : []),
  `- floors: a cold push cannot beat the slower of compressing the layer and the registry taking the compressed bytes ` +
    `(max(${s(FL_GZIP).toFixed(2)}, ${s(FL_PUT).toFixed(2)}) = ${coldFloor.toFixed(2)} s; the gzip child starts under tsx): ` +
    `cold push ÷ floor **${(s(COLD) / coldFloor).toFixed(2)}**; a pull cannot beat the registry serving the layer into a file ` +
    `(${s(FL_GET).toFixed(2)} s): pull ÷ floor **${ratio(PULL, FL_GET)}**.`,
  `- registry storage after the push: tsbuild ${(pushedBytes / MiB).toFixed(0)} MiB, skopeo ${(skopeoBytes / MiB).toFixed(0)} MiB (both gzip).`,
  '- For reference on this machine (full size): buildah push 25 s, docker push 53 s.',
  '',
  'Raw wall times (s), in run order:',
  '',
  ...Object.entries(rows).map(([name, ts]) => `- ${name}: ${ts.map((t) => (t.ms / 1000).toFixed(2)).join(', ')}`),
  ...(profiles.length ? ['', 'Most self time under `--cpu-prof`:', '', ...profiles.map((p) => `- ${p}`)] : []),
  '<!-- registry-bench:end -->',
].join('\n');

process.stdout.write(`${section}\n`);
if (!flag('--no-write') && (flag('--write') || !quick)) {
  // Other benchmarks write their own sections of the same file; only this section is replaced.
  const file = resolve(HERE, 'RESULTS.md');
  const old = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmark results\n';
  const re = /<!-- registry-bench:begin -->[\s\S]*?<!-- registry-bench:end -->/;
  writeFileSync(file, re.test(old) ? old.replace(re, section) : `${old.replace(/\n*$/, '\n\n')}${section}\n`);
}
