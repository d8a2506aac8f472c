/**
 * Resolving untrusted paths inside a root directory. Symlinks met on the way are followed as the
 * container would see them: absolute targets restart at the root and `..` never climbs above it,
 * so the result always names something inside the root.
 */
import { lstatSync, readlinkSync } from 'node:fs';
import { resolve as resolvePath } from 'node:path';
import { UnsafeArchiveError } from '@tsbuild/errors';

const MAX_LINKS = 255;

/**
 * Splits an untrusted archive path into clean components. A leading `/` means the root;
 * `.` and empty parts are dropped; `..` that would climb above the root is refused.
 */
export function cleanArchivePath(unsafePath: string): string[] {
  if (unsafePath.includes('\0')) throw new UnsafeArchiveError(`path ${JSON.stringify(unsafePath)} contains NUL`, { entry: unsafePath });
  const out: string[] = [];
  for (const part of unsafePath.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length === 0) throw new UnsafeArchiveError(`path ${JSON.stringify(unsafePath)} escapes the root`, { entry: unsafePath });
      out.pop();
      continue;
    }
    out.push(part);
  }
  return out;
}

export interface SecureJoinOptions {
  /** Follow a symlink in the last component too (default false: the last component is returned as is). */
  followLast?: boolean;
  /**
   * Reads symlinks through this instead of the host file system: the target of the entry at
   * `rel` (components below the root joined by `/`) if it is a symlink, else undefined. For a
   * tree that is not one directory (layer dirs merged as overlayfs would show them).
   */
  symlinkTarget?: (rel: string) => string | undefined;
}

/**
 * Joins an untrusted path (a string, or components from `cleanArchivePath`) under `root`, the way
 * the path would resolve if `root` were `/`: symlinks are followed in every component but the last
 * (unless `followLast`), absolute targets restart at the root and `..` never climbs above it.
 * Missing components are kept lexically. Returns an absolute host path that is `root` or lies
 * under it. This is tsbuild's one secure join: layers, COPY sources and destinations, WORKDIR,
 * mount targets and container paths all resolve through it.
 */
export function secureJoin(root: string, unsafe: string | readonly string[], opts: SecureJoinOptions = {}): string {
  const absRoot = resolvePath(root);
  const prefix = absRoot === '/' ? '' : absRoot;
  const unsafeParts = typeof unsafe === 'string' ? unsafe.split('/') : unsafe;
  const done: string[] = [];
  // Components still to walk, consumed from the end (so a stack in reverse order).
  const todo = [...unsafeParts].reverse();
  let links = 0;
  while (todo.length > 0) {
    const part = todo.pop()!;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      done.pop();
      continue;
    }
    if (part.includes('/') || part.includes('\0')) throw new UnsafeArchiveError(`invalid path component ${JSON.stringify(part)}`);
    const isLast = todo.length === 0;
    const host = prefix + '/' + [...done, part].join('/');
    if (isLast && !opts.followLast) {
      done.push(part);
      break;
    }
    let target: string | undefined;
    if (opts.symlinkTarget) target = opts.symlinkTarget([...done, part].join('/'));
    else {
      try {
        // Missing is common (a COPY destination, a new WORKDIR): no exception for it.
        if (lstatSync(host, { throwIfNoEntry: false })?.isSymbolicLink()) target = readlinkSync(host);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT' && (e as NodeJS.ErrnoException).code !== 'ENOTDIR') throw e;
      }
    }
    if (target === undefined) {
      done.push(part);
      continue;
    }
    if (++links > MAX_LINKS) {
      throw new UnsafeArchiveError(`too many levels of symbolic links resolving ${JSON.stringify(unsafeParts.join('/'))}`, { entry: unsafeParts.join('/') });
    }
    if (target.startsWith('/')) done.length = 0;
    const parts = target.split('/');
    for (let i = parts.length - 1; i >= 0; i--) todo.push(parts[i]!);
  }
  return done.length === 0 ? absRoot : prefix + '/' + done.join('/');
}
