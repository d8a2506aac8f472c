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
import { encodeHeader, endOfArchive, padding } from './tar.ts';
import type { TarHeader } from './tar.ts';
import { readXattrTree } from './xattr.ts';

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

interface Child {
  name: string;
  /** Name in the archive (differs for whiteouts). */
  outName: string;
  key: Buffer;
  st: Stats;
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
    const st = lstatSync(`${hostDir}/${name}`);
    const whiteout = st.isCharacterDevice() && st.rdev === 0;
    const outName = whiteout ? WHITEOUT_PREFIX + name : name;
    // Sorting siblings by name + "/" for dirs makes the depth-first order the byte order of full paths.
    out.push({ name, outName, key: Buffer.from(st.isDirectory() ? outName + '/' : outName, 'utf8'), st });
  }
  return out.sort((a, b) => Buffer.compare(a.key, b.key));
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

  const opaque = new Set<string>();
  const xattrs = await readXattrTree(root, {
    ...(signal ? { signal } : {}),
    keep: (path, name, value) => {
      if (!isOverlayXattr(name)) return true;
      if ((name === 'trusted.overlay.opaque' || name === 'user.overlay.opaque') && value.toString('latin1') === 'y') opaque.add(path);
      return false;
    },
  });

  const hash = createHash('sha256');
  let size = 0;
  const links = new Map<string, string>();
  const mtimeOf = (st: Stats): number => {
    const m = Math.floor(st.mtimeMs / 1000);
    return epoch === undefined ? m : Math.min(m, Math.floor(epoch));
  };

  async function* chunks(): AsyncGenerator<Buffer> {
    let pending: Buffer[] = [];
    let pendingLen = 0;
    const push = (b: Buffer): void => {
      pending.push(b);
      pendingLen += b.length;
    };
    const flush = (): Buffer => {
      const b = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingLen);
      pending = [];
      pendingLen = 0;
      hash.update(b);
      size += b.length;
      return b;
    };

    // An explicit stack keeps the walk synchronous between yields.
    type Frame = { host: string; rel: string; kids: Child[]; i: number };
    const stack: Frame[] = [{ host: root, rel: '', kids: childrenOf(root, ''), i: 0 }];
    while (stack.length > 0) {
      const frame = stack[stack.length - 1]!;
      if (frame.i >= frame.kids.length) {
        stack.pop();
        continue;
      }
      const kid = frame.kids[frame.i++]!;
      const host = `${frame.host}/${kid.name}`;
      const relNoSlash = frame.rel + kid.name;
      if (opts.exclude?.(relNoSlash)) continue;
      const st = kid.st;
      const base = { uid: st.uid, gid: st.gid, mode: st.mode & 0o7777, mtime: mtimeOf(st), size: 0 };
      const attrs = xattrs.get(host);
      const withXattrs = (h: TarHeader): TarHeader => (attrs && attrs.size > 0 ? { ...h, xattrs: attrs } : h);
      const outPath = frame.rel + kid.outName;

      if (kid.outName !== kid.name) {
        push(encodeHeader({ ...base, mode: 0, path: outPath, type: 'file' }));
      } else if (st.isDirectory()) {
        push(encodeHeader(withXattrs({ ...base, path: outPath + '/', type: 'dir' })));
        if (opaque.has(host)) {
          push(encodeHeader({ ...base, mode: 0, uid: 0, gid: 0, path: `${outPath}/${OPAQUE_MARKER}`, type: 'file' }));
        }
        stack.push({ host, rel: outPath + '/', kids: childrenOf(host, outPath + '/'), i: 0 });
      } else if (st.isSocket()) {
        // Sockets cannot be represented in tar and mean nothing in an image.
      } else {
        let linked: string | undefined;
        if (st.nlink > 1) {
          const big = lstatSync(host, { bigint: true });
          const id = `${big.dev}:${big.ino}`;
          linked = links.get(id);
          if (linked === undefined) links.set(id, outPath);
        }
        if (linked !== undefined) {
          push(encodeHeader(withXattrs({ ...base, path: outPath, type: 'hardlink', linkpath: linked })));
        } else if (st.isSymbolicLink()) {
          push(encodeHeader(withXattrs({ ...base, path: outPath, type: 'symlink', linkpath: readlinkSync(host) })));
        } else if (st.isFIFO()) {
          push(encodeHeader(withXattrs({ ...base, path: outPath, type: 'fifo' })));
        } else if (st.isCharacterDevice() || st.isBlockDevice()) {
          push(encodeHeader(withXattrs({ ...base, path: outPath, type: st.isCharacterDevice() ? 'char' : 'block', ...devNumbers(st.rdev) })));
        } else if (st.isFile()) {
          push(encodeHeader(withXattrs({ ...base, path: outPath, type: 'file', size: st.size })));
          const fd = openSync(host, 'r');
          try {
            let left = st.size;
            while (left > 0) {
              const want = Math.min(left, CHUNK);
              const buf = Buffer.allocUnsafe(want);
              let got = 0;
              while (got < want) {
                const n = readSync(fd, buf, got, want - got, null);
                if (n === 0) {
                  throw new TsbuildError('LAYER_SOURCE_CHANGED', `${host} shrank while it was being read (expected ${st.size} bytes)`);
                }
                got += n;
              }
              left -= want;
              push(buf);
              if (pendingLen >= CHUNK) {
                yield flush();
                signal?.throwIfAborted();
              }
            }
          } finally {
            closeSync(fd);
          }
          const pad = padding(st.size);
          if (pad > 0) push(Buffer.alloc(pad));
        }
      }
      if (pendingLen >= CHUNK) {
        yield flush();
        signal?.throwIfAborted();
      }
    }
    push(endOfArchive());
    yield flush();
  }

  try {
    await pipeline(Readable.from(chunks(), { objectMode: false, highWaterMark: CHUNK }), out, ...(signal ? [{ signal }] : []));
  } catch (e) {
    if (signal?.aborted) throw new CancelledError(`diff of ${upperDir} cancelled`, { cause: e });
    throw e;
  }
  return { diffId: `sha256:${hash.digest('hex')}`, size };
}
