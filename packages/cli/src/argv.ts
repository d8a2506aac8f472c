/**
 * What the CLI needs to know about argv before (or instead of) yargs: where the command word
 * stands when flags come before it, and which flag yargs could not place.
 */

/** Flags that take no value wherever they stand; every other flag before the command takes the next word, as yargs reads it. */
const GLOBAL_BOOLEANS = new Set(['--debug', '--help', '-h', '--version']);

/** Index of the command word: the first word that is neither a flag nor a flag's value (-1 if none). */
export function commandIndex(argv: readonly string[]): number {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--') return -1;
    if (!a.startsWith('-') || a === '-') return i;
    if (!a.includes('=') && !GLOBAL_BOOLEANS.has(a) && i + 1 < argv.length && !(argv[i + 1] as string).startsWith('-')) i++;
  }
  return -1;
}

/** The options one command accepts, as yargs records them (`getOptions()`). */
export interface KnownOptions {
  key: Record<string, unknown>;
  boolean: readonly string[];
  count?: readonly string[];
}

function camel(name: string): string {
  return name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/**
 * The first flag in `argv` that the command does not accept, or undefined. yargs reports an
 * unknown flag only after it has checked the positionals, so `build --frobnicate .` (the flag
 * took `.` as its value) would otherwise be reported as a missing context.
 */
export function unknownFlag(argv: readonly string[], known: KnownOptions): string | undefined {
  const isKnown = (n: string) => Object.hasOwn(known.key, n) || Object.hasOwn(known.key, camel(n));
  const takesValue = (n: string) => !known.boolean.includes(n) && !(known.count ?? []).includes(n);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--') return undefined;
    if (!a.startsWith('-') || a === '-' || /^-\d/.test(a)) continue;
    const eq = a.indexOf('=');
    if (a.startsWith('--')) {
      const name = a.slice(2, eq < 0 ? undefined : eq);
      if (!isKnown(name)) return name;
      if (eq < 0 && takesValue(name)) i++;
      continue;
    }
    // `-qt NAME`: grouped short flags, the last one may take the next word.
    const letters = a.slice(1, eq < 0 ? undefined : eq);
    for (const [j, l] of [...letters].entries()) {
      if (!isKnown(l)) return l;
      if (j === letters.length - 1 && eq < 0 && takesValue(l)) i++;
    }
  }
  return undefined;
}
