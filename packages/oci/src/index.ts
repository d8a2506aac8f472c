export { parseDigest, isDigest, digestHex, sha256 } from './digest.ts';
export type { Digest } from './digest.ts';
export { MediaType, ANNOTATION_REF_NAME, ANNOTATION_CREATED } from './types.ts';
export type {
  MediaTypeName,
  Compression,
  Platform,
  Descriptor,
  Manifest,
  Index,
  HealthConfig,
  ContainerConfig,
  HistoryEntry,
  ImageConfig,
} from './types.ts';
