/**
 * COPY and ADD: sources from the context, another stage or image (`--from`), heredocs and URLs;
 * `--chown`, `--chmod`, `--parents`, `--exclude`, `--link`, ADD's unpacking and `--checksum`.
 * The key is the content of what is copied plus every flag (one list feeds both the key and the
 * history text, so a flag cannot be left out of the key).
 *
 * The layer is written straight from the sources (copy-layer.ts): no overlay, no copy of the files
 * and no snapshot, which is unpacked from the blob only when a later step needs the filesystem.
 * ADD of a local archive still unpacks it into an overlay and writes the upper dir as the layer.
 */
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { createHash } from 'node:crypto';
import type { Writable } from 'node:stream';
import type { AddInstruction, CopyInstruction } from '@tsbuild/dockerfile';
import { diff, secureJoin } from '@tsbuild/layer';
import type { DiffOptions, DiffResult, WriteEntriesResult } from '@tsbuild/layer';
import type { Active } from '@tsbuild/snapshot';
import { extractArchive, isArchive } from '../archive.ts';
import type { ExtractOptions } from '../archive.ts';
import { cacheKey } from '../cache.ts';
import { resolveChown } from '../chown.ts';
import type { Owner } from '../chown.ts';
import { parseChmod } from '../chmod.ts';
import { BuildContext, SourceNotFoundError } from '../context.ts';
import type { SourceEntry, SourceMatch } from '../context.ts';
import { copyInto } from '../copy.ts';
import type { CopyOptions } from '../copy.ts';
import { CopyLayerPlan } from '../copy-layer.ts';
import type { BodyObserver, LayerWriteOptions } from '../copy-layer.ts';
import { fetchUrl } from '../fetch.ts';
import type { FetchOptions } from '../fetch.ts';
import { HashCapture, estimateUnhashed, worthHashingAhead } from '../hash-ahead.ts';
import { hashSources } from '../hash.ts';
import type { HashOptions } from '../hash.ts';
import { NO_IGNORE } from '../ignore.ts';
import { containerConfig, diffIds, topChain } from '../state.ts';
import type { ImageState } from '../state.ts';
import { runCleanups } from './kit.ts';
import { span } from '../trace.ts';
import type { LayerWriter, PendingLayer, StepCtx, StepKit, StepResult } from './kit.ts';

type CopyLike = CopyInstruction | AddInstruction;
type Cleanup = (() => Promise<void>)[];

/** Context sources resolved and walked once, for the key and for the layer. */
interface ContextSources {
  ctx: BuildContext;
  matches: SourceMatch[];
  walks: SourceEntry[][];
}

export async function copyStep(kit: StepKit, state: ImageState, raw: CopyLike, ctx?: StepCtx): Promise<StepResult> {
  const { inst, used } = kit.expand(state, raw);
  const files = new Map<string, string>();
  if (ctx) ctx.inputs = { values: Object.fromEntries(used), files };
  const workdir = containerConfig(state).WorkingDir || '/';
  const srcState = inst.kind === 'copy' && inst.from !== undefined ? await kit.fromState(inst.from, inst) : undefined;
  const urls = inst.kind === 'add' ? inst.sources.filter(isUrl) : [];
  const localSources = inst.sources.filter((s) => !isUrl(s));
  const checksum = inst.kind === 'add' ? inst.checksum : undefined;
  if (checksum !== undefined && urls.length === 0) throw kit.fail(inst, 'ADD --checksum can only be used with a URL source');
  if (inst.sources.length === 0 && inst.heredocs.length === 0) throw kit.fail(inst, `${inst.kind.toUpperCase()} requires at least one source`);

  const cleanup: Cleanup = [];
  let ahead: PendingLayer | undefined;
  try {
    // Identity of what is copied: content hashes of context sources, the source stage's layers, heredoc bodies, URLs.
    let sourceKey: unknown;
    let context: ContextSources | undefined;
    let mayUnpack = false;
    if (srcState) sourceKey = ['stage', topChain(srcState) ?? 'scratch', localSources];
    else if (localSources.length > 0) {
      const bctx = await kit.env.context();
      const matches = await resolve(kit, bctx, localSources, inst);
      context = { ctx: bctx, matches, walks: await span('context.walk', async () => matches.map((m) => bctx.walk(m))) };
      // ADD unpacks local archives; which sources are archives is only looked at on a miss.
      mayUnpack = inst.kind === 'add' && inst.unpack !== false && matches.some((m) => m.kind === 'file');
      const statCache = await kit.s.statCache();
      const hopts: HashOptions = { statCache, walks: context.walks, signal: kit.s.opts.signal, onEntry: (p, fp) => files.set(p, fp) };
      // A cold context is hashed from the bytes its layer reads: the layer is written first.
      let captured: HashCapture | undefined;
      if (!mayUnpack && urls.length === 0 && worthHashingAhead(await span('context.scan', async () => estimateUnhashed(context!.walks, statCache)))) {
        if (await aheadIsSafe(kit, state, inst)) {
          const capture = new HashCapture();
          ahead = await writeAhead(kit, state, inst, { workdir, srcState: undefined, context, urls, fetched: new Map() }, capture.observe);
          if (ahead) {
            hopts.hashFile = capture.hashFile;
            captured = capture;
          }
        }
      }
      sourceKey = ['context', await span('context.hash', () => hashSources(bctx, matches, hopts))];
      captured?.remember(statCache);
    } else sourceKey = ['none'];

    // A URL without --checksum may change on the server: like Docker, fetch it on every build and
    // key the step on what came back. With --checksum the checksum is the content's identity.
    const fetched = new Map<string, string>();
    const urlKeys: unknown[] = [];
    for (const u of urls) {
      if (checksum !== undefined) {
        urlKeys.push([u, checksum]);
        continue;
      }
      const dir = await kit.tempDir('add-url-');
      cleanup.push(() => rm(dir, { recursive: true, force: true }));
      const got = await fetchUrl(u, dir, { signal: kit.s.opts.signal });
      fetched.set(u, got);
      urlKeys.push([u, posix.basename(got), createHash('sha256').update(await readFile(got)).digest('hex')]);
    }
    const flags = copyFlags(inst);
    const shownFlags = flags.filter((f) => !f.startsWith('--unpack'));
    const createdBy = `${inst.kind.toUpperCase()} ${shownFlags.map((f) => `${f} `).join('')}${[...inst.sources, ...inst.heredocs.map((h) => `<<${h.name}`)].join(' ')} ${inst.dest}`;
    const key = cacheKey([state.key, inst.kind, sourceKey, inst.heredocs.map((h) => [h.name, h.content]), urlKeys, inst.dest, workdir, flags, used]);
    const plan: CopyPlan = { workdir, srcState, context, urls, fetched };
    const write: LayerWriter = async (out) =>
      mayUnpack && (await unpacksArchives(inst, plan.context?.matches ?? []))
        ? writeWithArchives(kit, state, inst, plan, localSources, out)
        : writeCopyLayer(kit, state, inst, plan, out);
    return await kit.blobStep(state, key, createdBy, ahead ?? write);
  } finally {
    await ahead?.abort().catch(() => {});
    await runCleanups(cleanup);
  }
}

/** Every flag as written in history, in BuildKit's order; the key hashes the whole list. */
function copyFlags(inst: CopyLike): string[] {
  const f: string[] = [];
  if (inst.kind === 'copy' && inst.from !== undefined) f.push(`--from=${inst.from}`);
  if (inst.chown !== undefined) f.push(`--chown=${inst.chown}`);
  if (inst.chmod !== undefined) f.push(`--chmod=${inst.chmod}`);
  if (inst.parents) f.push('--parents');
  if (inst.link) f.push('--link');
  for (const e of inst.exclude) f.push(`--exclude=${e}`);
  if (inst.kind === 'add' && inst.checksum !== undefined) f.push(`--checksum=${inst.checksum}`);
  if (inst.kind === 'add' && inst.unpack !== undefined) f.push(`--unpack=${inst.unpack}`);
  return f;
}

interface CopyPlan {
  workdir: string;
  srcState: ImageState | undefined;
  /** The context sources, resolved and walked for the key. */
  context: ContextSources | undefined;
  urls: string[];
  /** URLs already downloaded for the key (no --checksum), by URL. */
  fetched: Map<string, string>;
}

/** Whether an ADD has local archives to unpack (its layer is then made on an overlay). */
async function unpacksArchives(inst: CopyLike, matches: readonly SourceMatch[]): Promise<boolean> {
  if (inst.kind !== 'add' || inst.unpack === false) return false;
  for (const m of matches) if (m.kind === 'file' && (await isArchive(m.realPath))) return true;
  return false;
}

/**
 * Whether writing the layer before the key is known can only cost the write itself when the key
 * then hits: with --no-cache nothing hits; otherwise the parent must be at hand, so that a hit
 * neither pulls its layers from a remote cache nor unpacks layers no step needed.
 */
async function aheadIsSafe(kit: StepKit, state: ImageState, inst: CopyLike): Promise<boolean> {
  if (kit.s.opts.noCache) return true;
  if (kit.s.remote.size > 0) return false;
  const needsParent = !inst.link || (inst.chown !== undefined && !isNumericOwner(inst.chown));
  const top = topChain(state);
  return !needsParent || top === undefined || (await kit.s.snapshots.has(top));
}

/**
 * The layer written before the key is known, hashing the unhashed files from the bytes it reads.
 * A failure here is not the step's: the step runs again the usual way and fails there if it must.
 */
async function writeAhead(kit: StepKit, state: ImageState, inst: CopyLike, plan: CopyPlan, observe: BodyObserver): Promise<PendingLayer | undefined> {
  try {
    return await span('copy.ahead', () => kit.s.heavy.run(() => kit.writeLayer((out) => writeCopyLayer(kit, state, inst, plan, out, observe))));
  } catch {
    kit.s.checkAbort();
    return undefined;
  }
}

/** Heredocs and downloads, staged as files in a private dir so they copy like context files. */
async function stageInline(kit: StepKit, inst: CopyLike, plan: CopyPlan, cleanup: Cleanup): Promise<{ ctx: BuildContext; matches: SourceMatch[]; dest: string } | undefined> {
  const staged: string[] = [];
  let stageDir: string | undefined;
  const stagingDir = async (): Promise<string> => {
    if (!stageDir) {
      const d = (stageDir = await kit.tempDir('copy-'));
      cleanup.push(() => rm(d, { recursive: true, force: true }));
    }
    return stageDir;
  };
  for (const h of inst.heredocs) {
    await writeFile(join(await stagingDir(), h.name), h.content, { mode: 0o644 });
    staged.push(h.name);
  }
  for (const u of plan.urls) {
    const dir = await stagingDir();
    const pre = plan.fetched.get(u);
    let got: string;
    if (pre !== undefined) {
      got = join(dir, posix.basename(pre));
      await copyFile(pre, got);
    } else {
      const fopts: FetchOptions = { signal: kit.s.opts.signal };
      if (inst.kind === 'add' && inst.checksum !== undefined) fopts.checksum = inst.checksum;
      got = await fetchUrl(u, dir, fopts);
    }
    staged.push(posix.basename(got));
  }
  if (staged.length === 0 || !stageDir) return undefined;
  const ctx = await BuildContext.open(stageDir, { ignore: NO_IGNORE });
  const matches = await ctx.resolveSources(staged);
  const dest = inst.sources.length + inst.heredocs.length > 1 && !inst.dest.endsWith('/') ? `${inst.dest}/` : inst.dest;
  return { ctx, matches, dest };
}

function copyOptions(inst: CopyLike, plan: CopyPlan, kit: StepKit, chown: Owner | undefined): CopyOptions {
  const o: CopyOptions = { workdir: plan.workdir, parents: inst.parents, signal: kit.s.opts.signal };
  if (chown) o.chown = chown;
  if (inst.chmod !== undefined) o.chmod = parseChmod(inst.chmod);
  return o;
}

/** The step's layer, planned against a read-only view of the parent and written from the sources. */
async function writeCopyLayer(kit: StepKit, state: ImageState, inst: CopyLike, plan: CopyPlan, out: Writable, observe?: BodyObserver): Promise<WriteEntriesResult> {
  const cleanup: Cleanup = [];
  try {
    // COPY --link is planned over an empty tree, so its bytes do not depend on the layers below.
    const parent = !inst.link && state.layers.length > 0 ? await span('snapshot.view', () => kit.parentTree(state, cleanup)) : undefined;
    let chown: Owner | undefined;
    if (inst.chown !== undefined) {
      // Names resolve through the image's passwd and group files (for --link too); ids need no file.
      let names = typeof parent === 'string' ? parent : undefined;
      if (names === undefined) {
        if (isNumericOwner(inst.chown)) {
          const empty = (names = await kit.tempDir('chown-'));
          cleanup.push(() => rm(empty, { recursive: true, force: true }));
        } else names = await kit.view(state, cleanup);
      }
      chown = await resolveChown(inst.chown, names);
    }
    const copyOpts = copyOptions(inst, plan, kit, chown);
    const layer = new CopyLayerPlan(parent);
    const inline = await stageInline(kit, inst, plan, cleanup);
    if (inline) await layer.copy(inline.ctx, inline.matches, inline.dest, { ...copyOpts, parents: false });
    if (plan.srcState) {
      const bctx = await BuildContext.open(await kit.view(plan.srcState, cleanup), { ignore: NO_IGNORE });
      const matches = await resolve(kit, bctx, inst.sources.filter((s) => !isUrl(s)), inst);
      await span('copy.plan', () => layer.copy(bctx, matches, inst.dest, { ...copyOpts, keepOwnership: true }));
    } else if (plan.context) {
      const { ctx, matches, walks } = plan.context;
      await span('copy.plan', () => layer.copy(ctx, matches, inst.dest, copyOpts, walks));
    }
    // The store's blob writer hashes the tar: the diff_id is its digest.
    const wopts: LayerWriteOptions = { signal: kit.s.opts.signal, hash: false };
    if (kit.s.opts.sourceDateEpoch !== undefined) wopts.sourceDateEpoch = kit.s.opts.sourceDateEpoch;
    if (observe) wopts.observe = observe;
    return await span('layer.write', () => layer.write(out, wopts));
  } finally {
    await runCleanups(cleanup);
  }
}

/**
 * ADD of local archives: unpacked into an overlay over the parent (an empty one for --link), with
 * everything else copied in beside them, and the upper dir written as the layer. No snapshot is
 * committed: like any COPY layer, it is unpacked from the blob when a later step needs it.
 */
async function writeWithArchives(kit: StepKit, state: ImageState, inst: CopyLike, plan: CopyPlan, localSources: string[], out: Writable): Promise<DiffResult> {
  const parent = inst.link ? undefined : await span('snapshot.unpack', () => kit.s.ensureSnapshots(state.layers, diffIds(state)));
  const active = await span('snapshot.prepare', () => kit.s.snapshots.prepare(parent, { signal: kit.s.opts.signal }));
  try {
    await span('step.work', () => copyWork(kit, state, inst, active, plan, localSources));
    kit.s.checkAbort();
    // As layerStep does: the lowers let diff drop the opaque marks fuse-overlayfs puts on new directories.
    const dopts: DiffOptions = { signal: kit.s.opts.signal, lowerDirs: active.lowerDirs };
    if (kit.s.opts.sourceDateEpoch !== undefined) dopts.sourceDateEpoch = kit.s.opts.sourceDateEpoch;
    return await span('layer.diff', () => diff(active.upper, out, dopts));
  } finally {
    await active.release().catch(() => {});
  }
}

/** The archives unpacked and everything else copied into the overlay. */
async function copyWork(kit: StepKit, state: ImageState, inst: CopyLike, active: Active, plan: CopyPlan, localSources: string[]): Promise<void> {
  const chownOwner = inst.chown !== undefined ? await chownFor(kit, inst.chown, state, active, inst.link) : undefined;
  const copyOpts = copyOptions(inst, plan, kit, chownOwner);
  const cleanup: Cleanup = [];
  try {
    const inline = await stageInline(kit, inst, plan, cleanup);
    if (inline) await copyInto(inline.ctx, inline.matches, active.rootfs, inline.dest, { ...copyOpts, parents: false });
    if (localSources.length === 0) return;
    const bctx = await kit.env.context();
    const matches = await resolve(kit, bctx, localSources, inst);
    // ADD unpacks local archives into the destination directory and copies everything else.
    const plain: SourceMatch[] = [];
    for (const m of matches) {
      if (m.kind !== 'file' || !(await isArchive(m.realPath))) {
        plain.push(m);
        continue;
      }
      const destDir = secureJoin(active.rootfs, posix.resolve(plan.workdir, inst.dest), { followLast: true });
      await mkdir(destDir, { recursive: true });
      await mkdir(kit.s.stateDir, { recursive: true });
      const xopts: ExtractOptions = { tmpDir: kit.s.stateDir, signal: kit.s.opts.signal };
      if (chownOwner) xopts.chown = chownOwner;
      await extractArchive(m.realPath, destDir, xopts);
    }
    if (plain.length > 0) await span('copy.files', () => copyInto(bctx, plain, active.rootfs, inst.dest, copyOpts));
  } finally {
    await runCleanups(cleanup);
  }
}

function isNumericOwner(spec: string): boolean {
  return /^\d+(:\d+)?$/.test(spec);
}

/** `--chown` names resolve through the image's passwd/group files, also for a --link layer. */
async function chownFor(kit: StepKit, spec: string, state: ImageState, active: Active, link: boolean): Promise<Owner> {
  if (!link || isNumericOwner(spec)) return resolveChown(spec, active.rootfs);
  const cleanup: Cleanup = [];
  try {
    return await resolveChown(spec, await kit.view(state, cleanup));
  } finally {
    await runCleanups(cleanup);
  }
}

async function resolve(kit: StepKit, bctx: BuildContext, sources: string[], inst: CopyLike): Promise<SourceMatch[]> {
  try {
    return await bctx.resolveSources(sources, { excludes: inst.exclude, parents: inst.parents });
  } catch (e) {
    if (e instanceof SourceNotFoundError) throw kit.fail(inst, `${inst.kind.toUpperCase()} failed: ${e.message}`, e.hint, e);
    throw e;
  }
}

function isUrl(s: string): boolean {
  return /^https?:\/\//i.test(s);
}
