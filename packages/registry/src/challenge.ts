/** One authentication challenge from a `WWW-Authenticate` header. */
export interface Challenge {
  /** Lower-cased scheme: `basic` or `bearer` (others are kept so the error can name them). */
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses `WWW-Authenticate` values (RFC 7235): several challenges may share one header, and
 * parameter values may be quoted strings containing commas, so a plain split is not enough.
 */
export function parseChallenges(values: string[]): Challenge[] {
  const out: Challenge[] = [];
  for (const value of values) {
    let i = 0;
    const s = value;
    const skipWs = (): void => {
      while (i < s.length && (s[i] === ' ' || s[i] === '\t')) i++;
    };
    const readToken = (): string => {
      const start = i;
      while (i < s.length && /[A-Za-z0-9!#$%&'*+.^_`|~-]/.test(s[i] ?? '')) i++;
      return s.slice(start, i);
    };
    let current: Challenge | undefined;
    while (i < s.length) {
      skipWs();
      if (s[i] === ',') {
        i++;
        continue;
      }
      const word = readToken();
      if (word === '') {
        i++; // tolerate junk rather than loop forever on it
        continue;
      }
      skipWs();
      if (s[i] === '=' && current !== undefined) {
        i++;
        skipWs();
        let v = '';
        if (s[i] === '"') {
          i++;
          while (i < s.length && s[i] !== '"') {
            if (s[i] === '\\' && i + 1 < s.length) i++;
            v += s[i];
            i++;
          }
          i++;
        } else {
          const start = i;
          while (i < s.length && s[i] !== ',' && s[i] !== ' ') i++;
          v = s.slice(start, i);
        }
        current.params[word.toLowerCase()] = v;
      } else {
        current = { scheme: word.toLowerCase(), params: {} };
        out.push(current);
      }
    }
  }
  return out;
}
