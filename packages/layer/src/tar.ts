/**
 * A tar codec written for layers: ustar headers plus PAX records for anything ustar cannot hold.
 * Written by hand because the common libraries lose information a layer must keep (mode 0 becomes
 * 0644, binary xattr values are mangled, or xattrs cannot be written at all).
 */
import type { Readable } from 'node:stream';
import { UnsafeArchiveError } from '@tsbuild/errors';

export const BLOCK = 512;

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

export interface TarHeader {
  /** Relative path; directories end with `/`. */
  path: string;
  type: TarEntryType;
  /** Permission bits plus setuid/setgid/sticky (07777). */
  mode: number;
  uid: number;
  gid: number;
  /** Body length; 0 for everything but regular files. */
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Symlink target or hardlink target path. */
  linkpath?: string;
  devmajor?: number;
  devminor?: number;
  uname?: string;
  gname?: string;
  /** Extended attributes, values as raw bytes. */
  xattrs?: ReadonlyMap<string, Uint8Array>;
}

const TYPEFLAG: Record<TarEntryType, string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  dir: '5',
  fifo: '6',
};

const XATTR_PREFIX = 'SCHILY.xattr.';
const MAX_OCTAL_7 = 0o7777777;
const MAX_OCTAL_11 = 0o77777777777;

function writeOctal(buf: Buffer, off: number, width: number, value: number): void {
  // width includes the terminating NUL.
  const s = value.toString(8).padStart(width - 1, '0');
  buf.write(s, off, width - 1, 'latin1');
  buf[off + width - 1] = 0;
}

/** One PAX record: the decimal length prefix counts every byte of the record including itself. */
function paxRecord(key: string, value: Uint8Array): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len), 'latin1'), body]);
}

interface UstarFields {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  devmajor: number;
  devminor: number;
}

/** Fills one ustar block at `off`; name, linkname, uname and gname must already fit their fields. */
function writeUstar(b: Buffer, off: number, name: string | Buffer, typeflag: string, f: UstarFields, linkname: string | Buffer, uname: string, gname: string): void {
  b.fill(0, off, off + BLOCK);
  if (typeof name === 'string') b.write(name, off, 100, 'utf8');
  else name.copy(b, off, 0, Math.min(name.length, 100));
  writeOctal(b, off + 100, 8, f.mode);
  writeOctal(b, off + 108, 8, f.uid);
  writeOctal(b, off + 116, 8, f.gid);
  writeOctal(b, off + 124, 12, f.size);
  writeOctal(b, off + 136, 12, f.mtime);
  b.write(typeflag, off + 156, 1, 'latin1');
  if (typeof linkname === 'string') b.write(linkname, off + 157, 100, 'utf8');
  else linkname.copy(b, off + 157, 0, Math.min(linkname.length, 100));
  b.write('ustar\u000000', off + 257, 8, 'latin1');
  b.write(uname, off + 265, 32, 'utf8');
  b.write(gname, off + 297, 32, 'utf8');
  writeOctal(b, off + 329, 8, f.devmajor);
  writeOctal(b, off + 337, 8, f.devminor);
  b.fill(0x20, off + 148, off + 156);
  let sum = 0;
  for (let i = off; i < off + BLOCK; i++) sum += b[i]!;
  writeOctal(b, off + 148, 7, sum);
  b[off + 155] = 0x20;
}

function ustarBlock(name: Buffer, typeflag: string, f: UstarFields, linkname: Buffer, uname: string, gname: string): Buffer {
  const b = Buffer.allocUnsafe(BLOCK);
  writeUstar(b, 0, name, typeflag, f, linkname, uname, gname);
  return b;
}

/** True when a string's UTF-8 form is at most `max` bytes (cheap for short strings). */
function fitsBytes(s: string, max: number): boolean {
  return s.length * 3 <= max || Buffer.byteLength(s, 'utf8') <= max;
}

/**
 * Writes the header of `h` straight into `target` at `off` when it needs no PAX records and the
 * block fits; returns the bytes written, or 0 when the caller must use encodeHeader. The bytes
 * are the same as encodeHeader's: this only saves the allocations for the common case.
 */
export function encodeHeaderInto(h: TarHeader, target: Buffer, off: number): number {
  if (off + BLOCK > target.length) return 0;
  if ((h.xattrs && h.xattrs.size > 0) || h.uid > MAX_OCTAL_7 || h.gid > MAX_OCTAL_7 || h.size > MAX_OCTAL_11) return 0;
  const mtime = Math.max(0, Math.floor(h.mtime));
  const link = h.linkpath ?? '';
  const uname = h.uname ?? '';
  const gname = h.gname ?? '';
  if (mtime > MAX_OCTAL_11 || !fitsBytes(h.path, 100) || !fitsBytes(link, 100) || !fitsBytes(uname, 32) || !fitsBytes(gname, 32)) return 0;
  const f = { mode: h.mode & 0o7777, uid: h.uid, gid: h.gid, size: h.size, mtime, devmajor: h.devmajor ?? 0, devminor: h.devminor ?? 0 };
  writeUstar(target, off, h.path, TYPEFLAG[h.type], f, link, uname, gname);
  return BLOCK;
}

function paxName(name: Buffer): Buffer {
  // A stable, readable name for the PAX header block; readers ignore it.
  const tail = name.subarray(Math.max(0, name.length - 80));
  return Buffer.concat([Buffer.from('PaxHeaders/'), tail]);
}

/**
 * Encodes the header block(s) of one entry: an optional PAX header (path, linkpath, uid, gid,
 * size, mtime, xattrs when ustar cannot hold them) followed by the ustar header. The body and its
 * padding are the caller's.
 */
export function encodeHeader(h: TarHeader): Buffer {
  const name = Buffer.from(h.path, 'utf8');
  const link = Buffer.from(h.linkpath ?? '', 'utf8');
  const mtime = Math.max(0, Math.floor(h.mtime));
  const records: Buffer[] = [];
  if (name.length > 100) records.push(paxRecord('path', name));
  if (link.length > 100) records.push(paxRecord('linkpath', link));
  if (h.uid > MAX_OCTAL_7) records.push(paxRecord('uid', Buffer.from(String(h.uid))));
  if (h.gid > MAX_OCTAL_7) records.push(paxRecord('gid', Buffer.from(String(h.gid))));
  if (h.size > MAX_OCTAL_11) records.push(paxRecord('size', Buffer.from(String(h.size))));
  if (mtime > MAX_OCTAL_11) records.push(paxRecord('mtime', Buffer.from(String(mtime))));
  if (h.xattrs && h.xattrs.size > 0) {
    const keys = [...h.xattrs.keys()].sort(compareUtf8);
    for (const k of keys) records.push(paxRecord(XATTR_PREFIX + k, h.xattrs.get(k)!));
  }
  const fields: UstarFields = {
    mode: h.mode & 0o7777,
    uid: h.uid > MAX_OCTAL_7 ? 0 : h.uid,
    gid: h.gid > MAX_OCTAL_7 ? 0 : h.gid,
    size: h.size > MAX_OCTAL_11 ? 0 : h.size,
    mtime: mtime > MAX_OCTAL_11 ? 0 : mtime,
    devmajor: h.devmajor ?? 0,
    devminor: h.devminor ?? 0,
  };
  const uname = truncateUtf8(h.uname ?? '', 32);
  const gname = truncateUtf8(h.gname ?? '', 32);
  const main = ustarBlock(name.subarray(0, 100), TYPEFLAG[h.type], fields, link.subarray(0, 100), uname, gname);
  if (records.length === 0) return main;
  const pax = Buffer.concat(records);
  const paxFields: UstarFields = { mode: 0o644, uid: 0, gid: 0, size: pax.length, mtime: fields.mtime, devmajor: 0, devminor: 0 };
  const paxHeader = ustarBlock(paxName(name), 'x', paxFields, Buffer.alloc(0), '', '');
  return Buffer.concat([paxHeader, pax, Buffer.alloc(padding(pax.length)), main]);
}

/** Cuts a string to whole characters within `max` UTF-8 bytes (uname/gname have no PAX fallback here). */
function truncateUtf8(s: string, max: number): string {
  if (fitsBytes(s, max)) return s;
  let out = '';
  for (const ch of s) {
    if (Buffer.byteLength(out + ch, 'utf8') > max) break;
    out += ch;
  }
  return out;
}

/** Bytes of zero padding after a body of `size` bytes. */
export function padding(size: number): number {
  const r = size % BLOCK;
  return r === 0 ? 0 : BLOCK - r;
}

/** The end-of-archive marker: two zero blocks. */
export function endOfArchive(): Buffer {
  return Buffer.alloc(2 * BLOCK);
}

/** Byte-order comparison of the UTF-8 encodings (differs from JS string order above the BMP). */
export function compareUtf8(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

// ---------------------------------------------------------------------------------------------
// Reading

/** One entry of an archive being read; `body` must be consumed (or left) before the next one. */
export interface TarReadEntry {
  header: TarHeader;
  body: AsyncIterable<Buffer>;
}

export interface ReadTarOptions {
  signal?: AbortSignal;
  /** Called with every chunk of archive bytes as it is consumed (e.g. to hash the archive). */
  onBytes?: (chunk: Buffer) => void;
}

/** Pulls exact byte counts out of an async chunk source. */
class ByteSource {
  private buf: Buffer = Buffer.alloc(0);
  private done = false;
  consumed = 0;
  constructor(
    private readonly it: AsyncIterator<Buffer | string>,
    private readonly onBytes: ((chunk: Buffer) => void) | undefined,
  ) {}

  private async fill(): Promise<boolean> {
    if (this.done) return false;
    const r = await this.it.next();
    if (r.done) {
      this.done = true;
      return false;
    }
    const chunk = typeof r.value === 'string' ? Buffer.from(r.value) : r.value;
    this.onBytes?.(chunk);
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    return true;
  }

  /** Exactly n bytes, or fewer only at the end of the input. */
  async read(n: number): Promise<Buffer> {
    while (this.buf.length < n && (await this.fill()));
    const out = this.buf.subarray(0, Math.min(n, this.buf.length));
    this.buf = this.buf.subarray(out.length);
    this.consumed += out.length;
    return out;
  }

  /** Up to n bytes as they arrive, at least one unless at the end. */
  async readSome(n: number): Promise<Buffer> {
    if (this.buf.length === 0) await this.fill();
    const out = this.buf.subarray(0, Math.min(n, this.buf.length));
    this.buf = this.buf.subarray(out.length);
    this.consumed += out.length;
    return out;
  }

  /** Stops the source (destroying a stream) when reading ends early or fails. */
  async close(): Promise<void> {
    await this.it.return?.();
  }

  /** Reads what is left so a hash over the whole input is complete. */
  async drain(): Promise<void> {
    this.consumed += this.buf.length;
    this.buf = Buffer.alloc(0);
    while (await this.fill()) {
      this.consumed += this.buf.length;
      this.buf = Buffer.alloc(0);
    }
  }
}

function cstring(b: Buffer): Buffer {
  const nul = b.indexOf(0);
  return nul === -1 ? b : b.subarray(0, nul);
}

function parseNumeric(b: Buffer, field: string): number {
  if (b.length > 0 && (b[0]! & 0x80) !== 0) {
    // GNU base-256: big-endian two's complement with the top bit as the marker.
    if ((b[0]! & 0x40) !== 0) throw new UnsafeArchiveError(`tar header: negative ${field}`);
    let v = b[0]! & 0x3f;
    for (let i = 1; i < b.length; i++) v = v * 256 + b[i]!;
    if (!Number.isSafeInteger(v)) throw new UnsafeArchiveError(`tar header: ${field} too large`);
    return v;
  }
  const s = cstring(b).toString('latin1').trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new UnsafeArchiveError(`tar header: invalid ${field} ${JSON.stringify(s)}`);
  return parseInt(s, 8);
}

function parsePax(data: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let off = 0;
  while (off < data.length) {
    const sp = data.indexOf(0x20, off);
    if (sp === -1) throw new UnsafeArchiveError('tar: malformed PAX record (no length)');
    const len = Number(data.toString('latin1', off, sp));
    if (!Number.isInteger(len) || len <= sp - off + 1 || off + len > data.length) {
      throw new UnsafeArchiveError('tar: malformed PAX record length');
    }
    const rec = data.subarray(sp + 1, off + len);
    if (rec[rec.length - 1] !== 0x0a) throw new UnsafeArchiveError('tar: PAX record not newline-terminated');
    const eq = rec.indexOf(0x3d);
    if (eq === -1) throw new UnsafeArchiveError('tar: PAX record without "="');
    out.set(rec.toString('utf8', 0, eq), rec.subarray(eq + 1, rec.length - 1));
    off += len;
  }
  return out;
}

const TYPES: Record<string, TarEntryType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'dir',
  '6': 'fifo',
};

const MAX_META = 16 * 1024 * 1024;

/**
 * Iterates the entries of an uncompressed tar stream (ustar, PAX `x`/`g`, GNU `L`/`K` long names,
 * base-256 numbers). Checksums are verified; anything unparseable is an UnsafeArchiveError.
 */
export async function* readTar(source: Readable | AsyncIterable<Buffer>, opts: ReadTarOptions = {}): AsyncGenerator<TarReadEntry> {
  const src = new ByteSource((source as AsyncIterable<Buffer>)[Symbol.asyncIterator](), opts.onBytes);
  const global = new Map<string, Buffer>();
  let pax: Map<string, Buffer> | undefined;
  let gnuName: Buffer | undefined;
  let gnuLink: Buffer | undefined;
  try {
    for (;;) {
      opts.signal?.throwIfAborted();
      const block = await src.read(BLOCK);
      if (block.length === 0) return; // tolerate archives without the end marker
      if (block.length < BLOCK) throw new UnsafeArchiveError('tar: truncated header');
      if (block.every((x) => x === 0)) {
        await src.drain();
        return;
      }
      verifyChecksum(block);
      const flag = String.fromCharCode(block[156]!);
      const size = parseNumeric(block.subarray(124, 136), 'size');
      if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
        if (size > MAX_META) throw new UnsafeArchiveError(`tar: ${size}-byte metadata entry is too large`);
        const data = await src.read(size);
        if (data.length < size) throw new UnsafeArchiveError('tar: truncated metadata entry');
        await src.read(padding(size));
        if (flag === 'x') pax = new Map([...(pax ?? []), ...parsePax(data)]);
        else if (flag === 'g') for (const [k, v] of parsePax(data)) global.set(k, v);
        else if (flag === 'L') gnuName = cstring(data);
        else gnuLink = cstring(data);
        continue;
      }
      const rec = new Map([...global, ...(pax ?? [])]);
      pax = undefined;
      let type = TYPES[flag];
      const isUstar = block.toString('latin1', 257, 262) === 'ustar';
      let name = cstring(block.subarray(0, 100));
      const prefix = isUstar && block.toString('latin1', 257, 263) === 'ustar\0' ? cstring(block.subarray(345, 500)) : Buffer.alloc(0);
      if (prefix.length > 0) name = Buffer.concat([prefix, Buffer.from('/'), name]);
      const path = rec.get('path')?.toString('utf8') ?? gnuName?.toString('utf8') ?? name.toString('utf8');
      const linkpath = rec.get('linkpath')?.toString('utf8') ?? gnuLink?.toString('utf8') ?? cstring(block.subarray(157, 257)).toString('utf8');
      gnuName = gnuLink = undefined;
      // Pre-POSIX archives mark directories only by the trailing slash.
      if (flag === '\0' && path.endsWith('/')) type = 'dir';
      if (type === undefined) {
        throw new UnsafeArchiveError(`tar: entry ${JSON.stringify(path)} has unsupported type ${JSON.stringify(flag)}`, { entry: path });
      }
      const num = (key: string, off: number, len: number, field: string): number => {
        const v = rec.get(key);
        if (v !== undefined) {
          const n = Number(v.toString('latin1'));
          if (!Number.isSafeInteger(n) || n < 0) throw new UnsafeArchiveError(`tar: invalid PAX ${key} for ${JSON.stringify(path)}`, { entry: path });
          return n;
        }
        return parseNumeric(block.subarray(off, off + len), field);
      };
      const mtimeRec = rec.get('mtime');
      const bodySize = type === 'file' ? num('size', 124, 12, 'size') : 0;
      const header: TarHeader = {
        path,
        type,
        mode: parseNumeric(block.subarray(100, 108), 'mode') & 0o7777,
        uid: num('uid', 108, 8, 'uid'),
        gid: num('gid', 116, 8, 'gid'),
        size: bodySize,
        mtime: mtimeRec !== undefined ? Math.floor(Number(mtimeRec.toString('latin1'))) || 0 : parseNumeric(block.subarray(136, 148), 'mtime'),
        uname: rec.get('uname')?.toString('utf8') ?? cstring(block.subarray(265, 297)).toString('utf8'),
        gname: rec.get('gname')?.toString('utf8') ?? cstring(block.subarray(297, 329)).toString('utf8'),
      };
      if (type === 'symlink' || type === 'hardlink') header.linkpath = linkpath;
      if (type === 'char' || type === 'block') {
        header.devmajor = parseNumeric(block.subarray(329, 337), 'devmajor');
        header.devminor = parseNumeric(block.subarray(337, 345), 'devminor');
      }
      const xattrs = new Map<string, Uint8Array>();
      for (const [k, v] of rec) if (k.startsWith(XATTR_PREFIX)) xattrs.set(k.slice(XATTR_PREFIX.length), v);
      if (xattrs.size > 0) header.xattrs = xattrs;
      // Hardlinks and others may carry a size in odd archives; their bytes are skipped.
      const stored = type === 'file' ? bodySize : num('size', 124, 12, 'size');
      let remaining = stored;
      const body: AsyncIterable<Buffer> = {
        async *[Symbol.asyncIterator]() {
          if (type !== 'file') return;
          while (remaining > 0) {
            const chunk = await src.readSome(Math.min(remaining, 1 << 20));
            if (chunk.length === 0) throw new UnsafeArchiveError(`tar: ${JSON.stringify(path)} is truncated`, { entry: path });
            remaining -= chunk.length;
            yield chunk;
          }
        },
      };
      yield { header, body };
      while (remaining > 0) {
        const chunk = await src.readSome(Math.min(remaining, 1 << 20));
        if (chunk.length === 0) throw new UnsafeArchiveError(`tar: ${JSON.stringify(path)} is truncated`, { entry: path });
        remaining -= chunk.length;
      }
      const pad = await src.read(padding(stored));
      if (pad.length < padding(stored)) throw new UnsafeArchiveError(`tar: ${JSON.stringify(path)} is truncated`, { entry: path });
    }
  } finally {
    await src.close();
  }
}

/**
 * A header block's checksum as tar programs compute it, the checksum field counted as spaces:
 * POSIX's sum of unsigned bytes, and the signed sum some old implementations wrote.
 */
function headerChecksums(block: Uint8Array): { unsigned: number; signed: number } {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  return { unsigned, signed };
}

function verifyChecksum(block: Buffer): void {
  const stored = parseNumeric(block.subarray(148, 156), 'checksum');
  const { unsigned, signed } = headerChecksums(block);
  if (stored !== unsigned && stored !== signed) throw new UnsafeArchiveError('tar: header checksum mismatch (not a tar archive, or corrupt)');
}

/**
 * Whether a 512-byte block is a tar header: its checksum must hold (ustar, GNU and old V7
 * headers all carry one). An all-zero block is the end of an archive, not a header.
 */
export function isTarHeader(block: Uint8Array): boolean {
  if (block.length < BLOCK) return false;
  if (block.subarray(0, BLOCK).every((b) => b === 0)) return false;
  const field = Buffer.from(block.subarray(148, 156)).toString('latin1').replace(/[\0 ]+$/, '').trim();
  if (!/^[0-7]+$/.test(field)) return false;
  const want = parseInt(field, 8);
  const { unsigned, signed } = headerChecksums(block);
  return want === unsigned || want === signed;
}
