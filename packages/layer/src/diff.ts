/**
 * Turns an overlay upper dir into an OCI changeset tar, hashed as it streams out (the diff_id).
 * The walk uses synchronous fs calls: for trees of many small files a promise per file costs
 * several times more than the I/O itself.
 */
import { closeSync, lstatSync, openSync, readSync, readdirSync, readlinkSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { resolve as resolvePath } from 'node:path';
import { CancelledError, TsbuildError } from '@tsbuild/errors';
import type { Digest } from '@tsbuild/oci';
import { BLOCK, encodeHeader, encodeHeaderInto, endOfArchive, padding } from './tar.ts';
import type { TarHeader } from './tar.ts';
import { readXattrs } from './xattr.ts';

export interface DiffOptions {
  /** Clamp every mtime to at most this (seconds since the epoch), for reproducible layers. */
  sourceDateEpoch?: number;
  signal?: AbortSignal;
  /** Paths (relative, no leading `./`, no trailing `/`) to leave out, with their subtrees. */
  exclude?: (relPath: string) => boolean;
}

export interface DiffResult {
  /** sha256 of the uncompressed tar. */
  diffId: Digest;
  /** Bytes written. */
  size: number;
}

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_MARKER = '.wh..wh..opq';

const CHUNK = 1 << 20;

function isOverlayXattr(name: string): boolean {
  return name.startsWith('trusted.overlay.') || name.startsWith('user.overlay.');
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
    const kind = kindOf(st);
    const outName = kind === 'whiteout' ? WHITEOUT_PREFIX + name : name;
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
 * The entries of the tree in archive order (byte order of full paths, depth first). Synchronous
 * calls in batches, giving the event loop a turn between directories every few thousand entries.
 */
async function planWalk(root: string, exclude: ((relPath: string) => boolean) | undefined, signal: AbortSignal | undefined): Promise<Planned[]> {
  const plan: Planned[] = [];
  const stack: Array<{ kids: Child[]; i: number; rel: string }> = [{ kids: childrenOf(root, ''), i: 0, rel: '' }];
  let sinceYield = 0;
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const kid = top.kids[top.i++];
    if (kid === undefined) {
      stack.pop();
      continue;
    }
    if (exclude?.(top.rel + kid.name)) continue;
    plan.push(kid.entry);
    if (kid.entry.kind === 'dir') {
      const rel = kid.entry.outPath + '/';
      const kids = childrenOf(kid.entry.host, rel);
      stack.push({ kids, i: 0, rel });
      sinceYield += kids.length;
      if (sinceYield >= 4096) {
        sinceYield = 0;
        await new Promise((r) => setImmediate(r));
        signal?.throwIfAborted();
      }
    }
  }
  return plan;
}

/**
 * Writes the changeset in `upperDir` to `out` as a deterministic tar and ends `out`.
 * Resolves once `out` has finished.
 */
export async function diff(upperDir: string, out: Writable, opts: DiffOptions = {}): Promise<DiffResult> {
  const root = resolvePath(upperDir);
  const signal = opts.signal;
  const epoch = opts.sourceDateEpoch;
  if (epoch !== undefined && (!Number.isFinite(epoch) || epoch < 0)) {
    throw new TsbuildError('BAD_SOURCE_DATE_EPOCH', `SOURCE_DATE_EPOCH must be a non-negative number of seconds, got ${epoch}`);
  }
  if (!lstatSync(root).isDirectory()) throw new TsbuildError('NOT_A_DIRECTORY', `${upperDir} is not a directory`);

  let plan: Planned[];
  try {
    plan = await planWalk(root, opts.exclude, signal);
  } catch (e) {
    // Nothing was written: close the destination so its owner does not wait for an end.
    out.destroy();
    if (signal?.aborted) throw new CancelledError(`diff of ${upperDir} cancelled`, { cause: e });
    throw e;
  }

  const hash = createHash('sha256');
  let size = 0;
  const links = new Map<string, string>();
  const clamp = (m: number): number => (epoch === undefined ? m : Math.min(m, Math.floor(epoch)));

  async function* chunks(): AsyncGenerator<Buffer> {
    // Headers and small files are copied into one batch buffer that is handed downstream when
    // full: a buffer per file costs more in allocation than the reads themselves.
    let batch = Buffer.allocUnsafe(CHUNK);
    let pos = 0;
    const take = (): Buffer => {
      const b = batch.subarray(0, pos);
      batch = Buffer.allocUnsafe(CHUNK);
      pos = 0;
      hash.update(b);
      size += b.length;
      return b;
    };
    const fits = (n: number): boolean => pos + n <= CHUNK;
    const put = (b: Buffer): void => {
      b.copy(batch, pos);
      pos += b.length;
    };

    for (const e of plan) {
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
              if ((name === 'trusted.overlay.opaque' || name === 'user.overlay.opaque') && value.toString('latin1') === 'y') opaque = true;
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
        if (opaque) {
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
        if (!fits(BLOCK)) yield take();
        const n = encodeHeaderInto(h, batch, pos);
        if (n > 0) {
          pos += n;
          continue;
        }
        const b = encodeHeader(h);
        if (!fits(b.length)) yield take();
        if (fits(b.length)) put(b);
        else {
          // Only xattrs can make a header larger than a batch.
          hash.update(b);
          size += b.length;
          yield b;
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
            if (!fits(padded)) yield take();
            readExactly(batch, pos, file.size);
            batch.fill(0, pos + file.size, pos + padded);
            pos += padded;
          } else {
            // Large files stream through in CHUNK-sized reads; memory stays flat.
            if (pos > 0) yield take();
            let left = file.size;
            while (left > 0) {
              const want = Math.min(left, CHUNK);
              readExactly(batch, 0, want);
              pos = want;
              left -= want;
              if (left === 0) {
                // CHUNK is a multiple of the block size, so the padding always fits after the tail.
                const pad = padding(file.size);
                batch.fill(0, pos, pos + pad);
                pos += pad;
              }
              if (pos >= CHUNK) {
                yield take();
                signal?.throwIfAborted();
              }
            }
          }
        } finally {
          closeSync(fd);
        }
      }
      if (pos >= CHUNK - BLOCK) {
        yield take();
        signal?.throwIfAborted();
      }
    }
    const end = endOfArchive();
    if (!fits(end.length)) yield take();
    put(end);
    yield take();
  }
  try {
    await pipeline(Readable.from(chunks(), { objectMode: false, highWaterMark: CHUNK }), out, ...(signal ? [{ signal }] : []));
  } catch (e) {
    if (signal?.aborted) throw new CancelledError(`diff of ${upperDir} cancelled`, { cause: e });
    throw e;
  }
  return { diffId: `sha256:${hash.digest('hex')}`, size };
}
