import { createReadStream } from 'node:fs';
import { Writable } from 'node:stream';
import { TsbuildError, UsageError } from '@tsbuild/errors';
import { apply, decompress } from '@tsbuild/layer';
import { buildConfig, buildManifest, MediaType, chainIds } from '@tsbuild/oci';
import type { Descriptor, Digest, HistoryEntry, ImageConfig } from '@tsbuild/oci';
import type { Store } from '@tsbuild/store';
import type { Snapshotter } from '@tsbuild/snapshot';
import { run as runContainer, unappliedLimits } from '@tsbuild/executor';
import type { RunOptions } from '@tsbuild/executor';
import { resolveUser } from './chown.ts';
import { secureJoin } from '@tsbuild/layer';
import { BuildSession, requireRoot } from './session.ts';
import type { ResourceLimits } from './session.ts';
import { CacheIndex } from './cache.ts';
import { DEFAULT_PATH } from './state.ts';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

export interface ImportOptions {
  tags: string[];
  /** History comment, like docker import's. */
  message?: string;
  sourceDateEpoch?: number;
  signal?: AbortSignal;
  /**
   * Unpack the layer as a snapshot now, as `docker import` does, so the first build on the image
   * does not (a base image is imported to be built on).
   */
  snapshots?: Snapshotter;
}

/** `tsbuild import`: a single-layer image from a root filesystem tarball (plain, gzip or zstd). */
export async function importImage(store: Store, tarball: string, opts: ImportOptions): Promise<Descriptor> {
  const src = createReadStream(tarball);
  const opened = new Promise<void>((resolve, reject) => {
    src.once('open', () => resolve());
    src.once('error', (e: NodeJS.ErrnoException) =>
      reject(new UsageError(`cannot read ${tarball}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`)),
    );
  });
  await opened;
  const writer = store.blobWriter();
  let layer: { digest: Digest; size: number };
  try {
    const plain = decompress(src);
    await new Promise<void>((resolve, reject) => {
      plain.once('error', reject);
      writer.stream.once('error', reject);
      plain.pipe(writer.stream);
      writer.stream.once('finish', () => resolve());
    });
    layer = await writer.commit();
  } catch (e) {
    await writer.abort().catch(() => {});
    throw e instanceof TsbuildError ? e : new UsageError(`cannot import ${tarball}: ${(e as Error).message}`, { cause: e });
  }
  const created = new Date(opts.sourceDateEpoch !== undefined ? opts.sourceDateEpoch * 1000 : Date.now()).toISOString().replace(/\.\d{3}Z$/, 'Z');
  const history: HistoryEntry[] = [{ created, created_by: `tsbuild import ${tarball.split('/').pop() ?? tarball}`, comment: opts.message ?? 'Imported by tsbuild' }];
  const config = buildConfig({
    architecture: 'amd64',
    os: 'linux',
    created,
    config: { Env: [`PATH=${DEFAULT_PATH}`] },
    diffIds: [layer.digest],
    history,
  });
  const configDesc = await store.putJson(MediaType.OciConfig, config);
  const manifest = buildManifest(configDesc, [{ mediaType: MediaType.OciLayer, digest: layer.digest, size: layer.size }]);
  const desc = await store.putJson(MediaType.OciManifest, manifest);
  for (const t of opts.tags) await store.tag(t, desc);
  const snapshots = opts.snapshots;
  if (snapshots) {
    const chain = chainIds([layer.digest])[0] as Digest;
    if (!(await snapshots.has(chain))) {
      await snapshots.unpack(chain, undefined, async (dir) => void (await apply(await store.openBlob(layer.digest), dir, { signal: opts.signal, overlay: snapshots.lowerFormat })));
    }
  }
  return desc;
}

export interface RunImageOptions {
  /** Replaces CMD (and is appended to ENTRYPOINT), as in `docker run IMAGE ARGS`. */
  args?: string[];
  entrypoint?: string;
  env?: string[];
  user?: string;
  workdir?: string;
  network?: 'none' | 'host';
  limits?: ResourceLimits;
  runtime?: string;
  stdout?: Writable;
  stderr?: Writable;
  signal?: AbortSignal;
  /** Told why limits cannot be applied here (tsbuild without root, no delegated cgroup); the run goes on. */
  warn?: (message: string) => void;
}

/** Runs an image's command in a throwaway overlay over its layers; returns the exit code. */
export async function runImage(
  env: { root: string; store: Store; snapshots: Snapshotter },
  ref: string,
  opts: RunImageOptions,
): Promise<number> {
  requireRoot('tsbuild run');
  const session = new BuildSession(env.root, env.store, env.snapshots, {
    noCache: false, pull: false, registry: undefined, emit: () => {}, signal: opts.signal, sourceDateEpoch: undefined,
    runtime: opts.runtime, network: opts.network ?? 'host', limits: opts.limits ?? {},
  });
  const img = await session.image(ref);
  const c = img.config.config ?? {};
  const entrypoint = opts.entrypoint !== undefined ? (opts.entrypoint === '' ? [] : [opts.entrypoint]) : (c.Entrypoint ?? []);
  const cmd = opts.args && opts.args.length > 0 ? opts.args : opts.entrypoint !== undefined ? [] : (c.Cmd ?? []);
  const argv = [...entrypoint, ...cmd];
  if (argv.length === 0) throw new UsageError(`image ${ref} has no CMD or ENTRYPOINT: name a command to run`);
  const unapplied = await unappliedLimits(opts.limits);
  if (unapplied !== undefined) opts.warn?.(unapplied);
  const parent = await session.ensureSnapshots(img.layers, img.config.rootfs.diff_ids);
  const active = await env.snapshots.prepare(parent);
  try {
    const cwd = opts.workdir ?? (c.WorkingDir || '/');
    await mkdir(secureJoin(active.rootfs, cwd, { followLast: true }), { recursive: true });
    const user = await resolveUser(opts.user ?? (c.User || 'root'), active.rootfs);
    const envList = [...(c.Env ?? [])];
    if (!envList.some((e) => e.startsWith('PATH='))) envList.push(`PATH=${DEFAULT_PATH}`);
    if (!envList.some((e) => e.startsWith('HOME='))) envList.push(`HOME=${user.home}`);
    for (const e of opts.env ?? []) {
      const k = e.split('=')[0];
      const i = envList.findIndex((x) => x.split('=')[0] === k);
      const val = e.includes('=') ? e : `${e}=${process.env[e] ?? ''}`;
      if (i >= 0) envList[i] = val;
      else envList.push(val);
    }
    await mkdir(join(env.root, 'state'), { recursive: true });
    const runOpts: RunOptions = {
      rootfs: active.rootfs, args: argv, env: envList, cwd, user,
      network: opts.network ?? 'host', limits: opts.limits ?? {}, stateDir: join(env.root, 'state'),
      stdout: opts.stdout ?? process.stdout, stderr: opts.stderr ?? process.stderr,
    };
    if (opts.runtime) runOpts.runtime = opts.runtime;
    if (opts.signal) runOpts.signal = opts.signal;
    const r = await runContainer(runOpts);
    return r.exitCode;
  } finally {
    await active.release().catch(() => {});
  }
}

/** One history entry of an image with the size of the layer it made (0 for empty layers). */
export interface HistoryItem {
  entry: HistoryEntry;
  size: number;
}

/** An image's history, oldest first, with each non-empty entry matched to its layer. */
export function historyOf(config: ImageConfig, layers: readonly Descriptor[]): HistoryItem[] {
  const out: HistoryItem[] = [];
  let li = 0;
  const history = config.history && config.history.length > 0
    ? config.history
    : layers.map(() => ({ created_by: '' }) as HistoryEntry);
  for (const h of history) {
    if (h.empty_layer) out.push({ entry: h, size: 0 });
    else out.push({ entry: h, size: layers[li++]?.size ?? 0 });
  }
  return out;
}

/** `tsbuild prune`: drops the build cache, unused snapshots and unreferenced blobs. */
export async function prune(env: { root: string; store: Store; snapshots: Snapshotter }, opts: { all?: boolean } = {}): Promise<{ cacheEntries: number; snapshots: number; blobs: number; freedBytes: number }> {
  const cache = new CacheIndex(env.store.meta('build-cache', { durable: false }));
  const cacheEntries = await cache.clear();
  // Keep the snapshots of tagged images so `tsbuild run` stays fast; drop everything else.
  const keep = new Set<Digest>();
  if (!opts.all) {
    for (const img of await env.store.listImages()) {
      try {
        const image = await env.store.loadImage(img.name);
        const top = chainIds((await image.config()).rootfs.diff_ids).at(-1);
        if (top) keep.add(top);
      } catch {
        // A broken tag keeps nothing.
      }
    }
  }
  const removedSnaps = await env.snapshots.prune(keep);
  const gc = await env.store.gc();
  await rm(join(env.root, 'cache-mounts'), { recursive: true, force: true });
  return { cacheEntries, snapshots: removedSnaps.length, blobs: gc.removedBlobs, freedBytes: gc.freedBytes };
}
