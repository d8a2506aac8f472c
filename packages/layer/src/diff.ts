/**
 * Turns an overlay upper dir into an OCI changeset tar, hashed as it streams out (the diff_id).
 * The walk uses synchronous fs calls: for trees of many small files a promise per file costs
 * several times more than the I/O itself.
 */
import { closeSync, lstatSync, openSync, readSync, readdirSync, readlinkSync } from 'node:fs';
import type { Stats } from 'node:fs';
import type { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { resolve as resolvePath } from 'node:path';
import { CancelledError, TsbuildError } from '@tsbuild/errors';
import type { Digest } from '@tsbuild/oci';
import { BLOCK, encodeHeader, encodeHeaderInto, endOfArchive, padding } from './tar.ts';
import type { TarHeader } from './tar.ts';
import { readXattrs } from './xattr.ts';
import { BatchedOutput, CHUNK } from './batches.ts';

export interface DiffOptions {
  /** Clamp every mtime to at most this (seconds since the epoch), for reproducible layers. */
  sourceDateEpoch?: number;
  signal?: AbortSignal;
  /** Paths (relative, no leading `./`, no trailing `/`) to leave out, with their subtrees. */
  exclude?: (relPath: string) => boolean;
  /**
   * The lower dirs the upper dir was mounted over. An opaque directory that none of them holds
   * hides nothing and gets no opaque marker: fuse-overlayfs marks every directory it creates
   * opaque, overlayfs only one made where something was below, and both must give one layer.
   */
  lowerDirs?: readonly string[];
}

export interface DiffResult {
  /** sha256 of the uncompressed tar. */
  diffId: Digest;
  /** Bytes written. */
  size: number;
}

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_MARKER = '.wh..wh..opq';


function isOverlayXattr(name: string): boolean {
  return name.startsWith('trusted.overlay.') || name.startsWith('user.overlay.') || name.startsWith('user.fuseoverlayfs.');
}

/** The xattrs that mark a directory opaque: overlayfs's as root and in a user namespace, and fuse-overlayfs's. */
const OPAQUE_XATTRS = new Set(['trusted.overlay.opaque', 'user.overlay.opaque', 'user.fuseoverlayfs.opaque']);

/**
 * fuse-overlayfs's own forms in an upper dir, beside overlayfs's 0/0 character devices and
 * opaque xattrs: where it may not mknod, a whiteout is an empty regular file `.wh.NAME`; and an
 * opaque directory also holds a `.wh..wh..opq` file and a `.wh..opq` 0/0 device. Such names are
 * whiteouts to whatever reads the layer anyway.
 */
function fuseForm(name: string, st: Stats): 'whiteout' | 'marker' | undefined {
  if (!name.startsWith(WHITEOUT_PREFIX)) return undefined;
  if ((name === OPAQUE_MARKER && st.isFile()) || (name === '.wh..opq' && st.isCharacterDevice() && st.rdev === 0)) return 'marker';
  return st.isFile() && st.size === 0 ? 'whiteout' : undefined;
}

/** Whether `rel` names anything in `lower`, reached through directories only. */
function inLower(lower: string, rel: string): boolean {
  let at = lower;
  const parts = rel.split('/');
  for (const [i, part] of parts.entries()) {
    at = `${at}/${part}`;
    const st = lstatSync(at, { throwIfNoEntry: false });
    if (st === undefined) return false;
    if (i < parts.length - 1 && !st.isDirectory()) return false;
  }
  return true;
}

type Kind = 'whiteout' | 'dir' | 'file' | 'symlink' | 'fifo' | 'char' | 'block' | 'socket';

/**
 * What the archive needs from lstat. Copied out of the Stats object so the plan of a large tree
 * holds small records rather than Stats (with their Date objects) until the end of the walk.
 */
interface Planned {
  host: string;
  /** Path in the archive without the trailing `/` of directories. */
  outPath: string;
  kind: Kind;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Whole seconds. */
  mtime: number;
  nlink: number;
  rdev: number;
}

interface Child {
  name: string;
  /** Sort key: the archive name, with `/` after directories. */
  key: Buffer;
  entry: Planned;
}

function kindOf(st: Stats): Kind {
  if (st.isDirectory()) return 'dir';
  if (st.isFile()) return 'file';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return st.rdev === 0 ? 'whiteout' : 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  return 'socket';
}

function devNumbers(rdev: number): { devmajor: number; devminor: number } {
  const lo = rdev % 2 ** 32;
  const hi = Math.floor(rdev / 2 ** 32);
  return {
    devmajor: ((lo >>> 8) & 0xfff) | (hi & 0xfffff000),
    devminor: (lo & 0xff) | ((lo >>> 12) & 0xfff00),
  };
}

function childrenOf(hostDir: string, relDir: string): Child[] {
  const out: Child[] = [];
  for (const raw of readdirSync(hostDir, { encoding: 'buffer' })) {
    const name = raw.toString('utf8');
    if (!Buffer.from(name, 'utf8').equals(raw)) {
      throw new TsbuildError('UNSUPPORTED_NAME', `file name ${JSON.stringify(relDir + name)} in ${hostDir} is not valid UTF-8; layers need UTF-8 names`);
    }
    const host = `${hostDir}/${name}`;
    const st = lstatSync(host);
    const fuse = fuseForm(name, st);
    // The marker files of an opaque dir: its xattr says the same and becomes the layer's marker,
    // unless the filesystem took no xattr and the file is all there is.
    if (fuse === 'marker' && (name !== OPAQUE_MARKER || readXattrs(hostDir, (_p, n, v) => OPAQUE_XATTRS.has(n) && v.toString('latin1') === 'y'))) continue;
    const kind = fuse === undefined ? kindOf(st) : 'whiteout';
    const outName = kind === 'whiteout' && fuse === undefined ? WHITEOUT_PREFIX + name : name;
    const entry: Planned = {
      host,
      outPath: relDir + outName,
      kind,
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      size: kind === 'file' ? st.size : 0,
      mtime: Math.floor(st.mtimeMs / 1000),
      nlink: st.nlink,
      rdev: st.rdev,
    };
    // Sorting siblings by name + "/" for dirs makes the depth-first order the byte order of full paths.
    out.push({ name, key: Buffer.from(kind === 'dir' ? outName + '/' : outName, 'utf8'), entry });
  }
  return out.sort((a, b) => Buffer.compare(a.key, b.key));
}

/**
 * The entries of the tree in archive order (byte order of full paths, depth first), made as the
 * archive is written: only the directories on the path to the current entry are held, not a
 * plan of the whole tree.
 */
function* walk(root: string, exclude: ((relPath: string) => boolean) | undefined): Generator<Planned> {
  const stack: Array<{ kids: Child[]; i: number; rel: string }> = [{ kids: childrenOf(root, ''), i: 0, rel: '' }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const kid = top.kids[top.i];
    if (kid === undefined) {
      stack.pop();
      continue;
    }
    // Dropped from its directory's list once taken: what was written is not kept.
    top.kids[top.i++] = undefined as unknown as Child;
    if (exclude?.(top.rel + kid.name)) continue;
    yield kid.entry;
    if (kid.entry.kind === 'dir') {
      const rel = kid.entry.outPath + '/';
      stack.push({ kids: childrenOf(kid.entry.host, rel), i: 0, rel });
    }
  }
}

/** Entries between turns given to the event loop. */
const ENTRIES_PER_TURN = 4096;

/**
 * Writes the changeset in `upperDir` to `out` as a deterministic tar and ends `out`.
 * Resolves once `out` has finished.
 *
 * The archive goes out in batches of up to 1 MiB. When `out` is a plain Writable (not a Duplex),
 * a batch's memory is used again once `out` has called back for it, so `out` must be done with a
 * chunk by then, as file streams and the store's blob writer are. A Duplex (PassThrough,
 * Transform) hands chunks on to its reader, so it gets a fresh buffer for every batch.
 */
export async function diff(upperDir: string, out: Writable, opts: DiffOptions = {}): Promise<DiffResult> {
  const root = resolvePath(upperDir);
  const signal = opts.signal;
  const epoch = opts.sourceDateEpoch;
  if (epoch !== undefined && (!Number.isFinite(epoch) || epoch < 0)) {
    throw new TsbuildError('BAD_SOURCE_DATE_EPOCH', `SOURCE_DATE_EPOCH must be a non-negative number of seconds, got ${epoch}`);
  }
  if (!lstatSync(root).isDirectory()) throw new TsbuildError('NOT_A_DIRECTORY', `${upperDir} is not a directory`);

  const links = new Map<string, string>();
  const clamp = (m: number): number => (epoch === undefined ? m : Math.min(m, Math.floor(epoch)));

  const o = new BatchedOutput(out, { signal });
  const flush = (): Promise<void> => o.flush();
  const fits = (n: number): boolean => o.fits(n);
  let entriesSinceTurn = 0;

  const writeEntry = async (e: Planned): Promise<void> => {
    const { host, outPath, kind } = e;
    const base = { uid: e.uid, gid: e.gid, mode: e.mode, mtime: clamp(e.mtime), size: 0 };
    // Whiteouts carry no attributes into the layer; overlayfs's own never go in, but its
    // opaque marker becomes a `.wh..wh..opq` entry.
    let opaque = false;
    const attrs =
      kind === 'whiteout' || kind === 'socket'
        ? undefined
        : readXattrs(host, (_path, name, value) => {
            if (!isOverlayXattr(name)) return true;
            if (OPAQUE_XATTRS.has(name) && value.toString('latin1') === 'y') opaque = true;
            return false;
          });
    const withXattrs = (h: TarHeader): TarHeader => (attrs ? { ...h, xattrs: attrs } : h);

    const headers: TarHeader[] = [];
    const push = (h: TarHeader): void => {
      headers.push(h);
    };
    let file: { size: number } | undefined;
    if (kind === 'whiteout') {
      push({ ...base, mode: 0, path: outPath, type: 'file' });
    } else if (kind === 'dir') {
      push(withXattrs({ ...base, path: outPath + '/', type: 'dir' }));
      if (opaque && (opts.lowerDirs === undefined || opts.lowerDirs.some((l) => inLower(l, outPath)))) {
        push({ ...base, mode: 0, uid: 0, gid: 0, path: `${outPath}/${OPAQUE_MARKER}`, type: 'file' });
      }
    } else if (kind === 'socket') {
      // Sockets cannot be represented in tar and mean nothing in an image.
    } else {
      let linked: string | undefined;
      if (e.nlink > 1) {
        const big = lstatSync(host, { bigint: true });
        const id = `${big.dev}:${big.ino}`;
        linked = links.get(id);
        if (linked === undefined) links.set(id, outPath);
      }
      if (linked !== undefined) {
        push(withXattrs({ ...base, path: outPath, type: 'hardlink', linkpath: linked }));
      } else if (kind === 'symlink') {
        push(withXattrs({ ...base, path: outPath, type: 'symlink', linkpath: readlinkSync(host) }));
      } else if (kind === 'fifo') {
        push(withXattrs({ ...base, path: outPath, type: 'fifo' }));
      } else if (kind === 'char' || kind === 'block') {
        push(withXattrs({ ...base, path: outPath, type: kind, ...devNumbers(e.rdev) }));
      } else {
        push(withXattrs({ ...base, path: outPath, type: 'file', size: e.size }));
        file = { size: e.size };
      }
    }
    for (const h of headers) {
      if (!fits(BLOCK)) await flush();
      const n = encodeHeaderInto(h, o.batch, o.pos);
      if (n > 0) {
        o.pos += n;
        continue;
      }
      const b = encodeHeader(h);
      if (!fits(b.length)) await flush();
      if (fits(b.length)) o.put(b);
      else {
        // Only xattrs can make a header larger than a batch.
        await o.send(b, undefined);
      }
    }
    if (file && file.size > 0) {
      const fd = openSync(host, 'r');
      try {
        const readExactly = (buf: Buffer, off: number, len: number): void => {
          let got = 0;
          while (got < len) {
            const n = readSync(fd, buf, off + got, len - got, null);
            if (n === 0) throw new TsbuildError('LAYER_SOURCE_CHANGED', `${host} shrank while it was being read (expected ${file.size} bytes)`);
            got += n;
          }
        };
        const padded = file.size + padding(file.size);
        if (padded <= CHUNK) {
          if (!fits(padded)) await flush();
          readExactly(o.batch, o.pos, file.size);
          o.batch.fill(0, o.pos + file.size, o.pos + padded);
          o.pos += padded;
        } else {
          // Large files stream through in CHUNK-sized reads; memory stays flat.
          if (o.pos > 0) await flush();
          let left = file.size;
          while (left > 0) {
            const want = Math.min(left, CHUNK);
            readExactly(o.batch, 0, want);
            o.pos = want;
            left -= want;
            if (left === 0) {
              // CHUNK is a multiple of the block size, so the padding always fits after the tail.
              const pad = padding(file.size);
              o.batch.fill(0, o.pos, o.pos + pad);
              o.pos += pad;
            }
            if (o.pos >= CHUNK) await flush();
          }
        }
      } finally {
        closeSync(fd);
      }
    }
    if (o.pos >= CHUNK - BLOCK) await flush();
  };

  try {
    signal?.throwIfAborted();
    for (const e of walk(root, opts.exclude)) {
      await writeEntry(e);
      if (++entriesSinceTurn >= ENTRIES_PER_TURN) {
        entriesSinceTurn = 0;
        await o.turn();
        signal?.throwIfAborted();
      }
    }
    const end = endOfArchive();
    if (!fits(end.length)) await flush();
    o.put(end);
    await flush();
    if (o.error) throw o.error;
    out.end();
    // The writable side only: a PassThrough's reader may still be reading what it was given.
    await finished(out, { readable: false });
  } catch (e) {
    // Nothing more comes: the destination's owner learns why instead of waiting for an end.
    if (!out.destroyed) out.destroy(e instanceof Error ? e : new Error(String(e)));
    if (signal?.aborted) throw new CancelledError(`diff of ${upperDir} cancelled`, { cause: e });
    throw e;
  } finally {
    o.dispose();
  }
  return { diffId: o.digest() as Digest, size: o.size };
}
