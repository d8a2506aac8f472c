import type { SourceRange } from '@tsbuild/errors';
import type { Node } from './ast.ts';
import { goQuote, isSpace, splitArgs, trimLeftSpace, trimSpace } from './gotext.ts';

/*
 * One logical line → one AST node: the keyword, its leading flags, and the arguments split the
 * way BuildKit's per-instruction line parsers split them (JSON forms with their fallbacks,
 * name=value lists, ONBUILD's nested instruction).
 */

type Attrs = Node['attributes'];

const NO_RANGE: SourceRange = { start: { line: 0, column: 0 }, end: { line: 0, column: 0 } };

function node(value: string, next?: Node): Node {
  return {
    value,
    next,
    children: [],
    heredocs: [],
    attributes: {},
    original: '',
    flags: [],
    range: NO_RANGE,
    prevComment: [],
  };
}

function chain(values: readonly string[]): Node | undefined {
  let head: Node | undefined;
  for (let i = values.length - 1; i >= 0; i--) head = node(values[i] ?? '', head);
  return head;
}

/** An error raised while parsing one logical line; the caller attaches the location. */
export class LineError extends Error {
  constructor(message: string, readonly hint?: string) {
    super(message);
  }
}

interface Parsed {
  next: Node | undefined;
  attrs: Attrs;
}

export interface LineContext {
  escape: string;
  /** How many ONBUILD levels deep; bounded so hostile input cannot exhaust the stack. */
  depth: number;
}

// ---------------------------------------------------------------------------------------------
// Flags: leading `--name=value` words, ended by the first other word or by `--`.

function extractFlags(line: string): { rest: string; flags: string[] } {
  const flags: string[] = [];
  let pos = 0;
  const n = line.length;
  for (;;) {
    while (pos < n && isSpace(line[pos])) pos++;
    if (pos >= n) return { rest: '', flags };
    if (line[pos] !== '-' || line[pos + 1] !== '-') return { rest: line.slice(pos), flags };
    let word = '';
    let blankOK = false;
    let quote = '';
    for (; pos < n; pos++) {
      const ch = line[pos] ?? '';
      if (quote !== '') {
        if (ch === quote) {
          quote = '';
          continue;
        }
        if (ch === '\\') {
          if (pos + 1 === n) {
            quote = '';
            continue;
          }
          pos++;
          word += line[pos] ?? '';
          continue;
        }
        word += ch;
        continue;
      }
      if (isSpace(ch)) break;
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        continue;
      }
      if (ch === '\\') {
        if (pos + 1 === n) continue;
        pos++;
        word += line[pos] ?? '';
        continue;
      }
      word += ch;
    }
    if (word === '--') return { rest: pos >= n ? '' : line.slice(pos), flags };
    if (blankOK || word.length > 0) flags.push(word);
    if (pos >= n) return { rest: '', flags };
  }
}

// ---------------------------------------------------------------------------------------------
// Words for ENV, LABEL and ARG: split on whitespace outside quotes, quotes and escapes kept.

function parseWords(rest: string, escape: string): string[] {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let blankOK = false;
  let quote = '';
  const n = rest.length;
  for (let pos = 0; pos < n; pos++) {
    let ch = rest[pos] ?? '';
    if (!inWord) {
      if (isSpace(ch)) continue;
      inWord = true;
    }
    if (quote === '') {
      if (isSpace(ch)) {
        if (blankOK || word.length > 0) words.push(word);
        word = '';
        blankOK = false;
        inWord = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
      } else if (ch === escape) {
        // an escape token at the very end is dropped; otherwise it stays with the next char
        if (pos + 1 === n) continue;
        word += ch;
        pos++;
        ch = rest[pos] ?? '';
      }
      word += ch;
      continue;
    }
    const closing = ch === quote;
    if (ch === escape && quote !== "'") {
      if (pos + 1 === n) {
        quote = '';
        continue;
      }
      word += ch;
      pos++;
      ch = rest[pos] ?? '';
    }
    if (closing) quote = '';
    word += ch;
  }
  // a word whose quote is never closed is still kept, as BuildKit does
  if (inWord && (blankOK || word.length > 0)) words.push(word);
  return words;
}

// ---------------------------------------------------------------------------------------------
// Argument parsers, one per instruction, mirroring BuildKit's line parsers.

const NOT_STRING_ARRAY = 'when using JSON array syntax, arrays must be comprised of strings only';
/** encoding/json refuses deeper nesting; such input is then not JSON at all. */
const MAX_JSON_DEPTH = 10000;

function jsonDepthExceeded(s: string): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (inString) {
      if (c === '\\') i++;
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
    } else if (c === '[' || c === '{') {
      if (++depth > MAX_JSON_DEPTH) return true;
    } else if (c === ']' || c === '}') {
      depth--;
    }
  }
  return false;
}

/** encoding/json fails (with a type error, not a string-array error) on numbers beyond float64. */
function hasOverflowingNumber(value: unknown): boolean {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (typeof v === 'number' && !Number.isFinite(v)) return true;
    // no spread: a huge array would overflow the argument limit
    if (Array.isArray(v)) for (const item of v as unknown[]) stack.push(item);
    else if (v !== null && typeof v === 'object') for (const item of Object.values(v)) stack.push(item);
  }
  return false;
}

/** 'invalid' = not a JSON array (caller falls back); throws when it is JSON but not all strings. */
function parseJSON(rest: string): Parsed | 'invalid' {
  const text = trimLeftSpace(rest);
  if (!text.startsWith('[')) return 'invalid';
  if (jsonDepthExceeded(text)) return 'invalid';
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return 'invalid';
  }
  if (!Array.isArray(value) || hasOverflowingNumber(value)) return 'invalid';
  const strings: string[] = [];
  for (const item of value as unknown[]) {
    if (typeof item !== 'string') {
      throw new LineError(NOT_STRING_ARRAY, 'write exec form as ["executable", "arg", …] with strings only');
    }
    strings.push(item);
  }
  return { next: chain(strings), attrs: { json: true } };
}

function parseIgnore(): Parsed {
  return { next: node(''), attrs: {} };
}

function parseString(rest: string): Parsed {
  return { next: rest === '' ? undefined : node(rest), attrs: {} };
}

function parseStringsWhitespaceDelimited(rest: string): Parsed {
  if (rest === '') return { next: undefined, attrs: {} };
  return { next: chain(splitArgs(rest)), attrs: {} };
}

function parseMaybeJSON(rest: string): Parsed {
  if (rest === '') return { next: undefined, attrs: {} };
  const json = parseJSON(rest);
  if (json !== 'invalid') return json;
  return { next: node(rest), attrs: {} };
}

function parseMaybeJSONToList(rest: string): Parsed {
  const json = parseJSON(rest);
  if (json !== 'invalid') return json;
  return parseStringsWhitespaceDelimited(rest);
}

function parseNameVal(rest: string, key: string, ctx: LineContext): Parsed {
  const words = parseWords(rest, ctx.escape);
  const first = words[0];
  if (first === undefined) return { next: undefined, attrs: {} };
  // the legacy form `KEY name value` is chosen when the first word has no '='
  if (!first.includes('=')) {
    const parts = splitArgs(rest, true);
    if (parts.length < 2) {
      throw new LineError(`${key} must have two arguments`, `write ${key} name=value`);
    }
    return { next: chain([parts[0] ?? '', parts[1] ?? '', '']), attrs: {} };
  }
  const flat: string[] = [];
  for (const word of words) {
    const eq = word.indexOf('=');
    if (eq < 0) {
      throw new LineError(
        `Syntax error - can't find = in ${goQuote(word)}. Must be of the form: name=value`,
        `every ${key} item must be name=value; quote values that contain spaces`,
      );
    }
    flat.push(word.slice(0, eq), word.slice(eq + 1), '=');
  }
  return { next: chain(flat), attrs: {} };
}

function parseNameOrNameVal(rest: string, ctx: LineContext): Parsed {
  return { next: chain(parseWords(rest, ctx.escape)), attrs: {} };
}

function parseHealthConfig(rest: string): Parsed {
  let sep = 0;
  while (sep < rest.length && !isSpace(rest[sep])) sep++;
  if (sep === 0) return { next: undefined, attrs: {} };
  let next = sep;
  while (next < rest.length && isSpace(rest[next])) next++;
  const cmd = parseMaybeJSON(rest.slice(next));
  return { next: node(rest.slice(0, sep), cmd.next), attrs: cmd.attrs };
}

const MAX_ONBUILD_DEPTH = 32;

function parseSubCommand(rest: string, ctx: LineContext): Parsed {
  if (rest === '') return { next: undefined, attrs: {} };
  if (ctx.depth >= MAX_ONBUILD_DEPTH) throw new LineError('ONBUILD instructions are nested too deeply');
  const child = nodeFromLine(rest, { escape: ctx.escape, depth: ctx.depth + 1 }, []);
  const holder = node('');
  holder.children.push(child);
  return { next: holder, attrs: {} };
}

type LineParser = (rest: string, ctx: LineContext) => Parsed;

const DISPATCH: ReadonlyMap<string, LineParser> = new Map<string, LineParser>([
  ['add', parseMaybeJSONToList],
  ['arg', parseNameOrNameVal],
  ['cmd', parseMaybeJSON],
  ['copy', parseMaybeJSONToList],
  ['entrypoint', parseMaybeJSON],
  ['env', (rest, ctx) => parseNameVal(rest, 'ENV', ctx)],
  ['expose', parseStringsWhitespaceDelimited],
  ['from', parseStringsWhitespaceDelimited],
  ['healthcheck', parseHealthConfig],
  ['label', (rest, ctx) => parseNameVal(rest, 'LABEL', ctx)],
  ['maintainer', parseString],
  ['onbuild', parseSubCommand],
  ['run', parseMaybeJSON],
  ['shell', parseMaybeJSON],
  ['stopsignal', parseString],
  ['user', parseString],
  ['volume', parseMaybeJSONToList],
  ['workdir', parseString],
]);


export function nodeFromLine(line: string, ctx: LineContext, comments: string[]): Node {
  const trimmed = trimSpace(line);
  let cmd = trimmed;
  let args = '';
  let flags: string[] = [];
  const parts = splitArgs(trimmed, true);
  if (parts.length === 2) {
    cmd = parts[0] ?? '';
    const extracted = extractFlags(parts[1] ?? '');
    args = trimSpace(extracted.rest);
    flags = extracted.flags;
  }
  const keyword = cmd.toLowerCase();
  const fn = DISPATCH.get(keyword);
  const parsed = fn ? fn(args, ctx) : parseIgnore();
  const n = node(keyword, parsed.next);
  n.attributes = parsed.attrs;
  n.original = line;
  n.flags = flags;
  n.prevComment = comments;
  return n;
}
