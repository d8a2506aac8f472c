/**
 * Remote-cache benchmark: a fresh CI runner (empty tsbuild root, empty buildah storage, pruned
 * BuildKit daemon) building with a cache that an earlier build exported to a loopback registry,
 * for tsbuild, buildah and Docker BuildKit side by side in one run. See bench/README.md.
 *
 *   node --import tsx bench/cache.ts [--quick] [--runs N] [--cases c1,c4,c2,export-c1,export-c2]
 *                                    [--tools tsbuild,buildah,buildkit] [--dir PATH]
 *                                    [--write | --no-write] [--profile]
 *
 * Must run as root (runc, overlay mounts, a private dockerd). It starts Debian's docker-registry
 * on 127.0.0.1 behind a counting proxy (both stopped by their PIDs at the end), and a private
 * dockerd when docker.io is installed; buildah and BuildKit are skipped when not installed.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { resolve } from 'node:path';
import { startRegistry, type RunningRegistry } from '../test/helpers/registry.ts';
import { parseArgs } from './lib/args.ts';
import { makeTree, writeC1Files } from './lib/context.ts';
import { type CountingProxy, type TrafficCounters, startCountingProxy } from './lib/count-proxy.ts';
import { PrivateDockerd } from './lib/dockerd.ts';
import { BENCH, REPO, RESULTS, baseTar, ensureInputs, snapshotCli, type Base } from './lib/paths.ts';
import { have, log, removeTree, run, sh } from './lib/proc.ts';
import { summarizeProfile } from './lib/profile.ts';
import { BuildKit, Buildah, LABEL, Tsbuild, baseRef, type BuildSpec, type CacheTool, type Outcome, type Step, type ToolName } from './lib/cache-tools.ts';
import { bytes, loadAverage, machine, maxOf, median, minOf, ratio, secs, stamp, writeSection } from './lib/report.ts';

const BEGIN = '<!-- bench/cache.ts: begin (generated; rerun the benchmark to replace) -->';
const END = '<!-- bench/cache.ts: end -->';

const args = parseArgs(process.argv.slice(2));
/** The CLI under test: a copy of packages/cli/dist taken when the run starts (see snapshotCli). */
let CLI = '';

// ---------------------------------------------------------------------------------------------
// Cases

interface Scenario {
  id: string;
  /** Start from an empty state (a fresh runner) rather than where the previous scenario left it. */
  fresh: boolean;
  /** What this build changes from the case's spec; `repo(name)` is a repository through the proxy, `n` the run number. */
  spec(x: { cacheRepo: string; repo: (name: string) => string; n: number }): Partial<BuildSpec>;
  /** Why the build is not what the cache promises, or undefined when it is (a failure for tsbuild, a note for the others). */
  expect?(o: Outcome, tool: ToolName): string | undefined;
}

interface Goal {
  text: string;
  ours: string;
  against: { tool: ToolName; scenario: string };
  ratio: number;
}

interface CacheCase {
  id: string;
  title: string;
  /** Directory under bench/cases/ with the Dockerfile. */
  dockerfile: string;
  base: Base;
  args: Record<string, string>;
  prepare(ctx: string): void;
  /** The first build, on an empty state, that exports the cache the scenarios import. */
  seed?: { files?: Record<string, string>; mounts: boolean };
  scenarios: Scenario[];
  /** Alternate the order of the scenarios from run to run (each starts fresh). */
  alternate?: boolean;
  goals: Goal[];
}

const allCached = (o: Outcome): string | undefined => {
  const ran = o.steps.filter((s) => !s.cached);
  return ran.length === 0 ? undefined : `not fully cached: ${ran.map((s) => s.name).join('; ')} ran`;
};

function fullyCachedCase(id: string, title: string, dockerfile: string, prepare: (ctx: string) => void, goals: Goal[]): CacheCase {
  return {
    id,
    title,
    dockerfile,
    base: 'busybox',
    args: {},
    prepare,
    seed: { mounts: false },
    scenarios: [
      { id: 'fresh', fresh: true, spec: ({ cacheRepo }) => ({ cacheFrom: cacheRepo }), expect: allCached },
      // Nothing changed, same root/storage/daemon, no cache flags: the local cache alone.
      { id: 'warm', fresh: false, spec: () => ({}), expect: allCached },
    ],
    goals,
  };
}

function exportCase(id: string, title: string, dockerfile: string, prepare: (ctx: string) => void): CacheCase {
  return {
    id,
    title,
    dockerfile,
    base: 'busybox',
    args: {},
    prepare,
    // Every build pushes to repositories of its own, so none finds its layers already there.
    scenarios: [
      { id: 'push', fresh: true, spec: ({ repo, n }) => ({ push: `${repo(`${id}-push-${n}`)}:latest` }) },
      { id: 'push+cache', fresh: true, spec: ({ repo, n }) => ({ push: `${repo(`${id}-pushc-${n}`)}:latest`, cacheTo: { repo: repo(`${id}-pushc-${n}`), mounts: false } }) },
    ],
    alternate: true,
    goals: [{ text: 'exporting the cache adds ≤ 10%', ours: 'push+cache', against: { tool: 'tsbuild', scenario: 'push' }, ratio: 1.1 }],
  };
}

function cases(quick: boolean): CacheCase[] {
  const treeFiles = quick ? 5000 : 50000;
  const tree = (ctx: string): void => makeTree(`${ctx}/tree`, treeFiles);
  const runSteps = (o: Outcome): Step[] => o.steps.filter((s) => /(^|\] )RUN /.test(s.name));
  const seedFiles = { 'apt-run.txt': 'seed\n', 'later.txt': 'seed\n' };
  return [
    fullyCachedCase('c1', 'C1 small image (bench/cases/c1)', 'c1', writeC1Files, [
      { text: 'fresh root with the cache ≤ 1.5× tsbuild warm', ours: 'fresh', against: { tool: 'tsbuild', scenario: 'warm' }, ratio: 1.5 },
    ]),
    {
      id: 'c4',
      title: 'C4m apt-get install curl with apt cache mounts, then a later step (bench/cases/c4m)',
      dockerfile: 'c4m',
      base: 'debian',
      args: {},
      prepare(ctx) {
        for (const [f, v] of Object.entries(seedFiles)) writeFileSync(`${ctx}/${f}`, v);
      },
      seed: { files: seedFiles, mounts: true },
      scenarios: [
        {
          id: 'later changed',
          fresh: true,
          spec: ({ cacheRepo, n }) => ({ cacheFrom: cacheRepo, files: { ...seedFiles, 'later.txt': `run ${n}\n` } }),
          expect(o) {
            const [apt, later] = [runSteps(o)[0], runSteps(o).at(-1)];
            if (!apt || !later || apt === later) return `RUN steps not found: ${o.steps.map((s) => s.name).join('; ')}`;
            if (!apt.cached) return 'the apt step ran although the cache has it';
            return later.cached ? 'the last step was cached although later.txt changed' : undefined;
          },
        },
        {
          id: 'apt reruns',
          fresh: true,
          spec: ({ cacheRepo, n }) => ({ cacheFrom: cacheRepo, files: { ...seedFiles, 'apt-run.txt': `run ${n}\n` } }),
          expect(o, tool) {
            if (tool !== 'tsbuild') return undefined;
            const restored = o.notes.filter((n) => n.startsWith('cache mount ')).length;
            return restored < 2 ? `${restored} of the 2 apt cache mounts restored from the cache` : undefined;
          },
        },
      ],
      goals: [
        { text: 'later step changed ≤ 0.5× BuildKit', ours: 'later changed', against: { tool: 'buildkit', scenario: 'later changed' }, ratio: 0.5 },
        { text: 'apt step reruns, apt cache restored ≤ 0.5× BuildKit', ours: 'apt reruns', against: { tool: 'buildkit', scenario: 'apt reruns' }, ratio: 0.5 },
      ],
    },
    fullyCachedCase('c2', `C2 COPY of a ${treeFiles.toLocaleString('en')}-file tree (bench/cases/c2)`, 'c2', tree, []),
    exportCase('export-c1', 'Export overhead: C1 pushed, with and without --cache-to', 'c1', writeC1Files),
    exportCase('export-c2', `Export overhead: C2 (${treeFiles.toLocaleString('en')} files) pushed, with and without --cache-to`, 'c2', tree),
  ];
}

// ---------------------------------------------------------------------------------------------
// Measuring

interface Sample {
  outcome: Outcome;
  traffic: TrafficCounters;
}

interface CaseResult {
  c: CacheCase;
  runs: number;
  seeds: Map<ToolName, Sample>;
  samples: Map<string, Sample[]>; // `${tool}/${scenario}`
  /** `${tool}/${scenario}` → why it counts as failed (tsbuild: a build that failed or missed the cache it should hit). */
  failed: Map<string, string>;
  notes: string[];
  loadBefore: string;
}

interface Env {
  work: string;
  logs: string;
  registry: string;
  proxy: CountingProxy;
}

/** Set by SIGINT/SIGTERM: no build starts after it while the cleanup runs. */
let interrupted = false;

async function measured(t: CacheTool, b: BuildSpec, env: Env, logFile: string, profileDir?: string): Promise<Sample> {
  if (interrupted) throw new Error('interrupted');
  rmSync(logFile, { force: true });
  for (const [f, v] of Object.entries(b.files ?? {})) writeFileSync(`${b.context}/${f}`, v);
  await env.proxy.reset();
  const outcome = t.build(b, logFile, profileDir);
  return { outcome, traffic: await env.proxy.counters() };
}

function prepareContext(c: CacheCase, work: string): { ctx: string; dockerfile: string } {
  const ctx = `${work}/ctx-${c.id}`;
  removeTree(ctx);
  mkdirSync(ctx, { recursive: true });
  c.prepare(ctx);
  const dockerfile = `${work}/${c.id}.Dockerfile`;
  copyFileSync(resolve(BENCH, 'cases', c.dockerfile, 'Dockerfile'), dockerfile);
  // Every tool reads the context from a warm page cache.
  sh(`tar -cf - -C ${ctx} . | cat >/dev/null`);
  return { ctx, dockerfile };
}

const cacheRepoOf = (env: Env, c: CacheCase, t: ToolName): string => `${env.registry}/bench/cache/${c.id}-${t}`;

async function measureCase(c: CacheCase, tools: readonly CacheTool[], env: Env, runs: number): Promise<CaseResult> {
  const res: CaseResult = { c, runs, seeds: new Map(), samples: new Map(), failed: new Map(), notes: [], loadBefore: loadAverage() };
  const { ctx, dockerfile } = prepareContext(c, env.work);
  const spec = (over: Partial<BuildSpec>): BuildSpec => ({ dockerfile, context: ctx, base: c.base, tag: `bench-${c.id}:latest`, ...over, args: { ...c.args, ...over.args } });
  const live: CacheTool[] = [];
  for (const t of tools) {
    if (!c.seed) {
      live.push(t);
      continue;
    }
    try {
      t.reset();
      const s = await measured(t, spec({ files: c.seed.files, cacheTo: { repo: cacheRepoOf(env, c, t.name), mounts: c.seed.mounts } }), env, `${env.logs}/${c.id}-${t.name}-seed.log`);
      res.seeds.set(t.name, s);
      log(`  ${c.id} ${LABEL[t.name]} seed (build + cache export): ${secs(s.outcome.ms)} s, up ${bytes(s.traffic.up)}`);
      live.push(t);
    } catch (e) {
      const why = `seed build failed: ${(e as Error).message.split('\n')[0]}`;
      for (const s of c.scenarios) res.failed.set(`${t.name}/${s.id}`, why);
      res.notes.push(`${LABEL[t.name]}: ${why}`);
      log(`  ${LABEL[t.name]} ${why}`);
    }
  }
  for (let r = 0; r < runs; r++) {
    // Rotate the order so no tool always runs first (or always right after the heaviest one).
    const order = live.map((_, i) => live[(i + r) % live.length]!);
    for (const t of order) {
      const scenarios = c.alternate && r % 2 === 1 ? [...c.scenarios].reverse() : c.scenarios;
      let broken = false;
      for (const s of scenarios) {
        const key = `${t.name}/${s.id}`;
        // A scenario that continues from the previous one means nothing once that one failed.
        if (broken && !s.fresh) continue;
        try {
          if (s.fresh) t.reset();
          const over = s.spec({ cacheRepo: cacheRepoOf(env, c, t.name), repo: (name) => `${env.registry}/bench/${name}-${t.name}`, n: r + 1 });
          const file = `${env.logs}/${c.id}-${t.name}-${s.id.replace(/\W+/g, '-')}-${r + 1}.log`;
          const sample = await measured(t, spec(over), env, file);
          broken = false;
          const miss = s.expect?.(sample.outcome, t.name);
          if (miss) {
            if (t.name === 'tsbuild') {
              res.failed.set(key, `${miss} (run ${r + 1}, ${file})`);
              broken = true;
            } else res.notes.push(`${LABEL[t.name]} ${s.id}, run ${r + 1}: ${miss}`);
          }
          res.samples.set(key, [...(res.samples.get(key) ?? []), sample]);
          log(`  run ${r + 1}/${runs} ${c.id} ${LABEL[t.name]} ${s.id}: ${secs(sample.outcome.ms)} s, down ${bytes(sample.traffic.down)}, up ${bytes(sample.traffic.up)}${miss ? ` — ${miss}` : ''}`);
        } catch (e) {
          broken = true;
          const why = `build failed: ${(e as Error).message.split('\n')[0]}`;
          if (!res.failed.has(key)) res.failed.set(key, `${why} (run ${r + 1})`);
          log(`  run ${r + 1}/${runs} ${c.id} ${LABEL[t.name]} ${s.id}: ${why}`);
        }
      }
    }
  }
  removeTree(ctx);
  return res;
}

/** One more tsbuild build of each goal scenario, under `node --cpu-prof`, after the scenarios that lead up to it. */
async function profileCase(c: CacheCase, env: Env, profRoot: string): Promise<string[]> {
  const wanted = new Set(c.goals.flatMap((g) => [g.ours, ...(g.against.tool === 'tsbuild' ? [g.against.scenario] : [])]));
  if (wanted.size === 0) return [];
  const { ctx, dockerfile } = prepareContext(c, env.work);
  const t = new Tsbuild(CLI, `${env.work}/tsbuild-prof`, env.registry);
  const out: string[] = [];
  try {
    for (const s of c.scenarios) {
      if (s.fresh) t.reset();
      const over = s.spec({ cacheRepo: cacheRepoOf(env, c, 'tsbuild'), repo: (name) => `${env.registry}/bench/${name}-tsbuild-prof`, n: 99 });
      const dir = wanted.has(s.id) ? `${profRoot}/${c.id}-${s.id.replace(/\W+/g, '-')}` : undefined;
      if (dir) {
        rmSync(dir, { recursive: true, force: true });
        mkdirSync(dir, { recursive: true });
      }
      const b: BuildSpec = { dockerfile, context: ctx, base: c.base, tag: `bench-${c.id}:latest`, ...over, args: { ...c.args, ...over.args } };
      const sample = await measured(t, b, env, `${env.logs}/${c.id}-tsbuild-profile-${s.id.replace(/\W+/g, '-')}.log`, dir);
      if (!dir) continue;
      const o = sample.outcome;
      out.push(`${c.id} ${s.id} under --cpu-prof: ${secs(o.ms)} s wall${o.phases ? `; start → build-start ${o.phases.beforeMs} ms, steps ${o.phases.buildMs} ms, build-done → exit ${o.phases.afterMs} ms (cache export ${o.phases.exportMs} ms)` : ''}`);
      for (const st of o.steps) out.push(`  ${st.cached ? 'CACHED' : 'ran   '} ${String(st.ms ?? '').padStart(6)} ms  ${st.name}`);
      for (const f of readdirSync(dir).filter((f) => f.endsWith('.cpuprofile')).sort()) {
        out.push(`${dir}/${f}:`, ...summarizeProfile(`${dir}/${f}`, 12).map((l) => '  ' + l));
      }
      out.push('');
    }
  } finally {
    t.close();
    removeTree(ctx);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Report

/** Spans that only wrap others (the whole command, all stages). */
const HIDDEN_SPANS = new Set(['cli.build', 'stages']);

function spread(xs: readonly number[]): string {
  if (xs.length === 0) return '–';
  return xs.length === 1 ? secs(xs[0]!) : `${secs(median(xs))} (${secs(minOf(xs))}–${secs(maxOf(xs))})`;
}

function render(results: readonly CaseResult[], tools: readonly ToolName[], versions: string[], p: { quick: boolean; runs: number; uptimeBefore: string; uptimeAfter: string }, profiles: string[]): string {
  const cmd = `node --import tsx bench/cache.ts${p.quick ? ' --quick' : ''} --runs ${p.runs}${profiles.length > 0 ? ' --profile' : ''}`;
  const lines = [
    '## Remote cache on a fresh CI runner (`bench/cache.ts`)',
    '',
    `Recorded ${stamp()} UTC with \`${cmd}\`: ${p.runs} run${p.runs === 1 ? '' : 's'} of every scenario, median (min–max) wall seconds.`,
    `Machine: ${machine()}, Node ${process.version}, shared with other work: \`uptime\` before: ${p.uptimeBefore}; after: ${p.uptimeAfter}.`,
    `Tools: ${versions.join('; ')}; Debian's docker-registry on 127.0.0.1 behind a counting proxy (all tools go through it).`,
    '',
    'Fresh: an empty tsbuild root (`--cache-from type=registry,ref=…`), empty buildah storage and TMPDIR (`--layers --cache-from REPO`),',
    'a pruned dockerd (`docker builder prune -af` and every image removed, the base included; `--cache-from IMAGE` of an inline cache).',
    'The cache comes from one seed build per tool on an empty state: tsbuild `--cache-to type=registry,ref=…,mode=max` (C4m: `,mounts=true`),',
    'buildah `--cache-to REPO`, BuildKit `--build-arg BUILDKIT_INLINE_CACHE=1` and `docker push`. Base images are pulled from the same registry.',
    'Warm: the same build again on the state the fresh build left, no cache flags. Times are of the whole client command (buildah and docker: build + push when pushing).',
    '',
    `| case | scenario | tsbuild s | ${tools.includes('buildah') ? 'buildah s | ' : ''}${tools.includes('buildkit') ? 'BuildKit s | ' : ''}tsbuild ÷ others | goal |`,
    `|---|---|---:|${tools.includes('buildah') ? '---:|' : ''}${tools.includes('buildkit') ? '---:|' : ''}---:|---|`,
  ];
  const times = (r: CaseResult, tool: ToolName, s: string): number[] => (r.failed.has(`${tool}/${s}`) && tool === 'tsbuild' ? [] : (r.samples.get(`${tool}/${s}`) ?? []).map((x) => x.outcome.ms));
  const cell = (r: CaseResult, tool: ToolName, s: string): string => {
    const f = r.failed.get(`${tool}/${s}`);
    if (f && (tool === 'tsbuild' || times(r, tool, s).length === 0)) return '**failed**';
    return spread(times(r, tool, s));
  };
  for (const r of results) {
    if (r.seeds.size > 0) {
      const seedCell = (t: ToolName): string => (r.seeds.has(t) ? secs(r.seeds.get(t)!.outcome.ms) : '–');
      lines.push(`| ${r.c.title} | seed: cold build + cache export (once) | ${seedCell('tsbuild')} | ${tools.includes('buildah') ? `${seedCell('buildah')} | ` : ''}${tools.includes('buildkit') ? `${seedCell('buildkit')} | ` : ''} | |`);
    }
    for (const s of r.c.scenarios) {
      const ours = median(times(r, 'tsbuild', s.id));
      const others = tools.filter((t) => t !== 'tsbuild').map((t) => `${ratio(ours, median(times(r, t, s.id)))} ${LABEL[t]}`);
      const goals = r.c.goals
        .filter((g) => g.ours === s.id)
        .map((g) => {
          const against = median(times(r, g.against.tool, g.against.scenario));
          const q = ours / against;
          if (r.failed.has(`tsbuild/${s.id}`)) return `${g.text}: **failed** (see below)`;
          return `${g.text}: ${Number.isNaN(q) ? 'not measured' : `${q.toFixed(2)}× — ${q <= g.ratio ? 'met' : '**missed**'}`}`;
        });
      lines.push(`| ${r.c.title} | ${s.id} | ${cell(r, 'tsbuild', s.id)} | ${tools.includes('buildah') ? `${cell(r, 'buildah', s.id)} | ` : ''}${tools.includes('buildkit') ? `${cell(r, 'buildkit', s.id)} | ` : ''}${others.join(', ')} | ${goals.join('; ')} |`);
    }
  }

  lines.push('', 'Registry traffic (body bytes through the proxy, median per build: down = answers, up = uploads; layers from the Debian archive are not in it), steps taken from a cache, and what apt-get had to fetch:', '');
  lines.push('| case | scenario | tool | down | up | blob GETs | cached steps | apt-get "need to get" |', '|---|---|---|---:|---:|---:|---|---|');
  for (const r of results) {
    const rows: { s: string; t: ToolName; xs: Sample[] }[] = [];
    for (const t of tools) if (r.seeds.has(t)) rows.push({ s: 'seed', t, xs: [r.seeds.get(t)!] });
    for (const s of r.c.scenarios) for (const t of tools) rows.push({ s: s.id, t, xs: r.samples.get(`${t}/${s.id}`) ?? [] });
    for (const { s, t, xs } of rows) {
      if (xs.length === 0) continue;
      const m = (f: (c: TrafficCounters) => number): number => median(xs.map((x) => f(x.traffic)));
      const o = xs[xs.length - 1]!.outcome;
      const cachedSteps = `${o.steps.filter((x) => x.cached).length}/${o.steps.length}`;
      const apt = [...new Set(xs.map((x) => x.outcome.apt).filter((a): a is string => a !== undefined))].join(', ');
      lines.push(`| ${r.c.id} | ${s} | ${LABEL[t]} | ${bytes(m((c) => c.down))} | ${bytes(m((c) => c.up))} | ${m((c) => c.blobGets)} | ${cachedSteps} | ${apt} |`);
    }
  }

  lines.push('', "Where tsbuild's time goes (`--progress rawjson` event times, median per scenario): process start → build-start (Node, the bundle, arguments, the Dockerfile), build-start → build-done (the steps, cache lookups, lazy downloads), build-done → exit (naming, push, cache export) and of that the cache export alone; the slowest steps of the median run:", '');
  lines.push('| case | scenario | start → build-start ms | steps ms | → exit ms | cache export ms | slowest steps (ms) | TSBUILD_TRACE spans, ms | events |', '|---|---|---:|---:|---:|---:|---|---|---|');
  for (const r of results) {
    const rows: { s: string; xs: Sample[] }[] = [];
    if (r.seeds.has('tsbuild')) rows.push({ s: 'seed', xs: [r.seeds.get('tsbuild')!] });
    for (const s of r.c.scenarios) rows.push({ s: s.id, xs: r.samples.get(`tsbuild/${s.id}`) ?? [] });
    for (const { s, xs } of rows) {
      const withPhases = xs.filter((x) => x.outcome.phases);
      if (withPhases.length === 0) continue;
      const ph = (f: (p: NonNullable<Outcome['phases']>) => number): string => String(Math.round(median(withPhases.map((x) => f(x.outcome.phases!)))));
      const mid = [...withPhases].sort((a, b) => a.outcome.ms - b.outcome.ms)[withPhases.length >> 1]!.outcome;
      const slow = [...mid.steps]
        .sort((a, b) => (b.ms ?? 0) - (a.ms ?? 0))
        .slice(0, 3)
        .map((x) => `${x.name.replace(/^\[[^\]]*\] /, '').slice(0, 40).replace(/\|/g, '\\|')}${x.cached ? ' (cached)' : ''} ${x.ms}`)
        .join('; ');
      const spanNames = [...new Set(withPhases.flatMap((x) => Object.keys(x.outcome.spans ?? {})))].filter((n) => !HIDDEN_SPANS.has(n));
      const spanCell = spanNames
        .map((n) => [n, median(withPhases.map((x) => x.outcome.spans?.[n] ?? 0))] as const)
        .filter(([, ms]) => ms >= 5)
        .sort((a, b) => b[1] - a[1])
        .map(([n, ms]) => `${n} ${Math.round(ms)}`)
        .join(', ');
      lines.push(`| ${r.c.id} | ${s} | ${ph((p) => p.beforeMs)} | ${ph((p) => p.buildMs)} | ${ph((p) => p.afterMs)} | ${ph((p) => p.exportMs)} | ${slow} | ${spanCell} | ${[...new Set(mid.notes)].join('; ').replace(/\|/g, '\\|')} |`);
    }
  }

  const failures = results.flatMap((r) => [...r.failed].map(([k, why]) => `- ${r.c.id} ${k.replace('/', ' ')}: ${why}`));
  if (failures.length > 0) lines.push('', 'Failed (not counted in the tables):', '', ...failures);
  const notes = results.flatMap((r) => r.notes.map((n) => `- ${r.c.id}: ${n}`));
  if (notes.length > 0) lines.push('', 'Notes:', '', ...notes);
  lines.push('', 'Raw times (s) per run, in run order, and the load average when each case started:', '');
  for (const r of results) {
    const parts = [...r.samples.entries()].map(([k, v]) => `${k} ${v.map((x) => secs(x.outcome.ms)).join(', ')}`);
    lines.push(`- ${r.c.id} (load ${r.loadBefore}): ${parts.join('; ')}`);
  }
  if (profiles.length > 0) lines.push('', 'tsbuild under `node --cpu-prof` (one extra build of each goal scenario; self time per function):', '', '```', ...profiles, '```');
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------

async function pushBases(registry: string, work: string, bases: readonly Base[], logs: string): Promise<void> {
  const root = `${work}/bases-root`;
  for (const b of bases) {
    const local = b === 'busybox' ? 'busybox:latest' : 'debian:bookworm';
    run(process.execPath, [CLI, 'import', '--root', root, baseTar(b), '-t', local], { logFile: `${logs}/bases.log` });
    run(process.execPath, [CLI, 'push', '--root', root, local, baseRef(registry, b)], { logFile: `${logs}/bases.log` });
  }
  removeTree(root);
}

/** What a run measured, kept in bench/work/cache-results.json so the report can be made again (`--render FILE`). */
interface Recorded {
  quick: boolean;
  runs: number;
  tools: ToolName[];
  versions: string[];
  uptimeBefore: string;
  uptimeAfter: string;
  profiles: string[];
  results: (Omit<CaseResult, 'c' | 'seeds' | 'samples' | 'failed'> & { c: string; seeds: [ToolName, Sample][]; samples: [string, Sample[]][]; failed: [string, string][] })[];
}

function report(rec: Recorded, quick: boolean): void {
  const byId = new Map(cases(rec.quick).map((c) => [c.id, c]));
  const results: CaseResult[] = rec.results.map((r) => ({ ...r, c: byId.get(r.c)!, seeds: new Map(r.seeds), samples: new Map(r.samples), failed: new Map(r.failed) }));
  const text = render(results, rec.tools, rec.versions, rec, rec.profiles);
  process.stdout.write(text);
  if (args.flag('--write') || (!quick && !args.flag('--no-write'))) {
    writeSection(RESULTS, BEGIN, END, text);
    log(`wrote ${RESULTS}`);
  }
}

async function main(): Promise<void> {
  const again = args.option('--render');
  if (again) {
    const rec = JSON.parse(readFileSync(again, 'utf8')) as Recorded;
    report(rec, rec.quick);
    return;
  }
  if (process.getuid?.() !== 0) throw new Error('bench/cache.ts runs builds with runc and overlay mounts: run it as root');
  if (!have('docker-registry')) throw new Error('bench/cache.ts needs Debian\'s docker-registry: apt-get install -y docker-registry');
  ensureInputs();
  CLI = snapshotCli(resolve(BENCH, 'work/cache-cli'));
  const quick = args.flag('--quick');
  const runs = args.runs() ?? (quick ? 1 : 3);
  const only = args.list('--cases');
  const wantTools = new Set(args.list('--tools') ?? ['tsbuild', 'buildah', 'buildkit']);
  const parent = args.option('--dir') ?? tmpdir();
  mkdirSync(parent, { recursive: true });
  const work = mkdtempSync(`${realpathSync(parent)}/tsbuild-bench-cache-`);
  const logs = resolve(BENCH, 'work/cache-logs');
  rmSync(logs, { recursive: true, force: true });
  mkdirSync(logs, { recursive: true });
  const uptimeBefore = run('uptime', []).stdout.trim();

  let registry: RunningRegistry | undefined;
  let proxy: CountingProxy | undefined;
  const tools: CacheTool[] = [];
  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    for (const t of tools) {
      try {
        t.close();
      } catch (e) {
        log(`cleanup of ${t.name}: ${(e as Error).message}`);
      }
    }
    await proxy?.stop();
    await registry?.stop();
    removeTree(work);
  };
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      interrupted = true;
      void stop().finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
    });
  }
  try {
    registry = await startRegistry();
    proxy = await startCountingProxy(registry.host);
    log(`registry ${registry.host} (pid ${registry.pid}), counting proxy ${proxy.host} (pid ${proxy.pid})`);
    const selected = cases(quick).filter((c) => !only || only.includes(c.id) || (only.includes('export') && c.id.startsWith('export-')));
    await pushBases(proxy.host, work, [...new Set(selected.map((c) => c.base))], logs);

    if (wantTools.has('tsbuild')) tools.push(new Tsbuild(CLI, `${work}/tsbuild`, proxy.host));
    if (wantTools.has('buildah')) {
      if (Buildah.available()) {
        // A plain-HTTP registry needs an entry of its own; a private file leaves the host's configuration alone.
        const conf = `${work}/registries.conf`;
        writeFileSync(conf, `unqualified-search-registries = []\n\n[[registry]]\nlocation = "${proxy.host}"\ninsecure = true\n`);
        tools.push(new Buildah(`${work}/buildah`, proxy.host, conf));
      } else log('buildah not installed: skipping buildah');
    }
    if (wantTools.has('buildkit')) {
      if (PrivateDockerd.available()) {
        const daemon = new PrivateDockerd(`${work}/docker`, `${logs}/dockerd.log`, [proxy.host]);
        log('starting a private dockerd');
        daemon.start();
        tools.push(new BuildKit(daemon, proxy.host));
      } else log('dockerd or /usr/bin/docker not installed: skipping Docker BuildKit');
    }
    const versions = tools.map((t) => t.version());
    log(`tools: ${versions.join('; ')}; work dir ${work}; logs in ${logs}`);

    const env: Env = { work, logs, registry: proxy.host, proxy };
    const results: CaseResult[] = [];
    for (const c of selected) {
      log(`${c.title} (${runs} run${runs === 1 ? '' : 's'})`);
      results.push(await measureCase(c, tools, env, runs));
    }
    const profiles: string[] = [];
    if (args.flag('--profile') && tools.some((t) => t.name === 'tsbuild')) {
      const profDir = resolve(BENCH, 'work/cache-prof');
      for (const c of selected) {
        log(`profiling tsbuild on ${c.id}`);
        profiles.push(...(await profileCase(c, env, profDir)));
      }
    }
    const recorded: Recorded = {
      quick,
      runs,
      tools: tools.map((t) => t.name),
      versions,
      uptimeBefore,
      uptimeAfter: run('uptime', []).stdout.trim(),
      profiles,
      results: results.map((r) => ({ ...r, c: r.c.id, seeds: [...r.seeds], samples: [...r.samples], failed: [...r.failed] })),
    };
    writeFileSync(resolve(BENCH, 'work/cache-results.json'), JSON.stringify(recorded, null, 1));
    report(recorded, quick);
  } finally {
    await stop();
    log('registry, proxy and private dockerd stopped');
  }
}

await main();
