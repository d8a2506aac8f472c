/**
 * Parser directives (`# syntax=…`, `# escape=…`, `# check=…`). They are only honoured in the
 * leading block of comment lines: the first line that is not a directive of a known name
 * (a blank line, another comment, an instruction) ends the block for good, as in BuildKit.
 */

export const DIRECTIVE_NAMES = ['syntax', 'escape', 'check'] as const;
export type DirectiveName = (typeof DIRECTIVE_NAMES)[number];

export interface DirectiveLine {
  name: DirectiveName;
  value: string;
}

/** `#`, optional spaces, a name, `=`; the value is trimmed by hand (a lazy regex backtracks badly). */
const DIRECTIVE_RE = /^#[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=/;

function isRegexSpace(c: string | undefined): boolean {
  return c === ' ' || c === '\t' || c === '\n' || c === '\f' || c === '\r';
}

/**
 * The value as BuildKit's `\s*(.+?)\s*$` captures it: surrounding whitespace dropped, but a
 * value of only whitespace keeps its last character (the lazy group needs one).
 */
function directiveValue(after: string): string | undefined {
  if (after.length === 0) return undefined;
  let start = 0;
  while (start < after.length && isRegexSpace(after[start])) start++;
  if (start === after.length) return after.slice(-1);
  let end = after.length;
  while (end > start && isRegexSpace(after[end - 1])) end--;
  return after.slice(start, end);
}

function isDirectiveName(name: string): name is DirectiveName {
  return (DIRECTIVE_NAMES as readonly string[]).includes(name);
}

export class DirectiveError extends Error {}

export class DirectiveScanner {
  private done = false;
  private readonly seen = new Set<string>();
  readonly values: Record<string, string> = {};

  /**
   * Looks at one physical line (newline and leading whitespace already removed).
   * Returns the directive it holds, or undefined; throws DirectiveError on a repeated directive.
   */
  scan(line: string): DirectiveLine | undefined {
    if (this.done) return undefined;
    const m = DIRECTIVE_RE.exec(line);
    const rawName = m?.[1];
    const value = m ? directiveValue(line.slice(m[0].length)) : undefined;
    if (rawName === undefined || value === undefined) {
      this.done = true;
      return undefined;
    }
    const name = rawName.toLowerCase();
    if (!isDirectiveName(name)) {
      this.done = true;
      return undefined;
    }
    if (this.seen.has(name)) throw new DirectiveError(`only one ${name} parser directive can be used`);
    this.seen.add(name);
    this.values[name] = value;
    return { name, value };
  }
}
