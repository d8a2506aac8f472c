export { GhaCacheClient, GHA_CACHE_VERSION, GHA_CACHE_MAX_KEY_LENGTH, GHA_CACHE_MAX_KEYS, ghaCacheVersion } from './gha.ts';
export type { GhaCacheClientOptions, GhaFromEnvOptions, GhaCallOptions, GhaCacheEntry, GhaSaveResult, GhaTokenScope } from './gha.ts';
export { GhaCacheError } from './gha-error.ts';
export type { GhaOperation, GhaTwirpMethod, GhaCacheErrorOptions } from './gha-error.ts';
export type { GhaRetryEvent } from './gha-http.ts';
export type { GhaBodyFactory } from './gha-blob.ts';
export { parseCacheFrom, parseCacheTo, parseSize, describeCache } from './spec.ts';
export type { CacheImport, CacheExport, CacheMode } from './spec.ts';
export {
  CACHE_ARTIFACT_TYPE, CACHE_CONFIG_MEDIA_TYPE, INLINE_ANNOTATION, parseCacheDocument, serializeCacheDocument, documentBlobs,
} from './format.ts';
export type { CacheDocument, CacheEntry, CacheLayer, CacheMountEntry } from './format.ts';
export { recordOrigins, originsOf, mountSource } from './origins.ts';
export type { Origin } from './origins.ts';
export { RemoteFetcher, CacheMismatchError, ghaBlobKey } from './fetcher.ts';
export type { FetcherOptions } from './fetcher.ts';
export { inlineAnnotation, cacheManifest } from './backends.ts';
export { RemoteCaches, restoreMount, cacheDocument, exportCaches } from './remote.ts';
export type { RemoteCacheOptions, RemoteHit, BuildRecord, ExportInput, ExportReport } from './remote.ts';
