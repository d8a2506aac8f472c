export { parseDigest, isDigest, digestHex, sha256 } from './digest.ts';
export type { Digest } from './digest.ts';
export { MediaType, ANNOTATION_REF_NAME, ANNOTATION_CREATED, MAX_MANIFEST_SIZE, MAX_JSON_BLOB_SIZE } from './types.ts';
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
export { canonicalJson, canonicalString } from './json.ts';
export { isIndexMediaType, isManifestMediaType, isConfigMediaType, isLayerMediaType, layerCompression, layerMediaType } from './media.ts';
export { descriptorFor, buildManifest, buildIndex, buildConfig, serialize, chainIds } from './build.ts';
export type { BuildConfigOptions } from './build.ts';
export { parseManifest, parseIndex, parseConfig, sniffMediaType } from './parse.ts';
export type { ParseOptions } from './parse.ts';
export { validateImage, hashStream } from './image.ts';
export type { Blob, Layer, Image, ValidateOptions } from './image.ts';
export { hostPlatform, parsePlatform, formatPlatform, platformMatches } from './platform.ts';
