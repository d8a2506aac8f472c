import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { TsbuildError } from '@tsbuild/errors';
import {
  ShellError,
  compileShellPattern,
  lookupEnv,
  processWord,
  processWordWithMatches,
  processWords,
} from './shell.ts';

const shellDir = fileURLToPath(
  new URL('../../../../shared/conformance/buildkit/frontend/dockerfile/shell/', import.meta.url),
);

function outcome(fn: () => unknown): unknown {
  try {
    return fn();
  } catch (e) {
    if (!(e instanceof ShellError)) throw e;
    return 'error';
  }
}

test('conformance: BuildKit envVarTest and wordsTest', () => {
  const env = new Map([
    ['PWD', '/home'],
    ['SHELL', 'bash'],
    ['KOREAN', '한국어'],
    ['NULL', ''],
  ]);
  let envPass = 0;
  let envTotal = 0;
  const failures: string[] = [];
  for (const line of readFileSync(shellDir + 'envVarTest', 'utf8').split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    const parts = line.split('|');
    assert.equal(parts.length, 3, `malformed line ${line}`);
    const [platform, word, expected] = parts.map((p) => p.trim()) as [string, string, string];
    if (platform !== 'A' && platform !== 'U') continue;
    envTotal++;
    const got = outcome(() => processWord(word, env));
    if (got === expected) envPass++;
    else failures.push(`envVarTest ${JSON.stringify(word)}: want ${JSON.stringify(expected)}, got ${JSON.stringify(got)}`);
  }

  const wordsEnv = new Map<string, string>();
  let wordsPass = 0;
  let wordsTotal = 0;
  for (const line of readFileSync(shellDir + 'wordsTest', 'utf8').split('\n')) {
    if (line.trim() === '' || line.startsWith('#')) continue;
    if (line.startsWith('ENV ')) {
      const body = line.slice(4);
      const eq = body.indexOf('=');
      wordsEnv.set(body.slice(0, eq), body.slice(eq + 1));
      continue;
    }
    const parts = line.split('|');
    assert.equal(parts.length, 2, `malformed line ${line}`);
    const word = (parts[0] as string).trim();
    const expectedText = (parts[1] as string).replace(/^ +/, '');
    wordsTotal++;
    const got = outcome(() => processWords(word, wordsEnv));
    const ok = expectedText === 'error' ? got === 'error' : JSON.stringify(got) === JSON.stringify(expectedText.split(','));
    if (ok) wordsPass++;
    else failures.push(`wordsTest ${JSON.stringify(word)}: want ${JSON.stringify(expectedText)}, got ${JSON.stringify(got)}`);
  }
  console.log(`shell conformance: envVarTest ${envPass}/${envTotal}, wordsTest ${wordsPass}/${wordsTotal}`);
  assert.deepEqual(failures, []);
  assert.ok(envTotal >= 200 && wordsTotal >= 20, 'conformance files were read');
});

test('pattern operators use shell globs', () => {
  const env = { a: '/usr/local/bin/app', f: 'main.c', m: 'abc1d2', s: 'a*b*c', k: '한국어한국어', e: '' };
  const cases: Array<[string, string]> = [
    ['${a#*/}', 'usr/local/bin/app'],
    ['${a##*/}', 'app'],
    ['${a%/*}', '/usr/local/bin'],
    ['${a%%/*}', ''],
    ['${a#/usr}', '/local/bin/app'],
    ['${a#nomatch}', '/usr/local/bin/app'],
    ['${a/local/opt}', '/usr/opt/bin/app'],
    ['${a//\\//:}', ':usr:local:bin:app'],
    ['${a/\\//}', 'usr/local/bin/app'],
    ['${a/*/x}', 'x'],
    ['${f%.[ch]}', 'main'],
    ['${f%.[!c]}', 'main.c'],
    ['${m/[0-9]/X}', 'abcXd2'],
    ['${m//[0-9]/X}', 'abcXdX'],
    ['${m//[!a-z]/}', 'abcd'],
    ['${m//?/x}', 'xxxxxx'],
    ["${s#'a*'}", 'b*c'],
    ['${s#a\\*}', 'b*c'],
    ['${s%"*c"}', 'a*b'],
    ['${s//\\*/-}', 'a-b-c'],
    ['${k%어*}', '한국어한국'],
    ['${k%%어*}', '한국'],
    ['${k/국/-}', '한-어한국어'],
    ['${e/x/y}', ''],
    ['${e//*/y}', 'y'],
    ['${unset//*/y}', ''],
    ['${f//$e/y}', 'main.c'],
    ['${unset#x}', ''],
    ['${a/[/x}', '/usr/local/bin/app'],
    ['${f#[}', 'main.c'],
  ];
  for (const [word, want] of cases) assert.equal(processWord(word, env), want, word);
});

test('glob compilation never lets text act as regex syntax', () => {
  assert.ok(compileShellPattern('a.b').test('a.b'));
  assert.ok(!compileShellPattern('a.b').test('axb'));
  assert.ok(compileShellPattern('(x)+').test('(x)+'));
  assert.ok(compileShellPattern('[]a]').test(']'));
  assert.ok(compileShellPattern('[a-c]?').test('bz'));
  assert.ok(!compileShellPattern('[^a-c]').test('b'));
  assert.ok(compileShellPattern('\\*').test('*'));
  assert.ok(!compileShellPattern('\\*').test('x'));
});

test('escape token, quoting and word splitting', () => {
  const env = { A: '1', SP: 'x  y', WIN: 'C:\\dir' };
  const bt = { escapeToken: '`' };
  assert.equal(processWord('a`$A', env, bt), 'a$A');
  assert.equal(processWord('C:\\path\\$A', env, bt), 'C:\\path\\1');
  assert.equal(processWord('"q`"x"', env, bt), 'q"x');
  assert.equal(processWord('"q\\"', env, bt), 'q\\');
  assert.equal(processWord('$WIN', env), 'C:\\dir');
  assert.deepEqual(processWords('$SP "$SP" \'$SP\'', env), ['x', 'y', 'x  y', '$SP']);
  assert.deepEqual(processWords('a\\ b c', env), ['a b', 'c']);
  assert.deepEqual(processWords('  ', env), []);
  assert.equal(processWord('echo "$A" \'$A\'', env, { skipQuotes: true }), 'echo "1" \'1\'');
});

test('unset variables can be kept verbatim', () => {
  const env = { A: '1' };
  const opts = { skipUnset: true };
  const cases: Array<[string, string]> = [
    ['$X-$A', '$X-1'],
    ['${X}', '${X}'],
    ['${X:-d}', '${X:-d}'],
    ['${X#p}', '${X#p}'],
    ['${X//a/b}', '${X//a/b}'],
    ['${A:-d}', '1'],
  ];
  for (const [word, want] of cases) assert.equal(processWord(word, env, opts), want, word);
});

test('matched and unmatched variables are reported', () => {
  const r = processWordWithMatches('${A}-$B-${C:-x}-${D:+y}-"$E"', new Map([['A', '1'], ['D', '']]));
  assert.equal(r.result, '1--x--');
  assert.deepEqual([...r.matched].sort(), ['A', 'D']);
  assert.deepEqual([...r.unmatched].sort(), ['B', 'C', 'E']);
  const none = processWordWithMatches("'$A' \\$B", { A: '1' });
  assert.equal(none.matched.size + none.unmatched.size, 0);
});

test('errors are ShellErrors naming the word and the reason', () => {
  const cases: Array<[string, RegExp]> = [
    ['${X?}', /X: is not allowed to be unset/],
    ['${X?custom message}', /X: custom message/],
    ['${E:?}', /E: is not allowed to be empty/],
    ['${E:?must be set}', /E: must be set/],
    ['${X', /missing '}'/],
    ['${X:-a', /missing '}'/],
    ['${X/a', /missing '\/' in \$\{\}/],
    ['${X/a/b', /missing '}'/],
    ['${X/}', /missing '\/' in \$\{\}/],
    ['${}', /bad substitution/],
    ['${X:#a}', /unsupported modifier \(:#\)/],
    ['${X:=a}', /unsupported modifier \(:=\)/],
    ['${X^^}', /unsupported modifier \(\^\)/],
    ["'open", /single-quote/],
    ['"open', /double-quote/],
  ];
  for (const [word, re] of cases) {
    assert.throws(
      () => processWord(word, { E: '' }),
      (e: unknown) => {
        assert.ok(e instanceof ShellError, word);
        assert.ok(e instanceof TsbuildError);
        assert.equal(e.word, word);
        assert.match(e.message, re, word);
        assert.ok(e.message.includes(JSON.stringify(word)), e.message);
        return true;
      },
    );
  }
});

test('plain-object environments ignore the prototype', () => {
  assert.equal(lookupEnv({}, 'constructor'), undefined);
  assert.equal(processWord('[$constructor][${toString}]', {}), '[][]');
  assert.equal(lookupEnv(new Map([['a', 'b']]), 'a'), 'b');
});
