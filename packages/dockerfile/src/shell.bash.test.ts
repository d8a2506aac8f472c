import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { processWord } from './shell.ts';

/*
 * Differential test against bash: random words built only from constructs where BuildKit's
 * lexer and a POSIX shell agree (quotes, escapes, `${v:-w}` and friends, glob patterns in
 * `#`, `%`, `/`) must expand identically. bash evaluates each word as an assignment value, so it
 * performs no field splitting or pathname expansion, like processWord.
 */

const ENV: Record<string, string> = { A: 'a/b.c/d.e', E: '', S: 'x*y?z [q]', K: '한국어/x.y' };
const NAMES = ['A', 'E', 'U', 'S', 'K'];

/** Deterministic PRNG (mulberry32) so every run checks the same words. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Ctx = 'top' | 'dq';

function generator(seed: number) {
  const r = rng(seed);
  const int = (n: number): number => Math.floor(r() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)] as T;
  const chars = (set: string, max: number): string => {
    let s = '';
    const n = int(max + 1);
    for (let i = 0; i < n; i++) s += pick(Array.from(set));
    return s;
  };

  const pattern = (ctx: Ctx, slash: boolean, depth: number): string => {
    let s = '';
    const n = 1 + int(3);
    for (let i = 0; i < n; i++) {
      // No non-ASCII letters right after a `$NAME`: BuildKit (Go's unicode.IsLetter) reads them
      // as part of the name, bash does not.
      const plain = slash ? 'abxyz.*?' : 'abxyz./*?';
      // Never empty: `${v//x}` would read as the replace-all operator, and BuildKit (unlike bash)
      // requires the `/replacement` part.
      const choices: Array<() => string> = [() => pick(Array.from(plain)) + chars(plain, 2), () => pick(['[a-c]', '[!a]', '[.]', '[*?]', '[한a]', '[!한]'])];
      if (ctx === 'top') choices.push(() => pick(['\\*', '\\?', "'*'", '"?"', "'.'"]));
      if (depth < 2) choices.push(() => variable(ctx, depth + 1));
      s += pick(choices)();
    }
    return s;
  };

  const argument = (ctx: Ctx, depth: number): string => {
    let s = '';
    const n = int(3);
    for (let i = 0; i < n; i++) {
      const choices: Array<() => string> = [() => chars('abz./:-', 3)];
      if (ctx === 'top') {
        choices.push(() => `\\${pick(['$', '}', '"', "'", 'a'])}`);
        choices.push(() => `'${chars('ab $"{}', 3)}'`);
        choices.push(() => `"${chars("ab '{}", 3)}"`);
      }
      if (depth < 2) choices.push(() => variable(ctx, depth + 1));
      s += pick(choices)();
    }
    return s;
  };

  const variable = (ctx: Ctx, depth: number): string => {
    const name = pick(NAMES);
    switch (int(6)) {
      case 0:
        return `$${name}`;
      case 1:
        return `\${${name}}`;
      case 2:
      case 3:
        return `\${${name}${pick([':-', '-', ':+', '+'])}${argument(ctx, depth)}}`;
      case 4:
        return `\${${name}${pick(['#', '##', '%', '%%'])}${pattern(ctx, false, depth)}}`;
      default:
        return `\${${name}${pick(['/', '//'])}${pattern(ctx, true, depth)}/${chars('abz.', 3)}}`;
    }
  };

  const doubleQuoted = (): string => {
    let s = '"';
    const n = int(4);
    for (let i = 0; i < n; i++) {
      s += pick<() => string>([
        () => chars("ab '*?{}/", 3),
        () => pick(['\\$', '\\"', '\\\\', '\\a']),
        () => variable('dq', 0),
      ])();
    }
    return `${s}"`;
  };

  return (): string => {
    let s = '';
    const n = 1 + int(4);
    for (let i = 0; i < n; i++) {
      s += pick<() => string>([
        () => chars('abc019/._:=@*?', 4),
        () => `\\${pick(Array.from(' $"\'\\*?ab{}'))}`,
        () => `'${chars('ab $"\\*?{}', 4)}'`,
        doubleQuoted,
        () => variable('top', 0),
        () => variable('top', 0),
      ])();
    }
    return s;
  };
}

function bashExpand(words: string[]): Array<string | undefined> {
  const setup = Object.entries(ENV)
    .map(([k, v]) => `${k}='${v}'`)
    .join('; ');
  // Each word is read NUL-terminated and evaluated as the value of an assignment.
  const script = `${setup}; unset U
while IFS= read -r -d '' w; do
  if (eval "x=$w") 2>/dev/null; then eval "x=$w"; printf 'ok:%s\\0' "$x"; else printf 'err\\0'; fi
done`;
  const res = spawnSync('bash', ['--norc', '--noprofile', '-c', script], {
    input: words.map((w) => `${w}\0`).join(''),
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C.UTF-8' },
    encoding: 'utf8',
  });
  assert.equal(res.status, 0, res.stderr);
  const out = res.stdout.split('\0').slice(0, -1);
  assert.equal(out.length, words.length);
  return out.map((o) => (o.startsWith('ok:') ? o.slice(3) : undefined));
}

test('processWord agrees with bash on quoting, defaults and glob patterns', () => {
  const next = generator(20261125);
  const words = Array.from({ length: 600 }, next);
  const expected = bashExpand(words);
  const mismatches: string[] = [];
  let compared = 0;
  words.forEach((word, i) => {
    const want = expected[i];
    let got: string | undefined;
    try {
      got = processWord(word, ENV);
    } catch {
      got = undefined;
    }
    compared++;
    if (got !== want) mismatches.push(`${word}  bash=${JSON.stringify(want)} tsbuild=${JSON.stringify(got)}`);
  });
  console.log(`shell vs bash: ${compared - mismatches.length}/${compared} words agree`);
  assert.deepEqual(mismatches, []);
});
