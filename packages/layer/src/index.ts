export { diff, WHITEOUT_PREFIX, OPAQUE_MARKER } from './diff.ts';
export type { DiffOptions, DiffResult } from './diff.ts';
export { apply } from './apply.ts';
export type { ApplyOptions, ApplyStats } from './apply.ts';
export { readTar, encodeHeader, endOfArchive, padding, compareUtf8 } from './tar.ts';
export type { TarHeader, TarEntryType, TarReadEntry, ReadTarOptions } from './tar.ts';
export { secureJoin, cleanArchivePath } from './securejoin.ts';
export type { SecureJoinOptions } from './securejoin.ts';
