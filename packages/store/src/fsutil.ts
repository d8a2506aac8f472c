import { randomBytes } from 'node:crypto';
import { lstat, open, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export function errnoCode(e: unknown): string | undefined {
  return e instanceof Error && 'code' in e && typeof e.code === 'string' ? e.code : undefined;
}

/** A unique temp file name; the pid makes leftovers traceable to the process that left them. */
export function tempName(dir: string, prefix: string): string {
  return join(dir, `${prefix}-${process.pid}-${randomBytes(6).toString('hex')}`);
}

/** Makes a rename or unlink inside `dir` durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Replaces `file` so that readers see either the old or the new content, never a mix, even if
 * the process or the machine dies half way: temp file in `tmpDir` (same filesystem), fsync,
 * rename, fsync of the directory. `mode` is the new file's (default 0644; 0600 for secrets).
 */
export async function writeFileAtomic(file: string, data: Uint8Array | string, tmpDir: string, opts: { mode?: number } = {}): Promise<void> {
  const tmp = tempName(tmpDir, `${basename(file)}.tmp`);
  const fh = await open(tmp, 'wx', opts.mode ?? 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  await fsyncDir(dirname(file));
}

/**
 * Replaces `file` so that readers see the old or the new content, never a mix, when the process
 * dies half way (temp file + rename); no fsync, so a power loss may lose the change.
 */
export async function writeFileReplacing(file: string, data: Uint8Array | string, tmpDir: string): Promise<void> {
  const tmp = tempName(tmpDir, `${basename(file)}.tmp`);
  try {
    await writeFile(tmp, data, { mode: 0o644, flag: 'wx' });
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/**
 * Whether a path exists (a symlink counts, whatever it points at); ENOENT and ENOTDIR mean no,
 * other errors are real failures and are thrown. The one such check of every package.
 */
export async function exists(p: string): Promise<boolean> {
  try {
    await lstat(p);
    return true;
  } catch (e) {
    const code = errnoCode(e);
    if (code === 'ENOENT' || code === 'ENOTDIR') return false;
    throw e;
  }
}
