/** Helpers shared by this package's tests. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** What a test context gives a helper: somewhere to register cleanup. */
export interface Cleanup {
  after(fn: () => void): void;
}

/** A fresh directory under the system temp dir, removed when the test ends. */
export function tempDir(t: Cleanup, prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Builds a tree: `name/` = dir, `name -> target` = symlink, otherwise a file with its own name as content. */
export function makeTree(root: string, spec: readonly string[]): void {
  for (const item of spec) {
    const link = item.split(' -> ');
    if (link.length === 2) {
      const at = path.join(root, link[0] as string);
      fs.mkdirSync(path.dirname(at), { recursive: true });
      fs.symlinkSync(link[1] as string, at);
    } else if (item.endsWith('/')) {
      fs.mkdirSync(path.join(root, item), { recursive: true });
    } else {
      const at = path.join(root, item);
      fs.mkdirSync(path.dirname(at), { recursive: true });
      fs.writeFileSync(at, item);
    }
  }
}
