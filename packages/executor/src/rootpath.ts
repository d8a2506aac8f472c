import { lstat, mkdir, readlink } from 'node:fs/promises';
import { TsbuildError } from '@tsbuild/errors';

const MAX_SYMLINKS = 40;

function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * Resolves `unsafePath` (a path inside the container) against the rootfs at `root` the way the
 * container would see it: symlinks are followed, but absolute targets and `..` are confined to
 * the root. Components that do not exist are taken literally. Returns the clean in-container
 * path (always absolute); the host path is `root + result`.
 */
export async function resolveInRoot(root: string, unsafePath: string): Promise<string> {
  let pending = unsafePath.split('/').filter((c) => c !== '' && c !== '.');
  const done: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift() as string;
    if (part === '.') continue;
    if (part === '..') {
      done.pop();
      continue;
    }
    const candidate = `/${[...done, part].join('/')}`;
    let isLink = false;
    try {
      isLink = (await lstat(root + candidate)).isSymbolicLink();
    } catch (e) {
      const code = errCode(e);
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw e;
    }
    if (!isLink) {
      done.push(part);
      continue;
    }
    if (++links > MAX_SYMLINKS) {
      throw new TsbuildError('PATH_LOOP', `too many symbolic links resolving ${unsafePath} in the container`);
    }
    const target = await readlink(root + candidate);
    if (target.startsWith('/')) done.length = 0;
    pending = [...target.split('/').filter((c) => c !== '' && c !== '.'), ...pending];
  }
  return `/${done.join('/')}`;
}

/** Whether an in-container path names something under /proc. */
export function isUnderProc(containerPath: string): boolean {
  return containerPath === '/proc' || containerPath.startsWith('/proc/');
}

/**
 * Creates the directory `containerPath` (already resolved) inside the root, one component at a
 * time, re-resolving each so that a symlink planted along the way cannot redirect the creation.
 */
export async function mkdirInRoot(root: string, containerPath: string): Promise<void> {
  let cur = '/';
  for (const part of containerPath.split('/').filter(Boolean)) {
    cur = await resolveInRoot(root, `${cur === '/' ? '' : cur}/${part}`);
    try {
      await mkdir(root + cur, { mode: 0o755 });
    } catch (e) {
      if (errCode(e) !== 'EEXIST') throw e;
      if (!(await lstat(root + cur)).isDirectory()) {
        throw new TsbuildError('NOT_A_DIRECTORY', `${containerPath}: ${cur} exists in the container and is not a directory`);
      }
    }
  }
}
