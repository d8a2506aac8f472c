/**
 * How overlays are mounted. Root mounts the kernel's overlayfs with trusted.* xattrs. In a user
 * namespace (an ordinary user's tsbuild, or root in a rootless container) trusted.* cannot be
 * written, so overlayfs keeps its opaque markers in user.overlay.* (`userxattr`, kernel 5.11+);
 * where the kernel refuses overlay mounts in a user namespace altogether, fuse-overlayfs does the
 * same in user space.
 */

export type OverlayDriver = 'overlay' | 'overlay-userxattr' | 'fuse-overlayfs';

export const DRIVERS: readonly OverlayDriver[] = ['overlay', 'overlay-userxattr', 'fuse-overlayfs'];

// One answer for the whole process, from the lowest package that needs it.
import { inUserNamespace } from '@tsbuild/layer';
export { inUserNamespace };

/** What a mount needs: lower dirs newest first, and for a writable one its upper and work dirs. */
export interface OverlaySpec {
  lowers: readonly string[];
  upper?: { upper: string; work: string };
}

/** Mount options that keep the upper dir a faithful changeset (see DESIGN.md, rule 2). */
const ROOT_FLAGS = 'redirect_dir=off,metacopy=off,index=off';
/**
 * With userxattr the kernel turns redirect_dir and metacopy off by itself and refuses them being
 * named (6.x: "conflicting options: userxattr,redirect_dir=follow").
 */
const USERXATTR_FLAGS = 'userxattr,index=off';

/**
 * The option string for a driver. A writable snapshot is `volatile`: its syncs return at once
 * (overlayfs and fuse-overlayfs both take the word), since a crash discards it anyway.
 */
export function overlayOptions(driver: OverlayDriver, spec: OverlaySpec): string {
  const parts = [`lowerdir=${spec.lowers.join(':')}`];
  if (spec.upper) parts.push(`upperdir=${spec.upper.upper}`, `workdir=${spec.upper.work}`);
  if (driver === 'overlay') parts.push(ROOT_FLAGS);
  else if (driver === 'overlay-userxattr') parts.push(USERXATTR_FLAGS);
  if (spec.upper) parts.push('volatile');
  return parts.join(',');
}

/** Bytes of a mount's options beyond its lowerdir list (for fitting lower dirs into one page). */
export function flagBytes(driver: OverlayDriver): number {
  return driver === 'overlay' ? ROOT_FLAGS.length : USERXATTR_FLAGS.length;
}

/** The drivers to try, in order, in this process's kind of namespace. */
export function candidateDrivers(): OverlayDriver[] {
  return inUserNamespace() ? ['overlay-userxattr', 'fuse-overlayfs'] : ['overlay'];
}
