import { createHash } from 'node:crypto';
import type { Digest } from '@tsbuild/oci';
import type { MetaStore } from '@tsbuild/store';

/** What a step produced, enough to reuse it without running it. */
export interface CacheRecord {
  v: 1;
  /** History `created` of the step, so a rebuild from cache gives the same image digest. */
  created: string;
  /** Present when the step made a layer (uncompressed; its blob digest is its diff_id). */
  layer?: { diffId: Digest; size: number };
}

/** Hashes the parts of a step's identity into a cache key. */
export function cacheKey(parts: readonly unknown[]): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}

/** The build cache index: step key → record, kept in the store so it survives restarts. */
export class CacheIndex {
  constructor(private readonly meta: MetaStore) {}

  async get(key: string): Promise<CacheRecord | undefined> {
    const v = (await this.meta.get(key)) as CacheRecord | undefined;
    return v && v.v === 1 && typeof v.created === 'string' ? v : undefined;
  }

  async set(key: string, rec: CacheRecord): Promise<void> {
    await this.meta.set(key, rec, rec.layer ? { roots: [rec.layer.diffId] } : {});
  }

  async forget(key: string): Promise<void> {
    await this.meta.delete(key);
  }

  async clear(): Promise<number> {
    const keys = await this.meta.keys();
    for (const k of keys) await this.meta.delete(k);
    return keys.length;
  }
}

/** A counting semaphore: bounds how many heavy steps (RUN, COPY) run at once. */
export class Semaphore {
  private waiting: (() => void)[] = [];
  private active = 0;
  constructor(private readonly limit: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((r) => this.waiting.push(r));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}
