/**
 * Every failure a user can cause is a TsbuildError: it has a stable code, a message that names
 * the file, line or reference at fault, and optionally a hint. The CLI prints these without a
 * stack trace; anything else reaching the top level is a bug.
 */
export interface ErrorOptions {
  hint?: string;
  cause?: unknown;
}

export class TsbuildError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  /** Process exit code the CLI uses for this error. */
  exitCode = 1;

  constructor(code: string, message: string, options: ErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = options.hint;
  }
}

export interface SourcePosition {
  /** 1-based line. */
  line: number;
  /** 1-based column. */
  column: number;
}

export interface SourceRange {
  start: SourcePosition;
  end: SourcePosition;
}

export interface DockerfileErrorOptions extends ErrorOptions {
  file?: string;
  range?: SourceRange;
  /** The offending source line(s), shown under the message. */
  excerpt?: string;
}

/** A Dockerfile that cannot be read or has a meaning error; carries its location. */
export class DockerfileError extends TsbuildError {
  readonly file: string;
  readonly range: SourceRange | undefined;
  readonly excerpt: string | undefined;
  /** The message without the location prefix. */
  readonly detail: string;

  constructor(message: string, options: DockerfileErrorOptions = {}) {
    const file = options.file ?? 'Dockerfile';
    const loc = options.range ? `${file}:${options.range.start.line}:${options.range.start.column}` : file;
    super('DOCKERFILE', `${loc}: ${message}`, options);
    this.file = file;
    this.range = options.range;
    this.excerpt = options.excerpt;
    this.detail = message;
  }

  /** The same error attributed to another file name (the parser does not know the path). */
  withFile(file: string, text?: string): DockerfileError {
    const excerpt = this.excerpt ?? (text !== undefined && this.range ? excerptOf(text, this.range) : undefined);
    const opts: DockerfileErrorOptions = { file, cause: this.cause };
    if (this.hint !== undefined) opts.hint = this.hint;
    if (this.range !== undefined) opts.range = this.range;
    if (excerpt !== undefined) opts.excerpt = excerpt;
    return new DockerfileError(this.detail, opts);
  }
}

/** The source lines covered by a range, for error output. */
export function excerptOf(text: string, range: SourceRange): string {
  const lines = text.split(/\r?\n/);
  const from = Math.max(1, range.start.line);
  const to = Math.min(lines.length, Math.max(from, range.end.line), from + 4);
  return lines.slice(from - 1, to).join('\n');
}

export interface RegistryErrorOptions extends ErrorOptions {
  status?: number;
  /** OCI distribution error code, e.g. MANIFEST_UNKNOWN. */
  ociCode?: string;
  /** True when retrying may succeed (5xx, 429, connection reset). */
  temporary?: boolean;
  reference?: string;
}

/** A registry refused, failed or lied. Messages never contain credentials or tokens. */
export class RegistryError extends TsbuildError {
  readonly status: number | undefined;
  readonly ociCode: string | undefined;
  readonly temporary: boolean;
  readonly reference: string | undefined;

  constructor(message: string, options: RegistryErrorOptions = {}) {
    super('REGISTRY', redactSecrets(message), options);
    this.status = options.status;
    this.ociCode = options.ociCode;
    this.temporary = options.temporary ?? false;
    this.reference = options.reference;
  }
}

/** Removes bearer tokens, basic credentials and password-like query values from a string. */
export function redactSecrets(text: string): string {
  return text
    .replace(/(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+/gi, '$1 [redacted]')
    .replace(/\b((?:access_)?token|password|passwd|secret|auth)=([^&\s"']+)/gi, '$1=[redacted]')
    .replace(/\/\/([^/@\s:]+):([^/@\s]+)@/g, '//[redacted]@');
}

/** An archive (layer, context tar, ADD source) that tried to escape its root or is malformed. */
export class UnsafeArchiveError extends TsbuildError {
  readonly entry: string | undefined;
  constructor(message: string, options: ErrorOptions & { entry?: string } = {}) {
    super('UNSAFE_ARCHIVE', message, options);
    this.entry = options.entry;
  }
}

/** A bad flag, missing file, unknown image and similar usage errors. */
export class UsageError extends TsbuildError {
  constructor(message: string, options: ErrorOptions = {}) {
    super('USAGE', message, options);
    this.exitCode = 2;
  }
}

/** A bug in tsbuild: an invariant did not hold. */
export class InternalError extends TsbuildError {
  constructor(message: string, options: ErrorOptions = {}) {
    super('INTERNAL', message, options);
    this.exitCode = 70;
  }
}

/** Aborted by a signal (SIGINT/SIGTERM) or an AbortSignal. */
export class CancelledError extends TsbuildError {
  constructor(message = 'cancelled', options: ErrorOptions = {}) {
    super('CANCELLED', message, options);
    this.exitCode = 130;
  }
}

export function isTsbuildError(e: unknown): e is TsbuildError {
  return e instanceof TsbuildError;
}
