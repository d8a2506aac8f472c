import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Dockerfile } from '@tsbuild/dockerfile';
import { buildManifest, MediaType } from '@tsbuild/oci';
import type { Descriptor, Digest, ImageConfig } from '@tsbuild/oci';
import { openStore, resolveRoot } from '@tsbuild/store';
import type { Store } from '@tsbuild/store';
import { openSnapshotter } from '@tsbuild/snapshot';
import type { Snapshotter } from '@tsbuild/snapshot';
import { checkRlimits, cleanupContainers, defaultRuntimeRoot, ownerPid, pidAlive } from '@tsbuild/executor';
import type { Rlimit } from '@tsbuild/executor';
import { imageAnnotations } from './flags.ts';
import type { Annotation, NamedContext } from './flags.ts';
import { CacheMismatchError, GhaCacheClient, RemoteCaches, RemoteFetcher, cacheDocument, exportCaches, inlineAnnotation } from '@tsbuild/cache';
import type { CacheExport, CacheImport, ExportInput, ExportReport } from '@tsbuild/cache';
import type { ClientOptions } from '@tsbuild/registry';
import type { EventSink } from './events.ts';
import { BuildContext } from './context.ts';
import { hashSources } from './hash.ts';
import { buildableDockerfile, checkBuild } from './check.ts';
import type { BuildCheck } from './check.ts';
import { planStages, withContexts } from './plan.ts';
import { platformArgs, targetPlatform } from './platform.ts';
import { planPublish, publish } from './publish.ts';
import type { PublishOptions, Published } from './publish.ts';
import { BuildSession, requireRoot } from './session.ts';
import type { ResourceLimits } from './session.ts';
import { StageScheduler } from './stage.ts';
import { Attestations } from './attest.ts';
import type { AttestOptions } from './attest.ts';
import { MissExplainer, buildIdentity } from './explain.ts';
import { span } from './trace.ts';
import { FromResolver, globalArgs } from './steps/from.ts';
import type { ImageState } from './state.ts';

export interface BuildOptions extends PublishOptions, AttestOptions {
  /** The build context directory. */
  context: string;
  /** Dockerfile path (default CONTEXT/Dockerfile); with `dockerfileText` only used in messages. */
  file?: string;
  /** Dockerfile contents when they do not come from `file` (e.g. `-f -`). */
  dockerfileText?: string;
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
  /** `--add-host`: extra /etc/hosts entries of RUN steps. */
  extraHosts?: { host: string; ip: string }[];
  /** `--ulimit`: setrlimit values of RUN steps. */
  ulimits?: Rlimit[];
  /** `--shm-size`: bytes of RUN steps' /dev/shm. */
  shmSize?: number;
  /** `--ssh`: by id, an agent socket or key files for RUN --mount=type=ssh. */
  ssh?: Record<string, string[]>;
  /** `--build-context`: names FROM, COPY --from and RUN --mount from= take as a directory or an image. */
  buildContexts?: NamedContext[];
  /** `--annotation`: of the manifest, or of the descriptor that points at it. */
  annotations?: Annotation[];
  /** The tsbuild root (store, snapshots, cache); see resolveRoot. */
  root?: string;
  onEvent?: EventSink;
  signal?: AbortSignal;
  /** `--cache-from`: caches to reuse steps from, in order (the local cache is always asked first). */
  cacheFrom?: CacheImport[];
  /** `--cache-to`: where to write what this build did. */
  cacheTo?: CacheExport[];
}

export interface BuildResult extends Published {
  /** The image's manifest in the local store. */
  manifest: Descriptor;
  /** The image id: the config digest, as Docker shows it. */
  configDigest: Digest;
  warnings: string[];
  /** What each --cache-to received. */
  cacheExports: ExportReport[];
  /** The Dockerfile checks' findings, with their lines, for annotations (also the first entries of `warnings`). */
  checks: BuildCheck[];
}

export interface OpenRootOptions {
  /** How registries are reached for blobs the store holds lazily (layers of base images, remote cache hits). */
  registry?: ClientOptions;
  /** GitHub's cache, for blobs that came from it. */
  gha?: GhaCacheClient | undefined;
}

/**
 * Opens the store and snapshotter under one root, cleaning what a killed tsbuild left behind. The
 * store fetches blobs it knows only by where they are (lazily pulled layers, remote cache hits)
 * when something first reads them.
 */
export async function openRoot(root?: string, opts: OpenRootOptions = {}): Promise<{ root: string; store: Store; snapshots: Snapshotter }> {
  const r = resolveRoot(root ? { root } : {});
  const store = await openStore({ root: r });
  store.setFetcher(new RemoteFetcher(store, opts));
  // Containers of dead builds go first, so the snapshotter can then unmount what they held. A
  // dead run leaves its bundle in <root>/state, so the runtime is only asked when one is there.
  if (await deadBundles(join(r, 'state'))) {
    // Without root, runc keeps its state under the root's state dir, where the executor put it.
    const runtimeRoot = defaultRuntimeRoot(join(r, 'state'));
    await cleanupContainers('runc', runtimeRoot === undefined ? {} : { runtimeRoot }).catch(() => {});
  }
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

/** Builds a Dockerfile into an image in the local store, then publishes it to its outputs. */
export async function build(opts: BuildOptions): Promise<BuildResult> {
  requireRoot('tsbuild build');
  const started = Date.now();
  planPublish(opts);
  const checked = await span('dockerfile.check', () => checkBuild(opts));
  const { contextDir, file, shownFile, text } = checked;
  const df = withContexts(buildableDockerfile(checked), opts.buildContexts ?? []);
  const src = { df, file: shownFile, text };
  const platform = targetPlatform(opts.platform);
  const annotations = imageAnnotations(opts.annotations ?? [], platform);
  const emit: EventSink = opts.onEvent ?? (() => {});
  const buildArgs = { ...(opts.buildArgs ?? {}) };
  const predefined = platformArgs(platform);
  const consumed = new Set<string>();
  const args = globalArgs(df, buildArgs, predefined, consumed);
  const from = new FromResolver(src, args);
  const plan = planStages(df, opts.target, (s) => from.image(s), shownFile, text);
  for (const s of plan.order) from.checkPlatform(s);
  // A limit the runtime cannot set fails now, before any step has run.
  await checkRlimits(opts.ulimits ?? []);

  const caches = [...(opts.cacheFrom ?? []), ...(opts.cacheTo ?? [])];
  const gha = caches.some((c) => c.type === 'gha') ? GhaCacheClient.tryFromEnv(process.env) : undefined;
  const { root, store, snapshots } = await span('root.open', () => openRoot(opts.root, { registry: opts.registry, gha }));
  const session = new BuildSession(root, store, snapshots, {
    noCache: opts.noCache ?? false,
    pull: opts.pull ?? false,
    registry: opts.registry ?? {},
    emit,
    signal: opts.signal,
    sourceDateEpoch: opts.sourceDateEpoch,
    runtime: opts.runtime,
    network: opts.network ?? 'default',
    limits: opts.limits ?? {},
    run: { extraHosts: opts.extraHosts, ulimits: opts.ulimits, shmSize: opts.shmSize, ssh: opts.ssh },
  });
  const remoteOpts = { store, registry: opts.registry, gha, signal: opts.signal, warn: (m: string) => session.warn(m) };
  session.explain = new MissExplainer(store, buildIdentity(planPublish(opts).names, opts.target, contextDir, file));
  try {
    if (opts.cacheFrom && opts.cacheFrom.length > 0 && !opts.noCache) {
      // Base images resolve (a registry round trip each on a fresh runner) while the caches load.
      for (const s of plan.order) {
        const name = from.image(s);
        if (!plan.deps.get(s)?.base && name.toLowerCase() !== 'scratch' && !df.stages.some((st) => st.name === name.toLowerCase())) void session.image(name).catch(() => {});
      }
      session.remote = await span('cache.import', () => RemoteCaches.load(opts.cacheFrom ?? [], remoteOpts));
    }

    let ctxPromise: Promise<BuildContext> | undefined;
    const context = () => (ctxPromise ??= BuildContext.open(contextDir, { ignore: checked.ignore }));
    let ctxKey: Promise<string> | undefined;
    const contextKey = () =>
      (ctxKey ??= context().then(async (c) => hashSources(c, await c.resolveSources(['.']), { statCache: await session.statCache() })));

    emit({ type: 'build-start', time: Date.now(), stages: plan.order.length, steps: plan.order.reduce((n, s) => n + s.instructions.length + 1, 0) });
    const inlineCache = opts.cacheTo?.find((c) => c.type === 'inline');
    if (inlineCache && !planPublish(opts).push) session.warn('--cache-to type=inline travels with a pushed image, and nothing is pushed: no cache was written');
    // A layer from a remote cache that turns out not to be what the cache claimed (found when its
    // bytes are read) makes the build start over without the steps that took it: they run.
    for (let attempt = 0; ; attempt++) {
      const stages = new StageScheduler({
        session, src, from, deps: plan.deps, platform, context, contextKey, buildArgs, consumed, globalArgs: args, secrets: opts.secrets ?? {},
      });
      try {
        let state: ImageState;
        try {
          state = await span('stages', () => stages.run(plan.order.at(-1)!));
        } finally {
          // Let stages started in parallel settle before the store is left alone.
          await stages.settle();
          await span('statcache.save', () => session.saveStatCache().catch(() => {}));
        }
        const image = await span('image.write', () => writeImage(store, state, platform, opts.labels, annotations));
        emit({ type: 'build-done', time: Date.now(), imageDigest: image.manifest.digest, configDigest: image.configDigest, durationMs: Date.now() - started });
        const input = exportInput(session, state.key);
        const finished = new Date();
        const attestations = new Attestations(opts, {
          dockerfile: { path: opts.file ?? 'Dockerfile', text },
          target: opts.target,
          buildArgs,
          labels: opts.labels,
          platform,
          context: { path: opts.context, digest: contextKey },
          baseImages: await session.baseImages(),
          secrets: Object.keys(opts.secrets ?? {}).sort(),
          ssh: Object.keys(opts.ssh ?? {}).sort(),
          steps: session.steps,
          startedOn: opts.sourceDateEpoch !== undefined ? new Date(opts.sourceDateEpoch * 1000) : new Date(started),
          finishedOn: opts.sourceDateEpoch !== undefined ? new Date(opts.sourceDateEpoch * 1000) : finished,
          created: new Date(session.now()),
          rootfs: async () => {
            const cleanup: (() => Promise<void>)[] = [];
            const parent = await session.ensureSnapshots(state.layers, state.config.rootfs.diff_ids);
            const view = await snapshots.prepare(parent, { signal: opts.signal });
            cleanup.push(() => view.release());
            return { dir: view.rootfs, release: async () => { for (const c of cleanup) await c(); } };
          },
          warn: (m) => session.warn(m),
        });
        const published = await span('publish', () => publish(store, image, {
          ...opts,
          emit,
          signal: opts.signal,
          attestations,
          pushAnnotations: inlineCache ? async () => inlineAnnotation(await cacheDocument(input, { ...inlineCache, compression: opts.compression ?? 'gzip' }, remoteOpts)) : undefined,
        }));
        const cacheExports = await span('cache.export', () => exportCaches(opts.cacheTo ?? [], input, remoteOpts));
        await span('inputs.save', () => session.explain?.save() ?? Promise.resolve());
        for (const r of cacheExports) emit({ type: 'cache-exported', time: Date.now(), ...r });
        const warnings = checked.checks.map((w) => `${shownFile}:${w.range.start.line}: ${w.rule}: ${w.message}`);
        const unused = Object.keys(buildArgs).filter((k) => !consumed.has(k) && !(k in predefined) && !args.has(k));
        if (unused.length > 0) warnings.push(`one or more build args were not consumed: ${unused.sort().join(', ')}`);
        return { ...published, ...image, warnings: [...warnings, ...session.warnings], checks: checked.checks, cacheExports };
      } catch (e) {
        const lie = causeOf(e, CacheMismatchError);
        if (!lie || attempt >= 20) throw e;
        const keys = await session.distrust(lie.diffId);
        if (keys.length === 0) throw e;
        session.warn(`${lie.message}: running the ${keys.length === 1 ? 'step' : `${keys.length} steps`} that took it again`);
      }
    }
  } finally {
    gha?.close();
  }
}

/** What the cache export needs of a finished build. */
function exportInput(session: BuildSession, finalKey: string): ExportInput {
  return {
    records: [...session.journal.values()],
    finalKey,
    mounts: [...session.mountsUsed].map(([name, id]) => ({ name, id, dir: join(session.root, 'cache-mounts', name) })),
    sourceDateEpoch: session.opts.sourceDateEpoch,
  };
}

/** `e` or the first error in its chain of causes that is a `T`. */
function causeOf<T>(e: unknown, type: new (...a: never[]) => T): T | undefined {
  for (let c = e, depth = 0; c instanceof Error && depth < 10; c = c.cause, depth++) if (c instanceof type) return c;
  return undefined;
}


/** The final stage's state as an image in the store: config (with --label values) and manifest. */
async function writeImage(
  store: Store,
  state: ImageState,
  platform: { os: string; architecture: string },
  labels: Record<string, string> | undefined,
  annotations: { manifest: Record<string, string>; descriptor: Record<string, string> },
): Promise<{ manifest: Descriptor; configDigest: Digest }> {
  const config: ImageConfig = structuredClone(state.config);
  const cc = (config.config ??= {});
  if (labels && Object.keys(labels).length > 0) cc.Labels = { ...(cc.Labels ?? {}), ...labels };
  if (cc.OnBuild === null) delete cc.OnBuild;
  const lastCreated = config.history?.at(-1)?.created;
  if (lastCreated) config.created = lastCreated;
  config.architecture = platform.architecture;
  config.os = platform.os;
  const configDesc = await store.putJson(MediaType.OciConfig, config);
  const manifest = await store.putJson(MediaType.OciManifest, buildManifest(configDesc, state.layers, annotations.manifest));
  if (Object.keys(annotations.descriptor).length > 0) manifest.annotations = { ...annotations.descriptor };
  return { manifest, configDigest: configDesc.digest };
}

export type { Dockerfile };
