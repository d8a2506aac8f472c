import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Blake3Hasher, blake3 } from '@napi-rs/blake-hash';
import { CancelledError, TsbuildError } from '@tsbuild/errors';
import type { BuildContext, SourceEntry, SourceMatch } from './context.ts';

/** Content hash of one regular file, as lowercase hex. */
export type FileHasher = (absPath: string, size: number) => string;

const SMALL_FILE = 1 << 20;
const CHUNK = 4 << 20;
let chunkBuffer: Buffer | undefined;

/** BLAKE3 of a file's bytes: one read for small files, big reads for large ones. */
export function hashFileContent(absPath: string, size: number): string {
  if (size < SMALL_FILE) return blake3(fs.readFileSync(absPath)).toString('hex');
  const fd = fs.openSync(absPath, 'r');
  try {
    const hasher = new Blake3Hasher();
    chunkBuffer ??= Buffer.allocUnsafe(CHUNK);
    for (;;) {
      const n = fs.readSync(fd, chunkBuffer, 0, CHUNK, null);
      if (n === 0) break;
      hasher.update(chunkBuffer.subarray(0, n));
    }
    return hasher.digest('hex');
  } finally {
    fs.closeSync(fd);
  }
}

// A file changed within the timestamp granularity of the moment it was hashed could change
// again without its stat changing; such entries are hashed again until they are old enough.
const RACY_WINDOW_MS = 100;
const MAX_UNUSED_ENTRIES = 500_000;

type Row = [dev: string, ino: string, size: string, mtimeNs: string, ctimeNs: string, hashedAtNs: string, hash: string];

interface CacheFile {
  version: 1;
  entries: Record<string, Row>;
}

/**
 * Maps (path, dev, ino, size, mtime, ctime) to a content hash so an unchanged context is not
 * read again. Persisted as JSON; `save()` writes it back atomically, and only when it changed.
 */
export class StatCache {
  readonly file: string;
  private readonly rows: Map<string, Row>;
  private readonly used = new Set<string>();
  private dirty = false;
  private readonly racyNs: bigint;

  private constructor(file: string, rows: Map<string, Row>, racyWindowMs: number) {
    this.file = file;
    this.rows = rows;
    this.racyNs = BigInt(Math.round(racyWindowMs * 1e6));
  }

  /**
   * Loads the cache; a missing or unreadable file starts an empty one (it is only a cache).
   * `racyWindowMs`: how recent a change must be, relative to the moment it was hashed, for the
   * hash not to be trusted (default 100 ms, well above the kernel's timestamp granularity).
   */
  static async load(file: string, opts: { racyWindowMs?: number } = {}): Promise<StatCache> {
    let rows = new Map<string, Row>();
    try {
      const parsed = JSON.parse(await fs.promises.readFile(file, 'utf8')) as Partial<CacheFile>;
      if (parsed.version === 1 && parsed.entries && typeof parsed.entries === 'object') {
        rows = new Map(Object.entries(parsed.entries).filter(([, r]) => Array.isArray(r) && r.length === 7));
      }
    } catch {
      rows = new Map();
    }
    return new StatCache(file, rows, opts.racyWindowMs ?? RACY_WINDOW_MS);
  }

  get size(): number {
    return this.rows.size;
  }

  lookup(absPath: string, st: fs.BigIntStats): string | undefined {
    const row = this.rows.get(absPath);
    if (!row) return undefined;
    if (row[0] !== String(st.dev) || row[1] !== String(st.ino) || row[2] !== String(st.size)) return undefined;
    if (row[3] !== String(st.mtimeNs) || row[4] !== String(st.ctimeNs)) return undefined;
    const newest = st.mtimeNs > st.ctimeNs ? st.mtimeNs : st.ctimeNs;
    if (newest + this.racyNs >= BigInt(row[5])) return undefined;
    this.used.add(absPath);
    return row[6];
  }

  store(absPath: string, st: fs.BigIntStats, hashedAtNs: bigint, hash: string): void {
    this.rows.set(absPath, [
      String(st.dev),
      String(st.ino),
      String(st.size),
      String(st.mtimeNs),
      String(st.ctimeNs),
      String(hashedAtNs),
      hash,
    ]);
    this.used.add(absPath);
    this.dirty = true;
  }

  /** Writes the cache (temp file + rename) if anything changed; returns whether it wrote. */
  async save(): Promise<boolean> {
    if (!this.dirty) return false;
    if (this.rows.size > MAX_UNUSED_ENTRIES) {
      for (const key of this.rows.keys()) if (!this.used.has(key)) this.rows.delete(key);
    }
    const body: CacheFile = { version: 1, entries: Object.fromEntries(this.rows) };
    await fs.promises.mkdir(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.${Date.now()}.tmp`;
    try {
      await fs.promises.writeFile(tmp, JSON.stringify(body));
      await fs.promises.rename(tmp, this.file);
    } catch (e) {
      await fs.promises.rm(tmp, { force: true });
      throw new TsbuildError('STAT_CACHE', `cannot write stat cache ${this.file}: ${(e as Error).message}`, { cause: e });
    }
    this.dirty = false;
    return true;
  }
}

export interface HashOptions {
  statCache?: StatCache;
  /** Reads and hashes one file; replaceable to observe or redirect reads. */
  hashFile?: FileHasher;
  /** `walks[i]` is `ctx.walk(matches[i])`, when the caller has walked the matches already. */
  walks?: readonly (readonly SourceEntry[])[];
  /** Told each entry's context path and what of it the digest covers (to explain a cache miss). */
  onEntry?: (path: string, fingerprint: string) => void;
  signal?: AbortSignal;
}

/**
 * The cache-key digest of what a COPY/ADD selects: for each match its name, then every entry
 * in walk order with its path, type, permission bits, symlink target and content hash.
 * Owners and timestamps are left out: they do not change what the step produces from the
 * context (COPY sets owners itself), and clocks must not bust the cache.
 */
export async function hashSources(ctx: BuildContext, matches: readonly SourceMatch[], opts: HashOptions = {}): Promise<string> {
  const hashFile = opts.hashFile ?? hashFileContent;
  const cache = opts.statCache;
  // The combining hash is Node's: a build whose files all hit the stat cache never loads BLAKE3.
  const out = createHash('sha256');
  let n = 0;
  for (const [i, match] of matches.entries()) {
    out.update(`match\0${match.source}\0${match.path}\0${match.pivot}\0${match.kind}\0${match.excludes.join('\0')}\n`);
    const seenInodes = new Map<string, string>();
    for (const e of opts.walks?.[i] ?? ctx.walk(match)) {
      if ((n++ & 1023) === 0) {
        // Sync reads are fastest for many small files; yield now and then so the loop stays responsive.
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (opts.signal?.aborted) throw new CancelledError('hashing cancelled', { cause: opts.signal.reason });
      }
      const perm = (Number(e.stat.mode) & 0o7777).toString(8);
      let content = '';
      if (e.kind === 'symlink') content = e.linkTarget ?? '';
      else if (e.kind === 'file') {
        const inode = `${e.stat.dev}:${e.stat.ino}`;
        const first = e.stat.nlink > 1n ? seenInodes.get(inode) : undefined;
        if (first !== undefined) content = 'link:' + first;
        else {
          if (e.stat.nlink > 1n) seenInodes.set(inode, e.rel);
          content = contentHash(e.abs, e.stat, hashFile, cache);
        }
      }
      out.update(`${e.rel}\0${e.kind}\0${perm}\0${content}\n`);
      opts.onEntry?.(e.rel === '' ? match.path || '.' : match.path ? `${match.path}/${e.rel}` : e.rel, `${e.kind}:${perm}:${content}`);
    }
  }
  return 'sources:' + out.digest('hex');
}

function contentHash(abs: string, st: fs.BigIntStats, hashFile: FileHasher, cache: StatCache | undefined): string {
  const cached = cache?.lookup(abs, st);
  if (cached !== undefined) return cached;
  const hashedAt = BigInt(Date.now()) * 1_000_000n;
  let hash: string;
  try {
    hash = hashFile(abs, Number(st.size));
  } catch (e) {
    throw new TsbuildError('CONTEXT_READ', `cannot read ${abs}: ${(e as Error).message}`, { cause: e });
  }
  cache?.store(abs, st, hashedAt, hash);
  return hash;
}

/** The digest of the whole visible context (what `COPY . x` would select). */
export async function hashContextDir(ctx: BuildContext, opts: HashOptions = {}): Promise<string> {
  return hashSources(ctx, await ctx.resolveSources(['.']), opts);
}
