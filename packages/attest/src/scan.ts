/** The packages in an unpacked image filesystem, from every source tsbuild reads. */
import { statSync } from 'node:fs';
import { UsageError } from '@tsbuild/errors';
import { scanApk } from './apk.ts';
import { scanDpkg } from './dpkg.ts';
import { installedPackage, isInstalledManifest, lockfilePackages } from './npm.ts';
import { readOsRelease } from './osrelease.ts';
import type { OsRelease } from './osrelease.ts';
import { mergePackages } from './package.ts';
import type { FoundPackage } from './package.ts';
import { distInfoPackage, isDistInfoMetadata } from './python.ts';
import { Tree } from './tree.ts';
import type { TreeLimits } from './tree.ts';

export interface ScanOptions extends TreeLimits {
  signal?: AbortSignal;
}

export interface ScanResult {
  /** Sorted by purl; one entry per purl. */
  packages: FoundPackage[];
  /** What was skipped and why (malformed files, oversized files, paths that could not be resolved). */
  warnings: string[];
  /** The image's os-release, when it has one. */
  os?: OsRelease;
}

/**
 * Scans a directory holding an image's root filesystem. The tree is hostile: symlinks are never
 * followed out of it, reads are bounded, and malformed files are skipped with a warning rather
 * than failing the scan. Only an abort (`signal`) rejects.
 */
export async function scanRootfs(dir: string, opts: ScanOptions = {}): Promise<ScanResult> {
  opts.signal?.throwIfAborted();
  // The directory itself is the caller's (it unpacked the image there); only what is inside is hostile.
  if (!statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`cannot scan ${dir}: not a directory`);
  const tree = new Tree(dir, opts);
  const os = readOsRelease(tree);
  const found: FoundPackage[] = [...scanDpkg(tree, os), ...scanApk(tree, os)];
  await tree.walk((imagePath, hostPath, name) => {
    if (name === 'package-lock.json') found.push(...lockfilePackages(tree, imagePath, hostPath));
    else if (name === 'package.json') {
      if (isInstalledManifest(imagePath)) {
        const p = installedPackage(tree, imagePath, hostPath);
        if (p) found.push(p);
      }
    } else if (name === 'METADATA' && isDistInfoMetadata(imagePath)) {
      const p = distInfoPackage(tree, imagePath, hostPath);
      if (p) found.push(p);
    }
  }, opts.signal);
  const result: ScanResult = { packages: mergePackages(found), warnings: tree.warnings() };
  if (os !== undefined) result.os = os;
  return result;
}
