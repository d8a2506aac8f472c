/**
 * Python packages: the core metadata (`METADATA`) of every `*.dist-info` directory directly under
 * a `site-packages` or `dist-packages` directory.
 */
import { declaredLicense } from './license.ts';
import type { FoundPackage } from './package.ts';
import { pypiPurl } from './purl.ts';
import type { Tree } from './tree.ts';

const NAME_RE = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,254}[A-Za-z0-9])?$/;
const VERSION_RE = /^[A-Za-z0-9.+!_-]{1,128}$/;

/** `…/site-packages/<name>-<version>.dist-info/METADATA` (or dist-packages). */
export function isDistInfoMetadata(imagePath: string): boolean {
  const parts = imagePath.split('/');
  const n = parts.length;
  return n >= 4 && parts[n - 1] === 'METADATA' && parts[n - 2]!.endsWith('.dist-info') && (parts[n - 3] === 'site-packages' || parts[n - 3] === 'dist-packages');
}

/** The header fields of a core-metadata file (RFC 822 style: headers, a blank line, the description). */
export function parseCoreMetadata(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  let last: string | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line === '') break;
    if ((line.startsWith(' ') || line.startsWith('\t')) && last !== undefined) {
      fields.set(last, `${fields.get(last)}\n${line.trim()}`);
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    last = line.slice(0, colon).trim().toLowerCase();
    // Repeated fields (Classifier, License-File) keep the first; only single-valued ones are read.
    if (!fields.has(last)) fields.set(last, line.slice(colon + 1).trim());
    else last = undefined;
  }
  return fields;
}

export function distInfoPackage(tree: Tree, imagePath: string, hostPath: string): FoundPackage | undefined {
  const text = tree.text(imagePath, { hostPath });
  if (text === undefined) return undefined;
  const f = parseCoreMetadata(text);
  const name = f.get('name');
  const version = f.get('version');
  if (name === undefined || version === undefined || !NAME_RE.test(name) || !VERSION_RE.test(version)) {
    tree.warn(`${imagePath}: no valid Name and Version, skipped`);
    return undefined;
  }
  const pkg: FoundPackage = { ecosystem: 'pypi', name, version, purl: pypiPurl(name, version), locations: [imagePath] };
  // License-Expression (PEP 639) is SPDX by definition; the older License is often a name, sometimes a whole text.
  const license = declaredLicense(f.get('license-expression')) ?? declaredLicense(f.get('license'));
  if (license !== undefined) pkg.license = license;
  return pkg;
}
