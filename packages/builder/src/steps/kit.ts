/**
 * The small kit every step family shares: errors that name the Dockerfile line, variable
 * expansion that records what a step read (for its key), the cache lookup, and the one shape of a
 * step that makes a layer (prepare an overlay, change it, diff the upper dir, commit).
 */
import { mkdir, mkdtemp, readdir } from 'node:fs/promises';
import { join, posix } from 'node:path';
import type { Writable } from 'node:stream';
import { DockerfileError, TsbuildError, CancelledError, excerptOf } from '@tsbuild/errors';
import type { DockerfileErrorOptions } from '@tsbuild/errors';
import { envExpander, expandInstruction } from '@tsbuild/dockerfile';
import type { Instruction } from '@tsbuild/dockerfile';
import { diff, secureJoin } from '@tsbuild/layer';
import type { DiffOptions, DiffResult } from '@tsbuild/layer';
import { chainIds, MediaType } from '@tsbuild/oci';
import type { Digest } from '@tsbuild/oci';
import type { Active, MergedLayers } from '@tsbuild/snapshot';
import type { Usage } from '@tsbuild/executor';
import type { BuildRecord } from '@tsbuild/cache';
import type { CacheRecord } from '../cache.ts';
import type { StepInputs } from '../explain.ts';
import { span } from '../trace.ts';
import type { BuildContext } from '../context.ts';
import type { BuildSession } from '../session.ts';
import { addHistory, cloneState, diffIds, expansionEnv } from '../state.ts';
import type { ImageState } from '../state.ts';

/** What a stage's steps need from the build around them. */
export interface StageEnv {
  session: BuildSession;
  file: string;
  text: string;
  escapeToken: string;
  /** The build context (with .dockerignore applied). */
  context: () => Promise<BuildContext>;
  /** Content key of the whole context, for RUN --mount=type=bind without from=. */
  contextKey: () => Promise<string>;
  /** Values from --build-arg. */
  buildArgs: Record<string, string>;
  /** Build args consumed by an ARG line (for the "not consumed" warning). */
  consumed: Set<string>;
  /** Global ARG defaults (before the first FROM), already expanded. */
  globalArgs: ReadonlyMap<string, string>;
  /** A stage's final state, by stage name or index (for COPY --from and RUN --mount from=). */
  stageResult: (ref: string) => Promise<ImageState> | undefined;
  secrets: Record<string, { file?: string; env?: string }>;
  stageLabel: string;
}

/** One step being run. */
export interface StepCtx {
  id: string;
  inst: Instruction;
  /** Tail of the step's output, for the error message of a failed RUN. */
  tail: string[];
  /** What the step read, filled in by the step as it computes its key (to explain a cache miss). */
  inputs?: StepInputs;
}

export interface StepResult {
  state: ImageState;
  cached: boolean;
  /** Uncompressed size of the layer the step made or reused. */
  layerSize?: number;
  /** What the step's process cost (RUN), where cgroups can be read. */
  usage?: Usage;
}

/** Marks history entries of steps that made a layer, as BuildKit marks its own. */
const LAYER_SUFFIX = ' # tsbuild';

export interface LayerStepOptions {
  /** A step whose upper dir stays empty makes no layer (WORKDIR of an existing directory). */
  emptyIfUnchanged?: boolean;
  /**
   * Asked on a miss before anything is mounted: true when the step is known to change nothing
   * (it then makes no layer, as `emptyIfUnchanged`, without a snapshot).
   */
  unchanged?: () => Promise<boolean>;
  /** COPY --link: the layer is written over an empty tree, so it does not depend on the layers below. */
  independent?: boolean;
}

/**
 * Writes a layer tar into `out` (and ends it); resolves with its size and, if it hashed the tar
 * too, its diff_id (the store's blob writer hashes what it is given either way).
 */
export type LayerWriter = (out: Writable) => Promise<{ size: number; diffId?: Digest }>;

/** A layer written into the store's ingest area, before its step knew whether it was cached. */
export interface PendingLayer {
  /** Moves the blob into the store; resolves with its diff_id and size. */
  commit(): Promise<DiffResult>;
  /** Drops the blob (nothing once committed). */
  abort(): Promise<void>;
}

export class StepKit {
  readonly s: BuildSession;
  constructor(readonly env: StageEnv) {
    this.s = env.session;
  }

  /** A DockerfileError that points at the instruction's lines. */
  fail(inst: { range: Instruction['range'] }, message: string, hint?: string, cause?: unknown): DockerfileError {
    const opts: DockerfileErrorOptions = { file: this.env.file, range: inst.range, excerpt: excerptOf(this.env.text, inst.range) };
    if (hint !== undefined) opts.hint = hint;
    if (cause !== undefined) opts.cause = cause;
    return new DockerfileError(message, opts);
  }

  /** Attributes any non-location error of a step to the step's Dockerfile line. */
  wrap(inst: Instruction, e: unknown): unknown {
    if (e instanceof DockerfileError || e instanceof CancelledError) return e;
    if (e instanceof TsbuildError) return this.fail(inst, `${inst.original.split('\n')[0]}: ${e.message}`, e.hint, e);
    const err = e as NodeJS.ErrnoException;
    if (err && typeof err.code === 'string') return this.fail(inst, `${inst.kind.toUpperCase()}: ${err.message}`, undefined, e);
    return e;
  }

  /** Expands an instruction's words with ARG/ENV values; returns the values it read for the key. */
  expand<T extends Instruction>(state: ImageState, inst: T): { inst: T; used: [string, string][] } {
    const env = expansionEnv(state);
    const ex = envExpander(env, { escapeToken: this.env.escapeToken });
    const out = expandInstruction(inst, ex, { file: this.env.file, text: this.env.text });
    const used = [...ex.matched].sort().map((k) => [k, env.get(k) ?? ''] as [string, string]);
    return { inst: out, used };
  }

  /** A private directory under the root's state dir (removed by the caller). */
  async tempDir(prefix: string): Promise<string> {
    await mkdir(this.s.stateDir, { recursive: true });
    return mkdtemp(join(this.s.stateDir, prefix));
  }

  /** Records a step that changes only the config; returns its `created` time (kept from the cache). */
  async configRecord(key: string): Promise<{ created: string; cached: boolean }> {
    const hit = await this.s.lookup(key);
    if (hit && !hit.layer) return { created: hit.created, cached: true };
    const rec: CacheRecord = { v: 1, created: this.s.now() };
    await this.s.cache.set(key, rec);
    return { created: rec.created, cached: false };
  }

  /** Tells the session what a step produced, for --cache-to. */
  journal(parent: ImageState, next: ImageState, rec: CacheRecord): void {
    const history = next.config.history?.at(-1);
    const r: BuildRecord = { key: next.key, parent: parent.key, created: rec.created, config: configChanges(parent, next) };
    if (history) r.history = history;
    if (rec.layer) r.layer = rec.layer;
    this.s.record(r);
  }

  /**
   * The shared shape of every layer step: look the key up; on a miss prepare an overlay over the
   * parent, let `work` change it, diff the upper dir into the store and commit the snapshot.
   */
  async layerStep(
    state: ImageState,
    key: string,
    createdBy: string,
    work: (active: Active) => Promise<void>,
    opts: LayerStepOptions = {},
  ): Promise<StepResult> {
    const next = cloneState(state);
    next.key = key;
    const hit = await span('cache.lookup', () => this.s.lookup(key));
    if (hit) return this.append(state, next, hit, createdBy, true);
    const rec = await this.s.heavy.run(async (): Promise<CacheRecord> => {
      if (opts.unchanged && (await opts.unchanged())) return { v: 1, created: this.s.now() };
      // An independent layer is written over an empty tree, so its bytes do not depend on the
      // layers below; its snapshot is unpacked from the blob when first needed.
      const parent = opts.independent ? undefined : await span('snapshot.unpack', () => this.s.ensureSnapshots(state.layers, diffIds(state)));
      const active = await span('snapshot.prepare', () => this.s.snapshots.prepare(parent, { signal: this.s.opts.signal }));
      let committed = false;
      try {
        await span('step.work', () => work(active));
        // Nothing looks through the rootfs any more: it unmounts while the upper dir is diffed.
        active.detach();
        this.s.checkAbort();
        const created = this.s.now();
        if (opts.emptyIfUnchanged && (await readdir(active.upper)).length === 0) return { v: 1, created };
        const writer = this.s.store.blobWriter();
        let result: { diffId: Digest; size: number };
        try {
          // The lowers let the diff drop the opaque markers fuse-overlayfs leaves on new directories.
          const dopts: DiffOptions = { signal: this.s.opts.signal, lowerDirs: active.lowerDirs };
          if (this.s.opts.sourceDateEpoch !== undefined) dopts.sourceDateEpoch = this.s.opts.sourceDateEpoch;
          result = await span('layer.diff', () => diff(active.upper, writer.stream, dopts));
          await span('store.commit', () => writer.commit({ digest: result.diffId, size: result.size }));
        } catch (e) {
          await writer.abort().catch(() => {});
          throw e;
        }
        if (!opts.independent) {
          await span('snapshot.commit', () => active.commit(chainIds([...diffIds(state), result.diffId]).at(-1) as Digest));
          committed = true;
        }
        return { v: 1, created, layer: { diffId: result.diffId, size: result.size } };
      } finally {
        if (!committed) await active.release().catch(() => {});
      }
    });
    await span('cache.record', () => this.s.cache.set(key, rec));
    return this.append(state, next, rec, createdBy, false);
  }

  /**
   * A layer step whose layer is written straight into the store, without an overlay or a snapshot
   * (COPY from its sources): look the key up; on a miss `layer` writes the tar into a blob (or is
   * one written ahead, which a hit drops) and the cache records it. Nothing is unpacked: a later
   * step that needs the filesystem unpacks the blob then (`ensureSnapshots`).
   */
  async blobStep(state: ImageState, key: string, createdBy: string, layer: LayerWriter | PendingLayer): Promise<StepResult> {
    const next = cloneState(state);
    next.key = key;
    const ahead = typeof layer === 'function' ? undefined : layer;
    try {
      const hit = await span('cache.lookup', () => this.s.lookup(key));
      if (hit) return this.append(state, next, hit, createdBy, true);
      const rec = await this.s.heavy.run(async (): Promise<CacheRecord> => {
        const pending = ahead ?? (await this.writeLayer(layer as LayerWriter));
        let stored: DiffResult;
        try {
          this.s.checkAbort();
          stored = await span('store.commit', () => pending.commit());
        } finally {
          await pending.abort().catch(() => {});
        }
        return { v: 1, created: this.s.now(), layer: { diffId: stored.diffId, size: stored.size } };
      });
      await span('cache.record', () => this.s.cache.set(key, rec));
      return this.append(state, next, rec, createdBy, false);
    } finally {
      // Once committed this does nothing; a hit or a failure drops the blob written ahead.
      await ahead?.abort().catch(() => {});
    }
  }

  /** Writes a layer into the store's ingest area; the caller commits or aborts it (abort after commit does nothing). */
  async writeLayer(write: LayerWriter): Promise<PendingLayer> {
    const writer = this.s.store.blobWriter();
    let written: { size: number; diffId?: Digest };
    try {
      written = await write(writer.stream);
    } catch (e) {
      await writer.abort().catch(() => {});
      throw e;
    }
    let settled = false;
    return {
      async commit() {
        settled = true;
        const got = await writer.commit(written.diffId ? { digest: written.diffId, size: written.size } : { size: written.size });
        return { diffId: got.digest, size: got.size };
      },
      async abort() {
        if (settled) return;
        settled = true;
        await writer.abort();
      },
    };
  }

  private append(state: ImageState, next: ImageState, rec: CacheRecord, createdBy: string, cached: boolean): StepResult {
    if (!rec.layer) {
      addHistory(next, { created: rec.created, created_by: createdBy, comment: 'tsbuild', empty_layer: true });
      this.journal(state, next, rec);
      return { state: next, cached };
    }
    next.config.rootfs.diff_ids.push(rec.layer.diffId);
    next.layers.push({ mediaType: MediaType.OciLayer, digest: rec.layer.diffId, size: rec.layer.size });
    addHistory(next, { created: rec.created, created_by: createdBy + LAYER_SUFFIX, comment: 'tsbuild' });
    this.journal(state, next, rec);
    return { state: next, cached, layerSize: rec.layer.size };
  }

  /** The state named by `--from=` / `from=`: a stage of this Dockerfile, else an image. */
  async fromState(ref: string, inst: Instruction): Promise<ImageState> {
    const st = this.env.stageResult(ref);
    if (st) return st;
    try {
      const img = await this.s.image(ref);
      return { config: img.config, layers: img.layers, key: img.digest, args: new Map(), cmdSet: false };
    } catch (e) {
      throw this.fail(inst, `--from=${ref}: no stage or image of that name`, e instanceof TsbuildError ? e.hint : undefined, e);
    }
  }

  /** Mounts a read-only view of a state's filesystem; `cleanup` gets its release. */
  /**
   * The parent filesystem for a step that only reads it: its layers merged without a mount where
   * the snapshotter can read them so, else a read-only view (a directory).
   */
  async parentTree(state: ImageState, cleanup: (() => Promise<void>)[]): Promise<string | MergedLayers> {
    return (await this.merged(state)) ?? this.view(state, cleanup);
  }

  /** The parent's layers merged without a mount; undefined for no layers or where they cannot be read so. */
  private async merged(state: ImageState): Promise<MergedLayers | undefined> {
    const top = await this.s.ensureSnapshots(state.layers, diffIds(state));
    return top === undefined ? undefined : this.s.snapshots.merged(top);
  }

  /**
   * Whether `path` (an image path, symlinks followed inside the image) is a directory of the
   * parent filesystem, read from its layers without a mount; undefined where they cannot be read so.
   */
  async isParentDir(state: ImageState, path: string): Promise<boolean | undefined> {
    // Nothing below: only the root exists.
    if (state.layers.length === 0) return posix.normalize(path) === '/';
    const merged = await this.merged(state);
    if (merged === undefined) return undefined;
    const rel = secureJoin('/', path, { followLast: true, symlinkTarget: (r) => merged.symlinkTarget(r) }).slice(1);
    return rel === '' || merged.lstat(rel)?.isDirectory() === true;
  }

  async view(state: ImageState, cleanup: (() => Promise<void>)[]): Promise<string> {
    const parent = await this.s.ensureSnapshots(state.layers, diffIds(state));
    const view = await this.s.snapshots.prepare(parent);
    cleanup.push(() => view.release());
    return view.rootfs;
  }
}

/** The container-config fields a step changed, with their new values (null: removed). */
function configChanges(before: ImageState, after: ImageState): Record<string, unknown> {
  const a = (before.config.config ?? {}) as Record<string, unknown>;
  const b = (after.config.config ?? {}) as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    if (JSON.stringify(a[k]) !== JSON.stringify(b[k])) out[k] = b[k] ?? null;
  }
  if (before.config.author !== after.config.author) out.author = after.config.author ?? null;
  return out;
}

/** Runs the cleanups a step collected, last first, ignoring their failures. */
export async function runCleanups(cleanup: (() => Promise<void>)[]): Promise<void> {
  for (const fn of cleanup.reverse()) await fn().catch(() => {});
}

/** The first line of an instruction, short enough for a progress line. */
export function summary(inst: Instruction): string {
  const first = inst.original.split('\n')[0] ?? '';
  return first.length > 120 ? first.slice(0, 119) + '…' : first;
}
