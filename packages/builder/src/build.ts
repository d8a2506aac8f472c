import { readFile, readdir } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { DockerfileError, TsbuildError, UsageError, excerptOf } from '@tsbuild/errors';
import { envExpander, parseDockerfile } from '@tsbuild/dockerfile';
import type { Dockerfile, Stage } from '@tsbuild/dockerfile';
import { buildManifest, MediaType } from '@tsbuild/oci';
import type { Descriptor, Digest, ImageConfig } from '@tsbuild/oci';
import { openStore, resolveRoot } from '@tsbuild/store';
import type { Store } from '@tsbuild/store';
import { openSnapshotter } from '@tsbuild/snapshot';
import type { Snapshotter } from '@tsbuild/snapshot';
import { cleanupContainers, ownerPid, pidAlive } from '@tsbuild/executor';
import type { EventSink } from './events.ts';
import { cacheKey } from './cache.ts';
import { BuildContext } from './context.ts';
import { loadIgnore } from './ignore.ts';
import { planStages, findStage } from './plan.ts';
import { parsePlatform, platformArgs } from './platform.ts';
import { BuildSession, requireRoot } from './session.ts';
import type { ImageFetcher, ResourceLimits } from './session.ts';
import { StageRunner } from './stage.ts';
import { DEFAULT_PATH, envList, setEnv } from './state.ts';
import type { ImageState } from './state.ts';
import { hashSources } from './hash.ts';

export interface BuildOptions {
  /** The build context directory. */
  context: string;
  /** Dockerfile path (default CONTEXT/Dockerfile); with `dockerfileText` only used in messages. */
  file?: string;
  /** Dockerfile contents when they do not come from `file` (e.g. `-f -`). */
  dockerfileText?: string;
  tags?: string[];
  buildArgs?: Record<string, string>;
  target?: string;
  noCache?: boolean;
  pull?: boolean;
  labels?: Record<string, string>;
  network?: 'default' | 'none' | 'host';
  limits?: ResourceLimits;
  runtime?: string;
  sourceDateEpoch?: number;
  platform?: string;
  /** Secrets for RUN --mount=type=secret: id → a file or an environment variable. */
  secrets?: Record<string, { file?: string; env?: string }>;
  /** The tsbuild root (store, snapshots, cache); see resolveRoot. */
  root?: string;
  onEvent?: EventSink;
  signal?: AbortSignal;
  /** Pulls a missing base image into the store (the CLI wires the registry client here). */
  fetchImage?: ImageFetcher;
}

export interface BuildResult {
  manifest: Descriptor;
  configDigest: Digest;
  tags: string[];
  warnings: string[];
}

/** Opens the store and snapshotter under one root, cleaning what a killed tsbuild left behind. */
export async function openRoot(root?: string): Promise<{ root: string; store: Store; snapshots: Snapshotter }> {
  const r = resolveRoot(root ? { root } : {});
  const store = await openStore({ root: r });
  // Containers of dead builds go first, so the snapshotter can then unmount what they held. A
  // dead run leaves its bundle in <root>/state, so the runtime is only asked when one is there.
  if (await deadBundles(join(r, 'state'))) await cleanupContainers().catch(() => {});
  const snapshots = await openSnapshotter({ root: join(r, 'snapshots') });
  return { root: r, store, snapshots };
}

async function deadBundles(stateDir: string): Promise<boolean> {
  try {
    return (await readdir(stateDir)).some((n) => {
      const pid = ownerPid(n);
      return pid !== undefined && !pidAlive(pid);
    });
  } catch {
    return false;
  }
}

/** Builds a Dockerfile into an image in the local store and tags it. */
export async function build(opts: BuildOptions): Promise<BuildResult> {
  requireRoot('tsbuild build');
  const started = Date.now();
  const contextDir = resolvePath(opts.context);
  const file = opts.file && opts.file !== '-' ? opts.file : join(contextDir, 'Dockerfile');
  const shownFile = opts.file === '-' ? '<stdin>' : file;
  let text = opts.dockerfileText;
  if (text === undefined) {
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new UsageError(`cannot read Dockerfile ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, {
        hint: 'pass the Dockerfile with -f, or put one at the root of the build context',
      });
    }
  }
  const df = parseDockerfile(text, { file: shownFile });
  const platform = parsePlatform(opts.platform);
  const emit: EventSink = opts.onEvent ?? (() => {});
  const buildArgs = { ...(opts.buildArgs ?? {}) };
  const predefined = platformArgs(platform);

  // Global ARGs: build-arg values override defaults; FROM lines see these and the platform ARGs.
  const consumed = new Set<string>();
  const globalArgs = new Map<string, string>(Object.entries(predefined));
  for (const a of df.globalArgs) {
    for (const kv of a.args) {
      let v: string | undefined;
      if (Object.hasOwn(buildArgs, kv.key)) {
        v = buildArgs[kv.key];
        consumed.add(kv.key);
      } else if (kv.value !== undefined) {
        v = envExpander(globalArgs, { escapeToken: df.escapeToken }).word(kv.value);
      }
      if (v !== undefined) globalArgs.set(kv.key, v);
    }
  }
  const fromImage = new Map<Stage, string>();
  const resolveFrom = (s: Stage): string => {
    let w = fromImage.get(s);
    if (w === undefined) {
      try {
        w = envExpander(globalArgs, { escapeToken: df.escapeToken }).word(s.from.image);
      } catch (e) {
        throw new DockerfileError(`FROM: ${e instanceof Error ? e.message : String(e)}`, {
          file: shownFile, range: s.from.range, excerpt: excerptOf(text, s.from.range),
        });
      }
      if (w === '') {
        throw new DockerfileError(`FROM: base name (${s.from.image}) should not be blank`, {
          file: shownFile, range: s.from.range, excerpt: excerptOf(text, s.from.range),
        });
      }
      fromImage.set(s, w);
    }
    return w;
  };
  const plan = planStages(df, opts.target, resolveFrom, shownFile, text);
  for (const s of plan.order) {
    if (s.from.platform !== undefined) {
      parsePlatform(envExpander(globalArgs).word(s.from.platform), `${shownFile}:${s.from.range.start.line}: FROM --platform`);
    }
  }

  const { root, store, snapshots } = await openRoot(opts.root);
  const session = new BuildSession(root, store, snapshots, {
    noCache: opts.noCache ?? false,
    pull: opts.pull ?? false,
    fetchImage: opts.fetchImage,
    emit,
    signal: opts.signal,
    sourceDateEpoch: opts.sourceDateEpoch,
    runtime: opts.runtime,
    network: opts.network ?? 'default',
    limits: opts.limits ?? {},
  });

  let ctxPromise: Promise<BuildContext> | undefined;
  const context = () =>
    (ctxPromise ??= (async () => {
      const ignore = await loadIgnore(contextDir, file);
      return BuildContext.open(contextDir, { ignore });
    })());
  let ctxKey: Promise<string> | undefined;
  const contextKey = () =>
    (ctxKey ??= context().then(async (c) => hashSources(c, await c.resolveSources(['.']), { statCache: await session.statCache() })));

  const results = new Map<Stage, Promise<ImageState>>();
  const totalSteps = plan.order.reduce((n, s) => n + s.instructions.length + 1, 0);
  emit({ type: 'build-start', time: Date.now(), stages: plan.order.length, steps: totalSteps });

  const runStage = (s: Stage): Promise<ImageState> => {
    let p = results.get(s);
    if (p) return p;
    p = (async () => {
      const deps = plan.deps.get(s);
      const label = s.name ?? `stage-${s.index}`;
      const runner = new StageRunner({
        session,
        file: shownFile,
        text,
        escapeToken: df.escapeToken,
        context,
        contextKey,
        buildArgs,
        consumed,
        globalArgs,
        secrets: opts.secrets ?? {},
        stageLabel: label,
        stageResult: (ref) => {
          const st = findStage(df, ref);
          return st ? runStage(st) : undefined;
        },
      });
      // Start what this stage reads in parallel with its own base.
      for (const r of deps?.reads ?? []) void runStage(r).catch(() => {});
      const total = s.instructions.length + 1;
      const fromId = session.nextStepId();
      const fromName = `[${label} 1/${total}] FROM ${resolveFrom(s)}`;
      const t0 = Date.now();
      emit({ type: 'step-start', time: t0, id: fromId, name: fromName, stage: label, index: 1, total });
      let base: ImageState;
      let triggers: string[] = [];
      try {
        if (deps?.base) {
          const b = await runStage(deps.base);
          base = { ...b, config: structuredClone(b.config), layers: [...b.layers], args: new Map(), cmdSet: false };
        } else if (resolveFrom(s).toLowerCase() === 'scratch') {
          base = scratchState(platform);
        } else {
          const img = await session.image(resolveFrom(s));
          checkPlatform(img.config, resolveFrom(s));
          base = { config: img.config, layers: img.layers, key: cacheKey(['from', img.digest]), args: new Map(), cmdSet: false };
        }
        if (!envList(base).some((kv) => kv.startsWith('PATH='))) setEnv(base, 'PATH', DEFAULT_PATH);
        triggers = base.config.config?.OnBuild ?? [];
        if (base.config.config) base.config.config.OnBuild = null;
        if (triggers.length === 0 && base.config.config?.OnBuild === null) delete base.config.config.OnBuild;
      } catch (e) {
        emit({ type: 'step-error', time: Date.now(), id: fromId, message: e instanceof Error ? e.message : String(e) });
        if (e instanceof TsbuildError && !(e instanceof DockerfileError)) {
          throw new DockerfileError(`FROM ${resolveFrom(s)}: ${e.message}`, {
            file: shownFile, range: s.from.range, excerpt: excerptOf(text, s.from.range), ...(e.hint ? { hint: e.hint } : {}), cause: e,
          });
        }
        throw e;
      }
      emit({ type: 'step-done', time: Date.now(), id: fromId, cached: true, durationMs: Date.now() - t0 });
      const steps = [...runner.parseTriggers(triggers, s.from), ...s.instructions];
      return runner.runSteps(base, steps, 1, Math.max(total, steps.length + 1));
    })();
    results.set(s, p);
    return p;
  };

  const final = plan.order.at(-1) as Stage;
  let state: ImageState;
  try {
    state = await runStage(final);
  } finally {
    // Let stages started in parallel settle before the store is left alone.
    await Promise.allSettled([...results.values()]);
    await session.saveStatCache().catch(() => {});
  }

  const config: ImageConfig = structuredClone(state.config);
  const cc = (config.config ??= {});
  if (opts.labels && Object.keys(opts.labels).length > 0) cc.Labels = { ...(cc.Labels ?? {}), ...opts.labels };
  if (cc.OnBuild === null) delete cc.OnBuild;
  const lastCreated = config.history?.at(-1)?.created;
  if (lastCreated) config.created = lastCreated;
  config.architecture = platform.architecture;
  config.os = platform.os;
  const configDesc = await store.putJson(MediaType.OciConfig, config);
  const manifest = buildManifest(configDesc, state.layers);
  const manifestDesc = await store.putJson(MediaType.OciManifest, manifest);
  const tags: string[] = [];
  for (const t of opts.tags ?? []) tags.push(await store.tag(t, manifestDesc));

  const warnings = df.warnings.map((w) => `${shownFile}:${w.range.start.line}: ${w.message}`);
  const unused = Object.keys(buildArgs).filter((k) => !consumed.has(k) && !(k in predefined) && !globalArgs.has(k));
  if (unused.length > 0) warnings.push(`one or more build args were not consumed: ${unused.sort().join(', ')}`);
  emit({ type: 'build-done', time: Date.now(), imageDigest: manifestDesc.digest, configDigest: configDesc.digest, durationMs: Date.now() - started });
  return { manifest: manifestDesc, configDigest: configDesc.digest, tags, warnings };
}

function scratchState(platform: { os: string; architecture: string }): ImageState {
  return {
    config: { architecture: platform.architecture, os: platform.os, config: {}, rootfs: { type: 'layers', diff_ids: [] }, history: [] },
    layers: [],
    key: cacheKey(['from', 'scratch', platform]),
    args: new Map(),
    cmdSet: false,
  };
}

function checkPlatform(config: ImageConfig, ref: string): void {
  if (config.os !== 'linux' || (config.architecture !== 'amd64' && config.architecture !== '')) {
    throw new TsbuildError('PLATFORM', `image ${ref} is ${config.os}/${config.architecture}, not linux/amd64`);
  }
}

export type { Dockerfile };
