/**
 * Alpine packages: apk's installed database (/lib/apk/db/installed, or /usr/lib/apk/db/installed
 * where /lib is merged into /usr): `X:value` lines, one blank-line-separated record per package.
 */
import { declaredLicense } from './license.ts';
import { distroQualifier } from './osrelease.ts';
import type { OsRelease } from './osrelease.ts';
import type { FoundPackage } from './package.ts';
import { apkPurl } from './purl.ts';
import type { Tree } from './tree.ts';

const DATABASES = ['/lib/apk/db/installed', '/usr/lib/apk/db/installed'];
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9+._-]{0,255}$/;
const VERSION_RE = /^[A-Za-z0-9.+~_-]{1,256}$/;

export interface ApkRecord {
  name?: string;
  version?: string;
  arch?: string;
  license?: string;
}

export function parseApkInstalled(text: string): { records: ApkRecord[]; malformed: number } {
  const records: ApkRecord[] = [];
  let cur: ApkRecord | undefined;
  let malformed = 0;
  for (const raw of text.split('\n')) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line === '') {
      cur = undefined;
      continue;
    }
    if (line.length < 2 || line[1] !== ':') {
      malformed++;
      continue;
    }
    if (cur === undefined) {
      cur = {};
      records.push(cur);
    }
    const v = line.slice(2);
    switch (line[0]) {
      case 'P':
        cur.name = v;
        break;
      case 'V':
        cur.version = v;
        break;
      case 'A':
        cur.arch = v;
        break;
      case 'L':
        cur.license = v;
        break;
    }
  }
  return { records, malformed };
}

export function scanApk(tree: Tree, os: OsRelease | undefined): FoundPackage[] {
  const vendor = os?.id ?? 'alpine';
  const distro = distroQualifier(os);
  const out: FoundPackage[] = [];
  const seenHost = new Set<string>();
  for (const db of DATABASES) {
    const host = tree.resolve(db);
    // A merged /lib → usr/lib makes both names one file.
    if (host === undefined || seenHost.has(host)) continue;
    seenHost.add(host);
    const text = tree.text(db, { hostPath: host });
    if (text === undefined) continue;
    const { records, malformed } = parseApkInstalled(text);
    if (malformed > 0) tree.warn(`${db}: ${malformed} malformed lines skipped`);
    for (const r of records) {
      if (r.name === undefined || r.version === undefined) continue;
      if (!NAME_RE.test(r.name) || !VERSION_RE.test(r.version)) {
        tree.warn(`${db}: package ${JSON.stringify(r.name.slice(0, 80))} version ${JSON.stringify(r.version.slice(0, 80))} is not a valid apk name and version, skipped`);
        continue;
      }
      const qualifiers: { arch?: string; distro?: string } = {};
      if (r.arch !== undefined && /^[A-Za-z0-9_-]{1,32}$/.test(r.arch)) qualifiers.arch = r.arch;
      if (distro !== undefined) qualifiers.distro = distro;
      const pkg: FoundPackage = { ecosystem: 'apk', name: r.name, version: r.version, purl: apkPurl(vendor, r.name, r.version, qualifiers), locations: [db] };
      const license = declaredLicense(r.license);
      if (license !== undefined) pkg.license = license;
      out.push(pkg);
    }
  }
  return out;
}
