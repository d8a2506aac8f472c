import { lstatSync, readlinkSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { readXattrs } from '@tsbuild/layer';

/**
 * The layer dirs of a chain read as overlayfs merges them, without mounting: what a step that only
 * looks at its parent (a COPY planning its destination) needs, for the price of a few lstats
 * instead of a mount and an unmount. Only for layer dirs whose whiteouts are 0/0 character devices
 * and whose opaque directories carry `opaqueXattr` (`lowerFormat` without whiteout files), the
 * form tsbuild's overlay mounts (redirect_dir and metacopy off) and its unpacking leave.
 */
export class MergedLayers {
  /** For each directory resolved so far: the layer dirs that contribute to it, newest first. */
  private readonly dirs = new Map<string, readonly string[] | null>();

  /**
   * `layers`: absolute layer dirs, newest first (`Snapshotter.layerDirs`). `opaqueXattr`: the
   * xattr that marks an opaque directory in them.
   */
  constructor(
    readonly layers: readonly string[],
    private readonly opaqueXattr: string,
  ) {
    this.dirs.set('', layers);
  }

  /** lstat of `rel` (components joined by `/`, '' for the root) as the merged tree shows it. */
  lstat(rel: string): Stats | undefined {
    return this.find(rel)?.stat;
  }

  /** The host path of the entry the merged tree shows at `rel` (its xattrs, its contents). */
  host(rel: string): string | undefined {
    return this.find(rel)?.host;
  }

  /** The target of `rel` when the merged tree has a symlink there. */
  symlinkTarget(rel: string): string | undefined {
    const f = this.find(rel);
    return f?.stat.isSymbolicLink() ? readlinkSync(f.host) : undefined;
  }

  /** What `find` answered so far: a plan asks lstat and then host of one path. */
  private readonly found = new Map<string, { host: string; stat: Stats } | null>();

  private find(rel: string): { host: string; stat: Stats } | undefined {
    let f = this.found.get(rel);
    if (f === undefined) {
      f = this.lookup(rel) ?? null;
      this.found.set(rel, f);
    }
    return f ?? undefined;
  }

  private lookup(rel: string): { host: string; stat: Stats } | undefined {
    if (rel === '') {
      const top = this.layers[0];
      const stat = top === undefined ? undefined : lstat(top);
      return top === undefined || stat === undefined ? undefined : { host: top, stat };
    }
    const slash = rel.lastIndexOf('/');
    const parent = this.dir(slash < 0 ? '' : rel.slice(0, slash));
    if (!parent) return undefined;
    // The newest layer that has the name decides: a whiteout hides it, anything else is it.
    for (const layer of parent) {
      const host = `${layer}/${rel}`;
      const stat = lstat(host);
      if (stat === undefined) continue;
      return isWhiteout(stat) ? undefined : { host, stat };
    }
    return undefined;
  }

  /** The layers contributing to directory `rel`, or null when the merged tree has no directory there. */
  private dir(rel: string): readonly string[] | null {
    const known = this.dirs.get(rel);
    if (known !== undefined) return known;
    const slash = rel.lastIndexOf('/');
    const parent = this.dir(slash < 0 ? '' : rel.slice(0, slash));
    let out: string[] | null = null;
    if (parent) {
      for (const layer of parent) {
        const host = `${layer}/${rel}`;
        const stat = lstat(host);
        if (stat === undefined) continue;
        // A whiteout or a non-directory ends the merge: the layers below are hidden here. The
        // newest one decides whether there is a directory at all.
        if (!stat.isDirectory()) break;
        (out ??= []).push(layer);
        if (this.isOpaque(host)) break;
      }
    }
    this.dirs.set(rel, out);
    return out;
  }

  private isOpaque(host: string): boolean {
    return readXattrs(host, (_p, name) => name === this.opaqueXattr)?.get(this.opaqueXattr)?.toString() === 'y';
  }

  /** Whether the merged tree can be read this way: no layer's root is marked opaque (overlayfs would not merge it). */
  usable(): boolean {
    return this.layers.every((l) => !this.isOpaque(l));
  }
}

/** lstat that answers undefined for a missing entry (or one below a non-directory). */
function lstat(p: string): Stats | undefined {
  try {
    return lstatSync(p, { throwIfNoEntry: false });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw e;
  }
}

function isWhiteout(st: Stats): boolean {
  return st.isCharacterDevice() && st.rdev === 0;
}
