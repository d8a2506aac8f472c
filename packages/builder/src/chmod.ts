import { TsbuildError } from '@tsbuild/errors';

type Who = 'u' | 'g' | 'o';

interface SymbolicAction {
  op: '+' | '-' | '=';
  /** Permission letters (`rwxXst`), or a class whose current bits are copied. */
  perms: string;
  copyFrom: Who | undefined;
}

interface SymbolicClause {
  /** Empty means all classes (chmod's `a`); tsbuild applies no umask, as BuildKit does. */
  who: Who[];
  actions: SymbolicAction[];
}

/** A parsed `--chmod` value: an octal mode (`0755`) or chmod(1)-style symbolic clauses (`u+x,g-w`). */
export type ModeSpec =
  | { readonly kind: 'octal'; readonly mode: number; readonly text: string }
  | { readonly kind: 'symbolic'; readonly clauses: readonly SymbolicClause[]; readonly text: string };

function invalid(spec: string): never {
  throw new TsbuildError(
    'BAD_CHMOD',
    `invalid --chmod value "${spec}": expected an octal mode up to 07777 or symbolic clauses like u+x,g-w`,
  );
}

export function parseChmod(spec: string): ModeSpec {
  if (/^[0-7]+$/.test(spec)) {
    const mode = parseInt(spec, 8);
    if (mode > 0o7777) invalid(spec);
    return { kind: 'octal', mode, text: spec };
  }
  const clauses: SymbolicClause[] = [];
  for (const part of spec.split(',')) {
    const m = /^([ugoa]*)((?:[-+=](?:[ugo]|[rwxXst]*))+)$/.exec(part);
    if (!m) invalid(spec);
    const whoText = (m as RegExpExecArray)[1] as string;
    const who = new Set<Who>();
    for (const w of whoText) {
      if (w === 'a') ['u', 'g', 'o'].forEach((x) => who.add(x as Who));
      else who.add(w as Who);
    }
    const actions: SymbolicAction[] = [];
    const re = /([-+=])([ugo]|[rwxXst]*)/g;
    for (const a of ((m as RegExpExecArray)[2] as string).matchAll(re)) {
      const perms = a[2] as string;
      const copy = perms === 'u' || perms === 'g' || perms === 'o' ? (perms as Who) : undefined;
      actions.push({ op: a[1] as SymbolicAction['op'], perms: copy ? '' : perms, copyFrom: copy });
    }
    clauses.push({ who: [...who], actions });
  }
  return { kind: 'symbolic', clauses, text: spec };
}

const SHIFT: Record<Who, number> = { u: 6, g: 3, o: 0 };

/**
 * The mode `mode` becomes under `spec`. File-type bits are kept; only the low 12 bits change.
 * `X` adds execute for directories and for files that already have an execute bit.
 */
export function applyChmod(mode: number, spec: ModeSpec, isDir: boolean): number {
  const type = mode & ~0o7777;
  if (spec.kind === 'octal') return type | spec.mode;
  let perm = mode & 0o7777;
  for (const clause of spec.clauses) {
    const who: Who[] = clause.who.length > 0 ? clause.who : ['u', 'g', 'o'];
    for (const action of clause.actions) {
      let bits = 0;
      if (action.copyFrom) {
        const rwx = (perm >> SHIFT[action.copyFrom]) & 7;
        for (const w of who) bits |= rwx << SHIFT[w];
      } else {
        for (const p of action.perms) {
          for (const w of who) {
            if (p === 'r') bits |= 4 << SHIFT[w];
            else if (p === 'w') bits |= 2 << SHIFT[w];
            else if (p === 'x') bits |= 1 << SHIFT[w];
            else if (p === 'X') {
              if (isDir || (perm & 0o111) !== 0) bits |= 1 << SHIFT[w];
            } else if (p === 's') {
              if (w === 'u') bits |= 0o4000;
              if (w === 'g') bits |= 0o2000;
            } else if (p === 't') {
              if (w === 'o') bits |= 0o1000;
            }
          }
        }
      }
      if (action.op === '+') perm |= bits;
      else if (action.op === '-') perm &= ~bits;
      else {
        let clear = 0;
        for (const w of who) {
          clear |= 7 << SHIFT[w];
          if (w === 'u') clear |= 0o4000;
          if (w === 'g') clear |= 0o2000;
          if (w === 'o') clear |= 0o1000;
        }
        // chmod(1) keeps set-id bits of directories under `=` unless named explicitly.
        if (isDir) clear &= ~0o6000 | (bits & 0o6000);
        perm = (perm & ~clear) | bits;
      }
    }
  }
  return type | perm;
}
