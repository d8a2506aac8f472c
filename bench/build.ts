/**
 * Build benchmark: the tsbuild CLI against buildah and Docker BuildKit on the same Dockerfiles,
 * contexts and base images, side by side in one run. See bench/README.md.
 *
 *   node --import tsx bench/build.ts [--quick] [--runs N] [--cases c1,c2,...] [--tools tsbuild,buildah,buildkit]
 *                                    [--dir PATH] [--write | --no-write] [--profile]
 *
 * Must run as root (runc, overlay mounts, a private dockerd). buildah and dockerd are used when
 * installed and skipped otherwise. Every tool works in its own temporary state directory; the
 * private dockerd is stopped by its PID when the run ends, whatever happens.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from './lib/args.ts';
import { makeTree, text, writeC1Files } from './lib/context.ts';
import { PrivateDockerd } from './lib/dockerd.ts';
import { BENCH as HERE, BUSYBOX_TAR, CLI, DEBIAN_TAR, RESULTS, ensureInputs, type Base } from './lib/paths.ts';
import { have, log, removeTree, run, sh } from './lib/proc.ts';
import { summarizeProfile } from './lib/profile.ts';
import { loadAverage, machine, median, ratio, secs, stamp, writeSection } from './lib/report.ts';

const BEGIN = '<!-- bench/build.ts: begin (generated; rerun the benchmark to replace) -->';
const END = '<!-- bench/build.ts: end -->';

const args = parseArgs(process.argv.slice(2));
const flag = args.flag;

type ToolName = 'tsbuild' | 'buildah' | 'buildkit';
type Scenario = 'cold' | 'warm' | 'changed';

interface BuildResult {
  ms: number;
  log: string;
}

/** One builder under test. State lives under `dir`; `reset` gives it a clean cache with the bases loaded. */
interface Tool {
  readonly name: ToolName;
  readonly label: string;
  version(): string;
  /** The FROM reference under which this tool sees the shared base image. */
  baseRef(base: Base): string;
  reset(bases: readonly Base[]): void;
  build(c: BuildSpec, cold: boolean, log: string): BuildResult;
  close(): void;
}

interface BuildSpec {
  context: string;
  dockerfile: string;
  tag: string;
  base: Base;
  args: Record<string, string>;
}

// ---------------------------------------------------------------------------------------------
// Tools

class Tsbuild implements Tool {
  readonly name = 'tsbuild' as const;
  readonly label = 'tsbuild';
  private readonly root: string;
  constructor(
    private readonly dir: string,
    private readonly profileDir: string | undefined,
  ) {
    this.root = `${dir}/root`;
  }
  version(): string {
    return `tsbuild ${run(process.execPath, [CLI, '--version']).stdout.trim()}`;
  }
  baseRef(base: Base): string {
    return base === 'busybox' ? 'busybox:latest' : 'debian:bookworm';
  }
  /** The OCI layout the other tools copy their bases from, so all three run the same image bytes. */
  layout(): string {
    return `${this.root}/oci`;
  }
  reset(bases: readonly Base[]): void {
    removeTree(this.dir);
    mkdirSync(this.dir, { recursive: true });
    for (const b of bases) run(process.execPath, [CLI, 'import', '--root', this.root, b === 'busybox' ? BUSYBOX_TAR : DEBIAN_TAR, '-t', this.baseRef(b)]);
  }
  build(c: BuildSpec, cold: boolean, logFile: string): BuildResult {
    const node = this.profileDir ? ['--cpu-prof', '--cpu-prof-dir', this.profileDir] : [];
    const args = [...node, CLI, 'build', '--root', this.root, '--progress', 'plain', '--network', 'host', '-f', c.dockerfile, '-t', c.tag];
    for (const [k, v] of Object.entries({ BASE: this.baseRef(c.base), ...c.args })) args.push('--build-arg', `${k}=${v}`);
    if (cold) args.push('--no-cache');
    args.push(c.context);
    return { ms: run(process.execPath, args, { logFile }).ms, log: logFile };
  }
  close(): void {
    removeTree(this.dir);
  }
}

class Buildah implements Tool {
  readonly name = 'buildah' as const;
  readonly label = 'buildah';
  private readonly global: string[];
  constructor(
    private readonly dir: string,
    private readonly layout: () => string,
  ) {
    // A private storage so the host's containers-storage is neither used as a cache nor touched.
    this.global = ['--root', `${dir}/storage`, '--runroot', `${dir}/run`, '--storage-driver', 'overlay'];
  }
  static available(): boolean {
    return have('buildah') && have('skopeo');
  }
  version(): string {
    return run('buildah', ['--version']).stdout.trim();
  }
  baseRef(base: Base): string {
    return base === 'busybox' ? 'localhost/busybox:latest' : 'localhost/debian:bookworm';
  }
  reset(bases: readonly Base[]): void {
    removeTree(this.dir);
    mkdirSync(this.dir, { recursive: true });
    for (const b of bases) {
      const src = b === 'busybox' ? 'busybox:latest' : 'debian:bookworm';
      run('skopeo', ['copy', '--quiet', `oci:${this.layout()}:${src}`, `containers-storage:[overlay@${this.dir}/storage+${this.dir}/run]${this.baseRef(b)}`]);
    }
  }
  build(c: BuildSpec, cold: boolean, logFile: string): BuildResult {
    const args = [...this.global, 'build', '--layers', '--network', 'host', '--runtime', 'runc', '--pull=never', '-f', c.dockerfile, '-t', c.tag];
    for (const [k, v] of Object.entries({ BASE: this.baseRef(c.base), ...c.args })) args.push('--build-arg', `${k}=${v}`);
    if (cold) args.push('--no-cache');
    args.push(c.context);
    return { ms: run('buildah', args, { logFile }).ms, log: logFile };
  }
  close(): void {
    run('buildah', [...this.global, 'rm', '--all'], { allowFail: true });
    removeTree(this.dir);
  }
}

class BuildKit implements Tool {
  readonly name = 'buildkit' as const;
  readonly label = 'Docker BuildKit';
  private readonly daemon: PrivateDockerd;
  private readonly tags = new Set<string>();
  constructor(
    dir: string,
    private readonly layout: () => string,
    daemonLog: string,
  ) {
    this.daemon = new PrivateDockerd(dir, daemonLog);
  }
  static available(): boolean {
    return PrivateDockerd.available() && have('skopeo');
  }
  start(): void {
    this.daemon.start();
  }
  version(): string {
    return this.daemon.version();
  }
  baseRef(base: Base): string {
    return base === 'busybox' ? 'busybox:latest' : 'debian:bookworm';
  }
  private prune(): void {
    if (this.tags.size > 0) this.daemon.docker(['rmi', '-f', ...this.tags], { allowFail: true });
    this.tags.clear();
    this.daemon.docker(['builder', 'prune', '-af']);
  }
  reset(bases: readonly Base[]): void {
    this.prune();
    for (const b of bases) {
      const ref = this.baseRef(b);
      run('skopeo', ['copy', '--quiet', '--dest-daemon-host', this.daemon.socket, `oci:${this.layout()}:${ref}`, `docker-daemon:${ref}`]);
    }
  }
  build(c: BuildSpec, cold: boolean, logFile: string): BuildResult {
    if (cold) {
      this.daemon.docker(['rmi', '-f', c.tag], { allowFail: true });
      this.daemon.docker(['builder', 'prune', '-af'], { logFile });
    }
    this.tags.add(c.tag);
    const args = ['build', '--network', 'host', '--progress', 'plain', '-f', c.dockerfile, '-t', c.tag];
    for (const [k, v] of Object.entries({ BASE: this.baseRef(c.base), ...c.args })) args.push('--build-arg', `${k}=${v}`);
    args.push(c.context);
    return { ms: this.daemon.docker(args, { logFile }).ms, log: logFile };
  }
  close(): void {
    if (this.daemon.running) {
      try {
        this.prune();
      } catch {
        // Stopping the daemon matters more than emptying it; its data dir is removed with it.
      }
    }
    this.daemon.stop();
  }
}

// ---------------------------------------------------------------------------------------------
// Cases

interface Case {
  id: string;
  title: string;
  base: Base;
  scenarios: readonly Scenario[];
  runs: number;
  args: Record<string, string>;
  /** Writes the context (besides the Dockerfile, which comes from bench/cases/<id>/). */
  prepare(ctx: string): void;
  /** Makes a one-file change in the context for the `changed` scenario; `n` makes every change distinct. */
  change?(ctx: string, n: number): void;
  reference?: { label: string; cmd: (ctx: string) => string };
  /** The goals of the performance work, each a ratio against the reference or another tool in one scenario. */
  goals: readonly Goal[];
}

interface Goal {
  scenario: Scenario;
  against: 'reference' | ToolName;
  ratio: number;
  text: string;
}

function cases(quick: boolean, runs: number | undefined): Case[] {
  const treeFiles = quick ? 5000 : 50000;
  const bigMiB = quick ? 64 : 1024;
  const small = runs ?? 5;
  const large = runs ?? 1;
  return [
    {
      id: 'c1',
      title: 'C1 small image: ENV, 2 RUN, WORKDIR, COPY of 20 files, CMD',
      base: 'busybox',
      scenarios: ['cold', 'warm', 'changed'],
      runs: small,
      args: {},
      prepare(ctx) {
        writeC1Files(ctx);
      },
      change(ctx, n) {
        writeFileSync(`${ctx}/files/f7.txt`, `file 7, change ${n}\n`);
      },
      reference: { label: '`node -e 0`', cmd: () => 'node -e 0' },
      goals: [
        { scenario: 'cold', against: 'buildkit', ratio: 1, text: 'cold ≤ 1.0× BuildKit' },
        { scenario: 'warm', against: 'buildkit', ratio: 1.2, text: 'warm ≤ 1.2× BuildKit' },
        { scenario: 'changed', against: 'buildkit', ratio: 1.5, text: 'changed ≤ 1.5× BuildKit' },
      ],
    },
    {
      id: 'c2',
      title: `C2 COPY of a ${treeFiles.toLocaleString('en')}-file tree`,
      base: 'busybox',
      scenarios: ['cold', 'warm', 'changed'],
      // Each of its nine builds takes minutes at full size, so one run unless asked for more.
      runs: quick ? small : large,
      args: {},
      prepare(ctx) {
        makeTree(`${ctx}/tree`, treeFiles);
      },
      change(ctx, n) {
        writeFileSync(`${ctx}/tree/d0003/f321.txt`, `change ${n}\n`);
      },
      reference: { label: '`tar -c | sha256sum`', cmd: (ctx) => `tar -cf - -C ${ctx}/tree . | sha256sum` },
      goals: [
        { scenario: 'cold', against: 'reference', ratio: 3, text: 'cold ≤ 3× `tar -c | sha256sum`' },
        { scenario: 'changed', against: 'buildkit', ratio: 0.5, text: 'changed ≤ 0.5× BuildKit' },
      ],
    },
    {
      id: 'c3',
      title: `C3 RUN writing ${bigMiB} MiB random + ${bigMiB} MiB zeros`,
      base: 'busybox',
      scenarios: ['cold'],
      runs: large,
      args: { MIB: String(bigMiB) },
      prepare() {},
      goals: [],
    },
    {
      id: 'c4',
      title: 'C4 debian bookworm + `apt-get update && apt-get install -y curl`',
      base: 'debian',
      scenarios: ['cold'],
      runs: large,
      args: {},
      prepare() {},
      goals: [{ scenario: 'cold', against: 'buildkit', ratio: 1, text: 'cold ≤ 1.0× BuildKit' }],
    },
    {
      id: 'c5',
      title: 'C5 20 RUN steps',
      base: 'busybox',
      scenarios: ['cold', 'warm'],
      runs: small,
      args: {},
      prepare() {},
      goals: [
        { scenario: 'cold', against: 'buildkit', ratio: 0.9, text: 'cold ≤ 0.9× BuildKit' },
        { scenario: 'warm', against: 'buildkit', ratio: 1, text: 'warm ≤ 1.0× BuildKit' },
      ],
    },
  ];
}

// ---------------------------------------------------------------------------------------------
// Measuring

interface CaseResult {
  c: Case;
  times: Map<string, number[]>; // `${tool}/${scenario}` → ms per run
  refMs: number[];
  skipped: string[];
}

function measureCase(c: Case, tools: readonly Tool[], work: string, logs: string): CaseResult {
  const ctx = `${work}/ctx-${c.id}`;
  removeTree(ctx);
  mkdirSync(ctx, { recursive: true });
  c.prepare(ctx);
  const dockerfile = `${work}/${c.id}.Dockerfile`;
  copyFileSync(resolve(HERE, 'cases', c.id, 'Dockerfile'), dockerfile);
  // Every tool reads the context from a warm page cache.
  sh(`tar -cf - -C ${ctx} . | cat >/dev/null`);

  const res: CaseResult = { c, times: new Map(), refMs: [], skipped: [] };
  const live: Tool[] = [];
  for (const t of tools) {
    try {
      t.reset([c.base]);
      live.push(t);
    } catch (e) {
      res.skipped.push(`${t.label}: ${(e as Error).message.split('\n')[0]}`);
      log(`  ${t.label} skipped for ${c.id}: ${(e as Error).message}`);
    }
  }
  let change = 0;
  for (let r = 0; r < c.runs; r++) {
    // Rotate the order so no tool always runs first (or always right after the heaviest one).
    const order = live.map((_, i) => live[(i + r) % live.length]!);
    for (const t of order) {
      if (res.skipped.some((s) => s.startsWith(t.label + ':'))) continue;
      const spec: BuildSpec = { context: ctx, dockerfile, tag: `bench-${c.id}:latest`, base: c.base, args: c.args };
      try {
        for (const s of c.scenarios) {
          if (s === 'changed') c.change!(ctx, ++change);
          const file = `${logs}/${c.id}-${t.name}-${s}-${r + 1}.log`;
          const b = t.build(spec, s === 'cold', file);
          const key = `${t.name}/${s}`;
          res.times.set(key, [...(res.times.get(key) ?? []), b.ms]);
          log(`  run ${r + 1}/${c.runs} ${c.id} ${t.label} ${s}: ${(b.ms / 1000).toFixed(2)} s`);
        }
      } catch (e) {
        res.skipped.push(`${t.label}: ${(e as Error).message.split('\n')[0]}`);
        log(`  ${t.label} failed on ${c.id}: ${(e as Error).message}`);
      }
    }
    if (c.reference) {
      const ms = sh(c.reference.cmd(ctx)).ms;
      res.refMs.push(ms);
      log(`  run ${r + 1}/${c.runs} ${c.id} ${c.reference.label}: ${(ms / 1000).toFixed(2)} s`);
    }
  }
  removeTree(ctx);
  return res;
}

// ---------------------------------------------------------------------------------------------
// Profiling: which functions of the tsbuild process take the time

function profileTsbuild(c: Case, work: string, profDir: string, logs: string): string[] {
  // The case's first goal names the scenario worth profiling (C1: cold, the CI build).
  const scenario = c.goals[0]?.scenario ?? 'cold';
  const dir = `${profDir}/${c.id}-${scenario}`;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const ctx = `${work}/ctx-${c.id}`;
  removeTree(ctx);
  mkdirSync(ctx, { recursive: true });
  c.prepare(ctx);
  const dockerfile = `${work}/${c.id}.Dockerfile`;
  copyFileSync(resolve(HERE, 'cases', c.id, 'Dockerfile'), dockerfile);
  const t = new Tsbuild(`${work}/tsbuild-prof`, dir);
  try {
    t.reset([c.base]);
    const spec: BuildSpec = { context: ctx, dockerfile, tag: `bench-${c.id}:latest`, base: c.base, args: c.args };
    // A warm scenario is profiled after a first build has filled the cache.
    if (scenario !== 'cold') new Tsbuild(`${work}/tsbuild-prof`, undefined).build(spec, false, `${logs}/${c.id}-profile-prime.log`);
    const logFile = `${logs}/${c.id}-profile-${scenario}.log`;
    const b = t.build(spec, scenario === 'cold', logFile);
    const steps = readFileSync(logFile, 'utf8').split('\n').filter((l) => /^#\d+ (DONE|CACHED)|^#\d+ \[/.test(l));
    const out = [`${c.id} ${scenario} under --cpu-prof: ${(b.ms / 1000).toFixed(2)} s wall; step lines from --progress plain:`, ...steps.map((l) => '  ' + l)];
    for (const f of readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).sort()) {
      out.push(`${dir}/${f}:`, ...summarizeProfile(`${dir}/${f}`, 12).map((l) => '  ' + l));
    }
    return out;
  } finally {
    t.close();
    removeTree(ctx);
  }
}

// ---------------------------------------------------------------------------------------------
// Report

function render(results: readonly CaseResult[], tools: readonly Tool[], versions: string[], p: { quick: boolean; runs: number | undefined }, profiles: string[]): string {
  const has = (n: ToolName): boolean => tools.some((t) => t.name === n);
  const lines = [
    '## Build benchmark (`bench/build.ts`)',
    '',
    `Recorded ${stamp()} UTC with \`node --import tsx bench/build.ts${p.quick ? ' --quick' : ''}${p.runs ? ` --runs ${p.runs}` : ''}\`; medians of the runs given per case.`,
    `Machine: ${machine()}, ${loadAverage()} load at the end, Node ${process.version}.`,
    `Tools: ${versions.join('; ')}.`,
    'Times are wall-clock seconds of the whole command (tsbuild: `node packages/cli/dist/tsbuild.js build`, a fresh process per build).',
    'Cold: tsbuild `--no-cache`, buildah `--no-cache`, BuildKit after `docker builder prune -af` and removing the image. Warm: the same build again.',
    'Changed: one context file rewritten, then built with the cache. All three start from the same base image bytes (tsbuild imports the tarball; the others get it with `skopeo copy` from tsbuild\'s OCI layout).',
    '',
    '| case | scenario | runs | tsbuild s | buildah s | BuildKit s | tsbuild ÷ buildah | tsbuild ÷ BuildKit | reference s | goal |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---|',
  ];
  for (const r of results) {
    const m = (tool: ToolName, s: Scenario): number => median(r.times.get(`${tool}/${s}`) ?? []);
    const ref = median(r.refMs);
    for (const s of r.c.scenarios) {
      const ours = m('tsbuild', s);
      const goal = r.c.goals
        .filter((g) => g.scenario === s)
        .map((g) => {
          const q = ours / (g.against === 'reference' ? ref : m(g.against, s));
          return `${g.text}: ${Number.isNaN(q) ? 'not measured' : `${q.toFixed(2)}× — ${q <= g.ratio ? 'met' : 'missed'}`}`;
        })
        .join('; ');
      const refCell = r.c.reference && s === r.c.scenarios[0] ? `${secs(ref)} (${r.c.reference.label})` : '';
      lines.push(
        `| ${r.c.title} | ${s} | ${r.c.runs} | ${secs(ours)} | ${has('buildah') ? secs(m('buildah', s)) : 'n/a'} | ${has('buildkit') ? secs(m('buildkit', s)) : 'n/a'} | ${ratio(ours, m('buildah', s))} | ${ratio(ours, m('buildkit', s))} | ${refCell} | ${goal} |`,
      );
    }
  }
  const notes = results.flatMap((r) => r.skipped.map((s) => `- ${r.c.id}: ${s}`));
  if (notes.length > 0) lines.push('', 'Not measured:', '', ...notes);
  lines.push('', 'Raw times (s) per run, in run order:', '');
  for (const r of results) {
    const parts = [...r.times.entries()].map(([k, v]) => `${k} ${v.map((x) => secs(x)).join(', ')}`);
    if (r.refMs.length > 0) parts.push(`reference ${r.refMs.map((x) => secs(x)).join(', ')}`);
    lines.push(`- ${r.c.id}: ${parts.join('; ')}`);
  }
  if (profiles.length > 0) lines.push('', 'tsbuild under `node --cpu-prof` (self time per function, main thread and workers):', '', '```', ...profiles, '```');
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench/build.ts runs builds with runc and overlay mounts: run it as root');
  ensureInputs();
  const quick = flag('--quick');
  const runs = args.runs();
  const only = args.list('--cases');
  const wantTools = new Set(args.list('--tools') ?? ['tsbuild', 'buildah', 'buildkit']);
  const parent = args.option('--dir') ?? tmpdir();
  mkdirSync(parent, { recursive: true });
  const work = mkdtempSync(`${realpathSync(parent)}/tsbuild-bench-build-`);
  const logs = resolve(HERE, 'work/build-logs');
  rmSync(logs, { recursive: true, force: true });
  mkdirSync(logs, { recursive: true });

  const ts = new Tsbuild(`${work}/tsbuild`, undefined);
  const tools: Tool[] = [ts];
  let docker: BuildKit | undefined;
  const stop = (): void => {
    for (const t of tools) {
      try {
        t.close();
      } catch (e) {
        log(`cleanup of ${t.label}: ${(e as Error).message}`);
      }
    }
    removeTree(work);
  };
  process.once('SIGINT', () => {
    stop();
    process.exit(130);
  });
  process.once('SIGTERM', () => {
    stop();
    process.exit(143);
  });
  try {
    if (wantTools.has('buildah')) {
      if (Buildah.available()) tools.push(new Buildah(`${work}/buildah`, () => ts.layout()));
      else log('buildah or skopeo not installed: skipping buildah');
    }
    if (wantTools.has('buildkit')) {
      if (BuildKit.available()) {
        docker = new BuildKit(`${work}/docker`, () => ts.layout(), `${logs}/dockerd.log`);
        tools.push(docker);
        log('starting a private dockerd');
        docker.start();
      } else log('dockerd or /usr/bin/docker not installed: skipping Docker BuildKit');
    }
    const versions = tools.map((t) => t.version());
    log(`tools: ${versions.join('; ')}; work dir ${work}; logs in ${logs}`);

    const selected = cases(quick, runs).filter((c) => !only || only.includes(c.id));
    const results: CaseResult[] = [];
    for (const c of selected) {
      log(`${c.title} (${c.runs} run${c.runs === 1 ? '' : 's'})`);
      // tsbuild goes first: its layout is where the others copy the base image from.
      results.push(measureCase(c, tools, work, logs));
    }
    const profiles: string[] = [];
    if (flag('--profile')) {
      const profDir = resolve(HERE, 'work/build-prof');
      for (const c of selected.filter((c) => c.goals.length > 0)) {
        log(`profiling tsbuild on ${c.id}`);
        profiles.push(...profileTsbuild(c, work, profDir, logs), '');
      }
    }
    const report = render(results, tools, versions, { quick, runs }, profiles);
    process.stdout.write(report);
    if (flag('--write') || (!quick && !flag('--no-write'))) {
      writeSection(RESULTS, BEGIN, END, report);
      log(`wrote ${RESULTS}`);
    }
  } finally {
    stop();
    if (docker) log('private dockerd stopped');
  }
}

await main();
