/**
 * npm packages: `package-lock.json` files (lockfileVersion 1, 2 and 3) and the `package.json` of
 * every package installed under a `node_modules` directory, wherever they are in the tree.
 */
import { declaredLicense } from './license.ts';
import type { FoundPackage } from './package.ts';
import { npmPurl } from './purl.ts';
import type { Tree } from './tree.ts';

const NAME_RE = /^(?:@[a-z0-9~-][a-z0-9._~-]*\/)?[a-z0-9~-][a-z0-9._~-]*$/i;
// Versions that name a package release; git URLs, tarball URLs and file: paths are not versions.
const VERSION_RE = /^[0-9A-Za-z.+_~-]{1,256}$/;

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function validName(n: unknown): n is string {
  return typeof n === 'string' && n.length <= 214 && NAME_RE.test(n);
}

function validVersion(v: unknown): v is string {
  return typeof v === 'string' && VERSION_RE.test(v);
}

/** Where a package.json describes an installed package: `…/node_modules/<name>/package.json` or `…/node_modules/@scope/<name>/package.json`. */
export function isInstalledManifest(imagePath: string): boolean {
  const parts = imagePath.split('/');
  const n = parts.length;
  if (parts[n - 1] !== 'package.json' || n < 4) return false;
  if (parts[n - 3] === 'node_modules') return !parts[n - 2]!.startsWith('@') && !parts[n - 2]!.startsWith('.');
  return parts[n - 3]!.startsWith('@') && parts[n - 4] === 'node_modules';
}

function licenseOf(manifest: Record<string, unknown>): string | undefined {
  const l = manifest.license;
  if (typeof l === 'string') return l;
  if (isObject(l) && typeof l.type === 'string') return l.type;
  // The long-deprecated `licenses: [{ type }]`: the package is offered under any of them.
  if (Array.isArray(manifest.licenses)) {
    const types = manifest.licenses.map((x) => (isObject(x) && typeof x.type === 'string' ? x.type : typeof x === 'string' ? x : undefined));
    if (types.length > 0 && types.every((t) => t !== undefined)) return types.length === 1 ? types[0] : types.map((t) => `(${t})`).join(' OR ');
  }
  return undefined;
}

function found(name: string, version: string, location: string, license: string | undefined): FoundPackage {
  const pkg: FoundPackage = { ecosystem: 'npm', name, version, purl: npmPurl(name, version), locations: [location] };
  const l = declaredLicense(license);
  if (l !== undefined) pkg.license = l;
  return pkg;
}

function parseJson(tree: Tree, text: string, location: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    tree.warn(`${location}: not valid JSON (${(e as Error).message.slice(0, 200)}), skipped`);
    return undefined;
  }
}

/** An installed package's package.json → the package, or undefined (with a warning when malformed). */
export function installedPackage(tree: Tree, imagePath: string, hostPath: string): FoundPackage | undefined {
  const text = tree.text(imagePath, { hostPath });
  if (text === undefined) return undefined;
  const m = parseJson(tree, text, imagePath);
  if (m === undefined) return undefined;
  if (!isObject(m)) {
    tree.warn(`${imagePath}: not a JSON object, skipped`);
    return undefined;
  }
  // Placeholders without a name or version (a stub a build step left) are no package.
  if (m.name === undefined || m.version === undefined) return undefined;
  if (!validName(m.name) || !validVersion(m.version)) {
    tree.warn(`${imagePath}: invalid package name or version, skipped`);
    return undefined;
  }
  return found(m.name, m.version, imagePath, licenseOf(m));
}

/**
 * The packages a lockfile records as installed. Dev dependencies are left out: `npm ci
 * --omit=dev` leaves them off disk, and when they are installed their node_modules manifests say so.
 * Links (workspace packages) and non-registry versions (git, file:, URLs) are left out too.
 */
export function lockfilePackages(tree: Tree, imagePath: string, hostPath: string): FoundPackage[] {
  const text = tree.text(imagePath, { hostPath });
  if (text === undefined) return [];
  const lock = parseJson(tree, text, imagePath);
  if (lock === undefined) return [];
  if (!isObject(lock)) {
    tree.warn(`${imagePath}: not a JSON object, skipped`);
    return [];
  }
  const v = lock.lockfileVersion;
  if (v !== 1 && v !== 2 && v !== 3) {
    tree.warn(`${imagePath}: lockfileVersion ${JSON.stringify(v)} is not 1, 2 or 3, skipped`);
    return [];
  }
  const out: FoundPackage[] = [];
  let invalid = 0;
  if (isObject(lock.packages)) {
    for (const [key, entry] of Object.entries(lock.packages)) {
      const at = key.lastIndexOf('node_modules/');
      if (at < 0 || !isObject(entry)) continue;
      if (entry.link === true || entry.dev === true) continue;
      const name = typeof entry.name === 'string' ? entry.name : key.slice(at + 'node_modules/'.length);
      if (!validName(name) || !validVersion(entry.version)) {
        invalid++;
        continue;
      }
      out.push(found(name, entry.version, imagePath, typeof entry.license === 'string' ? entry.license : undefined));
    }
  } else if (isObject(lock.dependencies)) {
    // lockfileVersion 1: a tree of `dependencies`, walked with a stack (a hostile file may nest deeply).
    const stack: [string, unknown][] = Object.entries(lock.dependencies);
    while (stack.length > 0) {
      const [key, entry] = stack.pop()!;
      if (!isObject(entry)) continue;
      if (isObject(entry.dependencies)) stack.push(...Object.entries(entry.dependencies));
      if (entry.dev === true) continue;
      let name = key;
      let version = entry.version;
      // An alias (`"foo": { "version": "npm:bar@1.2.3" }`) installs bar.
      const alias = typeof version === 'string' ? /^npm:((?:@[^/@]+\/)?[^@]+)@(.+)$/.exec(version) : null;
      if (alias) [name, version] = [alias[1]!, alias[2]!];
      if (!validName(name) || !validVersion(version)) {
        invalid++;
        continue;
      }
      out.push(found(name, version, imagePath, undefined));
    }
  }
  if (invalid > 0) tree.warn(`${imagePath}: ${invalid} entries without a registry name and version skipped`);
  return out;
}
