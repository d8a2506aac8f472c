export {
  TsbuildError,
  DockerfileError,
  RegistryError,
  UnsafeArchiveError,
  UsageError,
  InternalError,
  CancelledError,
  isTsbuildError,
  excerptOf,
  redactSecrets,
} from './errors.ts';
export type {
  ErrorOptions,
  SourcePosition,
  SourceRange,
  DockerfileErrorOptions,
  RegistryErrorOptions,
} from './errors.ts';
