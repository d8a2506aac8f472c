/**
 * The builders bench/cache.ts compares, each as a fresh CI runner has it: how each is asked to
 * build with a remote cache, and what its output says about which steps were cached.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import type { PrivateDockerd } from './dockerd.ts';
import { REPO, type Base } from './paths.ts';
import { have, removeTree, run } from './proc.ts';
import { bytes } from './report.ts';

export type ToolName = 'tsbuild' | 'buildah' | 'buildkit';
export const LABEL: Record<ToolName, string> = { tsbuild: 'tsbuild', buildah: 'buildah', buildkit: 'BuildKit' };

/** One build: always the same Dockerfile and context for every tool; the cache flags vary. */
export interface BuildSpec {
  dockerfile: string;
  context: string;
  base: Base;
  /** Build args besides BASE. */
  args: Record<string, string>;
  /** Context files (name → content) written before the build, outside its time. */
  files?: Record<string, string>;
  /** Export the cache under this repository (through the proxy); each tool names its own tag in it. */
  cacheTo?: { repo: string; mounts: boolean };
  /** Import the cache a build exported with `cacheTo.repo` = this. */
  cacheFrom?: string;
  /** Push the image to this reference (tsbuild `--push`, buildah and docker `push`). */
  push?: string;
  /** Local name of the image when it is not pushed. */
  tag: string;
}

export interface Step {
  name: string;
  cached: boolean;
  ms?: number;
}

export interface Outcome {
  ms: number;
  /** The steps that make layers or change the config, without FROM (BuildKit shows only RUN/COPY/ADD/WORKDIR). */
  steps: Step[];
  /** apt-get's "Need to get N of archives" for the step that installs, when it ran. */
  apt?: string;
  /**
   * tsbuild only, from `--progress rawjson`: process start → build-start → build-done → exit, and
   * of the last part, the cache export (from the event before `cache-exported` to it).
   */
  phases?: { beforeMs: number; buildMs: number; afterMs: number; exportMs: number };
  /** tsbuild only: cache mounts restored, cache exports, warnings. */
  notes: string[];
  /** tsbuild only: total ms per span name of its TSBUILD_TRACE (spans nest, so they do not add up). */
  spans?: Record<string, number>;
  log: string;
}

/** A builder as a fresh CI runner has it: `reset` empties every cache it keeps on this machine. */
export interface CacheTool {
  readonly name: ToolName;
  version(): string;
  reset(): void;
  build(b: BuildSpec, logFile: string, profileDir?: string): Outcome;
  close(): void;
}

export const baseRef = (registry: string, b: Base): string => (b === 'busybox' ? `${registry}/bench/base/busybox:latest` : `${registry}/bench/base/debian:bookworm`);

function buildArgs(b: BuildSpec, registry: string, extra: Record<string, string> = {}): string[] {
  return Object.entries({ BASE: baseRef(registry, b.base), ...b.args, ...extra }).flatMap(([k, v]) => ['--build-arg', `${k}=${v}`]);
}

function aptLine(text: string): string | undefined {
  return /Need to get ([^\n"\\]*?) of archives/.exec(text)?.[1];
}

export class Tsbuild implements CacheTool {
  readonly name = 'tsbuild' as const;
  constructor(
    /** The CLI under test: a copy of packages/cli/dist taken when the run starts (see snapshotCli). */
    private readonly cli: string,
    private readonly dir: string,
    private readonly registry: string,
  ) {}
  version(): string {
    const built = statSync(resolve(REPO, 'packages/cli/dist/tsbuild.cjs')).mtime.toISOString().slice(0, 16).replace('T', ' ');
    const head = run('git', ['-C', REPO, 'rev-parse', '--short', 'HEAD']).stdout.trim();
    return `tsbuild ${run(process.execPath, [this.cli, '--version']).stdout.trim()} (CLI bundle built ${built} UTC, checkout at ${head})`;
  }
  get root(): string {
    return `${this.dir}/root`;
  }
  reset(): void {
    removeTree(this.dir);
    mkdirSync(this.dir, { recursive: true });
  }
  build(b: BuildSpec, logFile: string, profileDir?: string): Outcome {
    const node = profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : [];
    const a = [...node, this.cli, 'build', '--root', this.root, '--progress', 'rawjson', '--network', 'host', '-f', b.dockerfile, '-t', b.push ?? b.tag, ...buildArgs(b, this.registry)];
    if (b.push) a.push('--push');
    if (b.cacheTo) a.push('--cache-to', `type=registry,ref=${b.cacheTo.repo}:cache,mode=max${b.cacheTo.mounts ? ',mounts=true' : ''}`);
    if (b.cacheFrom) a.push('--cache-from', `type=registry,ref=${b.cacheFrom}:cache`);
    a.push(b.context);
    const trace = `${logFile}.trace.jsonl`;
    rmSync(trace, { force: true });
    const started = Date.now();
    const r = run(process.execPath, a, { logFile, env: { ...process.env, TSBUILD_TRACE: trace } });
    const ended = Date.now();
    const spans: Record<string, number> = {};
    for (const line of (existsSync(trace) ? readFileSync(trace, 'utf8') : '').split('\n')) {
      if (!line.startsWith('{')) continue;
      const sp = JSON.parse(line) as { name: string; start: number; end: number };
      spans[sp.name] = (spans[sp.name] ?? 0) + (sp.end - sp.start);
    }
    const text = readFileSync(logFile, 'utf8');
    const names = new Map<string, string>();
    const steps: Step[] = [];
    const notes: string[] = [];
    let buildStart = NaN;
    let buildDone = NaN;
    let exportMs = 0;
    let prev = started;
    for (const line of text.split('\n')) {
      if (!line.startsWith('{')) continue;
      let e: { type: string; time: number; [k: string]: unknown };
      try {
        e = JSON.parse(line) as typeof e;
      } catch {
        continue;
      }
      if (e.type === 'cache-exported') exportMs += e.time - prev;
      if (e.type !== 'step-log' && e.type !== 'warning') prev = e.time;
      if (e.type === 'build-start') buildStart = e.time;
      else if (e.type === 'build-done') buildDone = e.time;
      else if (e.type === 'step-start') names.set(String(e.id), String(e.name));
      else if (e.type === 'step-done') {
        const name = names.get(String(e.id)) ?? String(e.id);
        if (!/\] FROM /.test(name)) steps.push({ name, cached: e.cached === true, ms: Number(e.durationMs) });
      } else if (e.type === 'cache-mount-restored') notes.push(`cache mount ${String(e.id)} restored (${bytes(Number(e.size))})`);
      else if (e.type === 'cache-exported') notes.push(`cache exported: ${String(e.records)} records, ${String(e.mounts)} mounts, ${String(e.uploaded)} blobs uploaded, ${String(e.skipped)} already there`);
      else if (e.type === 'warning') notes.push(`warning: ${String(e.message)}`);
    }
    const phases = Number.isNaN(buildStart) || Number.isNaN(buildDone) ? undefined : { beforeMs: buildStart - started, buildMs: buildDone - buildStart, afterMs: ended - buildDone, exportMs };
    return { ms: r.ms, steps, apt: aptLine(text), phases, notes, spans, log: logFile };
  }
  close(): void {
    removeTree(this.dir);
  }
}

export class Buildah implements CacheTool {
  readonly name = 'buildah' as const;
  private readonly global: string[];
  private readonly env: NodeJS.ProcessEnv;
  constructor(
    private readonly dir: string,
    private readonly registry: string,
    registriesConf: string,
  ) {
    // Private storage, and a private TMPDIR: buildah keeps RUN --mount=type=cache directories
    // under it, and a fresh runner has none.
    this.global = ['--root', `${dir}/storage`, '--runroot', `${dir}/run`, '--storage-driver', 'overlay'];
    this.env = { ...process.env, CONTAINERS_REGISTRIES_CONF: registriesConf, TMPDIR: `${dir}/tmp` };
  }
  static available(): boolean {
    return have('buildah');
  }
  version(): string {
    return run('buildah', ['--version']).stdout.trim();
  }
  reset(): void {
    run('buildah', [...this.global, 'rm', '--all'], { env: this.env, allowFail: true });
    removeTree(this.dir);
    mkdirSync(`${this.dir}/tmp`, { recursive: true });
  }
  build(b: BuildSpec, logFile: string): Outcome {
    const image = b.push ?? b.tag;
    const a = [...this.global, 'build', '--layers', '--network', 'host', '--runtime', 'runc', '-f', b.dockerfile, '-t', image, ...buildArgs(b, this.registry)];
    if (b.cacheTo) a.push('--cache-to', b.cacheTo.repo);
    if (b.cacheFrom) a.push('--cache-from', b.cacheFrom);
    a.push(b.context);
    let ms = run('buildah', a, { env: this.env, logFile }).ms;
    if (b.push) ms += run('buildah', [...this.global, 'push', '--tls-verify=false', image, `docker://${image}`], { env: this.env, logFile }).ms;
    const text = readFileSync(logFile, 'utf8');
    // `STEP 3/7: RUN …`, then `--> Using cache …` when the step was taken from a cache.
    const steps: Step[] = [];
    for (const chunk of text.split(/^(?=STEP \d+\/\d+: )/m).slice(1)) {
      const name = /^STEP \d+\/\d+: (.*)$/m.exec(chunk)?.[1] ?? '';
      if (name.startsWith('FROM ')) continue;
      steps.push({ name, cached: /^--> Using cache /m.test(chunk) });
    }
    return { ms, steps, apt: aptLine(text), notes: [], log: logFile };
  }
  close(): void {
    run('buildah', [...this.global, 'rm', '--all'], { env: this.env, allowFail: true });
    removeTree(this.dir);
  }
}

export class BuildKit implements CacheTool {
  readonly name = 'buildkit' as const;
  constructor(
    private readonly daemon: PrivateDockerd,
    private readonly registry: string,
  ) {}
  version(): string {
    return this.daemon.version();
  }
  /** A pruned daemon: no build cache (cache mounts included) and no images, the base's too; the daemon stays up, as in use. */
  reset(): void {
    this.daemon.docker(['builder', 'prune', '-af']);
    const ids = [...new Set(this.daemon.docker(['images', '-aq']).stdout.split('\n').filter(Boolean))];
    if (ids.length > 0) this.daemon.docker(['image', 'rm', '-f', ...ids], { allowFail: true });
  }
  build(b: BuildSpec, logFile: string): Outcome {
    // The inline cache travels in the image: in the pushed one, or in an image pushed only for it.
    const image = b.push ?? (b.cacheTo ? `${b.cacheTo.repo}:inline` : b.tag);
    const a = ['build', '--network', 'host', '--progress', 'plain', '-f', b.dockerfile, '-t', image, ...buildArgs(b, this.registry, b.cacheTo ? { BUILDKIT_INLINE_CACHE: '1' } : {})];
    if (b.cacheFrom) a.push('--cache-from', `${b.cacheFrom}:inline`);
    a.push(b.context);
    let ms = this.daemon.docker(a, { logFile }).ms;
    if (b.push || b.cacheTo) ms += this.daemon.docker(['push', image], { logFile }).ms;
    const text = readFileSync(logFile, 'utf8');
    const names = new Map<string, string>();
    const cached = new Set<string>();
    for (const line of text.split('\n')) {
      const s = /^#(\d+) \[(?:[\w.-]+ )?\d+\/\d+\] (.*)$/.exec(line);
      if (s && !names.has(s[1]!)) names.set(s[1]!, s[2]!);
      const c = /^#(\d+) CACHED$/.exec(line);
      if (c) cached.add(c[1]!);
    }
    const steps = [...names].filter(([, n]) => !n.startsWith('FROM ')).map(([id, name]) => ({ name, cached: cached.has(id) }));
    return { ms, steps, apt: aptLine(text), notes: [], log: logFile };
  }
  close(): void {
    try {
      this.reset();
    } catch {
      // Stopping the daemon matters more than emptying it; its data dir goes with it.
    }
    this.daemon.stop();
  }
}
