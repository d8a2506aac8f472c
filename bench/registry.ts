/**
 * Registry benchmark: `tsbuild push` / `tsbuild pull` of the C3 image (one RUN layer of random
 * bytes plus as many zeros) against `skopeo copy` of the same image, to and from a loopback
 * docker-registry, in the same run. See bench/README.md.
 *
 *   node --import tsx bench/registry.ts [--quick] [--runs N] [--dir PATH] [--write] [--profile]
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { busyboxTar } from '../test/helpers/base.ts';
import { startRegistry, type RunningRegistry } from '../test/helpers/registry.ts';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..');
const CLI = join(REPO, 'packages/cli/dist/tsbuild.js');
const MiB = 1 << 20;

const args = process.argv.slice(2);
const flag = (f: string): boolean => args.includes(f);
const option = (f: string): string | undefined => {
  const i = args.indexOf(f);
  return i >= 0 ? args[i + 1] : undefined;
};
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

function tsbuild(root: string, argv: string[], nodeFlags: string[] = []): Timed {
  return timed('node', [...nodeFlags, CLI, ...argv], { TSBUILD_ROOT: root });
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

if (!existsSync(CLI)) spawnSync('node', [join(REPO, 'scripts/build.mjs')], { stdio: 'inherit' });
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
  process.stderr.write(`  ${name.padEnd(34)} ${(t.ms / 1000).toFixed(2)} s  cpu ${(t.cpuMs / 1000).toFixed(2)} s  rss ${Math.round(t.maxRssKb / 1024)} MB\n`);
};
let pushedBytes = 0;
let skopeoBytes = 0;
const profiles: string[] = [];

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

  for (let run = 0; run < runs; run++) {
    process.stderr.write(`run ${run + 1}/${runs}\n`);
    const tsbuildFirst = run % 2 === 0;

    const pushSide = async (): Promise<void> => {
      for (const b of blobNames(root)) if (!built.has(b)) rmSync(join(root, 'oci/blobs/sha256', b));
      const cold = await fresh();
      record('tsbuild push (cold: gzip + upload)', tsbuild(root, ['push', 'c3:latest', `${cold.host}/c3:1`]));
      pushedBytes = dirBytes(join(cold.dir, 'data'));
      const warm = await fresh();
      record('tsbuild push (warm: upload only)', tsbuild(root, ['push', 'c3:latest', `${warm.host}/c3:1`]));
      const dest = join(work, `pull-tsbuild-${run}`);
      record('tsbuild pull (fresh root)', tsbuild(dest, ['pull', `${warm.host}/c3:1`]));
      rmSync(dest, { recursive: true, force: true });
    };
    const skopeoSide = async (): Promise<void> => {
      const reg = await fresh();
      record('skopeo copy oci: → docker://', timed('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', ociRef, `docker://${reg.host}/c3-skopeo:1`]));
      skopeoBytes = dirBytes(join(reg.dir, 'data'));
      const dest = join(work, `pull-skopeo-${run}`);
      record('skopeo copy docker:// → oci:', timed('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${reg.host}/c3-skopeo:1`, `oci:${dest}:c3`]));
      // The layout just pulled holds gzip layers: pushing it is skopeo's equivalent of a warm push.
      const empty = await fresh();
      record('skopeo copy gzip oci: → docker://', timed('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${dest}:c3`, `docker://${empty.host}/c3-skopeo:1`]));
      rmSync(dest, { recursive: true, force: true });
    };
    if (tsbuildFirst) {
      await pushSide();
      await skopeoSide();
    } else {
      await skopeoSide();
      await pushSide();
    }
    await stopAll();
  }

  if (flag('--profile')) {
    // One more cold push and one pull under the V8 profiler, to see where the time goes.
    const profDir = join(HERE, 'work', 'prof-registry');
    rmSync(profDir, { recursive: true, force: true });
    mkdirSync(profDir, { recursive: true });
    for (const b of blobNames(root)) if (!built.has(b)) rmSync(join(root, 'oci/blobs/sha256', b));
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
const ratio = (a: string, b: string): string => (s(a) / s(b)).toFixed(2);
const cpu = cpus()[0]?.model ?? 'unknown CPU';
const section = [
  '<!-- registry-bench:begin -->',
  '## Registry: push and pull of C3 (`bench/registry.ts`)',
  '',
  `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB RAM; ` +
    `image: busybox + one layer of ${mib} MiB random and ${mib} MiB zeros (${quick ? 'quick' : 'full'} size); ` +
    `loopback docker-registry 2.8, a fresh one for every push; medians of ${runs} runs; wall time includes process start.`,
  '',
  '| operation | wall (median) | CPU user+sys | peak RSS |',
  '|---|---|---|---|',
  ...Object.keys(rows).map(line),
  '',
  `- cold push ÷ skopeo push: **${ratio('tsbuild push (cold: gzip + upload)', 'skopeo copy oci: → docker://')}**; ` +
    `warm push ÷ skopeo push of gzip layers: **${ratio('tsbuild push (warm: upload only)', 'skopeo copy gzip oci: → docker://')}**; ` +
    `pull ÷ skopeo pull: **${ratio('tsbuild pull (fresh root)', 'skopeo copy docker:// → oci:')}** (below 1 = tsbuild faster).`,
  `- registry storage after the push: tsbuild ${(pushedBytes / MiB).toFixed(0)} MiB, skopeo ${(skopeoBytes / MiB).toFixed(0)} MiB (both gzip).`,
  '- For reference on this machine (full size): buildah push 25 s, docker push 53 s.',
  ...(profiles.length ? ['', 'Most self time under `--cpu-prof`:', '', ...profiles.map((p) => `- ${p}`)] : []),
  '<!-- registry-bench:end -->',
].join('\n');

process.stdout.write(`${section}\n`);
if (flag('--write') || !quick) {
  // Other benchmarks write their own sections of the same file; only this section is replaced.
  const file = resolve(HERE, 'RESULTS.md');
  const old = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmark results\n';
  const re = /<!-- registry-bench:begin -->[\s\S]*?<!-- registry-bench:end -->/;
  writeFileSync(file, re.test(old) ? old.replace(re, section) : `${old.replace(/\n*$/, '\n\n')}${section}\n`);
}
