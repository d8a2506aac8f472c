/**
 * Where a build's time goes: each case of bench/build.ts built by the tsbuild CLI with
 * TSBUILD_TRACE set, its spans summed by phase (start-up, argument parsing, Dockerfile checks,
 * opening the root, cache lookups and records, context hashing, snapshots, the runtime, copying,
 * diff, the store), beside `node -e 0`. With `--before DIR` (a checkout of an earlier commit,
 * built) both CLIs run in the same session, alternating, so the profile before and after a
 * change is measured side by side. See bench/README.md.
 *
 *   node --import tsx bench/profile.ts [--runs N] [--cases c1,c5,c2,c4] [--before DIR] [--write | --no-write]
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from './lib/args.ts';
import { makeTree, writeC1Files } from './lib/context.ts';
import { BENCH, RESULTS, baseTar, ensureInputs, snapshotCli } from './lib/paths.ts';
import type { Base } from './lib/paths.ts';
import { log, removeTree } from './lib/proc.ts';
import { loadAverage, machine, median, stamp, writeSection } from './lib/report.ts';

const args = parseArgs(process.argv.slice(2));
const RUNS = args.runs() ?? 3;
const BEGIN = '<!-- bench/profile.ts: begin (generated; rerun the benchmark to replace) -->';
const END = '<!-- bench/profile.ts: end -->';

/** Span names grouped into the phases the report shows (the rest of the wall time is "other"). */
const PHASES: [string, string[]][] = [
  ['start-up (node + bundle)', ['startup']],
  ['arguments', ['cli.args']],
  ['Dockerfile checks', ['dockerfile.check']],
  ['open root (store, snapshots)', ['root.open']],
  ['cache lookups and records', ['cache.lookup', 'cache.record', 'cache.import', 'cache.export', 'inputs.save', 'statcache.save']],
  ['context hashing', ['context.hash', 'context.walk', 'context.scan']],
  ['snapshots (unpack, mount, commit)', ['snapshot.unpack', 'snapshot.prepare', 'snapshot.commit', 'snapshot.view']],
  ['runtime (runc)', ['runtime.run']],
  // copy.files and copy.layer are the spans of CLIs that copied through an overlay; copy.plan and
  // layer.write those of the COPY layer written from its sources (copy.ahead holds both).
  ['copying files (COPY)', ['copy.files', 'copy.layer', 'copy.plan', 'layer.write']],
  ['layer diff', ['layer.diff']],
  ['store (layer blob, image, tags)', ['store.commit', 'image.write', 'publish']],
];

interface Case {
  id: string;
  base: Base;
  scenarios: ('cold' | 'warm' | 'changed')[];
  /** Writes the context; `change` edits one file of it. */
  make(ctx: string): void;
  change?(ctx: string): void;
}

const CASES: Case[] = [
  { id: 'c1', base: 'busybox', scenarios: ['cold', 'warm', 'changed'], make: writeC1Files, change: (ctx) => writeFileSync(`${ctx}/files/f7.txt`, `changed ${Date.now()}\n`) },
  { id: 'c5', base: 'busybox', scenarios: ['cold', 'warm'], make: () => {} },
  { id: 'c2', base: 'busybox', scenarios: ['cold', 'warm', 'changed'], make: (ctx) => makeTree(`${ctx}/tree`, 50_000), change: (ctx) => writeFileSync(`${ctx}/tree/d0003/f333.txt`, `changed ${Date.now()}\n`) },
  { id: 'c4', base: 'debian', scenarios: ['cold'], make: () => {} },
];

interface Span {
  name: string;
  start: number;
  end: number;
}

interface Sample {
  wallMs: number;
  phases: Map<string, number>;
}

function runBuild(cli: string, root: string, ctx: string, base: string, traceFile: string): Sample {
  rmSync(traceFile, { force: true });
  const t0 = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [cli, '--root', root, 'build', '-q', '--build-arg', `BASE=${base}`, '-t', 'profiled', ctx], {
    env: { ...process.env, TSBUILD_TRACE: traceFile },
    encoding: 'utf8',
  });
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`build failed (${r.status}): ${r.stderr.slice(-2000)}`);
  const spans = existsSync(traceFile)
    ? readFileSync(traceFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Span)
    : [];
  const phases = new Map<string, number>();
  let accounted = 0;
  for (const [phase, names] of PHASES) {
    const ms = spans.filter((s) => names.includes(s.name)).reduce((n, s) => n + (s.end - s.start), 0);
    phases.set(phase, ms);
    accounted += ms;
  }
  phases.set('other (rest of the wall time)', Math.max(0, wallMs - accounted));
  return { wallMs, phases };
}

function nodeBaseline(): number {
  const xs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = process.hrtime.bigint();
    spawnSync(process.execPath, ['-e', '0']);
    xs.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return median(xs);
}

function importBase(cli: string, root: string, base: Base): string {
  const tag = base === 'busybox' ? 'busybox:latest' : 'debian:bookworm';
  const r = spawnSync(process.execPath, [cli, '--root', root, 'import', baseTar(base), '-t', tag], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`import failed: ${r.stderr}`);
  return tag;
}

function main(): void {
  ensureInputs();
  const work = mkdtempSync(join(tmpdir(), 'tsbuild-profile-'));
  const clis: [string, string][] = [['after', snapshotCli(join(work, 'cli-after'))]];
  const before = args.option('--before');
  if (before) clis.push(['before', resolve(before, 'packages/cli/dist/tsbuild.js')]);
  const only = args.list('--cases');
  const cases = CASES.filter((c) => !only || only.includes(c.id));
  const results = new Map<string, Map<string, Sample[]>>();
  const loadStart = loadAverage();
  let baseline = NaN;
  try {
    baseline = nodeBaseline();
    for (const c of cases) {
      const ctx = join(work, `${c.id}-ctx`);
      mkdirSync(ctx, { recursive: true });
      cpSync(join(BENCH, 'cases', c.id, 'Dockerfile'), join(ctx, 'Dockerfile'));
      c.make(ctx);
      for (const scenario of c.scenarios) {
        const runs = c.id === 'c4' ? 1 : RUNS;
        for (let i = 0; i < runs; i++) {
          // The two CLIs take turns going first.
          const order = i % 2 === 0 ? clis : [...clis].reverse();
          for (const [label, cli] of order) {
            const root = join(work, `root-${label}-${c.id}`);
            if (scenario === 'cold' || !existsSync(root)) removeTree(root);
            const base = existsSync(join(root, 'oci')) ? (c.base === 'busybox' ? 'busybox:latest' : 'debian:bookworm') : importBase(cli, root, c.base);
            if (scenario !== 'cold') runBuild(cli, root, ctx, base, join(work, 'prime.jsonl'));
            if (scenario === 'changed') c.change?.(ctx);
            log(`${c.id} ${scenario} ${label} run ${i + 1}/${runs}`);
            const s = runBuild(cli, root, ctx, base, join(work, `${label}.jsonl`));
            const key = `${c.id.toUpperCase()} ${scenario}`;
            const byCli = results.get(key) ?? new Map<string, Sample[]>();
            byCli.set(label, [...(byCli.get(label) ?? []), s]);
            results.set(key, byCli);
          }
        }
      }
    }
  } finally {
    removeTree(work);
  }
  const report = render(results, clis.map(([l]) => l), baseline, loadStart);
  process.stdout.write(report);
  if (!args.flag('--no-write') && (args.flag('--write') || RUNS >= 3)) writeSection(RESULTS, BEGIN, END, report);
}

function render(results: Map<string, Map<string, Sample[]>>, labels: string[], baseline: number, loadStart: string): string {
  const ms = (x: number): string => (Number.isNaN(x) ? '–' : x < 10 ? x.toFixed(1) : Math.round(x).toString());
  const lines = [
    `## Where the time goes (bench/profile.ts, ${stamp()} UTC)`,
    '',
    `${machine()}; load average ${loadStart} at the start, ${loadAverage()} at the end; medians of ${RUNS} run(s) (C4: 1). ` +
      `\`node -e 0\` took ${ms(baseline)} ms. Each phase is the sum of the build's TSBUILD_TRACE spans of that kind, in ms` +
      (labels.length > 1 ? '; "before" is the CLI of an earlier commit, measured in the same runs.' : '.'),
    '',
  ];
  for (const [key, byCli] of results) {
    lines.push(`### ${key}`, '', `| phase | ${labels.join(' | ')} |`, `| --- |${labels.map(() => ' ---: |').join('')}`);
    const phaseNames = [...PHASES.map(([p]) => p), 'other (rest of the wall time)'];
    for (const p of phaseNames) {
      const cells = labels.map((l) => ms(median((byCli.get(l) ?? []).map((s) => s.phases.get(p) ?? 0))));
      if (cells.every((c) => c === '0.0')) continue;
      lines.push(`| ${p} | ${cells.join(' | ')} |`);
    }
    const walls = labels.map((l) => median((byCli.get(l) ?? []).map((s) => s.wallMs)));
    lines.push(`| **wall** | ${walls.map((w) => `**${ms(w)}**`).join(' | ')} |`);
    lines.push(`| beyond \`node -e 0\` | ${walls.map((w) => ms(w - baseline)).join(' | ')} |`, '');
  }
  return `${lines.join('\n')}\n`;
}

main();
