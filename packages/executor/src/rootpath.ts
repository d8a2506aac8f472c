import { lstat, mkdir } from 'node:fs/promises';
import { resolve as resolvePath } from 'node:path';
import { TsbuildError, UnsafeArchiveError } from '@tsbuild/errors';
import { secureJoin } from '@tsbuild/layer';

/**
 * Resolves `unsafePath` (a path inside the container) against the rootfs at `root` the way the
 * container would see it, with tsbuild's one secure join: symlinks are followed, absolute targets
 * and `..` stay inside the root, missing components are taken literally. Returns the clean
 * in-container path (always absolute); the host path is `root + result`.
 */
export async function resolveInRoot(root: string, unsafePath: string): Promise<string> {
  const base = resolvePath(root);
  let host: string;
  try {
    host = secureJoin(base, unsafePath, { followLast: true });
  } catch (e) {
    if (!(e instanceof UnsafeArchiveError)) throw e;
    const loop = /symbolic links/.test(e.message);
    throw new TsbuildError(loop ? 'PATH_LOOP' : 'PATH_INVALID', `${unsafePath} in the container: ${e.message}`, { cause: e });
  }
  return host === base ? '/' : host.slice(base === '/' ? 0 : base.length);
}

function errCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
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
