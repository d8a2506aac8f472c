/**
 * Content hashes taken while a COPY layer is written, for the step's cache key: when most of the
 * sources are not in the stat cache, the layer is written before the key is known and the files
 * are hashed from the bytes the tar reads, so each file is read once instead of twice (once to
 * hash it, once for the layer). A cache hit then throws the layer away.
 */
import { Blake3Hasher, blake3 } from '@napi-rs/blake-hash';
import type { SourceEntry } from './context.ts';
import type { BodyObserver } from './copy-layer.ts';
import { hashFileContent } from './hash.ts';
import type { FileHasher, StatCache } from './hash.ts';

/** How much of a copy the stat cache cannot answer for, estimated from a sample. */
export interface Unhashed {
  files: number;
  bytes: number;
  totalFiles: number;
  totalBytes: number;
}

/** About this many files are looked up in the stat cache to estimate how much of a copy is unhashed. */
const SAMPLE = 512;

/** Estimates how many of the files of `walks` (and how many of their bytes) the stat cache has no hash for. */
export function estimateUnhashed(walks: readonly (readonly SourceEntry[])[], cache: StatCache | undefined): Unhashed {
  let totalFiles = 0;
  for (const walk of walks) for (const e of walk) if (e.kind === 'file') totalFiles++;
  const every = Math.max(1, Math.floor(totalFiles / SAMPLE));
  let sampled = 0;
  let missed = 0;
  let sampledBytes = 0;
  let missedBytes = 0;
  let totalBytes = 0;
  let i = 0;
  for (const walk of walks) {
    for (const e of walk) {
      if (e.kind !== 'file') continue;
      const size = Number(e.stat.size);
      totalBytes += size;
      if (i++ % every !== 0) continue;
      sampled++;
      sampledBytes += size;
      if (cache?.lookup(e.abs, e.stat) !== undefined) continue;
      missed++;
      missedBytes += size;
    }
  }
  if (sampled === 0) return { files: 0, bytes: 0, totalFiles, totalBytes };
  return {
    files: Math.round((missed / sampled) * totalFiles),
    bytes: sampledBytes === 0 ? 0 : Math.round((missedBytes / sampledBytes) * totalBytes),
    totalFiles,
    totalBytes,
  };
}

/** Whether writing the layer ahead saves enough reading to be worth losing it on a cache hit. */
export function worthHashingAhead(u: Unhashed): boolean {
  const big = u.files >= 256 || u.bytes >= 16 << 20;
  return big && (u.files * 2 >= u.totalFiles || u.bytes * 2 >= u.totalBytes);
}

/** BLAKE3 of what the layer writer reads, for hashSources to take instead of reading the files again. */
export class HashCapture {
  private readonly hashes = new Map<string, { hash: string; entry: SourceEntry }>();
  private readonly used: string[] = [];
  /** Before the first read: the stat cache's "hashed at" for every captured file. */
  private readonly startedNs = BigInt(Date.now()) * 1_000_000n;

  readonly observe: BodyObserver = (entry) => {
    let hasher: Blake3Hasher | undefined;
    return (chunk, last) => {
      if (hasher === undefined && last) {
        this.hashes.set(entry.abs, { hash: blake3(chunk).toString('hex'), entry });
        return;
      }
      hasher ??= new Blake3Hasher();
      hasher.update(chunk);
      if (last) this.hashes.set(entry.abs, { hash: hasher.digest('hex'), entry });
    };
  };

  /** For hashSources: the captured hash, else a read of the file. */
  readonly hashFile: FileHasher = (absPath, size) => {
    const got = this.hashes.get(absPath);
    if (got === undefined) return hashFileContent(absPath, size);
    this.used.push(absPath);
    return got.hash;
  };

  /**
   * Stores the captured hashes hashSources took in the stat cache with the time reading began
   * (hashSources stored them with a later one, which could make a file changed while it was read
   * look settled).
   */
  remember(cache: StatCache | undefined): void {
    if (!cache) return;
    for (const abs of this.used) {
      const got = this.hashes.get(abs);
      if (got) cache.store(abs, got.entry.stat, this.startedNs, got.hash);
    }
  }
}
