/** os-release(5): which distribution an image is, for the vendor and `distro` of its purls. */
import type { Tree } from './tree.ts';

export interface OsRelease {
  /** `ID`, lower case (debian, ubuntu, alpine, …). */
  id?: string;
  /** `VERSION_ID` (12, 22.04, 3.20.3). */
  versionId?: string;
  /** `VERSION_CODENAME` (bookworm), used when there is no VERSION_ID (testing, sid). */
  codename?: string;
}

/** Parses `KEY=value` lines; values may be quoted with `"` or `'` and use backslash escapes. */
export function parseOsRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line);
    if (!m) continue;
    let v = m[2]!;
    if (v.length >= 2 && (v[0] === '"' || v[0] === "'") && v.endsWith(v[0])) v = v.slice(1, -1).replace(/\\(.)/g, '$1');
    out[m[1]!] = v;
  }
  return out;
}

export function readOsRelease(tree: Tree): OsRelease | undefined {
  const text = tree.text('/etc/os-release') ?? tree.text('/usr/lib/os-release');
  if (text === undefined) return undefined;
  const kv = parseOsRelease(text);
  const os: OsRelease = {};
  const clean = (v: string | undefined): string | undefined => (v !== undefined && /^[A-Za-z0-9._~+-]{1,64}$/.test(v) ? v : undefined);
  const id = clean(kv.ID)?.toLowerCase();
  if (id !== undefined) os.id = id;
  const versionId = clean(kv.VERSION_ID);
  if (versionId !== undefined) os.versionId = versionId;
  const codename = clean(kv.VERSION_CODENAME);
  if (codename !== undefined) os.codename = codename;
  return os;
}

/** `<id>-<version>` for a purl's distro qualifier, or undefined when the image does not say. */
export function distroQualifier(os: OsRelease | undefined): string | undefined {
  if (os?.id === undefined) return undefined;
  const v = os.versionId ?? os.codename;
  return v === undefined ? undefined : `${os.id}-${v}`;
}
