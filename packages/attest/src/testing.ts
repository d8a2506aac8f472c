/** Fixture trees for the tests: image filesystems written file by file. */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `tsbuild-attest-${prefix}-`));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Writes files under root: path → content (a string, or an object written as JSON). */
export function writeTree(root: string, files: Record<string, string | object>): void {
  for (const [p, content] of Object.entries(files)) {
    const abs = join(root, p);
    mkdirSync(dirname(abs), { recursive: true });
    writeFileSync(abs, typeof content === 'string' ? content : JSON.stringify(content, null, 2));
  }
}

/** Creates a symlink at root/path with the given target (taken literally, absolute or relative). */
export function link(root: string, path: string, target: string): void {
  const abs = join(root, path);
  mkdirSync(dirname(abs), { recursive: true });
  symlinkSync(target, abs);
}
