/**
 * `--cache-to` / `--cache-from` as docker buildx spells them: `type=registry,ref=REF,mode=max`,
 * `type=local,dest=DIR`, `type=local,src=DIR`, `type=inline`, `type=gha,scope=NAME`.
 */
import { UsageError } from '@tsbuild/errors';

export type CacheMode = 'min' | 'max';

/** Where a cache is read from. */
export type CacheImport =
  | { type: 'registry'; ref: string }
  | { type: 'local'; src: string; tag: string }
  | { type: 'gha'; scope: string };

/** Where a cache is written to. */
export type CacheExport = (
  | { type: 'registry'; ref: string }
  | { type: 'local'; dest: string; tag: string }
  | { type: 'inline' }
  | { type: 'gha'; scope: string }
) & {
  mode: CacheMode;
  compression: 'gzip' | 'zstd';
  /** A failed export is a warning instead of a failed build. */
  ignoreError: boolean;
  /** Export the contents of RUN --mount=type=cache directories too. */
  mounts: boolean;
  /** Cache mounts larger than this (bytes, as tar) are left out, with a warning. */
  mountsMaxSize: number | undefined;
};

function fields(flag: string, spec: string): Map<string, string> {
  const out = new Map<string, string>();
  // A bare reference is buildx's shorthand for type=registry,ref=REF.
  if (!spec.includes('=')) return new Map([['type', 'registry'], ['ref', spec]]);
  for (const part of spec.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new UsageError(`${flag} ${spec}: expected KEY=VALUE pairs, got ${JSON.stringify(part)}`);
    const key = part.slice(0, eq).trim().toLowerCase();
    if (out.has(key)) throw new UsageError(`${flag} ${spec}: ${key}= given twice`);
    out.set(key, part.slice(eq + 1).trim());
  }
  return out;
}

function required(flag: string, spec: string, f: Map<string, string>, key: string): string {
  const v = f.get(key);
  if (v === undefined || v === '') throw new UsageError(`${flag} ${spec}: type=${f.get('type')} needs ${key}=`);
  return v;
}

function unknownKeys(flag: string, spec: string, f: Map<string, string>, allowed: string[]): void {
  for (const k of f.keys()) {
    if (!allowed.includes(k)) throw new UsageError(`${flag} ${spec}: unknown option ${k}=`, { hint: `type=${f.get('type')} takes ${allowed.filter((a) => a !== 'type').join(', ')}` });
  }
}

function bool(flag: string, spec: string, v: string | undefined): boolean {
  if (v === undefined || v === '' || v === 'false') return false;
  if (v === 'true') return true;
  throw new UsageError(`${flag} ${spec}: expected true or false, got ${JSON.stringify(v)}`);
}

/**
 * Docker's sizes (`512m`, `2g`, `1048576`, `2GiB`): a number with an optional k, m, g or t (powers
 * of 1024) and an optional b or ib. tsbuild's one size parser: the cache flags need it here, below
 * the builder, whose flags (and through it the CLI's) use it too.
 */
export function parseSize(what: string, v: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(v.trim());
  if (!m) throw new UsageError(`${what}: invalid size ${JSON.stringify(v)}: expected a number with an optional unit (k, m, g), e.g. 512m`);
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[(m[2] ?? '').toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.floor(Number(m[1]) * mult);
}

/** The default gha scope, as build-push-action has it: the ref name. */
function defaultScope(env: NodeJS.ProcessEnv): string {
  return env.GITHUB_REF_NAME || 'buildkit';
}

export function parseCacheFrom(spec: string, env: NodeJS.ProcessEnv = process.env): CacheImport {
  const flag = '--cache-from';
  const f = fields(flag, spec);
  const type = f.get('type') ?? 'registry';
  switch (type) {
    case 'registry':
      unknownKeys(flag, spec, f, ['type', 'ref']);
      return { type, ref: required(flag, spec, f, 'ref') };
    case 'local':
      unknownKeys(flag, spec, f, ['type', 'src', 'tag', 'digest']);
      return { type, src: required(flag, spec, f, 'src'), tag: f.get('tag') || 'latest' };
    case 'gha':
      unknownKeys(flag, spec, f, ['type', 'scope', 'url', 'token', 'version']);
      return { type, scope: f.get('scope') || defaultScope(env) };
    default:
      throw new UsageError(`${flag} ${spec}: unknown cache type ${JSON.stringify(type)}`, { hint: 'one of registry, local, gha' });
  }
}

export function parseCacheTo(spec: string, env: NodeJS.ProcessEnv = process.env): CacheExport {
  const flag = '--cache-to';
  const f = fields(flag, spec);
  const type = f.get('type') ?? 'registry';
  const common = ['type', 'mode', 'compression', 'ignore-error', 'mounts', 'mounts-max-size'];
  const mode = f.get('mode') || 'min';
  if (mode !== 'min' && mode !== 'max') throw new UsageError(`${flag} ${spec}: mode must be min or max, got ${JSON.stringify(mode)}`);
  const compression = f.get('compression') || 'gzip';
  if (compression !== 'gzip' && compression !== 'zstd') throw new UsageError(`${flag} ${spec}: compression must be gzip or zstd, got ${JSON.stringify(compression)}`);
  const maxSize = f.get('mounts-max-size');
  const opts = {
    mode: mode as CacheMode,
    compression: compression as 'gzip' | 'zstd',
    ignoreError: bool(flag, spec, f.get('ignore-error')),
    mounts: bool(flag, spec, f.get('mounts')),
    mountsMaxSize: maxSize !== undefined && maxSize !== '' ? parseSize(`${flag} mounts-max-size`, maxSize) : undefined,
  };
  switch (type) {
    case 'registry':
      unknownKeys(flag, spec, f, [...common, 'ref', 'oci-mediatypes', 'image-manifest']);
      return { type, ref: required(flag, spec, f, 'ref'), ...opts };
    case 'local':
      unknownKeys(flag, spec, f, [...common, 'dest', 'tag']);
      return { type, dest: required(flag, spec, f, 'dest'), tag: f.get('tag') || 'latest', ...opts };
    case 'inline':
      unknownKeys(flag, spec, f, common);
      // The image carries the cache of its own steps only, as with BuildKit.
      if (opts.mode === 'max') throw new UsageError(`${flag} ${spec}: type=inline only supports mode=min`, { hint: 'use type=registry,ref=…,mode=max for every stage' });
      if (opts.mounts) throw new UsageError(`${flag} ${spec}: type=inline cannot carry cache mounts`, { hint: 'use type=registry or type=local with mounts=true' });
      return { type, ...opts };
    case 'gha':
      unknownKeys(flag, spec, f, [...common, 'scope', 'url', 'token', 'version']);
      return { type, scope: f.get('scope') || defaultScope(env), ...opts };
    default:
      throw new UsageError(`${flag} ${spec}: unknown cache type ${JSON.stringify(type)}`, { hint: 'one of registry, local, inline, gha' });
  }
}

/** How a cache is named in messages. */
export function describeCache(c: CacheImport | CacheExport): string {
  switch (c.type) {
    case 'registry':
      return `registry ${c.ref}`;
    case 'local':
      return `local ${'src' in c ? c.src : c.dest}`;
    case 'inline':
      return 'inline';
    case 'gha':
      return `gha scope ${c.scope}`;
  }
}
