import type { SourceRange } from '@tsbuild/errors';
import { DirectiveError, DirectiveScanner } from '../directives.ts';
import type { RuleInfo } from './rules.ts';

/**
 * Which rules run and what a finding means: the value of `# check=…` or of the
 * BUILDKIT_DOCKERFILE_CHECK build arg, e.g. `skip=JSONArgsRecommended,StageNameCasing;error=true`.
 */
export interface CheckSettings {
  /** `skip=all`: no rule runs, except experimental ones named in `experimental`. */
  skipAll: boolean;
  /** Rule names from `skip=A,B` (unknown names are ignored, as BuildKit does). */
  skip: string[];
  /** `experimental=all`. */
  experimentalAll: boolean;
  /** Experimental rules to run, from `experimental=A,B`. */
  experimental: string[];
  /** `error=true`: a check that finds anything fails the build. */
  error: boolean;
}

/** Every default rule on, nothing experimental, findings are warnings. */
export const DEFAULT_SETTINGS: Readonly<CheckSettings> = Object.freeze({
  skipAll: false,
  skip: Object.freeze([]) as unknown as string[],
  experimentalAll: false,
  experimental: Object.freeze([]) as unknown as string[],
  error: false,
});

/** A `# check=` value that cannot be read; the message is BuildKit's. */
export class CheckOptionError extends Error {}

/** Go's strconv.ParseBool. */
function parseBool(v: string): boolean | undefined {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(v)) return false;
  return undefined;
}

/** Go's strings.SplitN(s, sep, n). */
function splitN(s: string, sep: string, n: number): string[] {
  const out: string[] = [];
  let rest = s;
  while (out.length < n - 1) {
    const i = rest.indexOf(sep);
    if (i < 0) break;
    out.push(rest.slice(0, i));
    rest = rest.slice(i + sep.length);
  }
  out.push(rest);
  return out;
}

const names = (v: string): string[] => v.split(',').map((r) => r.trim());

/**
 * Reads a check value the way BuildKit's ParseLintOptions does: at most three `;`-separated
 * `key=value` parts, keys `skip`, `experimental` and `error`. Throws CheckOptionError.
 */
export function parseCheckSettings(value: string): CheckSettings {
  const out: CheckSettings = { skipAll: false, skip: [], experimentalAll: false, experimental: [], error: false };
  const text = value.trim();
  if (text === '') return out;
  for (const part of splitN(text, ';', 3)) {
    const eq = part.indexOf('=');
    if (eq < 0) throw new CheckOptionError(`invalid check option ${JSON.stringify(part)}`);
    const key = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    switch (key) {
      case 'skip':
        if (v === 'all') out.skipAll = true;
        else out.skip = names(v);
        break;
      case 'experimental':
        if (v === 'all') out.experimentalAll = true;
        else out.experimental = names(v);
        break;
      case 'error': {
        const b = parseBool(v);
        if (b === undefined) {
          throw new CheckOptionError(`failed to parse check option ${JSON.stringify(part)}: strconv.ParseBool: parsing ${JSON.stringify(v)}: invalid syntax`);
        }
        out.error = b;
        break;
      }
      default:
        throw new CheckOptionError(`invalid check option ${JSON.stringify(key)}`);
    }
  }
  return out;
}

/** The `# check=` directive of a Dockerfile, as written. */
export interface CheckDirective {
  /** The value up to its first space (BuildKit drops the rest). */
  value: string;
  range: SourceRange;
}

/**
 * Finds `# check=` the way BuildKit's ParseDirective does: in the leading block of `#` directive
 * lines (a BOM and a `#!` first line are skipped), the line starting with `#` itself.
 */
export function findCheckDirective(text: string): CheckDirective | undefined {
  const body = text.startsWith('\uFEFF') ? text.slice(1) : text;
  const lines = body.split('\n');
  let lineNo = 0;
  if (lines[0]?.startsWith('#!')) lineNo = 1;
  const scanner = new DirectiveScanner();
  for (; lineNo < lines.length; lineNo++) {
    const line = (lines[lineNo] ?? '').replace(/\r$/, '');
    let found;
    try {
      found = scanner.scan(line);
    } catch (e) {
      // a repeated directive ends the block; the parser reports it as an error
      if (e instanceof DirectiveError) return undefined;
      throw e;
    }
    if (!found) {
      // DirectiveScanner stops for good at the first line that is not a directive
      return undefined;
    }
    if (found.name === 'check') {
      const n = lineNo + 1;
      return { value: found.value.split(' ')[0] ?? '', range: { start: { line: n, column: 1 }, end: { line: n, column: line.length + 1 } } };
    }
  }
  return undefined;
}

/**
 * A comment directly above an instruction that reads `check=…` adds to the settings for that
 * instruction only: more rules skipped or enabled, never `error`. An unreadable one is ignored.
 */
export function withComments(settings: CheckSettings, comments: readonly string[]): CheckSettings {
  for (const comment of comments) {
    const value = commentCheckValue(comment);
    if (value === undefined) continue;
    let extra: CheckSettings;
    try {
      extra = parseCheckSettings(value);
    } catch {
      return settings;
    }
    return {
      skipAll: settings.skipAll || extra.skipAll,
      skip: [...settings.skip, ...extra.skip],
      experimentalAll: settings.experimentalAll || extra.experimentalAll,
      experimental: [...settings.experimental, ...extra.experimental],
      error: settings.error,
    };
  }
  return settings;
}

/** `check=skip=X // why` in a comment (its `#` already removed) → `skip=X`. */
function commentCheckValue(comment: string): string | undefined {
  const scanner = new DirectiveScanner();
  let found;
  try {
    found = scanner.scan(`#${comment}`);
  } catch {
    return undefined;
  }
  if (found?.name !== 'check') return undefined;
  return found.value.split(' ')[0] ?? '';
}

/**
 * Whether a rule runs under these settings. An experimental rule runs only when named (or with
 * `experimental=all`), and `skip` does not apply to it; any other rule runs unless skipped.
 */
export function ruleEnabled(rule: RuleInfo, settings: CheckSettings): boolean {
  if (rule.experimental) return settings.experimentalAll || settings.experimental.includes(rule.name);
  return !settings.skipAll && !settings.skip.includes(rule.name);
}
