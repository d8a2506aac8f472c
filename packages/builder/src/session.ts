import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { CancelledError, TsbuildError, UsageError } from '@tsbuild/errors';
import { apply, decompress } from '@tsbuild/layer';
import { chainIds, MediaType } from '@tsbuild/oci';
import type { Descriptor, Digest, ImageConfig } from '@tsbuild/oci';
import type { Store } from '@tsbuild/store';
import type { Snapshotter } from '@tsbuild/snapshot';
import { parseReference } from '@tsbuild/registry';
import { CacheIndex, Semaphore } from './cache.ts';
import { pullToStore } from './distribution.ts';
import type { DistributionOptions } from './distribution.ts';
import { StatCache } from './hash.ts';
import type { EventSink } from './events.ts';

/** Overlay mounts, ownership changes and runc need root; say so before anything half-happens. */
export function requireRoot(what: string): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new UsageError(`${what} needs root: it mounts overlayfs and runs containers with runc`, {
      hint: 'run it as root (for example with sudo); rootless operation is not supported yet',
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
    },
  ) {
    this.cache = new CacheIndex(store.meta('build-cache'));
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

  async cacheMountDir(name: string): Promise<string> {
    const dir = join(this.root, 'cache-mounts', name);
    await mkdir(dir, { recursive: true });
    return dir;
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
        await pullToStore(this.store, ref, { ...this.opts.registry, signal: this.opts.signal });
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
    for (let i = 0; i < chain.length; i++) {
      const id = chain[i] as Digest;
      if (await this.snapshots.has(id)) continue;
      const layer = layers[i];
      if (!layer) throw new TsbuildError('IMAGE_INVALID', `image has ${diffIds.length} diff_ids but ${layers.length} layers`);
      await this.snapshots.unpack(id, chain[i - 1], async (dir) => {
        const blob = await this.store.openBlob(layer.digest);
        const tar = layer.mediaType === MediaType.OciLayer || layer.mediaType === MediaType.DockerLayer ? blob : decompress(blob);
        await apply(tar, dir, { signal: this.opts.signal });
      });
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
