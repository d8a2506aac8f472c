import type { DeclaredLicense } from './license.ts';

export type Ecosystem = 'deb' | 'apk' | 'npm' | 'pypi';

/** A package found in an image's filesystem. */
export interface FoundPackage {
  ecosystem: Ecosystem;
  name: string;
  version: string;
  /** Its package URL; the package's identity (two finds with one purl are one package). */
  purl: string;
  /** What the package declares, as an SPDX expression; undefined when unknown. */
  license?: DeclaredLicense;
  /** Image paths of the files the package was read from, sorted. */
  locations: string[];
}

/** Merges finds of the same package (same purl): locations united, the first license known kept. */
export function mergePackages(found: readonly FoundPackage[]): FoundPackage[] {
  const byPurl = new Map<string, FoundPackage>();
  // Sorted first so the result does not depend on the order the finds came in.
  const key = (p: FoundPackage): string => `${p.purl}\0${[...p.locations].sort().join('\0')}\0${p.license?.expression ?? ''}`;
  const ordered = [...found].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  for (const p of ordered) {
    const have = byPurl.get(p.purl);
    if (!have) {
      byPurl.set(p.purl, { ...p, locations: [...p.locations] });
      continue;
    }
    have.locations.push(...p.locations);
    if (have.license === undefined && p.license !== undefined) have.license = p.license;
  }
  const out = [...byPurl.values()];
  for (const p of out) p.locations = [...new Set(p.locations)].sort();
  return out.sort((a, b) => (a.purl < b.purl ? -1 : a.purl > b.purl ? 1 : 0));
}
