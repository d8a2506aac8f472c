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
import { type SpawnSyncOptions, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, '..');
const CLI = resolve(REPO, 'packages/cli/dist/tsbuild.js');
const BUSYBOX_TAR = process.env.TSBUILD_BENCH_BUSYBOX ?? '/var/cache/tsbuild-test/busybox.tar';
const DEBIAN_TAR = process.env.TSBUILD_BENCH_DEBIAN ?? '/var/cache/tsbuild-test/debian-bookworm.tar';
const DOCKER = '/usr/bin/docker'; // another docker client may come first on PATH, without BuildKit support
const BEGIN = '<!-- bench/build.ts: begin (generated; rerun the benchmark to replace) -->';
const END = '<!-- bench/build.ts: end -->';

const argv = process.argv.slice(2);
const flag = (name: string): boolean => argv.includes(name);
function option(name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}

type Base = 'busybox' | 'debian';
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
// Processes

function log(s: string): void {
  process.stderr.write(s + '\n');
}

function run(cmd: string, args: readonly string[], opts: SpawnSyncOptions & { logFile?: string; allowFail?: boolean } = {}): { ms: number; status: number; stdout: string } {
  const fd = opts.logFile ? openSync(opts.logFile, 'a') : undefined;
  const start = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { ...opts, stdio: ['ignore', fd === undefined ? 'pipe' : fd, fd === undefined ? 'pipe' : fd], encoding: 'utf8', maxBuffer: 64 << 20 });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (fd !== undefined) closeSync(fd);
  const status = r.status ?? 128;
  if (r.error) throw r.error;
  if (status !== 0 && !opts.allowFail) {
    const detail = opts.logFile ? `see ${opts.logFile}` : `${r.stderr ?? ''}`.trim().slice(-2000);
    throw new Error(`${cmd} ${args.join(' ')} exited ${status}${r.signal ? ` (${r.signal})` : ''}: ${detail}`);
  }
  return { ms, status, stdout: typeof r.stdout === 'string' ? r.stdout : '' };
}

const sh = (script: string, opts: Parameters<typeof run>[2] = {}): ReturnType<typeof run> => run('bash', ['-o', 'pipefail', '-c', script], opts);
const have = (bin: string): boolean => spawnSync('bash', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0 || existsSync(bin);

/** Overlay and bind mounts left under `dir` by a tool (buildah's storage, a killed build) must go before rm -rf. */
function unmountUnder(dir: string): void {
  const real = realpathSync(dir);
  const points = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .map((p) => p.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p === real || p.startsWith(real + '/'))
    .sort((a, b) => b.length - a.length);
  for (const p of points) spawnSync('umount', ['-l', p], { stdio: 'ignore' });
}

function removeTree(dir: string): void {
  if (!existsSync(dir)) return;
  unmountUnder(dir);
  rmSync(dir, { recursive: true, force: true });
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
  private daemon: ChildProcess | undefined;
  private readonly env: NodeJS.ProcessEnv;
  private readonly tags = new Set<string>();
  constructor(
    private readonly dir: string,
    private readonly layout: () => string,
    private readonly daemonLog: string,
  ) {
    this.env = { ...process.env, DOCKER_HOST: `unix://${dir}/docker.sock`, DOCKER_BUILDKIT: '1', DOCKER_CONFIG: `${dir}/config` };
  }
  static available(): boolean {
    return have('dockerd') && existsSync(DOCKER) && have('skopeo');
  }
  start(): void {
    removeTree(this.dir);
    mkdirSync(`${this.dir}/config`, { recursive: true });
    const out = openSync(this.daemonLog, 'a');
    // Nothing on the host network changes: no bridge, no iptables, no forwarding.
    this.daemon = spawn(
      'dockerd',
      [
        '--data-root', `${this.dir}/docker`, '--exec-root', `${this.dir}/exec`, '--pidfile', `${this.dir}/docker.pid`,
        '--host', `unix://${this.dir}/docker.sock`, '--storage-driver', 'overlay2', '--iptables=false', '--ip6tables=false',
        '--ip-masq=false', '--bridge=none', '--ip-forward=false',
      ],
      { stdio: ['ignore', out, out], detached: true },
    );
    closeSync(out);
    for (let i = 0; i < 120; i++) {
      if (this.daemon.exitCode !== null) break;
      if (spawnSync(DOCKER, ['version'], { env: this.env, stdio: 'ignore' }).status === 0) return;
      spawnSync('sleep', ['0.5']);
    }
    this.close();
    throw new Error(`dockerd did not come up; see ${this.daemonLog}`);
  }
  version(): string {
    return `Docker ${run(DOCKER, ['version', '--format', '{{.Server.Version}}'], { env: this.env }).stdout.trim()} (built-in BuildKit)`;
  }
  baseRef(base: Base): string {
    return base === 'busybox' ? 'busybox:latest' : 'debian:bookworm';
  }
  private prune(): void {
    if (this.tags.size > 0) run(DOCKER, ['rmi', '-f', ...this.tags], { env: this.env, allowFail: true });
    this.tags.clear();
    run(DOCKER, ['builder', 'prune', '-af'], { env: this.env });
  }
  reset(bases: readonly Base[]): void {
    this.prune();
    for (const b of bases) {
      const ref = this.baseRef(b);
      run('skopeo', ['copy', '--quiet', '--dest-daemon-host', `unix://${this.dir}/docker.sock`, `oci:${this.layout()}:${ref}`, `docker-daemon:${ref}`]);
    }
  }
  build(c: BuildSpec, cold: boolean, logFile: string): BuildResult {
    if (cold) {
      run(DOCKER, ['rmi', '-f', c.tag], { env: this.env, allowFail: true });
      run(DOCKER, ['builder', 'prune', '-af'], { env: this.env, logFile });
    }
    this.tags.add(c.tag);
    const args = ['build', '--network', 'host', '--progress', 'plain', '-f', c.dockerfile, '-t', c.tag];
    for (const [k, v] of Object.entries({ BASE: this.baseRef(c.base), ...c.args })) args.push('--build-arg', `${k}=${v}`);
    args.push(c.context);
    return { ms: run(DOCKER, args, { env: this.env, logFile }).ms, log: logFile };
  }
  close(): void {
    const d = this.daemon;
    this.daemon = undefined;
    if (d?.pid !== undefined && d.exitCode === null) {
      try {
        this.prune();
      } catch {
        // Stopping the daemon matters more than emptying it; its data dir is removed below.
      }
      d.kill('SIGTERM');
      for (let i = 0; i < 60 && d.exitCode === null && d.signalCode === null && alive(d.pid); i++) spawnSync('sleep', ['0.5']);
      if (alive(d.pid)) d.kill('SIGKILL');
    }
    removeTree(this.dir);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // A zombie (exited, not yet reaped because the event loop is blocked) still answers kill 0.
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
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
  goal?: { scenario: Scenario; against: 'reference' | ToolName; ratio: number; text: string };
}

/** Deterministic bytes so every run and every tool reads the same tree. */
function text(seed: number, len: number): string {
  let s = '';
  let x = seed * 2654435761 + 1;
  while (s.length < len) {
    x = (x * 1103515245 + 12345) >>> 0;
    s += x.toString(36);
  }
  return s.slice(0, len);
}

function makeTree(dir: string, files: number): void {
  const perDir = 100;
  for (let d = 0; d * perDir < files; d++) {
    const sub = `${dir}/d${String(d).padStart(4, '0')}`;
    mkdirSync(sub, { recursive: true });
    for (let i = d * perDir; i < Math.min(files, (d + 1) * perDir); i++) writeFileSync(`${sub}/f${i}.txt`, text(i, (i * 37) % 4096));
  }
}

function cases(quick: boolean, runs: number | undefined): Case[] {
  const treeFiles = quick ? 5000 : 50000;
  const bigMiB = quick ? 64 : 1024;
  const small = runs ?? 3;
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
        mkdirSync(`${ctx}/files`, { recursive: true });
        for (let i = 1; i <= 20; i++) writeFileSync(`${ctx}/files/f${i}.txt`, `file ${i}\n${text(i, 200)}\n`);
      },
      change(ctx, n) {
        writeFileSync(`${ctx}/files/f7.txt`, `file 7, change ${n}\n`);
      },
      reference: { label: '`node -e 0`', cmd: () => 'node -e 0' },
      goal: { scenario: 'warm', against: 'reference', ratio: 2, text: 'warm no-op ≤ 2× `node -e 0`' },
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
      goal: { scenario: 'cold', against: 'reference', ratio: 2, text: 'cold ≤ 2× `tar -c | sha256sum`' },
    },
    {
      id: 'c3',
      title: `C3 RUN writing ${bigMiB} MiB random + ${bigMiB} MiB zeros`,
      base: 'busybox',
      scenarios: ['cold'],
      runs: large,
      args: { MIB: String(bigMiB) },
      prepare() {},
      goal: { scenario: 'cold', against: 'buildkit', ratio: 0.5, text: 'cold ≤ 0.5× BuildKit' },
    },
    {
      id: 'c4',
      title: 'C4 debian bookworm + `apt-get update && apt-get install -y curl`',
      base: 'debian',
      scenarios: ['cold'],
      runs: large,
      args: {},
      prepare() {},
      goal: { scenario: 'cold', against: 'buildkit', ratio: 1, text: 'cold ≤ 1× BuildKit' },
    },
    {
      id: 'c5',
      title: 'C5 20 RUN steps',
      base: 'busybox',
      scenarios: ['cold', 'warm'],
      runs: small,
      args: {},
      prepare() {},
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

function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
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

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

function summarizeProfile(file: string, top: number): string[] {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const n = byId.get(p.samples[i]!);
    if (!n) continue;
    const f = n.callFrame;
    const where = f.url ? `${f.url.replace(/^file:\/\//, '').replace(REPO + '/', '')}:${f.lineNumber + 1}` : '';
    const key = `${f.functionName || '(anonymous)'} ${where}`.trim();
    self.set(key, (self.get(key) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  const total = (p.endTime - p.startTime) / 1000;
  const rows = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  return [`profiled ${total.toFixed(0)} ms of the main thread`, ...rows.map(([k, us]) => `${(us / 1000).toFixed(0).padStart(6)} ms  ${k}`)];
}

function profileTsbuild(c: Case, work: string, profDir: string, logs: string): string[] {
  const scenario = c.goal?.scenario ?? 'cold';
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

function secs(ms: number): string {
  return Number.isNaN(ms) ? '–' : (ms / 1000).toFixed(2);
}
function ratio(a: number, b: number): string {
  return Number.isNaN(a) || Number.isNaN(b) ? '–' : `${(a / b).toFixed(2)}×`;
}

function render(results: readonly CaseResult[], tools: readonly Tool[], versions: string[], p: { quick: boolean; runs: number | undefined }, profiles: string[]): string {
  const has = (n: ToolName): boolean => tools.some((t) => t.name === n);
  const lines = [
    '## Build benchmark (`bench/build.ts`)',
    '',
    `Recorded ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC with \`node --import tsx bench/build.ts${p.quick ? ' --quick' : ''}${p.runs ? ` --runs ${p.runs}` : ''}\`; medians of the runs given per case.`,
    `Machine: ${availableParallelism()} cores (${cpus()[0]?.model ?? 'unknown CPU'}), ${Math.round(totalmem() / 2 ** 30)} GiB RAM, ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')} load at the end, Node ${process.version}.`,
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
      let goal = '';
      if (r.c.goal?.scenario === s) {
        const against = r.c.goal.against === 'reference' ? ref : m(r.c.goal.against, s);
        const q = ours / against;
        goal = `${r.c.goal.text}: ${Number.isNaN(q) ? 'not measured' : `${q.toFixed(2)}× — ${q <= r.c.goal.ratio ? 'met' : 'missed'}`}`;
      }
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

/** Replaces this benchmark's section of RESULTS.md and keeps everything else in the file. */
function writeSection(section: string): void {
  const file = resolve(HERE, 'RESULTS.md');
  const old = existsSync(file) ? readFileSync(file, 'utf8') : '';
  const block = `${BEGIN}\n${section}${END}\n`;
  const a = old.indexOf(BEGIN);
  const b = old.indexOf(END);
  const next = a >= 0 && b > a ? old.slice(0, a) + block + old.slice(b + END.length).replace(/^\n/, '') : `${old}${old && !old.endsWith('\n\n') ? (old.endsWith('\n') ? '\n' : '\n\n') : ''}${block}`;
  writeFileSync(file, next);
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench/build.ts runs builds with runc and overlay mounts: run it as root');
  if (!existsSync(CLI)) run('pnpm', ['build'], { cwd: REPO });
  for (const f of [BUSYBOX_TAR, DEBIAN_TAR]) {
    if (!existsSync(f)) {
      log(`making ${f}`);
      run('bash', [resolve(REPO, 'fixtures/bases', f === BUSYBOX_TAR ? 'busybox.sh' : 'debian.sh'), f], { stdio: 'inherit' });
    }
  }
  const quick = flag('--quick');
  const runsOpt = option('--runs');
  const runs = runsOpt === undefined ? undefined : Math.max(1, Number.parseInt(runsOpt, 10) || 1);
  const only = option('--cases')?.split(',');
  const wantTools = new Set((option('--tools') ?? 'tsbuild,buildah,buildkit').split(','));
  const parent = option('--dir') ?? tmpdir();
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
      for (const c of selected.filter((c) => c.goal || c.id === 'c5')) {
        log(`profiling tsbuild on ${c.id}`);
        profiles.push(...profileTsbuild(c, work, profDir, logs), '');
      }
    }
    const report = render(results, tools, versions, { quick, runs }, profiles);
    process.stdout.write(report);
    if (flag('--write') || (!quick && !flag('--no-write'))) {
      writeSection(report);
      log(`wrote ${resolve(HERE, 'RESULTS.md')}`);
    }
  } finally {
    stop();
    if (docker) log('private dockerd stopped');
  }
}

await main();
