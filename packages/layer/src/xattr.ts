/**
 * Extended attributes through the `attr` tools. Node has no xattr API; one `getfattr -R` over a
 * whole tree (or one `setfattr --restore` for a whole extraction) costs a single process, where a
 * call per file would dominate the run time.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { TsbuildError } from '@tsbuild/errors';

/** Absolute host path → attribute name → raw value. Files without xattrs are absent. */
export type XattrTable = Map<string, Map<string, Buffer>>;

/** getfattr/setfattr write names with `\ooo` escapes for bytes outside printable ASCII. */
function unescapeName(s: Buffer): Buffer {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    const c = s[i]!;
    if (c === 0x5c && i + 3 < s.length && /^[0-7]{3}$/.test(s.toString('latin1', i + 1, i + 4))) {
      out.push(parseInt(s.toString('latin1', i + 1, i + 4), 8));
      i += 3;
    } else out.push(c);
  }
  return Buffer.from(out);
}

function escapeName(name: Buffer): string {
  let s = '';
  for (const c of name) {
    if (c <= 0x20 || c >= 0x7f || c === 0x5c || c === 0x3d) s += '\\' + c.toString(8).padStart(3, '0');
    else s += String.fromCharCode(c);
  }
  return s;
}

/** Runs a tool with its stdout in `stdoutFd`, so it keeps working while this thread is busy. */
function run(cmd: string, args: string[], signal: AbortSignal | undefined, stdoutFd: number | 'ignore'): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', stdoutFd, 'pipe'], ...(signal ? { signal } : {}) });
    const err: Buffer[] = [];
    child.stderr?.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e) => {
      const code = (e as NodeJS.ErrnoException).code;
      reject(
        code === 'ENOENT'
          ? new TsbuildError('MISSING_TOOL', `${cmd} not found`, { hint: 'install the "attr" package (apt-get install attr)', cause: e })
          : e,
      );
    });
    child.on('close', (code) => {
      if (code === 0) resolve();
      else reject(new TsbuildError('XATTR', `${cmd} failed (exit ${code}): ${Buffer.concat(err).toString().trim().slice(0, 500)}`));
    });
  });
}

/**
 * Every xattr in the tree under `root` (not following symlinks). `keep` filters names as they are
 * parsed so dropped attributes never accumulate. The scan starts when this is called and runs in
 * another process, so the caller can do synchronous work before awaiting the result.
 */
export async function readXattrTree(
  root: string,
  opts: { signal?: AbortSignal; keep?: (path: string, name: string, value: Buffer) => boolean } = {},
): Promise<XattrTable> {
  const table: XattrTable = new Map();
  let current: Map<string, Buffer> | undefined;
  let currentPath = '';
  const line = (l: Buffer): void => {
    if (l.length === 0) return;
    if (l.toString('latin1', 0, 8) === '# file: ') {
      currentPath = unescapeName(l.subarray(8)).toString('utf8');
      current = undefined;
      return;
    }
    const eq = l.indexOf(0x3d);
    if (eq === -1) return;
    const name = unescapeName(l.subarray(0, eq)).toString('utf8');
    const raw = l.toString('latin1', eq + 1);
    let value: Buffer;
    if (raw.startsWith('0x')) value = Buffer.from(raw.slice(2), 'hex');
    else if (raw.startsWith('0s')) value = Buffer.from(raw.slice(2), 'base64');
    else if (raw.startsWith('"') && raw.endsWith('"')) value = unescapeName(Buffer.from(raw.slice(1, -1), 'latin1'));
    else value = Buffer.from(raw, 'latin1');
    if (opts.keep && !opts.keep(currentPath, name, value)) return;
    if (current === undefined) {
      current = new Map();
      table.set(currentPath, current);
    }
    current.set(name, value);
  };
  const dir = mkdtempSync(`${tmpdir()}/tsbuild-xattr-`);
  try {
    const fd = openSync(`${dir}/dump`, 'w');
    let running: Promise<void>;
    try {
      running = run('getfattr', ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', '--', root], opts.signal, fd);
    } finally {
      closeSync(fd);
    }
    await running;
    const dump = readFileSync(`${dir}/dump`);
    let start = 0;
    for (let nl = dump.indexOf(0x0a); nl !== -1; nl = dump.indexOf(0x0a, start)) {
      line(dump.subarray(start, nl));
      start = nl + 1;
    }
    if (start < dump.length) line(dump.subarray(start));
    return table;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Sets xattrs on many paths (not following symlinks) with one process. */
export async function writeXattrs(entries: Iterable<[path: string, attrs: ReadonlyMap<string, Uint8Array>]>, opts: { signal?: AbortSignal } = {}): Promise<void> {
  const parts: string[] = [];
  for (const [path, attrs] of entries) {
    if (attrs.size === 0) continue;
    parts.push(`# file: ${escapeName(Buffer.from(path, 'utf8'))}\n`);
    for (const [name, value] of attrs) parts.push(`${escapeName(Buffer.from(name, 'utf8'))}=0x${Buffer.from(value).toString('hex')}\n`);
    parts.push('\n');
  }
  if (parts.length === 0) return;
  const dir = mkdtempSync(`${tmpdir()}/tsbuild-xattr-`);
  try {
    writeFileSync(`${dir}/restore`, parts.join(''));
    await run('setfattr', ['-h', `--restore=${dir}/restore`], opts.signal, 'ignore');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
