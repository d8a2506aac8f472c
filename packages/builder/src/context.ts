import fs from 'node:fs';
import path from 'node:path';
import { TsbuildError } from '@tsbuild/errors';
import { secureJoin } from '@tsbuild/layer';
import { NO_IGNORE, createIgnoreMatcher } from './ignore.ts';
import type { IgnoreMatcher } from './ignore.ts';

export type EntryKind = 'file' | 'dir' | 'symlink';

/** One thing a COPY/ADD source named: a path or one match of a wildcard. */
export interface SourceMatch {
  /** The source as written in the Dockerfile. */
  readonly source: string;
  /** Root-relative path as named (before following a final symlink), `''` for the root itself. */
  readonly path: string;
  /** Absolute path on disk after resolution inside the root. */
  readonly realPath: string;
  readonly kind: EntryKind;
  readonly wildcard: boolean;
  /** Root-relative directory `--parents` keeps structure from (`''` = the root). */
  readonly pivot: string;
  /** `--exclude` patterns, matched against paths relative to this match. */
  readonly excludes: readonly string[];
}

/** One entry under a match, in walk order (a directory before its contents, names sorted). */
export interface SourceEntry {
  /** Path relative to the match, `''` for the match itself. */
  readonly rel: string;
  readonly abs: string;
  readonly kind: EntryKind;
  readonly stat: fs.BigIntStats;
  readonly linkTarget: string | undefined;
}

export interface ResolveOptions {
  excludes?: readonly string[];
  /** Follow a symlink named by the source itself (inside the root). Default true, as BuildKit does. */
  followTopLevelSymlink?: boolean;
  /** `COPY --parents`: keep the path structure, relative to the root or to a `/./` pivot. */
  parents?: boolean;
}

/** A COPY/ADD source that does not exist, or is hidden by .dockerignore. */
export class SourceNotFoundError extends TsbuildError {
  readonly source: string;
  constructor(source: string, root: string, ignoreFile?: string) {
    super(
      'SOURCE_NOT_FOUND',
      `"${source}": not found in build context` + (ignoreFile ? ' or excluded by ' + path.basename(ignoreFile) : ''),
      { hint: `source paths are relative to the context root ${root}; "../" cannot leave it` },
    );
    this.source = source;
  }
}

/** True when a COPY source uses Go filepath.Match syntax (`\` escapes the next character). */
export function hasWildcard(p: string): boolean {
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === '\\') i++;
    else if (c === '*' || c === '?' || c === '[') return true;
  }
  return false;
}

/**
 * Compiles one path component of a Go `filepath.Match` pattern: `*` and `?` never match `/`,
 * `[a-z]`/`[^x]` are classes, `\` escapes. A malformed pattern is an error, not a silent miss.
 */
export function compileFilepathMatch(component: string): RegExp {
  const bad = (): never => {
    throw new TsbuildError('BAD_PATTERN', `invalid wildcard pattern "${component}"`);
  };
  const lit = (ch: string): string => ch.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&');
  const inClass = (ch: string): string => ch.replace(/[\\^\]\[-]/g, '\\$&');
  const chars = Array.from(component);
  let re = '^';
  let i = 0;
  // One class character, Go's getEsc: unescaped `-` and `]` are not characters here.
  const classChar = (): string => {
    const ch = chars[i];
    if (ch === undefined || ch === '-' || ch === ']') bad();
    i++;
    if (ch !== '\\') return ch as string;
    const esc = chars[i];
    if (esc === undefined) bad();
    i++;
    return esc as string;
  };
  while (i < chars.length) {
    const c = chars[i] as string;
    if (c === '*') {
      re += '[^/]*';
      i++;
    } else if (c === '?') {
      re += '[^/]';
      i++;
    } else if (c === '\\') {
      const next = chars[i + 1];
      if (next === undefined) bad();
      re += lit(next as string);
      i += 2;
    } else if (c === '[') {
      i++;
      let cls = '[';
      if (chars[i] === '^') {
        cls += '^/';
        i++;
      }
      let ranges = 0;
      for (;;) {
        if (chars[i] === ']' && ranges > 0) {
          i++;
          break;
        }
        const lo = classChar();
        let hi = lo;
        if (chars[i] === '-') {
          i++;
          hi = classChar();
          if (hi < lo) bad();
        }
        cls += lo === hi ? inClass(lo) : inClass(lo) + '-' + inClass(hi);
        ranges++;
      }
      re += cls + ']';
    } else {
      re += lit(c);
      i++;
    }
  }
  return new RegExp(re + '$', 'su');
}

function kindOf(st: fs.Stats | fs.BigIntStats): EntryKind | undefined {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  return undefined;
}

export function lstatOrUndefined(p: string): fs.Stats | undefined {
  try {
    return fs.lstatSync(p, { throwIfNoEntry: false });
  } catch {
    return undefined;
  }
}

/**
 * A directory COPY/ADD reads from: the build context (with .dockerignore applied) or another
 * stage's root filesystem. Nothing outside `root` is ever read: paths, `..` and symlinks all
 * resolve inside it.
 */
export class BuildContext {
  readonly root: string;
  readonly ignore: IgnoreMatcher;

  private constructor(root: string, ignore: IgnoreMatcher) {
    this.root = root;
    this.ignore = ignore;
  }

  static async open(dir: string, opts: { ignore?: IgnoreMatcher } = {}): Promise<BuildContext> {
    let root: string;
    try {
      root = await fs.promises.realpath(dir);
      if (!(await fs.promises.stat(root)).isDirectory()) throw new Error('not a directory');
    } catch (e) {
      throw new TsbuildError('CONTEXT', `build context ${dir} is not a readable directory`, { cause: e });
    }
    return new BuildContext(root, opts.ignore ?? NO_IGNORE);
  }

  /** Root-relative path of an absolute path under the root. */
  relativeOf(abs: string): string {
    return abs === this.root ? '' : abs.slice(this.root.length + 1);
  }

  /** Whether .dockerignore hides a root-relative path (a directory with re-included contents is visible). */
  isHidden(rel: string, isDir: boolean, realPath?: string): boolean {
    if (!this.ignore.ignores(rel)) return false;
    if (!isDir || !this.ignore.hasExceptions || realPath === undefined) return true;
    return this.walkDir(realPath, rel, '', NO_IGNORE, []) === 0;
  }

  async resolveSources(patterns: readonly string[], opts: ResolveOptions = {}): Promise<SourceMatch[]> {
    const out: SourceMatch[] = [];
    for (const p of patterns) out.push(...this.resolveOne(p, opts));
    return out;
  }

  private resolveOne(source: string, opts: ResolveOptions): SourceMatch[] {
    const follow = opts.followTopLevelSymlink ?? true;
    const excludes = [...(opts.excludes ?? [])];
    let pivot = '';
    let pattern = source;
    if (opts.parents) {
      const cut = source.indexOf('/./');
      if (cut >= 0) {
        pivot = cleanRel(source.slice(0, cut));
        pattern = source.slice(0, cut) + '/' + source.slice(cut + 3);
      }
    }
    const rel = cleanRel(pattern);
    const wildcard = hasWildcard(rel);
    const excluder = excludes.length > 0 ? createIgnoreMatcher(excludes) : NO_IGNORE;
    // With --parents a source is an include pattern, where `**` spans directories (BuildKit's
    // pattern matcher); plain COPY sources use filepath.Match, where it is just `*`.
    const named = !wildcard ? [rel] : opts.parents && rel.split('/').includes('**') ? this.expandDeep(rel) : this.expand(rel);
    const matches: SourceMatch[] = [];
    for (const name of named) {
      const realPath = follow
        ? secureJoin(this.root, name, { followLast: true })
        : secureJoin(this.root, name);
      const st = lstatOrUndefined(realPath);
      const kind = st ? kindOf(st) : undefined;
      const realRel = this.relativeOf(realPath);
      // Hidden if what it names is ignored, or the name itself (a symlink, or a path through one) is.
      const hidden =
        kind === undefined ||
        this.isHidden(realRel, kind === 'dir', realPath) ||
        (name !== realRel && this.isHidden(name, kind === 'dir', realPath));
      if (hidden || (name !== '' && excluder.ignores(name))) {
        if (!wildcard) throw new SourceNotFoundError(source, this.root, this.ignore.source);
        continue;
      }
      matches.push({ source, path: name, realPath, kind: kind as EntryKind, wildcard, pivot, excludes });
    }
    return matches;
  }

  /** Go filepath.Match over root-relative paths, in lexical order, never descending a symlink. */
  private expand(rel: string): string[] {
    const parts = rel.split('/');
    const firstWild = parts.findIndex((c) => hasWildcard(c));
    const prefix = parts.slice(0, firstWild).join('/');
    const globs = parts.slice(firstWild).map((c) => compileFilepathMatch(c));
    const base = secureJoin(this.root, prefix, { followLast: true });
    const baseSt = lstatOrUndefined(base);
    if (!baseSt?.isDirectory()) return [];
    const out: string[] = [];
    const visit = (dirAbs: string, dirNamed: string, depth: number): void => {
      const glob = globs[depth] as RegExp;
      const last = depth === globs.length - 1;
      let names: string[];
      try {
        names = fs.readdirSync(dirAbs).sort();
      } catch {
        return;
      }
      for (const name of names) {
        if (!glob.test(name)) continue;
        const named = dirNamed === '' ? name : dirNamed + '/' + name;
        if (last) {
          out.push(named);
          continue;
        }
        const abs = dirAbs + '/' + name;
        if (lstatOrUndefined(abs)?.isDirectory()) visit(abs, named, depth + 1);
      }
    };
    visit(base, prefix, 0);
    return out;
  }

  /** Like `expand`, with `**` components matching zero or more directories; nested hits fold into their ancestor. */
  private expandDeep(rel: string): string[] {
    const parts = rel.split('/');
    const firstWild = parts.findIndex((c) => hasWildcard(c));
    const prefix = parts.slice(0, firstWild).join('/');
    const rest = parts.slice(firstWild).map((c) => (c === '**' ? null : compileFilepathMatch(c)));
    const base = secureJoin(this.root, prefix, { followLast: true });
    if (!lstatOrUndefined(base)?.isDirectory()) return [];
    const found = new Set<string>();
    const seen = new Set<string>();
    const visit = (dirAbs: string, dirNamed: string, depth: number): void => {
      const key = `${depth}\0${dirNamed}`;
      if (seen.has(key)) return;
      seen.add(key);
      const glob = rest[depth];
      if (glob === undefined) return;
      const last = depth === rest.length - 1;
      let names: string[];
      try {
        names = fs.readdirSync(dirAbs).sort();
      } catch {
        return;
      }
      if (glob === null) {
        if (last) {
          for (const name of names) found.add(dirNamed === '' ? name : dirNamed + '/' + name);
          return;
        }
        visit(dirAbs, dirNamed, depth + 1);
      }
      for (const name of names) {
        if (glob !== null && !glob.test(name)) continue;
        const named = dirNamed === '' ? name : dirNamed + '/' + name;
        const abs = dirAbs + '/' + name;
        const isDir = lstatOrUndefined(abs)?.isDirectory() === true;
        if (glob === null) {
          if (isDir) visit(abs, named, depth);
          continue;
        }
        if (last) found.add(named);
        else if (isDir) visit(abs, named, depth + 1);
      }
    };
    visit(base, prefix, 0);
    const underAnother = (p: string): boolean => {
      for (let i = p.indexOf('/'); i >= 0; i = p.indexOf('/', i + 1)) if (found.has(p.slice(0, i))) return true;
      return false;
    };
    return [...found].sort().filter((p) => !underAnother(p));
  }

  /**
   * Every entry a match selects, `.dockerignore` and `--exclude` applied, in the order hashing
   * and copying use. Symlinks below the match are entries, never followed.
   */
  walk(match: SourceMatch): SourceEntry[] {
    const st = fs.lstatSync(match.realPath, { bigint: true });
    const top: SourceEntry = {
      rel: '',
      abs: match.realPath,
      kind: match.kind,
      stat: st,
      linkTarget: match.kind === 'symlink' ? fs.readlinkSync(match.realPath) : undefined,
    };
    if (match.kind !== 'dir') return [top];
    const excluder = match.excludes.length > 0 ? createIgnoreMatcher(match.excludes) : NO_IGNORE;
    const out: SourceEntry[] = [top];
    this.walkDir(match.realPath, this.relativeOf(match.realPath), '', excluder, out);
    return out;
  }

  /** Appends the visible entries below `dirAbs` to `out`; returns how many it appended. */
  private walkDir(dirAbs: string, ctxRel: string, rel: string, excluder: IgnoreMatcher, out: SourceEntry[]): number {
    const start = out.length;
    let names: string[];
    try {
      names = fs.readdirSync(dirAbs).sort();
    } catch (e) {
      throw new TsbuildError('CONTEXT_READ', `cannot read directory ${dirAbs}: ${(e as Error).message}`, { cause: e });
    }
    for (const name of names) {
      const abs = dirAbs + '/' + name;
      const childCtx = ctxRel === '' ? name : ctxRel + '/' + name;
      const childRel = rel === '' ? name : rel + '/' + name;
      const st = fs.lstatSync(abs, { bigint: true });
      const kind = kindOf(st);
      // Sockets, fifos and devices carry no content a build could use.
      if (kind === undefined) continue;
      const hidden = this.ignore.ignores(childCtx) || excluder.ignores(childRel);
      if (kind === 'dir') {
        const canHoldVisible = this.ignore.hasExceptions || excluder.hasExceptions;
        if (hidden && !canHoldVisible) continue;
        const at = out.length;
        out.push({ rel: childRel, abs, kind, stat: st, linkTarget: undefined });
        const below = this.walkDir(abs, childCtx, childRel, excluder, out);
        if (hidden && below === 0) out.splice(at, 1);
        continue;
      }
      if (hidden) continue;
      out.push({ rel: childRel, abs, kind, stat: st, linkTarget: kind === 'symlink' ? fs.readlinkSync(abs) : undefined });
    }
    return out.length - start;
  }
}

/** A Dockerfile source path as a root-relative path: `/`, `./` and `..` cannot leave the root. */
export function cleanRel(p: string): string {
  const n = path.posix.normalize('/' + p);
  return n.replace(/^\/+/, '').replace(/\/+$/, '');
}
