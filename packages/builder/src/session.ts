import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { CancelledError, TsbuildError, UsageError } from '@tsbuild/errors';
import { apply, decompress } from '@tsbuild/layer';
import { chainIds, MediaType } from '@tsbuild/oci';
import type { Descriptor, Digest, ImageConfig } from '@tsbuild/oci';
import type { Store } from '@tsbuild/store';
import type { Snapshotter } from '@tsbuild/snapshot';
import { parseReference } from '@tsbuild/registry';
import { RemoteCaches, restoreMount } from '@tsbuild/cache';
import type { BuildRecord } from '@tsbuild/cache';
import { CacheIndex, Semaphore } from './cache.ts';
import type { MissExplainer } from './explain.ts';
import type { CacheRecord } from './cache.ts';
import { pullToStore } from './distribution.ts';
import type { DistributionOptions } from './distribution.ts';
import { StatCache } from './hash.ts';
import type { EventSink } from './events.ts';
import type { RunSettings } from './steps/run.ts';

/**
 * Overlay mounts, ownership changes and runc need root, or root in a user namespace (where the
 * tsbuild CLI puts an ordinary user's commands); say so before anything half-happens.
 */
export function requireRoot(what: string): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new UsageError(`${what} needs root: it mounts overlayfs and runs containers with runc`, {
      hint: 'run it as root, in a user namespace where it is root, or through the tsbuild CLI, which makes one for an ordinary user',
    });
  }
}

/** A resolved base image: what FROM and COPY --from=image need of it. */
export interface BaseImage {
  /** The manifest digest: the image's identity in cache keys. */
  digest: Digest;
  config: ImageConfig;
  layers: Descriptor[];
}

export interface ResourceLimits {
  memory?: number;
  cpuQuota?: number;
  cpuPeriod?: number;
  pidsLimit?: number;
}

/** Everything the steps of one build share: store, snapshots, cache, limits, events. */
export class BuildSession {
  readonly cache: CacheIndex;
  readonly heavy = new Semaphore(Math.max(1, availableParallelism()));
  private images = new Map<string, Promise<BaseImage>>();
  private stepCounter = 0;
  /** The caches --cache-from names (none by default). */
  remote: RemoteCaches;
  /** Keys whose remote results turned out to lie: they are not taken from a remote cache again. */
  readonly distrusted = new Set<string>();
  /** diff_id → keys whose result came from a remote cache with that layer. */
  readonly remoteLayers = new Map<string, string[]>();
  /** Every step this build ran or reused, for --cache-to. */
  readonly journal = new Map<string, BuildRecord>();
  /** Cache mounts the build used: directory name → id as written. */
  readonly mountsUsed = new Map<string, string>();
  private readonly mountRestores = new Map<string, Promise<void>>();
  /** Every step as provenance describes it, in the order they finished. */
  readonly steps: { stage: string; instruction: string; cacheHit: boolean; cacheKey: string; layer?: { digest: Digest; mediaType: string; size: number } }[] = [];
  /** Says why steps miss the cache (set by a build that has a tag or a context to compare with). */
  explain: MissExplainer | undefined;
  /** Chain ids known to be unpacked snapshots. */
  private readonly unpacked = new Set<Digest>();

  constructor(
    readonly root: string,
    readonly store: Store,
    readonly snapshots: Snapshotter,
    readonly opts: {
      noCache: boolean;
      pull: boolean;
      /** How registries are reached when a base image must be pulled; undefined: never pull. */
      registry: DistributionOptions | undefined;
      emit: EventSink;
      signal: AbortSignal | undefined;
      sourceDateEpoch: number | undefined;
      runtime: string | undefined;
      network: 'default' | 'none' | 'host';
      limits: ResourceLimits;
      /** What --add-host, --ulimit, --shm-size and --ssh give RUN steps. */
      run?: RunSettings;
    },
  ) {
    this.cache = new CacheIndex(store.meta('build-cache', { durable: false }));
    this.remote = RemoteCaches.empty(store);
  }

  /**
   * A step's cached result: the local index first, then each --cache-from in order. A remote
   * result is copied into the local index; its layer stays remote until something reads it.
   */
  async lookup(key: string): Promise<CacheRecord | undefined> {
    if (this.opts.noCache) return undefined;
    const local = await this.cache.get(key);
    if (local && (!local.layer || (await this.store.available(local.layer.diffId)))) return local;
    const hit = await this.remote.lookup(key, this.distrusted);
    if (!hit) return undefined;
    const rec: CacheRecord = { v: 1, created: hit.entry.created };
    if (hit.entry.layer) {
      rec.layer = { diffId: hit.entry.layer.diffId, size: hit.entry.layer.size };
      const keys = this.remoteLayers.get(rec.layer.diffId) ?? [];
      this.remoteLayers.set(rec.layer.diffId, [...keys, key]);
    }
    await this.cache.set(key, rec);
    return rec;
  }

  /** Notes what a step did, for the cache export. */
  record(r: BuildRecord): void {
    this.journal.set(r.key, r);
  }

  /**
   * A remote layer did not match the diff_id its cache claimed: the steps that took it are
   * forgotten (locally too) and not taken from a remote cache again, so a rebuild runs them.
   */
  async distrust(diffId: string): Promise<string[]> {
    const keys = this.remoteLayers.get(diffId) ?? [];
    for (const k of keys) {
      this.distrusted.add(k);
      await this.cache.forget(k);
    }
    this.remoteLayers.delete(diffId);
    return keys;
  }

  private stat: Promise<StatCache> | undefined;

  /** The context stat cache, kept under the root so an unchanged context is not read again. */
  statCache(): Promise<StatCache> {
    return (this.stat ??= StatCache.load(join(this.root, 'stat-cache.json')));
  }

  async saveStatCache(): Promise<void> {
    if (this.stat) await (await this.stat).save();
  }

  get stateDir(): string {
    return join(this.root, 'state');
  }

  nextStepId(): string {
    return `s${++this.stepCounter}`;
  }

  checkAbort(): void {
    if (this.opts.signal?.aborted) throw new CancelledError('build cancelled');
  }

  /** The `created` time for a new history entry: SOURCE_DATE_EPOCH when set, else now. */
  now(): string {
    const e = this.opts.sourceDateEpoch;
    return new Date(e !== undefined ? e * 1000 : Date.now()).toISOString().replace(/\.\d{3}Z$/, 'Z');
  }

  /**
   * The directory of cache mount `name` (a hash of its id). An empty one is first filled from a
   * --cache-from that carries it (exported with mounts=true).
   */
  async cacheMountDir(name: string, id: string = name): Promise<string> {
    const dir = join(this.root, 'cache-mounts', name);
    await mkdir(dir, { recursive: true });
    this.mountsUsed.set(name, id);
    let restoring = this.mountRestores.get(name);
    if (!restoring) {
      restoring = (async () => {
        if (this.opts.noCache || this.remote.size === 0 || (await readdir(dir)).length > 0) return;
        const hit = await this.remote.mount(name);
        if (!hit) return;
        const restored = await restoreMount(this.store, hit.entry, dir, { signal: this.opts.signal, warn: (m) => this.warn(m) });
        if (restored) this.opts.emit({ type: 'cache-mount-restored', time: Date.now(), id: hit.entry.id, source: hit.source, size: hit.entry.layer.size });
      })();
      this.mountRestores.set(name, restoring);
    }
    await restoring;
    return dir;
  }

  /** A warning for the end of the build (and the progress stream). */
  warn(message: string): void {
    this.warnings.push(message);
    this.opts.emit({ type: 'warning', time: Date.now(), message });
  }

  readonly warnings: string[] = [];

  /** The images this build read (FROM, COPY --from, mounts), by the name it used and their manifest digest. */
  async baseImages(): Promise<{ ref: string; digest: Digest }[]> {
    const out: { ref: string; digest: Digest }[] = [];
    for (const [ref, p] of this.images) {
      const img = await p.catch(() => undefined);
      if (img) out.push({ ref, digest: img.digest });
    }
    return out;
  }

  /** Loads an image from the store, pulling it first when absent (or always with --pull). */
  image(ref: string): Promise<BaseImage> {
    let p = this.images.get(ref);
    if (!p) {
      p = this.loadImage(ref);
      this.images.set(ref, p);
    }
    return p;
  }

  private async loadImage(ref: string): Promise<BaseImage> {
    let desc = this.opts.pull ? undefined : await this.store.resolve(ref);
    if (!desc && this.opts.registry && isReference(ref)) {
      try {
        // Lazily: layers are fetched when a step needs the filesystem, or mounted when pushed to the same registry.
        await pullToStore(this.store, ref, { ...this.opts.registry, signal: this.opts.signal, lazy: true });
      } catch (e) {
        if (!(e instanceof TsbuildError)) throw e;
        throw new TsbuildError('IMAGE_NOT_FOUND', `image "${ref}" is not in the local store and pulling it failed: ${e.message}`, {
          hint: e.hint ?? `import it with "tsbuild import ROOTFS.tar -t ${ref}", or build it first`,
          cause: e,
        });
      }
      desc = await this.store.resolve(ref);
    }
    if (!desc) {
      throw new TsbuildError('IMAGE_NOT_FOUND', `image "${ref}" not found in the local store`, {
        hint: `import it with "tsbuild import ROOTFS.tar -t ${ref}", pull it with "tsbuild pull ${ref}", or build it first`,
      });
    }
    const img = await this.store.loadImage(ref);
    const manifest = await img.manifest();
    const d = await img.descriptor();
    const config = structuredClone(await img.config());
    return { digest: d.digest, config, layers: manifest.layers.map((l) => ({ ...l })) };
  }

  /**
   * Makes sure every layer of the stack is unpacked as a snapshot and returns the top chain id.
   * Only called when a step needs a filesystem, so a fully cached build never unpacks anything.
   */
  async ensureSnapshots(layers: readonly Descriptor[], diffIds: readonly Digest[]): Promise<Digest | undefined> {
    const chain = chainIds([...diffIds]);
    // Checked from the top down: once a chain is there, its parents are too (a snapshot is
    // committed or unpacked only over its parent), so a stack of N layers costs one lookup, not N.
    let have = chain.length;
    while (have > 0 && !this.unpacked.has(chain[have - 1] as Digest) && !(await this.snapshots.has(chain[have - 1] as Digest))) have--;
    for (const id of chain.slice(0, have)) this.unpacked.add(id);
    for (let i = have; i < chain.length; i++) {
      const id = chain[i] as Digest;
      if (await this.snapshots.has(id)) {
        this.unpacked.add(id);
        continue;
      }
      const layer = layers[i];
      if (!layer) throw new TsbuildError('IMAGE_INVALID', `image has ${diffIds.length} diff_ids but ${layers.length} layers`);
      await this.snapshots.unpack(id, chain[i - 1], async (dir) => {
        const blob = await this.store.openBlob(layer.digest);
        const tar = layer.mediaType === MediaType.OciLayer || layer.mediaType === MediaType.DockerLayer ? blob : decompress(blob);
        // Whiteouts stay whiteouts: this dir is a lower under the layers above it.
        await apply(tar, dir, { signal: this.opts.signal, overlay: this.snapshots.lowerFormat });
      });
      this.unpacked.add(id);
    }
    return chain.at(-1);
  }
}

/** Whether `ref` can name a registry image at all (anything else can only be local). */
function isReference(ref: string): boolean {
  try {
    parseReference(ref);
    return true;
  } catch {
    return false;
  }
}
