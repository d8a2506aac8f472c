import type { Heredoc, Node } from './ast.ts';
import { isSpace } from './gotext.ts';
import { trimNewline } from './lines.ts';

/*
 * Heredoc markers: the line is split into shell words (quotes and escapes honoured but kept), and
 * every word of the form [n]<<[-]WORD names a heredoc. Its body is the lines that follow, up to
 * one that is only WORD.
 */

/** Instructions whose shell form may carry heredocs. */
const HEREDOC_INSTRUCTIONS = new Set(['add', 'copy', 'run']);

export function canContainHeredoc(n: Node): boolean {
  let target = n;
  if (target.value === 'onbuild') {
    const sub = target.next?.children[0];
    if (sub) target = sub;
  }
  return HEREDOC_INSTRUCTIONS.has(target.value) && target.attributes.json !== true;
}

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

export function heredocsFromLine(line: string): Heredoc[] {
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

/**
 * Reads the body of `doc` from `lines[start]` on into `doc.content`, up to the line that is only
 * its name (leading tabs dropped when it chomps). `next` is the index after the terminator, or
 * the end of the text when there is none.
 */
export function readHeredocBody(lines: readonly string[], start: number, doc: Heredoc): { next: number; terminated: boolean } {
  let i = start;
  let content = '';
  while (i < lines.length) {
    const body = lines[i] ?? '';
    i++;
    let candidate = trimNewline(body);
    if (doc.chomp) candidate = candidate.replace(/^\t+/, '');
    if (candidate === doc.name) {
      // line starts are only after \n (a JS multiline ^ would also match after \r)
      doc.content = doc.chomp ? content.replace(/(^|\n)\t+/g, '$1') : content;
      return { next: i, terminated: true };
    }
    content += body;
  }
  return { next: i, terminated: false };
}
