import { join } from 'node:path';
import { InternalError } from '@tsbuild/errors';
import type { Digest } from '@tsbuild/oci';
import { unmount } from './mount.ts';
import type { Active } from './types.ts';

/** What an active snapshot asks of the snapshotter that prepared it. */
export interface ActiveOwner {
  /** Turns the unmounted snapshot dir into the committed layer `chainId`; returns its fs dir. */
  commitDir(dir: string, chainId: Digest, parent: Digest | undefined): Promise<string>;
  removeActive(dir: string): Promise<void>;
  /** Releases the layers the snapshot held as lowers. */
  unuse(ids: readonly string[]): void;
}

/** A snapshot mounted read-write over its parent's layers (see Snapshotter.prepare). */
export class OverlayActive implements Active {
  readonly rootfs: string;
  readonly upper: string;
  private done = false;

  constructor(
    private readonly s: ActiveOwner,
    private readonly dir: string,
    readonly parent: Digest | undefined,
    private readonly used: readonly string[],
    readonly lowerDirs: readonly string[],
  ) {
    this.rootfs = join(dir, 'r');
    this.upper = join(dir, 'u');
  }

  private unmounting: Promise<void> | undefined;

  private finish(): void {
    if (this.done) throw new InternalError('snapshot was already committed or released');
    this.done = true;
  }

  detach(): void {
    if (this.unmounting) return;
    this.unmounting = unmount(this.rootfs);
    // Its failure is reported by commit or release, which wait for it.
    this.unmounting.catch(() => {});
  }

  private unmounted(): Promise<void> {
    return this.unmounting ?? unmount(this.rootfs);
  }

  async commit(chainId: Digest, parent?: Digest): Promise<string> {
    if (parent !== undefined && parent !== this.parent) {
      throw new InternalError(`commit of ${chainId} names parent ${parent}, but the snapshot was prepared from ${this.parent ?? 'scratch'}`);
    }
    this.finish();
    try {
      await this.unmounted();
      return await this.s.commitDir(this.dir, chainId, this.parent);
    } finally {
      this.s.unuse(this.used);
    }
  }

  async release(): Promise<void> {
    this.finish();
    try {
      await this.unmounted().catch(() => {});
      await this.s.removeActive(this.dir);
    } finally {
      this.s.unuse(this.used);
    }
  }
}

