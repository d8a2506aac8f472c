/**
 * Debian packages: dpkg's status database (/var/lib/dpkg/status), or one file per package in
 * /var/lib/dpkg/status.d as distroless images have it; licenses from machine-readable (DEP-5)
 * /usr/share/doc/<package>/copyright files.
 */
import { parseDeb822 } from './deb822.ts';
import { conjoin, dep5License } from './license.ts';
import type { DeclaredLicense } from './license.ts';
import { distroQualifier } from './osrelease.ts';
import type { OsRelease } from './osrelease.ts';
import type { FoundPackage } from './package.ts';
import { debPurl } from './purl.ts';
import type { Tree } from './tree.ts';

const STATUS = '/var/lib/dpkg/status';
const STATUS_D = '/var/lib/dpkg/status.d';
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9+._-]{0,255}$/;
const VERSION_RE = /^[A-Za-z0-9.+~:_-]{1,256}$/;

/**
 * Whether a Status field says the package's files are on disk: the state (third word) is
 * `installed` and the error flag `ok`. The wanted state may be `install` or `hold` (a package
 * held back by apt is as installed as any other); half-installed, config-files and the rest are not.
 */
export function isInstalled(status: string): boolean {
  const [want, flag, state] = status.trim().split(/\s+/);
  return (want === 'install' || want === 'hold') && flag === 'ok' && state === 'installed';
}

/** The declared license of a DEP-5 copyright file; undefined when the file is not machine-readable. */
export function copyrightLicense(text: string): DeclaredLicense | undefined {
  const { paragraphs } = parseDeb822(text);
  const header = paragraphs[0];
  const format = header?.get('format');
  if (format === undefined || !/copyright-format|dep-?5/i.test(format)) return undefined;
  const refs: Record<string, string> = {};
  const exprs: string[] = [];
  for (const p of paragraphs) {
    if (p !== header && !p.has('files')) continue;
    const field = p.get('license');
    if (field === undefined) continue;
    const e = dep5License(field, refs);
    if (e !== undefined) exprs.push(e);
  }
  const expression = conjoin(exprs);
  if (expression === undefined) return undefined;
  // Keep only the refs the final expression uses.
  const tokens = new Set(expression.split(/[\s()]+/));
  const used = Object.fromEntries(Object.entries(refs).filter(([id]) => tokens.has(id)));
  return { expression, refs: used };
}

export function scanDpkg(tree: Tree, os: OsRelease | undefined): FoundPackage[] {
  const vendor = os?.id ?? 'debian';
  const distro = distroQualifier(os);
  const out: FoundPackage[] = [];
  const licenses = new Map<string, DeclaredLicense | undefined>();

  const add = (fields: Map<string, string>, location: string, requireStatus: boolean): void => {
    const name = fields.get('package');
    const version = fields.get('version');
    if (name === undefined || version === undefined) return;
    const status = fields.get('status');
    if (status !== undefined ? !isInstalled(status) : requireStatus) return;
    if (!NAME_RE.test(name) || !VERSION_RE.test(version)) {
      tree.warn(`${location}: package ${JSON.stringify(name.slice(0, 80))} version ${JSON.stringify(version.slice(0, 80))} is not a valid Debian name and version, skipped`);
      return;
    }
    const arch = fields.get('architecture');
    const qualifiers: { arch?: string; distro?: string } = {};
    if (arch !== undefined && /^[a-z0-9-]{1,32}$/.test(arch)) qualifiers.arch = arch;
    if (distro !== undefined) qualifiers.distro = distro;
    if (!licenses.has(name)) {
      const text = tree.text(`/usr/share/doc/${name}/copyright`);
      licenses.set(name, text === undefined ? undefined : copyrightLicense(text));
    }
    const pkg: FoundPackage = { ecosystem: 'deb', name, version, purl: debPurl(vendor, name, version, qualifiers), locations: [location] };
    const license = licenses.get(name);
    if (license !== undefined) pkg.license = license;
    out.push(pkg);
  };

  const status = tree.text(STATUS);
  if (status !== undefined) {
    const db = parseDeb822(status);
    if (db.malformed > 0) tree.warn(`${STATUS}: ${db.malformed} malformed lines skipped`);
    for (const p of db.paragraphs) add(p, STATUS, true);
  }
  for (const f of tree.listFiles(STATUS_D)) {
    if (f.name.startsWith('.') || f.name.endsWith('.md5sums')) continue;
    const text = tree.text(f.imagePath);
    if (text === undefined) continue;
    const db = parseDeb822(text);
    if (db.malformed > 0) tree.warn(`${f.imagePath}: ${db.malformed} malformed lines skipped`);
    // distroless writes these without a Status field: present means installed.
    for (const p of db.paragraphs) add(p, f.imagePath, false);
  }
  return out;
}
