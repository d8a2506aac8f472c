import { DockerfileError, excerptOf } from '@tsbuild/errors';
import type { SourceRange } from '@tsbuild/errors';
import type { Ast, Heredoc, Node, ParseResult, Warning } from './ast.ts';
import { DirectiveError, DirectiveScanner } from './directives.ts';
import { RULES } from './lint/rules.ts';

/*
 * Text → AST, reproducing BuildKit's frontend/dockerfile/parser behaviour: the same line joining,
 * comment and directive handling, per-instruction argument splitting and JSON fallback, so that
 * the AST dumps byte-for-byte like BuildKit's golden `result` files.
 */

// ---------------------------------------------------------------------------------------------
// Character classes. Go's unicode.IsSpace, not JavaScript's \s (which also matches U+FEFF).

function isSpace(c: string | undefined): boolean {
  if (c === undefined) return false;
  switch (c) {
    case ' ': case '\t': case '\n': case '\v': case '\f': case '\r':
    case '\u0085': case '\u00a0': case '\u1680': case '\u2028': case '\u2029':
    case '\u202f': case '\u205f': case '\u3000':
      return true;
    default:
      return c >= '\u2000' && c <= '\u200a';
  }
}

/** BuildKit's reWhitespace: the separators between plain arguments. */
function isArgSpace(c: string | undefined): boolean {
  return c === ' ' || c === '\t' || c === '\v' || c === '\f' || c === '\r';
}

function trimLeftSpace(s: string): string {
  let i = 0;
  while (i < s.length && isSpace(s[i])) i++;
  return s.slice(i);
}

/** Go's strings.TrimSpace. */
export function trimSpace(s: string): string {
  let end = s.length;
  while (end > 0 && isSpace(s[end - 1])) end--;
  let start = 0;
  while (start < end && isSpace(s[start])) start++;
  return s.slice(start, end);
}

/** Splits on runs of [\t\v\f\r ], like Go's regexp.Split with n = -1 (or n = 2 when `two`). */
function splitArgs(s: string, two = false): string[] {
  const out: string[] = [];
  let start = 0;
  let i = 0;
  while (i < s.length) {
    if (isArgSpace(s[i])) {
      let j = i;
      while (j < s.length && isArgSpace(s[j])) j++;
      out.push(s.slice(start, i));
      start = j;
      i = j;
      if (two) break;
    } else {
      i++;
    }
  }
  out.push(s.slice(start));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Nodes

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
class LineError extends Error {
  constructor(message: string, readonly hint?: string) {
    super(message);
  }
}

interface Parsed {
  next: Node | undefined;
  attrs: Attrs;
}

interface LineContext {
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

/** Instructions whose shell form may carry heredocs. */
const HEREDOC_INSTRUCTIONS = new Set(['add', 'copy', 'run']);

function nodeFromLine(line: string, ctx: LineContext, comments: string[]): Node {
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

function canContainHeredoc(n: Node): boolean {
  let target = n;
  if (target.value === 'onbuild') {
    const sub = target.next?.children[0];
    if (sub) target = sub;
  }
  return HEREDOC_INSTRUCTIONS.has(target.value) && target.attributes.json !== true;
}

// ---------------------------------------------------------------------------------------------
// Heredoc markers: the line is split into shell words (quotes and escapes honoured but kept), and
// every word of the form [n]<<[-]WORD names a heredoc.

interface ShellWord {
  raw: string;
  /** The word with quotes removed and escapes resolved. */
  cooked: string;
  /** True when some quote character acted as quoting. */
  quoted: boolean;
}

/** Undefined when a quote is left open: BuildKit then finds no heredocs on the line. */
function shellWords(line: string): ShellWord[] | undefined {
  const words: ShellWord[] = [];
  let raw = '';
  let cooked = '';
  let quoted = false;
  let inWord = false;
  const flush = (): void => {
    if (inWord) words.push({ raw, cooked, quoted });
    raw = '';
    cooked = '';
    quoted = false;
    inWord = false;
  };
  const n = line.length;
  for (let i = 0; i < n; i++) {
    const c = line[i] ?? '';
    if (isSpace(c)) {
      flush();
      continue;
    }
    inWord = true;
    if (c === '\\') {
      const next = line[i + 1];
      if (next === undefined) {
        raw += c;
        continue;
      }
      raw += c + next;
      cooked += next;
      i++;
      continue;
    }
    if (c === "'") {
      const close = line.indexOf("'", i + 1);
      if (close < 0) return undefined;
      raw += line.slice(i, close + 1);
      cooked += line.slice(i + 1, close);
      quoted = true;
      i = close;
      continue;
    }
    if (c === '"') {
      let j = i + 1;
      let body = '';
      for (; j < n; j++) {
        const d = line[j];
        if (d === '"') break;
        if (d === '\\' && j + 1 < n) {
          const e = line[j + 1] ?? '';
          body += e === '"' || e === '\\' || e === '$' || e === '`' ? e : d + e;
          j++;
          continue;
        }
        body += d ?? '';
      }
      if (j >= n) return undefined;
      raw += line.slice(i, j + 1);
      cooked += body;
      quoted = true;
      i = j;
      continue;
    }
    if (c === '$' && line[i + 1] === '{') {
      // ${…} is one unit even when it holds spaces
      const close = line.indexOf('}', i + 2);
      const end = close < 0 ? n - 1 : close;
      raw += line.slice(i, end + 1);
      cooked += line.slice(i, end + 1);
      i = end;
      continue;
    }
    raw += c;
    cooked += c;
  }
  flush();
  return words;
}

const HEREDOC_RE = /^(\d*)<<(-?)([^<]*)$/s;

function heredocsFromLine(line: string): Heredoc[] {
  const words = shellWords(line);
  if (!words) return [];
  const docs: Heredoc[] = [];
  for (const word of words) {
    const m = HEREDOC_RE.exec(word.raw);
    if (!m) continue;
    const chomp = m[2] === '-';
    const rest = m[3] ?? '';
    if (rest === '') continue;
    const inner = shellWords(rest);
    const only = inner?.[0];
    if (!inner || inner.length !== 1 || !only || only.cooked === '') continue;
    docs.push({ name: only.cooked, content: '', expand: !only.quoted, chomp });
  }
  return docs;
}

// ---------------------------------------------------------------------------------------------
// Line joining

/** Removes a trailing line-continuation token; undefined when the line does not continue. */
function trimContinuation(line: string, escape: string): string | undefined {
  let end = line.length;
  while (end > 0 && (line[end - 1] === ' ' || line[end - 1] === '\t')) end--;
  if (end === 0 || line[end - 1] !== escape) return undefined;
  if (end === 1) return '';
  // an escaped escape token ("\\") is a literal, not a continuation
  if (line[end - 2] === escape) return undefined;
  return line.slice(0, end - 1);
}

function isComment(line: string): boolean {
  return trimLeftSpace(line).startsWith('#');
}

function trimNewline(line: string): string {
  let end = line.length;
  while (end > 0 && (line[end - 1] === '\n' || line[end - 1] === '\r')) end--;
  return line.slice(0, end);
}

/** Physical lines as BuildKit's scanner yields them: split after each \n, newline kept. */
function physicalLines(text: string): string[] {
  const lines: string[] = [];
  let start = 0;
  while (start < text.length) {
    const nl = text.indexOf('\n', start);
    const end = nl < 0 ? text.length : nl + 1;
    lines.push(text.slice(start, end));
    start = end;
  }
  return lines;
}

function leadingSpaceWidth(s: string): number {
  let i = 0;
  while (i < s.length && isSpace(s[i])) i++;
  return i;
}

// ---------------------------------------------------------------------------------------------

/**
 * Parses a Dockerfile into BuildKit's AST shape. Throws DockerfileError (with a range and an
 * excerpt) for text BuildKit's parser refuses; never throws anything else.
 */
export function parse(text: string): ParseResult {
  const lines = physicalLines(text);
  if (lines.length > 0 && lines[0]?.startsWith('\uFEFF')) lines[0] = lines[0].slice(1);

  const directives = new DirectiveScanner();
  let escape = '\\';
  const warnings: Warning[] = [];
  const children: Node[] = [];
  let comments: string[] = [];

  const fail = (message: string, startLine: number, endLine: number, hint?: string): never => {
    const last = trimNewline(lines[endLine - 1] ?? '');
    const range: SourceRange = {
      start: { line: startLine, column: 1 },
      end: { line: endLine, column: last.length + 1 },
    };
    const options: ConstructorParameters<typeof DockerfileError>[1] = {
      range,
      excerpt: excerptOf(text, range),
    };
    if (hint !== undefined) options.hint = hint;
    throw new DockerfileError(message, options);
  };

  /** Applies directive handling to one physical line; returns the line without newline. */
  const processLine = (raw: string, lineNo: number, stripLeft: boolean): { line: string; directive: boolean } => {
    let line = trimNewline(raw);
    if (stripLeft) line = trimLeftSpace(line);
    let directive = false;
    try {
      const found = directives.scan(line);
      if (found) {
        directive = true;
        if (found.name === 'escape') {
          if (found.value !== '\\' && found.value !== '`') {
            const shown = found.value.length > 20 ? `${found.value.slice(0, 20)}…` : found.value;
            fail(`invalid escape token '${shown}' does not match \` or \\`, lineNo, lineNo,
              'use # escape=\\ or # escape=`');
          }
          escape = found.value;
        }
      }
    } catch (err) {
      if (err instanceof DirectiveError) fail(err.message, lineNo, lineNo);
      throw err;
    }
    return { line: isComment(line) ? '' : line, directive };
  };

  let i = 0;
  while (i < lines.length) {
    const raw = lines[i] ?? '';
    const lineNo = i + 1;
    i++;
    if (isComment(raw)) {
      // BuildKit drops only the first character, even when the '#' is indented
      const comment = trimSpace(raw.slice(1));
      if (comment === '') comments = [];
      else comments.push(comment);
    }
    const first = processLine(raw, lineNo, true);
    if (first.directive) comments.pop();

    const startLine = lineNo;
    const startColumn = leadingSpaceWidth(raw) + 1;
    let buf = first.line;
    let continued = trimContinuation(buf, escape);
    if (continued === undefined && buf === '') continue;
    if (continued !== undefined) buf = continued;

    let emptyContinuation = false;
    while (continued !== undefined && i < lines.length) {
      const rawNext = lines[i] ?? '';
      const nextNo = i + 1;
      i++;
      const { line } = processLine(rawNext, nextNo, false);
      if (isComment(rawNext)) continue;
      if (trimLeftSpace(line) === '') {
        emptyContinuation = true;
        continue;
      }
      continued = trimContinuation(line, escape);
      buf += continued ?? line;
    }
    let endLine = i;

    if (emptyContinuation) {
      const range: SourceRange = { start: { line: endLine, column: 1 }, end: { line: endLine, column: 1 } };
      // BuildKit's parser words it this way; the check itself says RULES.NoEmptyContinuation.format().
      const rule = RULES.NoEmptyContinuation;
      warnings.push({
        message: `Empty continuation line found in: ${buf}`,
        rule: rule.name,
        range,
        detail: `${rule.description}; ${rule.url}`,
      });
    }

    let child: Node;
    try {
      child = nodeFromLine(buf, { escape, depth: 0 }, comments);
    } catch (err) {
      if (err instanceof LineError) return fail(err.message, startLine, endLine, err.hint);
      throw err;
    }

    if (buf.includes('<<') && canContainHeredoc(child)) {
      for (const doc of heredocsFromLine(buf)) {
        let terminated = false;
        let content = '';
        while (i < lines.length) {
          const body = lines[i] ?? '';
          i++;
          let candidate = trimNewline(body);
          if (doc.chomp) candidate = candidate.replace(/^\t+/, '');
          if (candidate === doc.name) {
            terminated = true;
            break;
          }
          content += body;
        }
        endLine = i;
        if (!terminated) {
          fail(`unterminated heredoc ${doc.name}`, startLine, endLine,
            `end the heredoc with a line containing only ${doc.name}`);
        }
        // line starts are only after \n (a JS multiline ^ would also match after \r)
        doc.content = doc.chomp ? content.replace(/(^|\n)\t+/g, '$1') : content;
        child.heredocs.push(doc);
      }
    }

    const last = trimNewline(lines[endLine - 1] ?? '');
    const range: SourceRange = {
      start: { line: startLine, column: startColumn },
      end: { line: endLine, column: last.length + 1 },
    };
    setRange(child, range);
    children.push(child);
    comments = [];
  }

  const firstChild = children[0];
  const lastChild = children[children.length - 1];
  if (!firstChild || !lastChild) {
    const at = Math.max(1, lines.length);
    return fail('file with no instructions', at, at, 'a Dockerfile needs at least a FROM instruction');
  }

  const ast: Ast = {
    children,
    range: { start: firstChild.range.start, end: lastChild.range.end },
  };
  return { ast, escapeToken: escape, warnings, directives: { ...directives.values } };
}

/** Gives every token of an instruction the instruction's range. */
function setRange(top: Node, range: SourceRange): void {
  const stack: Node[] = [top];
  while (stack.length > 0) {
    const n = stack.pop();
    if (!n) break;
    n.range = range;
    if (n.next) stack.push(n.next);
    stack.push(...n.children);
  }
}

// ---------------------------------------------------------------------------------------------
// Go's strconv.Quote, needed for the dump format.

const PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]$/u;

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, '0');
}

export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0) ?? 0;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (cp >= 0xd800 && cp <= 0xdfff) out += '\ufffd';
    else if (PRINTABLE.test(ch)) out += ch;
    else if (cp === 0x07) out += '\\a';
    else if (cp === 0x08) out += '\\b';
    else if (cp === 0x0c) out += '\\f';
    else if (cp === 0x0a) out += '\\n';
    else if (cp === 0x0d) out += '\\r';
    else if (cp === 0x09) out += '\\t';
    else if (cp === 0x0b) out += '\\v';
    else if (cp < 0x20 || cp === 0x7f) out += `\\x${hex(cp, 2)}`;
    else if (cp < 0x10000) out += `\\u${hex(cp, 4)}`;
    else out += `\\U${hex(cp, 8)}`;
  }
  return out + '"';
}
