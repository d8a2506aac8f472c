/**
 * Unpacking a layer into a directory. The archive is hostile until proven otherwise: every name is
 * resolved inside the target with a secure join, and whiteouts may only remove what sits in their
 * own directory.
 */
import {
  closeSync,
  constants as fsc,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  chmodSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import type { Stats } from 'node:fs';
import type * as ChildProcess from 'node:child_process';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { resolve as resolvePath } from 'node:path';
import { CancelledError, TsbuildError, UnsafeArchiveError } from '@tsbuild/errors';
import type { Digest } from '@tsbuild/oci';
import { readTar } from './tar.ts';
import type { TarHeader } from './tar.ts';
import { cleanArchivePath, secureJoin } from './securejoin.ts';
import { setAttributeSync } from '@napi-rs/xattr';
import { writeXattrs } from './xattr.ts';
import { OPAQUE_MARKER, WHITEOUT_PREFIX } from './diff.ts';
import { decompress } from './decompress.ts';
import { inUserNamespace } from './userns.ts';

/** Loaded on first use: only device nodes, fifos and whiteouts need a tool. */
const childProcess = (): typeof ChildProcess => process.getBuiltinModule('node:child_process');

export interface ApplyOptions {
  signal?: AbortSignal;
  /**
   * Treat `.wh.` entries as deletions (default true). Off for plain archives, such as a tar
   * extracted by ADD, where such names are ordinary files.
   */
  whiteouts?: boolean;
  /**
   * `dir` is an empty overlay lower dir filled for a snapshot: whiteouts are kept as overlayfs
   * keeps them in an upper dir (a 0/0 character device; the xattr named here, `y`, on an opaque
   * directory) so they hide what the layers below hold, instead of deleting from `dir`, which
   * holds nothing yet.
   */
  overlay?: OverlayLowerFormat;
}

/** How a lower dir holds whiteouts for the overlay driver that will mount it. */
export interface OverlayLowerFormat {
  opaqueXattr: 'trusted.overlay.opaque' | 'user.overlay.opaque';
  /**
   * Where mknod of a 0/0 device is refused (the dir is on overlayfs itself, which only
   * fuse-overlayfs then mounts over), a whiteout is an empty `.wh.NAME` file, which
   * fuse-overlayfs reads as one (and writes itself there).
   */
  whiteoutFiles: boolean;
}

export interface ApplyStats {
  /** sha256 of the uncompressed tar: compare it with the image config's diff_id. */
  diffId: Digest;
  /** Uncompressed tar size in bytes. */
  size: number;
  /** Entries read, including whiteouts. */
  entries: number;
  whiteouts: number;
  /** Device nodes left out: a user namespace (tsbuild without root) cannot make them. */
  skippedDevices: number;
}

/** Metadata applied after all entries are written, once the tree has stopped changing. */
interface Deferred {
  parts: string[];
  host: string;
  /** Index of the entry that wrote `host`. */
  index: number;
}

function lstatOrUndefined(p: string): Stats | undefined {
  try {
    return lstatSync(p);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw e;
  }
}


/** The highest id this user namespace maps, for saying why a chown failed. */
function mappedIds(file: string): number | undefined {
  try {
    let top = -1;
    for (const line of readFileSync(file, 'utf8').trim().split('\n')) {
      const [inside, , count] = line.trim().split(/\s+/).map(Number);
      if (inside !== undefined && count !== undefined) top = Math.max(top, inside + count - 1);
    }
    return top >= 0 ? top : undefined;
  } catch {
    return undefined;
  }
}

function isOverlayXattr(name: string): boolean {
  return name.startsWith('trusted.overlay.') || name.startsWith('user.overlay.');
}

/**
 * Applies a layer tar (uncompressed, gzip or zstd) onto `dir`: whiteouts and opaque markers remove lower
 * content, everything else is created with its owner, mode, mtime and xattrs.
 */
export async function apply(tar: Readable | AsyncIterable<Buffer>, dir: string, opts: ApplyOptions = {}): Promise<ApplyStats> {
  const root = resolvePath(dir);
  const signal = opts.signal;
  mkdirSync(root, { recursive: true });
  const hash = createHash('sha256');
  let size = 0;
  let entries = 0;
  let whiteouts = 0;
  const skipped = { devices: 0 };
  const dirs = new Map<string, string>();
  // Host path → index of the entry that last wrote it (also tells opaque markers what is new).
  const created = new Map<string, number>();
  const dirTimes: Array<Deferred & { mtime: number }> = [];
  const xattrs: Array<Deferred & { attrs: Map<string, Uint8Array> }> = [];

  try {
    // gzip and zstd are undone here so callers can hand over a pulled blob as it is.
    const source = decompress(tar instanceof Readable ? tar : Readable.from(tar));
    const reader = readTar(source, {
      signal,
      onBytes: (c) => {
        hash.update(c);
        size += c.length;
      },
    });
    for await (const { header, body } of reader) {
      signal?.throwIfAborted();
      entries++;
      const parts = cleanArchivePath(header.path);
      try {
        const r = await applyEntry(root, parts, header, body, created, entries, opts.whiteouts ?? true, opts.overlay, skipped, dirs);
        if (r === 'whiteout') whiteouts++;
        else if (r) {
          if (header.type === 'dir') dirTimes.push({ parts, host: r, index: entries, mtime: header.mtime });
          if (header.xattrs && header.type !== 'hardlink') {
            const attrs = new Map<string, Uint8Array>();
            for (const [k, v] of header.xattrs) {
              if (isOverlayXattr(k)) continue;
              if (!/^[a-z]+\.[^\0\n]+$/.test(k)) {
                throw new UnsafeArchiveError(`entry ${JSON.stringify(header.path)} has an invalid xattr name ${JSON.stringify(k)}`, { entry: header.path });
              }
              attrs.set(k, v);
            }
            if (attrs.size > 0) xattrs.push({ parts, host: r, index: entries, attrs });
          }
        }
      } catch (e) {
        if (e instanceof TsbuildError) throw e;
        const err = e as NodeJS.ErrnoException;
        // chown to an id the user namespace does not map fails with EINVAL.
        const top = err.code === 'EINVAL' && inUserNamespace() ? mappedIds('/proc/self/uid_map') : undefined;
        if (top !== undefined && (header.uid > top || header.gid > (mappedIds('/proc/self/gid_map') ?? top))) {
          throw new TsbuildError('APPLY', `cannot apply layer entry ${JSON.stringify(header.path)}: its owner ${header.uid}:${header.gid} is beyond the ids this user namespace maps (0-${top})`, {
            hint: 'give the user more subordinate ids (usermod --add-subuids/--add-subgids), or build as root',
            cause: e,
          });
        }
        throw new TsbuildError('APPLY', `cannot apply layer entry ${JSON.stringify(header.path)}: ${err.message}`, { cause: e });
      }
    }
    // A later entry may have replaced the path, or a directory on the way to it with a symlink;
    // only paths still holding what their entry wrote, reached without crossing a symlink, are touched.
    const stillThere = (d: Deferred): boolean =>
      created.get(d.host) === d.index && secureJoin(root, d.parts) === d.host && lstatOrUndefined(d.host) !== undefined;
    await writeXattrs(
      xattrs.filter(stillThere).map((x) => [x.host, x.attrs] as [string, Map<string, Uint8Array>]),
      { signal },
    );
    for (const d of dirTimes) if (stillThere(d)) lutimesSync(d.host, d.mtime, d.mtime);
  } catch (e) {
    if (signal?.aborted && !(e instanceof CancelledError)) throw new CancelledError(`applying a layer to ${dir} was cancelled`, { cause: e });
    throw e;
  }
  return { diffId: `sha256:${hash.digest('hex')}`, size, entries, whiteouts, skippedDevices: skipped.devices };
}

/** A whiteout or opaque marker kept in the form overlayfs reads from a lower dir. */
function overlayWhiteout(parent: string, base: string, h: TarHeader, created: Map<string, number>, format: OverlayLowerFormat): 'whiteout' {
  mkdirSync(parent, { recursive: true, mode: 0o755 });
  if (!lstatSync(parent).isDirectory()) {
    throw new UnsafeArchiveError(`whiteout ${JSON.stringify(h.path)} is in a directory that is not one`, { entry: h.path });
  }
  if (base === OPAQUE_MARKER) {
    setAttributeSync(parent, format.opaqueXattr, Buffer.from('y'));
    return 'whiteout';
  }
  const victim = base.slice(WHITEOUT_PREFIX.length);
  if (victim === '' || victim === '.' || victim === '..') {
    throw new UnsafeArchiveError(`whiteout ${JSON.stringify(h.path)} does not name a file in its directory`, { entry: h.path });
  }
  const target = `${parent}/${victim}`;
  // A whiteout hides lower layers only; what this layer itself wrote stays.
  if (created.has(target) || lstatOrUndefined(target) !== undefined) return 'whiteout';
  // mknod(2) of a 0/0 character device is allowed without CAP_MKNOD (Linux 5.8+), for whiteouts.
  const made = childProcess().spawnSync('mknod', ['-m', '000', target, 'c', '0', '0'], { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (made.status === 0) return 'whiteout';
  if (format.whiteoutFiles && /not permitted/i.test(made.stderr ?? '')) {
    writeFileSync(`${parent}/${base}`, '', { mode: 0 });
    return 'whiteout';
  }
  throw new TsbuildError('APPLY', `cannot make the whiteout ${JSON.stringify(h.path)}: ${(made.stderr || made.error?.message || `mknod exited with ${made.status}`).trim()}`, {
    hint: 'the tsbuild root must be on a filesystem that takes overlayfs whiteouts (ext4, xfs, btrfs, tmpfs; not overlayfs unless fuse-overlayfs mounts it)',
  });
}

async function drain(body: AsyncIterable<Buffer>): Promise<void> {
  for await (const _ of body);
}

function removeAll(host: string): void {
  rmSync(host, { recursive: true, force: true });
}

async function applyEntry(
  root: string,
  parts: string[],
  h: TarHeader,
  body: AsyncIterable<Buffer>,
  created: Map<string, number>,
  index: number,
  whiteouts: boolean,
  overlay: OverlayLowerFormat | undefined,
  skipped: { devices: number },
  dirs: Map<string, string>,
): Promise<'whiteout' | string | undefined> {
  if (parts.length === 0) {
    if (h.type !== 'dir') throw new UnsafeArchiveError(`entry ${JSON.stringify(h.path)} would replace the root directory`, { entry: h.path });
    lchownSync(root, h.uid, h.gid);
    chmodSync(root, h.mode);
    created.set(root, index);
    return root;
  }
  const base = parts[parts.length - 1]!;
  const parentParts = parts.slice(0, -1);
  // Directories already resolved (and made) for earlier entries; anything that could change what
  // a path resolves to (a symlink made, something removed or replaced) empties this map.
  const parentKey = parentParts.join('/');
  const known = dirs.get(parentKey);
  const parent = known ?? secureJoin(root, parentParts, { followLast: true });

  if (whiteouts && base.startsWith(WHITEOUT_PREFIX)) {
    await drain(body);
    dirs.clear();
    if (overlay) return overlayWhiteout(parent, base, h, created, overlay);
    const parentSt = lstatOrUndefined(parent);
    if (base === OPAQUE_MARKER) {
      if (parentSt?.isDirectory()) {
        for (const name of readdirSync(parent)) {
          const child = `${parent}/${name}`;
          if (!created.has(child)) removeAll(child);
        }
      }
      return 'whiteout';
    }
    const victim = base.slice(WHITEOUT_PREFIX.length);
    if (victim === '' || victim === '.' || victim === '..') {
      throw new UnsafeArchiveError(`whiteout ${JSON.stringify(h.path)} does not name a file in its directory`, { entry: h.path });
    }
    // A whiteout hides lower layers only; what this layer itself wrote stays.
    const target = `${parent}/${victim}`;
    if (parentSt?.isDirectory() && !created.has(target)) removeAll(target);
    return 'whiteout';
  }

  if (known === undefined) {
    mkdirSync(parent, { recursive: true, mode: 0o755 });
    dirs.set(parentKey, parent);
  }
  const host = `${parent}/${base}`;
  const existing = lstatOrUndefined(host);
  if (existing && !(h.type === 'dir' && existing.isDirectory())) {
    dirs.clear();
    if (existing.isDirectory()) removeAll(host);
    else unlinkSync(host);
  }
  created.set(host, index);

  switch (h.type) {
    case 'dir': {
      if (!existing?.isDirectory()) mkdirSync(host, { mode: 0o700 });
      lchownSync(host, h.uid, h.gid);
      chmodSync(host, h.mode);
      dirs.set(parts.join('/'), host);
      break;
    }
    case 'file': {
      const fd = openSync(host, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
      try {
        let written = 0;
        for await (const chunk of body) {
          let off = 0;
          while (off < chunk.length) off += writeSync(fd, chunk, off, chunk.length - off, written + off);
          written += chunk.length;
        }
        // chown clears setuid/setgid, so the mode goes on after it.
        fchownSync(fd, h.uid, h.gid);
        fchmodSync(fd, h.mode);
        futimesSync(fd, h.mtime, h.mtime);
      } finally {
        closeSync(fd);
      }
      return host;
    }
    case 'hardlink': {
      const targetParts = cleanArchivePath(h.linkpath ?? '');
      const target = secureJoin(root, targetParts);
      const st = lstatOrUndefined(target);
      if (targetParts.length === 0 || !st || st.isDirectory()) {
        throw new UnsafeArchiveError(`hardlink ${JSON.stringify(h.path)} points to ${JSON.stringify(h.linkpath)}, which is not a file in the layer's root`, {
          entry: h.path,
        });
      }
      linkSync(target, host);
      return undefined;
    }
    case 'symlink': {
      dirs.clear();
      symlinkSync(h.linkpath ?? '', host);
      lchownSync(host, h.uid, h.gid);
      break;
    }
    case 'char':
    case 'block': {
      // A user namespace cannot make device nodes: they are left out, as rootless Docker and Podman do.
      if (inUserNamespace() && !(h.type === 'char' && (h.devmajor ?? 0) === 0 && (h.devminor ?? 0) === 0)) {
        skipped.devices++;
        created.delete(host);
        return undefined;
      }
      childProcess().execFileSync('mknod', ['-m', (h.mode & 0o7777).toString(8), host, h.type === 'char' ? 'c' : 'b', String(h.devmajor ?? 0), String(h.devminor ?? 0)], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      lchownSync(host, h.uid, h.gid);
      chmodSync(host, h.mode);
      break;
    }
    case 'fifo': {
      childProcess().execFileSync('mkfifo', ['-m', (h.mode & 0o7777).toString(8), host], { stdio: ['ignore', 'ignore', 'pipe'] });
      lchownSync(host, h.uid, h.gid);
      chmodSync(host, h.mode);
      break;
    }
  }
  if (h.type !== 'dir') lutimesSync(host, h.mtime, h.mtime);
  return host;
}
