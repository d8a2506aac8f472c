import { readFile } from 'node:fs/promises';
import path from 'node:path';
import dockerignoreModule from '@balena/dockerignore';
import type { Ignore } from '@balena/dockerignore';
import { TsbuildError } from '@tsbuild/errors';

/**
 * Decides which context paths are invisible to COPY/ADD. Paths are context-relative, use `/`,
 * and have no leading `./` or `/`. A path is ignored when it or one of its parents matches,
 * unless a later `!` exception re-includes it (Docker's rules).
 */
export interface IgnoreMatcher {
  readonly patterns: readonly string[];
  /** True when some pattern starts with `!`: an ignored directory may still hold visible entries. */
  readonly hasExceptions: boolean;
  /** Where the patterns came from (a file path), or undefined when built from a list. */
  readonly source: string | undefined;
  ignores(relPath: string): boolean;
}

type IgnoreFactory = () => Ignore;
// The package is CommonJS with a typed `export default`: Node hands ESM the function itself,
// while the type checker sees a module object, so accept either shape.
const loaded = dockerignoreModule as unknown as IgnoreFactory | { default: IgnoreFactory };
const newEngine: IgnoreFactory = typeof loaded === 'function' ? loaded : loaded.default;

/** Splits a .dockerignore file into patterns: comments and blank lines dropped, BOM and CR removed. */
export function parseIgnoreFile(text: string): string[] {
  const out: string[] = [];
  const body = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  for (const raw of body.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (line.startsWith('#')) continue;
    const trimmed = line.trim();
    if (trimmed === '' || trimmed === '!') continue;
    out.push(trimmed);
  }
  return out;
}

/** A matcher over Docker-style patterns (the syntax of .dockerignore and COPY --exclude). */
export function createIgnoreMatcher(patterns: readonly string[], source?: string): IgnoreMatcher {
  const list = [...patterns];
  const engine = newEngine();
  engine.add(list);
  const hasExceptions = list.some((p) => p.startsWith('!'));
  const memo = new Map<string, boolean>();
  return {
    patterns: list,
    hasExceptions,
    source,
    ignores(relPath: string): boolean {
      if (list.length === 0) return false;
      const key = normalizeRel(relPath);
      if (key === '') return false;
      const seen = memo.get(key);
      if (seen !== undefined) return seen;
      const hit = engine.ignores(key);
      memo.set(key, hit);
      return hit;
    },
  };
}

/** The matcher that ignores nothing. */
export const NO_IGNORE: IgnoreMatcher = createIgnoreMatcher([]);

function normalizeRel(p: string): string {
  const n = path.posix.normalize('/' + p).slice(1);
  return n.endsWith('/') ? n.slice(0, -1) : n;
}

/**
 * Loads the ignore rules for a build: `<Dockerfile>.dockerignore` next to the Dockerfile wins
 * over `.dockerignore` at the context root. Docker always sends the Dockerfile and the ignore
 * file itself, but tsbuild reads the Dockerfile directly, so a matching pattern only hides them
 * from COPY/ADD — the same result a user of `docker build` sees.
 */
export async function loadIgnore(contextDir: string, dockerfilePath: string): Promise<IgnoreMatcher> {
  const candidates = [
    path.resolve(path.dirname(dockerfilePath), path.basename(dockerfilePath) + '.dockerignore'),
    path.resolve(contextDir, '.dockerignore'),
  ];
  for (const file of candidates) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      throw new TsbuildError('IGNORE_FILE', `cannot read ignore file ${file}: ${(e as Error).message}`, { cause: e });
    }
    return createIgnoreMatcher(parseIgnoreFile(text), file);
  }
  return NO_IGNORE;
}
