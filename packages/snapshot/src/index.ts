export { openSnapshotter } from './snapshotter.ts';
export { unmount } from './mount.ts';
export { MergedLayers } from './merged.ts';
export type { Snapshotter, SnapshotterOptions, SnapshotInfo, Active, PrepareOptions, LowerFormat } from './types.ts';
export { parseMountinfo } from './mountinfo.ts';
export type { MountEntry } from './mountinfo.ts';
export { inUserNamespace } from './driver.ts';
export type { OverlayDriver } from './driver.ts';
