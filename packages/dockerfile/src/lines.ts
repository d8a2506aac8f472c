import { trimLeftSpace } from './gotext.ts';

/*
 * Physical lines, comments and line continuations as BuildKit's scanner sees them.
 */

/** Removes a trailing line-continuation token; undefined when the line does not continue. */
export function trimContinuation(line: string, escape: string): string | undefined {
  let end = line.length;
  while (end > 0 && (line[end - 1] === ' ' || line[end - 1] === '\t')) end--;
  if (end === 0 || line[end - 1] !== escape) return undefined;
  if (end === 1) return '';
  // an escaped escape token ("\\") is a literal, not a continuation
  if (line[end - 2] === escape) return undefined;
  return line.slice(0, end - 1);
}

export function isComment(line: string): boolean {
  return trimLeftSpace(line).startsWith('#');
}

export function trimNewline(line: string): string {
  let end = line.length;
  while (end > 0 && (line[end - 1] === '\n' || line[end - 1] === '\r')) end--;
  return line.slice(0, end);
}

/** Physical lines as BuildKit's scanner yields them: split after each \n, newline kept. */
export function physicalLines(text: string): string[] {
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
