/**
 * FROM: the global ARGs a FROM line may use, the expanded base name of each stage, and the state
 * a stage starts from (another stage, scratch, or an image from the store or a registry) with
 * its ONBUILD triggers.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DockerfileError, TsbuildError, UsageError, excerptOf } from '@tsbuild/errors';
import { envExpander, parse, parseInstruction } from '@tsbuild/dockerfile';
import type { Dockerfile, Instruction, Stage } from '@tsbuild/dockerfile';
import { formatPlatform, hostPlatform } from '@tsbuild/oci';
import type { ImageConfig, Platform } from '@tsbuild/oci';
import { cacheKey } from '../cache.ts';
import { BuildContext } from '../context.ts';
import { copyInto } from '../copy.ts';
import type { NamedContext } from '../flags.ts';
import { hashSources } from '../hash.ts';
import { NO_IGNORE, createIgnoreMatcher, parseIgnoreFile } from '../ignore.ts';
import type { IgnoreMatcher } from '../ignore.ts';
import { importFromLayout } from '../layout.ts';
import { contextOf } from '../plan.ts';
import { targetPlatform } from '../platform.ts';
import type { BaseImage, BuildSession } from '../session.ts';
import { DEFAULT_PATH, envList, setEnv } from '../state.ts';
import type { ImageState } from '../state.ts';
import type { StepKit } from './kit.ts';

/** The Dockerfile text a FROM line came from, for errors that point at it. */
export interface Source {
  df: Dockerfile;
  file: string;
  text: string;
}

/**
 * The ARGs before the first FROM: a --build-arg value overrides the default; defaults may use the
 * platform ARGs and earlier global ARGs. Names taken from `buildArgs` are added to `consumed`.
 */
export function globalArgs(df: Dockerfile, buildArgs: Record<string, string>, predefined: Record<string, string>, consumed: Set<string>): Map<string, string> {
  const args = new Map<string, string>(Object.entries(predefined));
  for (const a of df.globalArgs) {
    for (const kv of a.args) {
      let v: string | undefined;
      if (Object.hasOwn(buildArgs, kv.key)) {
        v = buildArgs[kv.key];
        consumed.add(kv.key);
      } else if (kv.value !== undefined) {
        v = envExpander(args, { escapeToken: df.escapeToken }).word(kv.value);
      }
      if (v !== undefined) args.set(kv.key, v);
    }
  }
  return args;
}

/** Each stage's FROM word expanded with the global ARGs (once per stage), and its --platform checked. */
export class FromResolver {
  private readonly names = new Map<Stage, string>();
  constructor(
    private readonly src: Source,
    private readonly args: ReadonlyMap<string, string>,
  ) {}

  private fail(s: Stage, message: string, extra: { hint?: string; cause?: unknown } = {}): DockerfileError {
    return new DockerfileError(message, { file: this.src.file, range: s.from.range, excerpt: excerptOf(this.src.text, s.from.range), ...extra });
  }

  /** The base name of `s`, e.g. `busybox:latest` or the name of an earlier stage. */
  image(s: Stage): string {
    let w = this.names.get(s);
    if (w !== undefined) return w;
    if (contextOf(this.src.df, s)) return s.from.image;
    try {
      w = envExpander(this.args, { escapeToken: this.src.df.escapeToken }).word(s.from.image);
    } catch (e) {
      throw this.fail(s, `FROM: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (w === '') throw this.fail(s, `FROM: base name (${s.from.image}) should not be blank`);
    this.names.set(s, w);
    return w;
  }

  /** Refuses a `FROM --platform` that tsbuild cannot build (checked before anything runs). */
  checkPlatform(s: Stage): void {
    if (s.from.platform === undefined) return;
    targetPlatform(envExpander(this.args).word(s.from.platform), `${this.src.file}:${s.from.range.start.line}: FROM --platform`);
  }

  /**
   * The state stage `s` starts from and the ONBUILD triggers it inherits. `base` is the state of
   * the stage it builds on, when it builds on a stage.
   */
  async baseState(
    session: BuildSession,
    s: Stage,
    base: ImageState | undefined,
    platform: Platform,
    kit?: StepKit,
  ): Promise<{ state: ImageState; triggers: Instruction[] }> {
    // A named context is taken as it is: an image's ONBUILD triggers run in the stage built on it.
    const named = contextOf(this.src.df, s);
    if (named) return { state: await contextState(session, named, platform, kit), triggers: [] };
    const name = this.image(s);
    let state: ImageState;
    try {
      if (base) {
        state = { ...base, config: structuredClone(base.config), layers: [...base.layers], args: new Map(), cmdSet: false };
      } else if (name.toLowerCase() === 'scratch') {
        state = scratchState(platform);
      } else {
        const img = await session.image(name);
        checkImagePlatform(img.config, name);
        state = { config: img.config, layers: img.layers, key: cacheKey(['from', img.digest]), args: new Map(), cmdSet: false };
      }
    } catch (e) {
      if (e instanceof TsbuildError && !(e instanceof DockerfileError)) {
        throw this.fail(s, `FROM ${name}: ${e.message}`, { hint: e.hint, cause: e });
      }
      throw e;
    }
    if (!envList(state).some((kv) => kv.startsWith('PATH='))) setEnv(state, 'PATH', DEFAULT_PATH);
    // ONBUILD triggers run in this stage and are not inherited further.
    const triggers = state.config.config?.OnBuild ?? [];
    if (state.config.config) {
      if (triggers.length === 0) delete state.config.config.OnBuild;
      else state.config.config.OnBuild = null;
    }
    return { state, triggers: this.parseTriggers(triggers, s) };
  }

  /** ONBUILD triggers of a base image, parsed as the instructions they were written as. */
  private parseTriggers(triggers: readonly string[], s: Stage): Instruction[] {
    const out: Instruction[] = [];
    for (const t of triggers) {
      try {
        const r = parse(t);
        for (const node of r.ast.children) out.push(parseInstruction(node, { file: `ONBUILD trigger of ${s.from.image}` }));
      } catch (e) {
        throw this.fail(s, `invalid ONBUILD trigger in base image: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    return out;
  }
}

function imageState(img: BaseImage): ImageState {
  return { config: img.config, layers: img.layers, key: cacheKey(['from', img.digest]), args: new Map(), cmdSet: false };
}

/** The state a `--build-context` stands for: an image (from the store, a registry or an OCI layout) or a directory. */
async function contextState(session: BuildSession, c: NamedContext, platform: Platform, kit: StepKit | undefined): Promise<ImageState> {
  try {
    switch (c.source.type) {
      case 'image': {
        const img = await session.image(c.source.ref);
        checkImagePlatform(img.config, c.source.ref);
        return imageState(img);
      }
      case 'oci-layout': {
        const img = await importFromLayout(session.store, c.source, platform, session.opts.signal);
        checkImagePlatform(img.config, c.spec);
        return imageState(img);
      }
      case 'local':
        if (!kit) throw new TsbuildError('INTERNAL', 'a directory context needs the step kit');
        return await directoryState(kit, c.source.dir, c.name, platform);
    }
  } catch (e) {
    if (e instanceof TsbuildError && !e.message.startsWith('--build-context')) {
      const wrapped = new TsbuildError(e.code, `--build-context ${c.spec}: ${e.message}`, { hint: e.hint, cause: e });
      wrapped.exitCode = e.exitCode;
      throw wrapped;
    }
    throw e;
  }
}

/** A context directory's own .dockerignore applies to it, as BuildKit applies it to a named context. */
async function contextIgnore(dir: string): Promise<IgnoreMatcher> {
  const file = join(dir, '.dockerignore');
  try {
    return createIgnoreMatcher(parseIgnoreFile(await readFile(file, 'utf8')), file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return NO_IGNORE;
    throw e;
  }
}

/**
 * A directory as a stage: one layer holding its files (owned by root, as COPY from the context
 * writes them). The layer is keyed by the directory's content alone, never by its path, so the
 * same files anywhere give the same key, and a rebuild of unchanged files unpacks nothing.
 */
async function directoryState(kit: StepKit, dir: string, name: string, platform: Platform): Promise<ImageState> {
  const st = await stat(dir).catch(() => undefined);
  if (!st) throw new UsageError(`directory ${dir} does not exist`);
  if (!st.isDirectory()) throw new UsageError(`${dir} is not a directory`, { hint: 'a context is a directory, docker-image://REF or oci-layout://DIR' });
  const ctx = await BuildContext.open(dir, { ignore: await contextIgnore(dir) });
  const matches = await ctx.resolveSources(['.']);
  const content = await hashSources(ctx, matches, { statCache: await kit.s.statCache(), signal: kit.s.opts.signal });
  const key = cacheKey(['build-context', content]);
  const r = await kit.layerStep(scratchState(platform), key, `COPY --from=${name} / /`, async (active) => {
    await copyInto(ctx, matches, active.rootfs, '/', { workdir: '/', signal: kit.s.opts.signal });
  });
  return r.state;
}

function scratchState(platform: Platform): ImageState {
  return {
    config: { architecture: platform.architecture, os: platform.os, config: {}, rootfs: { type: 'layers', diff_ids: [] }, history: [] },
    layers: [],
    key: cacheKey(['from', 'scratch', platform]),
    args: new Map(),
    cmdSet: false,
  };
}

/** A base image must run here: RUN steps execute natively. */
function checkImagePlatform(config: ImageConfig, ref: string): void {
  const host = hostPlatform();
  if (config.os !== host.os || (config.architecture !== host.architecture && config.architecture !== '')) {
    throw new TsbuildError('PLATFORM', `image ${ref} is ${config.os}/${config.architecture}, not ${formatPlatform(host)}`);
  }
}
