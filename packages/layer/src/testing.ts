/** Helpers shared by this package's tests: building archives in code and comparing trees. */
import { spawnSync } from 'node:child_process';
import { lstatSync, mkdtempSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Readable } from 'node:stream';
import { encodeHeader, endOfArchive, padding } from './tar.ts';
import type { TarHeader } from './tar.ts';
import { readXattrTree } from './xattr.ts';

export function tempDir(prefix: string): string {
  return mkdtempSync(`${tmpdir()}/tsbuild-layer-${prefix}-`);
}

export interface Spec extends Partial<TarHeader> {
  path: string;
  body?: string | Buffer;
}

/** A tar built entry by entry, with defaults for whatever a case does not care about. */
export function buildTar(specs: Spec[]): Buffer {
  const out: Buffer[] = [];
  for (const s of specs) {
    const body = s.body === undefined ? Buffer.alloc(0) : Buffer.from(s.body);
    const { body: _b, ...rest } = s;
    out.push(encodeHeader({ type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 1_000_000, ...rest, size: body.length }));
    out.push(body, Buffer.alloc(padding(body.length)));
  }
  out.push(endOfArchive());
  return Buffer.concat(out);
}

/** `b` as a stream of `n`-byte pieces (the last may be shorter). */
export function chunked(b: Buffer, n: number): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < b.length; i += n) parts.push(b.subarray(i, i + n));
  return Readable.from(parts);
}

export function streamOf(b: Buffer): Readable {
  // Small chunks so headers and bodies straddle chunk boundaries.
  return chunked(b, 700);
}

/** Everything a stream gives, as one buffer. */
export async function concatStream(r: Readable): Promise<Buffer> {
  return Buffer.concat(await r.toArray());
}

/** What the reference command-line tool (`gzip`, `zstd`, `xz`, `bzip2`) makes of `input` with `-c`. */
export function toolOutput(cmd: string, input: Buffer): Buffer {
  return spawnSync(cmd, ['-c'], { input, maxBuffer: 64 << 20 }).stdout;
}

export interface NodeInfo {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  content?: string;
  target?: string;
  rdev?: number;
  xattrs?: Record<string, string>;
  /** Index of the first path sharing this inode, for hardlink groups. */
  linkGroup?: string;
}

/** Everything diff/apply must preserve, keyed by relative path (the root itself excluded). */
export async function snapshotTree(root: string): Promise<Record<string, NodeInfo>> {
  const xattrs = await readXattrTree(root);
  const out: Record<string, NodeInfo> = {};
  const inodes = new Map<number, string>();
  const walk = (host: string, rel: string): void => {
    for (const name of readdirSync(host).sort()) {
      const h = `${host}/${name}`;
      const r = rel + name;
      const st = lstatSync(h);
      const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : st.isFIFO() ? 'fifo' : st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : 'other';
      const info: NodeInfo = { type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000) };
      if (type === 'file') info.content = readFileSync(h).toString('base64');
      if (type === 'symlink') info.target = readlinkSync(h);
      if (type === 'char' || type === 'block') info.rdev = st.rdev;
      const xa = xattrs.get(h);
      if (xa) info.xattrs = Object.fromEntries([...xa].map(([k, v]) => [k, v.toString('hex')]));
      if (type !== 'dir' && st.nlink > 1) {
        info.linkGroup = inodes.get(st.ino) ?? r;
        inodes.set(st.ino, info.linkGroup);
      }
      out[r] = info;
      if (type === 'dir') walk(h, r + '/');
    }
  };
  walk(root, '');
  return out;
}
