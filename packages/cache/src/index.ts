export { GhaCacheClient, GhaCacheError, GHA_CACHE_VERSION, GHA_CACHE_MAX_KEY_LENGTH, GHA_CACHE_MAX_KEYS, ghaCacheVersion } from './gha.ts';
export type {
  GhaCacheClientOptions,
  GhaFromEnvOptions,
  GhaCallOptions,
  GhaCacheEntry,
  GhaSaveResult,
  GhaBodyFactory,
  GhaTokenScope,
  GhaRetryEvent,
  GhaOperation,
  GhaTwirpMethod,
  GhaCacheErrorOptions,
} from './gha.ts';
