/**
 * COPY and ADD: sources from the context, another stage or image (`--from`), heredocs and URLs;
 * `--chown`, `--chmod`, `--parents`, `--exclude`, `--link`, ADD's unpacking and `--checksum`.
 * The key is the content of what is copied plus every flag (one list feeds both the key and the
 * history text, so a flag cannot be left out of the key).
 */
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { createHash } from 'node:crypto';
import type { AddInstruction, CopyInstruction } from '@tsbuild/dockerfile';
import { secureJoin } from '@tsbuild/layer';
import type { Active } from '@tsbuild/snapshot';
import { extractArchive, isArchive } from '../archive.ts';
import type { ExtractOptions } from '../archive.ts';
import { cacheKey } from '../cache.ts';
import { resolveChown } from '../chown.ts';
import type { Owner } from '../chown.ts';
import { parseChmod } from '../chmod.ts';
import { BuildContext, SourceNotFoundError } from '../context.ts';
import type { SourceMatch } from '../context.ts';
import { copyInto } from '../copy.ts';
import type { CopyOptions } from '../copy.ts';
import { fetchUrl } from '../fetch.ts';
import type { FetchOptions } from '../fetch.ts';
import { hashSources } from '../hash.ts';
import { NO_IGNORE } from '../ignore.ts';
import { containerConfig, topChain } from '../state.ts';
import type { ImageState } from '../state.ts';
import { runCleanups } from './kit.ts';
import { span } from '../trace.ts';
import type { StepKit, StepResult } from './kit.ts';

type CopyLike = CopyInstruction | AddInstruction;
type Cleanup = (() => Promise<void>)[];

export async function copyStep(kit: StepKit, state: ImageState, raw: CopyLike): Promise<StepResult> {
  const { inst, used } = kit.expand(state, raw);
  const workdir = containerConfig(state).WorkingDir || '/';
  const srcState = inst.kind === 'copy' && inst.from !== undefined ? await kit.fromState(inst.from, inst) : undefined;
  const urls = inst.kind === 'add' ? inst.sources.filter(isUrl) : [];
  const localSources = inst.sources.filter((s) => !isUrl(s));
  const checksum = inst.kind === 'add' ? inst.checksum : undefined;
  if (checksum !== undefined && urls.length === 0) throw kit.fail(inst, 'ADD --checksum can only be used with a URL source');
  if (inst.sources.length === 0 && inst.heredocs.length === 0) throw kit.fail(inst, `${inst.kind.toUpperCase()} requires at least one source`);

  // Identity of what is copied: content hashes of context sources, the source stage's layers, heredoc bodies, URLs.
  let sourceKey: unknown;
  if (srcState) sourceKey = ['stage', topChain(srcState) ?? 'scratch', localSources];
  else if (localSources.length > 0) {
    const bctx = await kit.env.context();
    sourceKey = ['context', await span('context.hash', async () => hashSources(bctx, await resolve(kit, bctx, localSources, inst), { statCache: await kit.s.statCache() }))];
  } else sourceKey = ['none'];

  // A URL without --checksum may change on the server: like Docker, fetch it on every build and
  // key the step on what came back. With --checksum the checksum is the content's identity.
  const fetched = new Map<string, string>();
  const cleanup: Cleanup = [];
  try {
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
    return await kit.layerStep(state, key, createdBy, (active) => copyWork(kit, state, inst, active, { workdir, srcState, urls, localSources, fetched }), {
      independent: inst.link,
    });
  } finally {
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
  urls: string[];
  localSources: string[];
  /** URLs already downloaded for the key (no --checksum), by URL. */
  fetched: Map<string, string>;
}

async function copyWork(kit: StepKit, state: ImageState, inst: CopyLike, active: Active, plan: CopyPlan): Promise<void> {
  const chownOwner = inst.chown !== undefined ? await chownFor(kit, inst.chown, state, active, inst.link) : undefined;
  const copyOpts: CopyOptions = { workdir: plan.workdir, parents: inst.parents, signal: kit.s.opts.signal };
  if (chownOwner) copyOpts.chown = chownOwner;
  if (inst.chmod !== undefined) copyOpts.chmod = parseChmod(inst.chmod);
  const cleanup: Cleanup = [];
  try {
    // Heredocs and downloads are staged as files in a private dir and copied like context files.
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
    if (staged.length > 0 && stageDir) {
      const sctx = await BuildContext.open(stageDir, { ignore: NO_IGNORE });
      const matches = await sctx.resolveSources(staged);
      const destForStaged = inst.sources.length + inst.heredocs.length > 1 && !inst.dest.endsWith('/') ? `${inst.dest}/` : inst.dest;
      await copyInto(sctx, matches, active.rootfs, destForStaged, { ...copyOpts, parents: false });
    }
    if (plan.localSources.length === 0) return;
    let bctx: BuildContext;
    if (plan.srcState) {
      bctx = await BuildContext.open(await kit.view(plan.srcState, cleanup), { ignore: NO_IGNORE });
      copyOpts.keepOwnership = true;
    } else {
      bctx = await kit.env.context();
    }
    const matches = await resolve(kit, bctx, plan.localSources, inst);
    if (inst.kind !== 'add' || inst.unpack === false) {
      await span('copy.files', () => copyInto(bctx, matches, active.rootfs, inst.dest, copyOpts));
      return;
    }
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
    if (plain.length > 0) await copyInto(bctx, plain, active.rootfs, inst.dest, copyOpts);
  } finally {
    await runCleanups(cleanup);
  }
}

/** `--chown` names resolve through the image's passwd/group files, also for a --link layer. */
async function chownFor(kit: StepKit, spec: string, state: ImageState, active: Active, link: boolean): Promise<Owner> {
  if (!link || /^\d+(:\d+)?$/.test(spec)) return resolveChown(spec, active.rootfs);
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
