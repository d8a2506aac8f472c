import { relative, isAbsolute, resolve as resolvePath } from 'node:path';
import { appendFileSync } from 'node:fs';
import { DockerfileError, TsbuildError, UsageError } from '@tsbuild/errors';
import { build, parseCacheFrom, parseCacheTo, parseOutput, usageText } from '@tsbuild/builder';
import type { BuildEvent, BuildOptions, DistributionOptions } from '@tsbuild/builder';
import type { Env, StepRow } from './workflow.ts';
import { applyBuildxInputs, summaryEnabled } from './inputs.ts';
import { command, getBool, getInput, getList, keyValueList, summaryMarkdown, writeOutputs } from './workflow.ts';

export interface ActionOptions {
  env: Env;
  /** Where log lines and workflow commands go (the runner reads stdout). */
  write: (s: string) => void;
  signal?: AbortSignal;
}

/**
 * Build output grouped by stage. Groups cannot nest, so when parallel stages interleave the
 * current group closes and the other stage's opens again. RUN output is prefixed with its step
 * number, as plain progress does, so no line a build prints can start a workflow command.
 */
export class GroupedLog {
  private open: string | undefined;
  private readonly stageOf = new Map<string, string>();
  private readonly partial = new Map<string, string>();
  readonly steps = new Map<string, StepRow>();

  constructor(private readonly write: (s: string) => void) {}

  private enter(stage: string, title: string): void {
    if (this.open === stage) return;
    if (this.open !== undefined) this.write('::endgroup::\n');
    this.open = stage;
    this.write(command('group', {}, `[${stage}] ${title}`));
  }

  private flush(id: string): void {
    const rest = this.partial.get(id);
    if (rest) this.write(`#${id} ${rest}\n`);
    this.partial.delete(id);
  }

  event(e: BuildEvent): void {
    switch (e.type) {
      case 'step-start': {
        this.stageOf.set(e.id, e.stage);
        const title = e.name.replace(/^\[[^\]]*\]\s*/, '');
        this.steps.set(e.id, { name: e.name, durationMs: undefined, cached: false, layerSize: undefined, failed: false });
        this.enter(e.stage, title);
        this.write(`#${e.id} ${e.name}\n`);
        break;
      }
      case 'step-log': {
        this.enter(this.stageOf.get(e.id) ?? '?', '(output)');
        const text = (this.partial.get(e.id) ?? '') + e.data;
        const lines = text.split(/\r?\n/);
        this.partial.set(e.id, lines.pop() ?? '');
        for (const l of lines) this.write(`#${e.id} ${l}\n`);
        break;
      }
      case 'step-done': {
        this.enter(this.stageOf.get(e.id) ?? '?', '(done)');
        this.flush(e.id);
        const row = this.steps.get(e.id);
        if (row) {
          Object.assign(row, { durationMs: e.durationMs, cached: e.cached, layerSize: e.layerSize });
          if (e.usage) row.usage = e.usage;
          if (e.miss) row.missReason = e.miss.reason;
        }
        this.write(`#${e.id} ${e.cached ? 'CACHED' : `DONE ${(e.durationMs / 1000).toFixed(1)}s${e.usage ? `  ${usageText(e.usage)}` : ''}${e.miss ? `  (cache miss: ${e.miss.reason})` : ''}`}\n`);
        break;
      }
      case 'step-error': {
        this.enter(this.stageOf.get(e.id) ?? '?', '(error)');
        this.flush(e.id);
        const row = this.steps.get(e.id);
        if (row) row.failed = true;
        this.write(`#${e.id} ERROR: ${e.message.split('\n').join(`\n#${e.id} `)}\n`);
        break;
      }
      case 'exported':
        this.enter('outputs', `export type=${e.output}`);
        this.write(`wrote ${e.dest}${e.size ? ` (${e.size} bytes)` : ''}\n`);
        break;
      case 'push-blob':
        this.enter('outputs', `push ${e.ref}`);
        this.write(`${e.digest.slice(7, 19)}: ${e.status}\n`);
        break;
      case 'pushed':
        this.enter('outputs', `push ${e.ref}`);
        this.write(`pushed ${e.ref}@${e.digest}\n`);
        break;
      default:
        break;
    }
  }

  close(): void {
    for (const id of [...this.partial.keys()]) this.flush(id);
    if (this.open !== undefined) this.write('::endgroup::\n');
    this.open = undefined;
  }
}

/** The file an annotation names: relative to the workspace, which is how GitHub links it to the diff. */
function annotationFile(file: string, env: Env): string {
  const ws = env.GITHUB_WORKSPACE;
  if (!ws || !isAbsolute(file)) return file;
  const rel = relative(resolvePath(ws), file);
  return rel.startsWith('..') || isAbsolute(rel) ? file : rel;
}

export function errorCommand(e: unknown, env: Env): string {
  if (e instanceof DockerfileError) {
    const r = e.range;
    const props = r
      ? { file: annotationFile(e.file, env), line: r.start.line, col: r.start.column, endLine: r.end.line, endColumn: r.end.column, title: 'Dockerfile' }
      : { file: annotationFile(e.file, env), title: 'Dockerfile' };
    return command('error', props, e.hint ? `${e.detail}\n${e.hint}` : e.detail);
  }
  if (e instanceof TsbuildError) return command('error', { title: 'tsbuild' }, e.hint ? `${e.message}\n${e.hint}` : e.message);
  return command('error', { title: 'tsbuild (internal error)' }, e instanceof Error ? (e.stack ?? e.message) : String(e));
}

let secretSeq = 0;

/** The action's inputs as build options (build-push-action's names, plus tsbuild's registry settings). */
function readInputs(env: Env): BuildOptions {
  const platforms = getList(env, 'platforms');
  if (platforms.length > 1) {
    throw new UsageError(`platforms: tsbuild builds one platform per run, got ${platforms.join(', ')}`, { hint: 'use a matrix job per platform' });
  }
  const compression = getInput(env, 'compression') || 'gzip';
  if (compression !== 'gzip' && compression !== 'zstd') throw new UsageError(`compression: expected gzip or zstd, got ${JSON.stringify(compression)}`);
  // Secret values are handed to the build through the environment, never through a file on disk.
  const secrets: NonNullable<BuildOptions['secrets']> = {};
  for (const [id, value] of Object.entries(keyValueList(getList(env, 'secrets', { commas: false }), 'secrets'))) {
    const name = `TSBUILD_ACTION_SECRET_${secretSeq++}`;
    process.env[name] = value;
    secrets[id] = { env: name };
  }
  const file = getInput(env, 'file');
  const opts: BuildOptions = {
    context: getInput(env, 'context') || '.',
    file: file ? resolvePath(file) : undefined,
    tags: getList(env, 'tags'),
    outputs: getList(env, 'outputs', { commas: false }).map(parseOutput),
    push: getBool(env, 'push'),
    compression,
    registry: registryInputs(env),
    buildArgs: keyValueList(getList(env, 'build-args', { commas: false }), 'build-args'),
    labels: keyValueList(getList(env, 'labels', { commas: false }), 'labels'),
    noCache: getBool(env, 'no-cache'),
    ...attestInputs(env),
    cacheFrom: getList(env, 'cache-from', { commas: false }).map((c) => parseCacheFrom(c, env)),
    cacheTo: getList(env, 'cache-to', { commas: false }).map((c) => parseCacheTo(c, env)),
    pull: getBool(env, 'pull'),
    secrets,
    target: getInput(env, 'target') || undefined,
    platform: platforms[0],
    runtime: getInput(env, 'runtime') || undefined,
    root: env.TSBUILD_ROOT || undefined,
  };
  applyBuildxInputs(env, opts);
  const epoch = env.SOURCE_DATE_EPOCH;
  if (epoch !== undefined && epoch !== '') {
    if (!/^\d+$/.test(epoch)) throw new UsageError(`SOURCE_DATE_EPOCH must be whole seconds, got ${JSON.stringify(epoch)}`);
    opts.sourceDateEpoch = Number(epoch);
  }
  return opts;
}

/** The CLI's --insecure-registry, --ca-file and --registry-timeout, as inputs. */
function registryInputs(env: Env): DistributionOptions {
  const o: DistributionOptions = { insecure: getList(env, 'insecure-registry') };
  const ca = getInput(env, 'ca-file');
  if (ca) o.caFile = resolvePath(ca);
  const t = getInput(env, 'registry-timeout');
  if (t) {
    const seconds = Number(t);
    if (!Number.isFinite(seconds) || seconds <= 0) throw new UsageError(`registry-timeout: expected a positive number of seconds, got ${JSON.stringify(t)}`);
    o.timeoutMs = Math.round(seconds * 1000);
  }
  return o;
}

/** Runs the action once; returns the process exit code. */
export async function runAction(o: ActionOptions): Promise<number> {
  const { env, write } = o;
  const log = new GroupedLog(write);
  const started = Date.now();
  let title = 'tsbuild';
  const facts: Array<[string, string]> = [];
  try {
    const inputs = readInputs(env);
    // Secret values must never show up in the log, whatever a RUN step prints.
    for (const spec of Object.values(inputs.secrets ?? {})) {
      const value = spec.env !== undefined ? process.env[spec.env] : undefined;
      for (const line of (value ?? '').split(/\r?\n/)) if (line.trim() !== '') write(command('add-mask', {}, line));
    }
    title = `tsbuild: ${inputs.tags?.[0] ?? 'untagged image'}`;
    const r = await build({ ...inputs, onEvent: (e) => log.event(e), signal: o.signal });
    log.close();
    // Dockerfile check findings become annotations on their line; `warnings` lists them first.
    for (const c of r.checks) {
      const at = { file: annotationFile(c.file, env), line: c.range.start.line, col: c.range.start.column, endLine: c.range.end.line, endColumn: c.range.end.column };
      write(command('warning', { ...at, title: c.rule }, `${c.message}\n${c.url}`));
    }
    for (const w of r.warnings.slice(r.checks.length)) write(command('warning', { title: 'tsbuild' }, w));
    writeOutputs(env, { imageid: r.configDigest, digest: r.digest, metadata: JSON.stringify(r.metadata, null, 2) });
    facts.push(['image id', r.configDigest], ['digest', r.digest], ['total', `${((Date.now() - started) / 1000).toFixed(1)}s`]);
    if (r.tags.length > 0) facts.push(['tags', r.tags.join(', ')]);
    if (r.pushed.length > 0) facts.push(['pushed', 'yes']);
    writeSummary(env, title, facts, log);
    return 0;
  } catch (e) {
    log.close();
    write(errorCommand(e, env));
    facts.push(['result', 'failed'], ['error', e instanceof DockerfileError ? e.message : e instanceof Error ? e.message : String(e)]);
    writeSummary(env, title, facts, log);
    return 1;
  }
}

function writeSummary(env: Env, title: string, facts: Array<[string, string]>, log: GroupedLog): void {
  if (!env.GITHUB_STEP_SUMMARY || !summaryEnabled(env)) return;
  try {
    appendFileSync(env.GITHUB_STEP_SUMMARY, summaryMarkdown(title, facts, [...log.steps.values()]));
  } catch {
    // A summary that cannot be written must not turn a good build into a failed step.
  }
}

/** build-push-action's `provenance` (true, false, mode=min|max) and `sbom` (true, false). */
function attestInputs(env: Env): { provenance?: 'min' | 'max' | false; sbom?: boolean } {
  const out: { provenance?: 'min' | 'max' | false; sbom?: boolean } = {};
  const p = getInput(env, 'provenance');
  if (p !== '') {
    const v = p.replace(/^type=provenance,?/, '');
    if (v === 'true' || v === 'mode=min' || v === 'min') out.provenance = 'min';
    else if (v === 'mode=max' || v === 'max') out.provenance = 'max';
    else if (v === 'false') out.provenance = false;
    else throw new UsageError(`provenance: expected true, false or mode=min|max, got ${JSON.stringify(p)}`);
  }
  if (getInput(env, 'sbom') !== '') out.sbom = getBool(env, 'sbom');
  return out;
}
