import { TsbuildError } from '@tsbuild/errors';

/**
 * Variables visible to an expansion. A Map or a plain object; plain objects are read with
 * own-property lookups only, so `constructor` or `__proto__` never leak in from the prototype.
 * Lookups are case-sensitive, as on Linux.
 */
export type Env = ReadonlyMap<string, string> | Readonly<Record<string, string>>;

export interface ShellOptions {
  /** The Dockerfile escape token (`# escape=` directive): `\` (default) or `` ` ``. */
  escapeToken?: string;
  /** Leave unset variables as written (`$X`, `${X:-y}`) instead of expanding them to ''. */
  skipUnset?: boolean;
  /** Treat quotes as ordinary characters (heredoc bodies expand variables but keep quotes). */
  skipQuotes?: boolean;
}

export interface WordResult {
  /** The expanded word, quotes and escapes removed. */
  result: string;
  /** The word split on unquoted whitespace, as the exec form of a shell would see it. */
  words: string[];
  /** Variables that were looked up and found. */
  matched: Set<string>;
  /** Variables that were looked up and were not set. */
  unmatched: Set<string>;
}

/**
 * A word that cannot be expanded. It has no location: the caller knows which instruction the word
 * came from and rethrows it as a DockerfileError with the instruction's range.
 */
export class ShellError extends TsbuildError {
  /** The word as written. */
  readonly word: string;
  /** The reason without the word, e.g. `syntax error: missing '}'`. */
  readonly detail: string;
  constructor(detail: string, word: string) {
    super('DOCKERFILE', `failed to process ${JSON.stringify(word)}: ${detail}`);
    this.word = word;
    this.detail = detail;
  }
}

/** Expands one word with BuildKit's shell-word rules and returns it as a single string. */
export function processWord(word: string, env: Env, opts: ShellOptions = {}): string {
  return processWordWithMatches(word, env, opts).result;
}

/** Expands one word and splits the result into fields on unquoted whitespace. */
export function processWords(word: string, env: Env, opts: ShellOptions = {}): string[] {
  return processWordWithMatches(word, env, opts).words;
}

/**
 * Expands a word and reports which variables it read. Cache keys depend only on the variables a
 * step actually reads, so changing an unrelated ARG does not invalidate it.
 */
export function processWordWithMatches(word: string, env: Env, opts: ShellOptions = {}): WordResult {
  const lexer = new Lexer(word, env, opts);
  try {
    const { text, words } = lexer.run(undefined, false);
    return { result: text, words, matched: lexer.matched, unmatched: lexer.unmatched };
  } catch (e) {
    if (e instanceof SyntaxFailure) throw new ShellError(e.message, word);
    throw e;
  }
}

/** Looks a name up in an Env. */
export function lookupEnv(env: Env, name: string): string | undefined {
  if (env instanceof Map) return (env as ReadonlyMap<string, string>).get(name);
  const rec = env as Readonly<Record<string, string>>;
  return Object.hasOwn(rec, name) ? rec[name] : undefined;
}

class SyntaxFailure extends Error {}

const EOF = '';
const GLOB_META = new Set(['*', '?', '[', ']', '\\']);

/** Accumulates fields the way a POSIX shell splits unquoted expansions. */
class Fields {
  private word = '';
  private inWord = false;
  readonly words: string[] = [];

  addChar(ch: string): void {
    if (isSpace(ch)) {
      if (this.inWord && this.word.length > 0) {
        this.words.push(this.word);
        this.word = '';
        this.inWord = false;
      }
    } else {
      this.addRaw(ch);
    }
  }
  addRaw(s: string): void {
    this.word += s;
    this.inWord = true;
  }
  addSplit(s: string): void {
    for (const ch of s) this.addChar(ch);
  }
  finish(): string[] {
    if (this.word.length > 0) {
      this.words.push(this.word);
      this.word = '';
      this.inWord = false;
    }
    return this.words;
  }
}

function isSpace(ch: string): boolean {
  return /^\s$/u.test(ch);
}

class Lexer {
  private readonly chars: string[];
  private pos = 0;
  private readonly escape: string;
  private readonly skipUnset: boolean;
  private readonly skipQuotes: boolean;
  /** True while reading a `#`, `%` or `/` pattern: literal characters come out glob-escaped. */
  private pattern = false;
  readonly matched = new Set<string>();
  readonly unmatched = new Set<string>();

  constructor(
    word: string,
    private readonly env: Env,
    opts: ShellOptions,
  ) {
    this.chars = Array.from(word);
    this.escape = opts.escapeToken ?? '\\';
    this.skipUnset = opts.skipUnset ?? false;
    this.skipQuotes = opts.skipQuotes ?? false;
  }

  private peek(): string {
    return this.chars[this.pos] ?? EOF;
  }
  private next(): string {
    const ch = this.chars[this.pos] ?? EOF;
    if (ch !== EOF) this.pos++;
    return ch;
  }

  /** A character that must match itself when it ends up in a glob pattern. */
  private lit(ch: string): string {
    return this.pattern && GLOB_META.has(ch) ? `\\${ch}` : ch;
  }
  private litString(s: string): string {
    if (!this.pattern) return s;
    let out = '';
    for (const ch of s) out += this.lit(ch);
    return out;
  }

  private getEnv(name: string): string | undefined {
    const v = lookupEnv(this.env, name);
    if (v === undefined) this.unmatched.add(name);
    else this.matched.add(name);
    return v;
  }

  /** Reads up to `stop` (consumed) or the end; `pattern` switches glob-escaping of literals on. */
  run(stop: string | undefined, pattern: boolean): { text: string; words: string[] } {
    const saved = this.pattern;
    this.pattern = pattern;
    try {
      let text = '';
      const fields = new Fields();
      while (this.peek() !== EOF) {
        const ch = this.peek();
        if (stop !== undefined && ch === stop) {
          this.next();
          return { text, words: fields.finish() };
        }
        if (ch === '$') {
          const v = this.dollar();
          text += v;
          fields.addSplit(v);
        } else if (!this.skipQuotes && ch === "'") {
          const v = this.singleQuote();
          text += v;
          fields.addRaw(v);
        } else if (!this.skipQuotes && ch === '"') {
          const v = this.doubleQuote();
          text += v;
          fields.addRaw(v);
        } else {
          this.next();
          if (ch === this.escape) {
            const escaped = this.next();
            // A trailing escape token escapes nothing and disappears.
            if (escaped === EOF) break;
            const out = this.pattern ? `\\${escaped}` : escaped;
            text += out;
            fields.addRaw(out);
          } else {
            const out = this.pattern && ch === '\\' ? '\\\\' : ch;
            text += out;
            fields.addChar(out);
          }
        }
      }
      if (stop !== undefined) {
        throw new SyntaxFailure(`unexpected end of statement while looking for matching ${stop}`);
      }
      return { text, words: fields.finish() };
    } finally {
      this.pattern = saved;
    }
  }

  private singleQuote(): string {
    this.next();
    let out = '';
    for (;;) {
      const ch = this.next();
      if (ch === EOF) throw new SyntaxFailure('unexpected end of statement while looking for matching single-quote');
      if (ch === "'") return out;
      out += this.lit(ch);
    }
  }

  private doubleQuote(): string {
    this.next();
    let out = '';
    for (;;) {
      const ch = this.peek();
      if (ch === EOF) throw new SyntaxFailure('unexpected end of statement while looking for matching double-quote');
      if (ch === '"') {
        this.next();
        return out;
      }
      if (ch === '$') {
        // Quoted expansions are never patterns.
        out += this.litString(this.dollar());
        continue;
      }
      this.next();
      if (ch === this.escape) {
        const after = this.peek();
        if (after === EOF) continue;
        // Inside double quotes only `"`, `$` and the escape token itself can be escaped.
        if (after === '"' || after === '$' || after === this.escape) {
          out += this.lit(this.next());
          continue;
        }
      }
      out += this.lit(ch);
    }
  }

  private dollar(): string {
    this.next();
    if (this.peek() !== '{') {
      const name = this.name();
      if (name === '') return '$';
      const v = this.getEnv(name);
      if (v === undefined && this.skipUnset) return `$${name}`;
      return v ?? '';
    }
    this.next();
    const first = this.peek();
    if (first === EOF) throw new SyntaxFailure("syntax error: missing '}'");
    if (first === '{' || first === '}' || first === ':') throw new SyntaxFailure('syntax error: bad substitution');
    const name = this.name();
    let op = this.next();
    if (op === EOF) throw new SyntaxFailure("syntax error: missing '}'");
    if (op === '}') {
      const v = this.getEnv(name);
      if (v === undefined && this.skipUnset) return `\${${name}}`;
      return v ?? '';
    }
    if (name === '') throw new SyntaxFailure('syntax error: bad substitution');
    let colon = false;
    if (op === ':') {
      colon = true;
      op = this.next();
    }
    const modifier = (colon ? ':' : '') + op;
    if (op === '-' || op === '+' || op === '?' || op === '#' || op === '%') {
      const isPattern = op === '#' || op === '%';
      if (colon && isPattern) throw new SyntaxFailure(`unsupported modifier (${modifier}) in substitution`);
      const arg = this.argument('}', isPattern, "syntax error: missing '}'");
      const value = this.getEnv(name);
      if (value === undefined && this.skipUnset) return `\${${name}${modifier}${arg}}`;
      const unset = value === undefined || (colon && value === '');
      switch (op) {
        case '-':
          return unset ? arg : (value ?? '');
        case '+':
          return unset ? '' : arg;
        case '?':
          if (value === undefined) throw new SyntaxFailure(`${name}: ${arg || 'is not allowed to be unset'}`);
          if (unset) throw new SyntaxFailure(`${name}: ${arg || 'is not allowed to be empty'}`);
          return value;
        default: {
          let pat = arg;
          let longest = false;
          if (pat.startsWith(op)) {
            longest = true;
            pat = pat.slice(1);
          }
          const re = compileShellPattern(pat);
          return op === '#' ? trimPrefix(value ?? '', re, longest) : trimSuffix(value ?? '', re, longest);
        }
      }
    }
    if (op === '/' && !colon) {
      const all = this.peek() === '/';
      if (all) this.next();
      const pat = this.argument('/', true, "syntax error: missing '/' in ${}");
      const replacement = this.argument('}', false, "syntax error: missing '}'");
      const value = this.getEnv(name);
      if (value === undefined && this.skipUnset) return `\${${name}/${all ? '/' : ''}${pat}/${replacement}}`;
      // An empty pattern replaces nothing, as in sh (a regexp engine would match between every character).
      if (pat === '' || value === undefined) return value ?? '';
      return replaceShellPattern(value, compileShellPattern(pat), replacement, all);
    }
    throw new SyntaxFailure(`unsupported modifier (${modifier}) in substitution`);
  }

  private argument(stop: string, pattern: boolean, eofMessage: string): string {
    try {
      return this.run(stop, pattern).text;
    } catch (e) {
      if (e instanceof SyntaxFailure && this.peek() === EOF && e.message.startsWith('unexpected end')) {
        throw new SyntaxFailure(eofMessage);
      }
      throw e;
    }
  }

  /** A variable name: letters/digits/_; a run of digits (positional); or one special parameter. */
  private name(): string {
    let name = '';
    for (;;) {
      const ch = this.peek();
      if (ch === EOF) return name;
      if (name === '' && /^\p{Nd}$/u.test(ch)) {
        while (/^\p{Nd}$/u.test(this.peek())) name += this.next();
        return name;
      }
      if (name === '' && '@*#?-$!0'.includes(ch)) return this.next();
      if (!/^[\p{L}\p{Nd}_]$/u.test(ch)) return name;
      name += this.next();
    }
  }
}

/**
 * Compiles the shell pattern of `${var#pattern}`, `${var%pattern}` and `${var/pattern/repl}` (a
 * glob: `*`, `?`, `[...]`, `\x` escapes) into an anchored RegExp. Every literal
 * becomes a `\u{..}` escape, so no user text is ever interpreted as regex syntax.
 */
export function compileShellPattern(pattern: string): RegExp {
  const chars = Array.from(pattern);
  const code = (ch: string): string => `\\u{${(ch.codePointAt(0) ?? 0).toString(16)}}`;
  let src = '';
  for (let i = 0; i < chars.length; i++) {
    const ch = chars[i] as string;
    if (ch === '\\') {
      const n = chars[++i];
      src += n === undefined ? code('\\') : code(n);
    } else if (ch === '*') {
      src += '[^]*';
    } else if (ch === '?') {
      src += '[^]';
    } else if (ch === '[') {
      const cls = readClass(chars, i, code);
      if (cls) {
        src += cls.src;
        i = cls.end;
      } else {
        src += code('[');
      }
    } else {
      src += code(ch);
    }
  }
  return new RegExp(`^(?:${src})$`, 'u');
}

function readClass(
  chars: string[],
  open: number,
  code: (ch: string) => string,
): { src: string; end: number } | undefined {
  let i = open + 1;
  let negate = false;
  if (chars[i] === '!' || chars[i] === '^') {
    negate = true;
    i++;
  }
  const items: string[] = [];
  let first = true;
  for (; i < chars.length; i++) {
    let ch = chars[i] as string;
    // A `]` right after the opening bracket is a member, not the end.
    if (ch === ']' && !first) {
      if (items.length === 0) return undefined;
      return { src: `[${negate ? '^' : ''}${items.join('')}]`, end: i };
    }
    first = false;
    if (ch === '\\') {
      const n = chars[i + 1];
      if (n === undefined) return undefined;
      ch = n;
      i++;
    }
    if (chars[i + 1] === '-' && chars[i + 2] !== undefined && chars[i + 2] !== ']') {
      let hi = chars[i + 2] as string;
      let skip = 2;
      if (hi === '\\' && chars[i + 3] !== undefined) {
        hi = chars[i + 3] as string;
        skip = 3;
      }
      if ((hi.codePointAt(0) ?? 0) < (ch.codePointAt(0) ?? 0)) return undefined;
      items.push(`${code(ch)}-${code(hi)}`);
      i += skip;
    } else {
      items.push(code(ch));
    }
  }
  return undefined;
}

function trimPrefix(value: string, re: RegExp, longest: boolean): string {
  const chars = Array.from(value);
  for (let k = 0; k <= chars.length; k++) {
    const i = longest ? chars.length - k : k;
    if (re.test(chars.slice(0, i).join(''))) return chars.slice(i).join('');
  }
  return value;
}

function trimSuffix(value: string, re: RegExp, longest: boolean): string {
  const chars = Array.from(value);
  for (let k = 0; k <= chars.length; k++) {
    const i = longest ? k : chars.length - k;
    if (re.test(chars.slice(i).join(''))) return chars.slice(0, i).join('');
  }
  return value;
}

/**
 * `${v/p/r}` and `${v//p/r}`: the leftmost, then longest, non-empty match is replaced. A set but
 * empty value is replaced when the pattern matches the empty string (a lone star pattern), as in sh.
 */
function replaceShellPattern(value: string, re: RegExp, replacement: string, all: boolean): string {
  if (value === '') return re.test('') ? replacement : '';
  const chars = Array.from(value);
  let out = '';
  let start = 0;
  let replaced = false;
  while (start < chars.length) {
    let end = -1;
    if (!(replaced && !all)) {
      for (let e = chars.length; e > start; e--) {
        if (re.test(chars.slice(start, e).join(''))) {
          end = e;
          break;
        }
      }
    }
    if (end < 0) {
      out += chars[start];
      start++;
    } else {
      out += replacement;
      start = end;
      replaced = true;
    }
  }
  return out;
}
