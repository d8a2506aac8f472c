/**
 * Debian control-file syntax (deb822), as dpkg's status database, its status.d files and
 * machine-readable copyright files use it: paragraphs separated by blank lines, `Field: value`
 * lines, continuation lines starting with a space or tab.
 */

/** One paragraph; field names lower-cased. A folded value keeps its continuation lines after `\n`. */
export type Paragraph = Map<string, string>;

export interface Deb822 {
  paragraphs: Paragraph[];
  /** Lines that were neither a field, a continuation nor blank. */
  malformed: number;
}

export function parseDeb822(text: string): Deb822 {
  const paragraphs: Paragraph[] = [];
  let current: Paragraph | undefined;
  let lastField: string | undefined;
  let malformed = 0;
  for (const raw of text.split('\n')) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.trim() === '') {
      current = undefined;
      lastField = undefined;
      continue;
    }
    if (line.startsWith('#')) continue;
    if (line.startsWith(' ') || line.startsWith('\t')) {
      if (current === undefined || lastField === undefined) {
        malformed++;
        continue;
      }
      const rest = line.slice(1);
      current.set(lastField, `${current.get(lastField)}\n${rest === '.' ? '' : rest}`);
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) {
      malformed++;
      continue;
    }
    if (current === undefined) {
      current = new Map();
      paragraphs.push(current);
    }
    lastField = line.slice(0, colon).trim().toLowerCase();
    current.set(lastField, line.slice(colon + 1).trim());
  }
  return { paragraphs, malformed };
}
