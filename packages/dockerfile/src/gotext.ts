/*
 * Go's string primitives as BuildKit's parser uses them (unicode.IsSpace, strings.TrimSpace,
 * regexp splitting, strconv.Quote): the parser and the AST dump must match Go to the character.
 */

// Go's unicode.IsSpace, not JavaScript's \s (which also matches U+FEFF).

export function isSpace(c: string | undefined): boolean {
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

export function trimLeftSpace(s: string): string {
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
export function splitArgs(s: string, two = false): string[] {
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

export function leadingSpaceWidth(s: string): number {
  let i = 0;
  while (i < s.length && isSpace(s[i])) i++;
  return i;
}

const PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]$/u;

function hex(n: number, width: number): string {
  return n.toString(16).padStart(width, '0');
}

/** Go's strconv.Quote: how the AST dump (and some messages) show a string. */
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
