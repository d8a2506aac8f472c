/**
 * Extended attributes through `@napi-rs/xattr`, a prebuilt Node-API addon (Node has no xattr API).
 *
 * Its calls never follow symlinks: they are llistxattr, lgetxattr and lsetxattr (the Rust `xattr`
 * crate's defaults, and xattr.test.ts checks it), which is what a layer needs: a symlink's own
 * attributes (trusted.*, security.*) go into the tar, never those of whatever it points at. The
 * kernel refuses user.* on symlinks, so a layer entry asking for one fails to apply, as it does
 * with `setfattr -h`.
 *
 * A call costs a few microseconds, less than the process a `getfattr` over the tree would take for
 * any tree smaller than tens of thousands of files, so everything runs in this thread.
 */
import { lstatSync, readdirSync } from 'node:fs';
import { getAttributeSync, listAttributesSync, setAttributeSync } from '@napi-rs/xattr';
import { TsbuildError } from '@tsbuild/errors';

/** Absolute host path → attribute name → raw value. Files without xattrs are absent. */
export type XattrTable = Map<string, Map<string, Buffer>>;

/** Decides, per attribute, whether it is kept. */
export type XattrFilter = (path: string, name: string, value: Buffer) => boolean;

/** The addon reports failures as plain errors whose message ends in "(os error N)". */
function errnoOf(e: unknown): number | undefined {
  const m = /\(os error (\d+)\)/.exec(e instanceof Error ? e.message : String(e));
  return m ? Number(m[1]) : undefined;
}

const ENOENT = 2;
const ENOTDIR = 20;
/** ENOTSUP and EOPNOTSUPP are the same number on Linux: a filesystem without xattrs. */
const EOPNOTSUPP = 95;

/**
 * The xattrs of one path, not following a symlink, sorted by name; undefined when it has none.
 * Attributes that vanish between listing and reading are left out, as is a file that vanished.
 */
export function readXattrs(path: string, keep?: XattrFilter): Map<string, Buffer> | undefined {
  let names: string[];
  try {
    names = listAttributesSync(path);
  } catch (e) {
    const errno = errnoOf(e);
    if (errno === EOPNOTSUPP || errno === ENOENT || errno === ENOTDIR) return undefined;
    if (e instanceof Error && /Invalid attribute/.test(e.message)) {
      throw new TsbuildError('UNSUPPORTED_NAME', `${path} has an extended attribute whose name is not valid UTF-8`, { cause: e });
    }
    throw new TsbuildError('XATTR', `cannot list the extended attributes of ${path}: ${(e as Error).message}`, { cause: e });
  }
  if (names.length === 0) return undefined;
  let out: Map<string, Buffer> | undefined;
  for (const name of names.sort()) {
    const value = getAttributeSync(path, name);
    if (value === null) continue;
    if (keep && !keep(path, name, value)) continue;
    (out ??= new Map()).set(name, value);
  }
  return out;
}

/**
 * Every xattr in the tree under `root` (`root` included; symlinks are not followed, nor are
 * directories behind them). `keep` filters names as they are read so dropped attributes never
 * accumulate. Paths are `root` joined with the names below it, as given.
 */
export async function readXattrTree(root: string, opts: { signal?: AbortSignal; keep?: XattrFilter } = {}): Promise<XattrTable> {
  const { signal, keep } = opts;
  signal?.throwIfAborted();
  const table: XattrTable = new Map();
  const visit = (path: string): void => {
    const attrs = readXattrs(path, keep);
    if (attrs) table.set(path, attrs);
  };
  visit(root);
  const dirs: string[] = [];
  if (isDirectory(root)) dirs.push(root);
  while (dirs.length > 0) {
    const dir = dirs.pop()!;
    signal?.throwIfAborted();
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch (e) {
      // Removed while the scan ran: nothing left to read there.
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw e;
    }
    const prefix = dir.endsWith('/') ? dir : dir + '/';
    for (const entry of entries) {
      const path = prefix + entry.name;
      visit(path);
      if (entry.isDirectory()) dirs.push(path);
    }
  }
  return table;
}

function isDirectory(path: string): boolean {
  return lstatSync(path, { throwIfNoEntry: false })?.isDirectory() ?? false;
}

/**
 * Sets xattrs on many paths (not following symlinks). Every attribute is tried; the failures, if
 * any, are reported together afterwards.
 */
export async function writeXattrs(entries: Iterable<[path: string, attrs: ReadonlyMap<string, Uint8Array>]>, opts: { signal?: AbortSignal } = {}): Promise<void> {
  const failures: string[] = [];
  let failed = 0;
  let first: unknown;
  for (const [path, attrs] of entries) {
    opts.signal?.throwIfAborted();
    for (const [name, value] of attrs) {
      try {
        setAttributeSync(path, name, value);
      } catch (e) {
        failed++;
        first ??= e;
        if (failures.length < 5) failures.push(`${name} on ${path}: ${(e as Error).message}`);
      }
    }
  }
  if (failed > 0) {
    throw new TsbuildError('XATTR', `cannot set ${failed} extended attribute${failed === 1 ? '' : 's'}: ${failures.join('; ')}${failed > failures.length ? '; …' : ''}`, {
      cause: first,
    });
  }
}
