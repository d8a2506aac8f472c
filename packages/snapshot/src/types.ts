import type { Digest } from '@tsbuild/oci';
import type { MergedLayers } from './merged.ts';

export interface SnapshotterOptions {
  /** Directory that holds the snapshots, e.g. `<tsbuild root>/snapshots`. Created if missing. */
  root: string;
  /** Kernel limit on overlay lower layers (overlayfs allows 500). Lower only for tests. */
  maxLowerLayers?: number;
  /** Longest overlay mount option string (mount(2) copies one page). Lower only for tests. */
  maxOptionBytes?: number;
}

export interface SnapshotInfo {
  chainId: Digest;
  parent: Digest | undefined;
  /** The layer's directory (its contents in overlay upper-dir form). */
  dir: string;
}

export interface PrepareOptions {
  signal?: AbortSignal;
}

/** A writable overlay mount over a committed chain; exactly one of commit/release ends it. */
export interface Active {
  /** The merged view; run a container or copy files here. */
  readonly rootfs: string;
  /** The overlay upper dir: the changes made through `rootfs`, whiteouts included. */
  readonly upper: string;
  /** The lower dirs mounted under `upper`, newest first (a flattened copy stands for the oldest part of a deep chain). */
  readonly lowerDirs: readonly string[];
  readonly parent: Digest | undefined;
  /**
   * Unmounts and turns the upper dir into the committed layer for `chainId` (a rename, no copy);
   * the layer's parent is this snapshot's parent. Returns the committed layer's directory. If
   * `chainId` was committed meanwhile (another build), this upper dir is discarded instead.
   * `parent`, if given, must equal the parent this snapshot was prepared from.
   */
  commit(chainId: Digest, parent?: Digest): Promise<string>;
  /** Unmounts and deletes the changes. */
  release(): Promise<void>;
  /**
   * Starts unmounting `rootfs` once nothing uses it any more, so the unmount runs while `upper`
   * (still readable) is diffed; `commit` and `release` wait for it.
   */
  detach(): void;
}

export interface Snapshotter {
  readonly root: string;
  /**
   * How a layer unpacked for this snapshotter keeps its whiteouts, in an `unpack` fill (the driver
   * is known by then): opaque dirs get `trusted.overlay.opaque` as root, `user.overlay.opaque` in
   * a user namespace (where trusted.* cannot be written); a whiteout that cannot be a 0/0 device
   * takes the form the driver reads instead.
   */
  readonly lowerFormat: LowerFormat;
  has(chainId: Digest): Promise<boolean>;
  /** The committed layer's directory, or undefined. */
  get(chainId: Digest): Promise<SnapshotInfo | undefined>;
  /**
   * Creates the committed layer `chainId` on top of `parent` (which must exist) by calling
   * `fill(dir)` on an empty private directory, then publishing it atomically. Does nothing if
   * the layer exists; concurrent calls for one key (in or across processes) leave one layer.
   */
  unpack(chainId: Digest, parent: Digest | undefined, fill: (dir: string) => Promise<void>): Promise<void>;
  prepare(parent: Digest | undefined, opts?: PrepareOptions): Promise<Active>;
  /**
   * The committed chain ending at `top` read as overlayfs would merge it, without a mount; for a
   * step that only reads its parent. Undefined where the layers cannot be read so (fuse-overlayfs
   * whiteout files, an opaque layer root): prepare a snapshot instead.
   */
  merged(top: Digest): Promise<MergedLayers | undefined>;
  /** Removes a layer and every layer built on it. Refuses layers an active snapshot mounts. */
  remove(chainId: Digest): Promise<Digest[]>;
  list(): Promise<SnapshotInfo[]>;
  /** Removes every layer that is neither in `keep` nor an ancestor of one; returns them. */
  prune(keep: Set<Digest>): Promise<Digest[]>;
  /** Unmounts and removes what dead processes left behind. Runs on open. */
  recover(): Promise<void>;
}

export interface LowerFormat {
  opaqueXattr: 'trusted.overlay.opaque' | 'user.overlay.opaque';
  /** A whiteout that cannot be a 0/0 device may be an empty `.wh.NAME` file (fuse-overlayfs reads those). */
  whiteoutFiles: boolean;
}
