import { readFileSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { InternalError, TsbuildError } from '@tsbuild/errors';
import { isDigest, sha256 } from '@tsbuild/oci';
import type { Digest } from '@tsbuild/oci';
import { errnoCode, fsyncDir, writeFileAtomic, writeFileReplacing } from './fsutil.ts';
import { withLock } from './lock.ts';
import type { LockOptions } from './lock.ts';

export interface MetaOptions {
  /**
   * Survive a power loss (fsync on every write; default true). An index that only saves work,
   * such as the build cache, turns it off: a lost or torn entry reads as missing (a cache miss),
   * and a process that dies mid-write still leaves the old entry or the new one, never a mix.
   */
  durable?: boolean;
}

export interface SetOptions {
  /** Blobs this entry needs: garbage collection keeps them while the entry exists. */
  roots?: Digest[];
}

/** A small durable key → JSON map owned by one package (cache index, stat cache, ...). */
export interface MetaStore {
  get(key: string): Promise<unknown>;
  set(key: string, value: unknown, opts?: SetOptions): Promise<void>;
  /** Read-modify-write under the namespace lock; returning undefined deletes the entry. */
  update(key: string, fn: (old: unknown) => unknown, opts?: SetOptions): Promise<unknown>;
  delete(key: string): Promise<boolean>;
  keys(): Promise<string[]>;
  /** Every blob some entry declared it needs (garbage collection keeps them). */
  roots(): Promise<Digest[]>;
}

interface Entry {
  key: string;
  value: unknown;
  roots?: Digest[];
}

const NS_RE = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const MAX_PLAIN_NAME = 200;

/** Keys are arbitrary strings; file names must be neither paths nor dot files. */
function fileFor(key: string): string {
  if (key.length === 0) throw new InternalError('meta key must not be empty');
  const enc = encodeURIComponent(key).replace(/\./g, '%2E').replace(/\*/g, '%2A');
  return enc.length <= MAX_PLAIN_NAME ? `k-${enc}.json` : `h-${sha256(key).slice(7)}.json`;
}

export class FileMetaStore implements MetaStore {
  private readonly dir: string;
  private readonly lockFile: string;

  constructor(
    root: string,
    readonly namespace: string,
    private readonly tmpDir: string,
    locksDir: string,
    private readonly lockOpts: LockOptions = {},
    private readonly options: MetaOptions = {},
  ) {
    if (!NS_RE.test(namespace)) throw new InternalError(`invalid meta namespace ${JSON.stringify(namespace)}`);
    this.dir = join(root, namespace);
    this.lockFile = join(locksDir, `meta-${namespace}.lock`);
  }

  private async readEntry(file: string): Promise<Entry | undefined> {
    let text: string;
    try {
      // An entry is a few hundred bytes: one synchronous read costs less than the thread pool's
      // four round trips (open, stat, read, close), and a cached rebuild does one per step.
      text = readFileSync(join(this.dir, file), 'utf8');
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return undefined;
      throw e;
    }
    try {
      const v = JSON.parse(text) as unknown;
      if (v === null || typeof v !== 'object' || typeof (v as Entry).key !== 'string') throw new Error('not an entry');
      return v as Entry;
    } catch (e) {
      if (this.options.durable === false) return undefined;
      throw new TsbuildError('CORRUPT_METADATA', `metadata file ${join(this.dir, file)} is corrupt: ${(e as Error).message}`, {
        hint: 'remove the file; tsbuild recreates metadata it needs',
        cause: e,
      });
    }
  }

  async get(key: string): Promise<unknown> {
    return (await this.readEntry(fileFor(key)))?.value;
  }

  async set(key: string, value: unknown, opts: SetOptions = {}): Promise<void> {
    // A whole entry replaced by a rename needs no lock; read-modify-write (update) does.
    await this.write(key, value, opts);
  }

  async update(key: string, fn: (old: unknown) => unknown, opts: SetOptions = {}): Promise<unknown> {
    return withLock(
      this.lockFile,
      async () => {
        const next = fn((await this.readEntry(fileFor(key)))?.value);
        if (next === undefined) await this.remove(key);
        else await this.write(key, next, opts);
        return next;
      },
      this.lockOpts,
    );
  }

  async delete(key: string): Promise<boolean> {
    return withLock(this.lockFile, () => this.remove(key), this.lockOpts);
  }

  async keys(): Promise<string[]> {
    const out: string[] = [];
    for (const f of await this.files()) {
      if (f.startsWith('k-')) out.push(decodeURIComponent(f.slice(2, -5)));
      else {
        const e = await this.readEntry(f);
        if (e) out.push(e.key);
      }
    }
    return out.sort();
  }

  /** Every blob an entry of this namespace declared as a root. */
  async roots(): Promise<Digest[]> {
    const out: Digest[] = [];
    for (const f of await this.files()) {
      const e = await this.readEntry(f);
      for (const r of e?.roots ?? []) if (isDigest(r)) out.push(r);
    }
    return out;
  }

  private async files(): Promise<string[]> {
    try {
      return (await readdir(this.dir)).filter((f) => (f.startsWith('k-') || f.startsWith('h-')) && f.endsWith('.json'));
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return [];
      throw e;
    }
  }

  private async write(key: string, value: unknown, opts: SetOptions): Promise<void> {
    const entry: Entry = { key, value };
    if (opts.roots && opts.roots.length > 0) entry.roots = [...opts.roots];
    const text = JSON.stringify(entry);
    if (text === undefined) throw new InternalError(`meta value for ${JSON.stringify(key)} is not JSON-serialisable`);
    await mkdir(this.dir, { recursive: true });
    if (this.options.durable === false) await writeFileReplacing(join(this.dir, fileFor(key)), text, this.tmpDir);
    else await writeFileAtomic(join(this.dir, fileFor(key)), text, this.tmpDir);
  }

  private async remove(key: string): Promise<boolean> {
    try {
      await rm(join(this.dir, fileFor(key)));
    } catch (e) {
      if (errnoCode(e) === 'ENOENT') return false;
      throw e;
    }
    if (this.options.durable !== false) await fsyncDir(this.dir);
    return true;
  }
}
