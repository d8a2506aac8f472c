import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DockerfileError } from '@tsbuild/errors';
import { parse } from './parser.ts';
import { dumpAst } from './dump.ts';

function dump(text: string): string {
  return dumpAst(parse(text).ast);
}

function parseError(text: string): DockerfileError {
  try {
    parse(text);
  } catch (err) {
    assert.ok(err instanceof DockerfileError, `expected DockerfileError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected parse to fail');
}

test('keywords are case-insensitive and stored lower-case', () => {
  const { ast } = parse('from alpine\nRuN echo hi\n');
  assert.deepEqual(ast.children.map((c) => c.value), ['from', 'run']);
  assert.equal(dump('FrOm alpine'), '(from "alpine")');
});

test('escape directive switches the continuation and escape token', () => {
  const r = parse('# escape=`\nFROM x\nRUN dir c:\\ `\n  && echo ok\n');
  assert.equal(r.escapeToken, '`');
  assert.equal(r.directives['escape'], '`');
  assert.equal(dumpAst(r.ast), '(from "x")\n(run "dir c:\\\\   && echo ok")');
});

test('syntax and check directives are recorded, lower-cased keys', () => {
  const r = parse('# SYNTAX = docker/dockerfile:1\n#check=skip=all\nFROM x\n');
  assert.deepEqual(r.directives, { syntax: 'docker/dockerfile:1', check: 'skip=all' });
  assert.deepEqual(r.ast.children[0]?.prevComment, []);
});

test('directives after a comment, blank line or instruction are plain comments', () => {
  assert.equal(parse('# hello\n# escape=`\nFROM x\n').escapeToken, '\\');
  assert.equal(parse('\n# escape=`\nFROM x\n').escapeToken, '\\');
  const r = parse('FROM x\n# escape=`\nRUN a \\\n b\n');
  assert.equal(r.escapeToken, '\\');
  assert.equal(dumpAst(r.ast), '(from "x")\n(run "a  b")');
  // an unknown directive name ends the directive block
  assert.equal(parse('# foo=bar\n# escape=`\nFROM x\n').escapeToken, '\\');
});

test('a repeated or invalid directive is a DockerfileError on its line', () => {
  const dup = parseError('# escape=`\n# escape=\\\nFROM x\n');
  assert.match(dup.message, /only one escape parser directive/);
  assert.equal(dup.range?.start.line, 2);
  const bad = parseError('# escape=x\nFROM x\n');
  assert.match(bad.message, /invalid escape token 'x'/);
  assert.equal(bad.range?.start.line, 1);
});

test('comments and blank lines inside a continuation are skipped; blank ones warn', () => {
  const r = parse('FROM x\nRUN a \\\n# note\n  b \\\n\n  c\n');
  assert.equal(dumpAst(r.ast), '(from "x")\n(run "a   b   c")');
  assert.equal(r.warnings.length, 1);
  assert.equal(r.warnings[0]?.rule, 'NoEmptyContinuation');
  assert.match(r.warnings[0]?.message ?? '', /Empty continuation line found in: RUN a/);
  assert.equal(r.warnings[0]?.range.start.line, 6);
  assert.equal(parse('FROM x\nRUN a \\\n# only a comment\n  b\n').warnings.length, 0);
});

test('an escaped escape token at the end of a line is not a continuation', () => {
  assert.equal(dump('FROM x\nENV C a\\\\\nENV D b\n'), '(from "x")\n(env "C" "a\\\\\\\\" "")\n(env "D" "b" "")');
});

test('CRLF line endings and a byte-order mark are accepted', () => {
  assert.equal(dump('\uFEFFFROM x\r\nRUN a \\\r\n b\r\n'), '(from "x")\n(run "a  b")');
});

test('exec form, and the shell-form fallback for invalid JSON', () => {
  const exec = parse('CMD ["a", "b c"]').ast.children[0];
  assert.equal(exec?.attributes.json, true);
  assert.equal(exec?.next?.value, 'a');
  assert.equal(exec?.next?.next?.value, 'b c');
  const shell = parse("CMD ['a']").ast.children[0];
  assert.equal(shell?.attributes.json, undefined);
  assert.equal(shell?.next?.value, "['a']");
  assert.equal(dump('ENTRYPOINT ["a", "b"] trailing'), '(entrypoint "[\\"a\\", \\"b\\"] trailing")');
  assert.equal(dump('VOLUME [oops /data'), '(volume "[oops" "/data")');
});

test('JSON that is an array of non-strings is an error, not a fallback', () => {
  const err = parseError('FROM x\n\nRUN ["a", 1]\n');
  assert.match(err.message, /arrays must be comprised of strings only/);
  assert.equal(err.range?.start.line, 3);
  assert.equal(err.excerpt, 'RUN ["a", 1]');
  // numbers that do not fit a float64 make encoding/json fail, so BuildKit falls back to shell form
  assert.equal(dump('CMD [1e999]'), '(cmd "[1e999]")');
});

test('flags are extracted into node.flags, `--` ends them', () => {
  const n = parse('COPY --from=build --chmod=755 -- --weird /dst').ast.children[0];
  assert.deepEqual(n?.flags, ['--from=build', '--chmod=755']);
  assert.equal(dumpAst({ children: n ? [n] : [], range: n!.range }), '(copy ["--from=build" "--chmod=755"] "--weird" "/dst")');
  assert.deepEqual(parse('RUN --mount="type=cache,target=/a b" --network=none make').ast.children[0]?.flags, [
    '--mount=type=cache,target=/a b',
    '--network=none',
  ]);
  assert.deepEqual(parse('RUN -x').ast.children[0]?.flags, []);
});

test('ENV, LABEL and ARG argument forms', () => {
  assert.equal(dump('ENV a b c'), '(env "a" "b c" "")');
  assert.equal(dump('ENV a=1 b="x y"'), '(env "a" "1" "=" "b" "\\"x y\\"" "=")');
  assert.equal(dump('LABEL "k"=v'), '(label "\\"k\\"" "v" "=")');
  assert.equal(dump('ARG a b=2'), '(arg "a" "b=2")');
  assert.equal(dump('ARG'), '(arg)');
  assert.match(parseError('FROM x\nENV PATH\n').message, /ENV must have two arguments/);
  assert.match(parseError('FROM x\nLABEL a=1 b\n').message, /can't find = in "b"/);
});

test('HEALTHCHECK and ONBUILD sub-commands', () => {
  assert.equal(dump('HEALTHCHECK NONE'), '(healthcheck "NONE")');
  assert.equal(dump('HEALTHCHECK --retries=2 CMD ["x", "y"]'), '(healthcheck ["--retries=2"] "CMD" "x" "y")');
  const onbuild = parse('ONBUILD RUN --mount=type=tmpfs,target=/t make').ast.children[0];
  const trigger = onbuild?.next?.children[0];
  assert.equal(trigger?.value, 'run');
  assert.deepEqual(trigger?.flags, ['--mount=type=tmpfs,target=/t']);
  assert.equal(dump('onbuild add . /'), '(onbuild (add "." "/"))');
});

test('unknown instructions parse; the instruction layer rejects them', () => {
  assert.equal(dump('FROM x\nFOO bar'), '(from "x")\n(foo "")');
});

test('heredocs: plain, <<- with tab stripping, quoted, several on one line', () => {
  const r = parse('FROM x\nRUN <<EOF\necho $A\n  indented\nEOF\nCOPY <<-"A" <<B /dst/\n\tone\n\t\ttwo\n\tA\nthree\nB\nRUN echo done\n');
  const [, run, copy, last] = r.ast.children;
  assert.deepEqual(run?.heredocs, [{ name: 'EOF', content: 'echo $A\n  indented\n', expand: true, chomp: false }]);
  assert.equal(run?.next?.value, '<<EOF');
  assert.deepEqual(copy?.heredocs, [
    { name: 'A', content: 'one\ntwo\n', expand: false, chomp: true },
    { name: 'B', content: 'three\n', expand: true, chomp: false },
  ]);
  assert.deepEqual(run?.range, { start: { line: 2, column: 1 }, end: { line: 5, column: 4 } });
  assert.equal(copy?.range.start.line, 6);
  assert.equal(copy?.range.end.line, 11);
  assert.equal(last?.range.start.line, 12);
  assert.equal(parse("RUN cat <<'X'\n$y\nX\n").ast.children[0]?.heredocs[0]?.expand, false);
  assert.equal(parse('RUN 3<<X cat\nhi\nX\n').ast.children[0]?.heredocs[0]?.content, 'hi\n');
  assert.equal(parse('RUN <<-X\r\n\ta\r\tb\r\n\tX\r\n').ast.children[0]?.heredocs[0]?.content, 'a\r\tb\r\n');
});

test('heredoc delimiter quoting follows BuildKit: any quoted part disables expansion', () => {
  const text = [
    'FROM x',
    "RUN <<ab'c'", 'body', 'abc',
    "RUN <<ab\\'c", 'body', "ab'c",
    "RUN <<'a'b\\'c", 'body', "ab'c",
    "RUN <<'two words'", 'body', 'two words',
    'RUN <<$VAR', '$VAR',
    'COPY <<X <<Y /d', 'Y', 'X', 'X', 'Y',
    'RUN <<C', '# not a comment here', 'C',
    'USER <<NOPE',
    'NOPE',
    '',
  ].join('\n');
  const docs = parse(text).ast.children.map((c) => c.heredocs.map((h) => [h.name, h.content, h.expand]));
  assert.deepEqual(docs, [
    [],
    [['abc', 'body\n', false]],
    [["ab'c", 'body\n', true]],
    [["ab'c", 'body\n', false]],
    [['two words', 'body\n', false]],
    [['$VAR', '', true]],
    [['X', 'Y\n', true], ['Y', 'X\n', true]],
    [['C', '# not a comment here\n', true]],
    [],
    [],
  ]);
  assert.equal(parse(text).ast.children[9]?.value, 'nope');
});

test('heredocs only for RUN, COPY and ADD shell form (and ONBUILD of those)', () => {
  assert.deepEqual(parse('CMD <<EOF\nFROM y\n').ast.children.map((c) => c.value), ['cmd', 'from']);
  assert.deepEqual(parse('RUN ["<<EOF"]\nFROM y\n').ast.children.map((c) => c.value), ['run', 'from']);
  const ob = parse('ONBUILD RUN <<EOF\nhi\nEOF\n').ast.children[0];
  assert.equal(ob?.heredocs[0]?.content, 'hi\n');
  // an open quote on the line means no heredoc is recognised
  assert.deepEqual(parse('RUN echo "<<EOF\nFROM y\n').ast.children.map((c) => c.value), ['run', 'from']);
});

test('an unterminated heredoc is a DockerfileError spanning the instruction', () => {
  const err = parseError('FROM x\nRUN <<EOF\necho\n');
  assert.match(err.message, /unterminated heredoc/);
  assert.equal(err.range?.start.line, 2);
  assert.equal(err.range?.end.line, 3);
});

test('empty input and comment-only input are rejected', () => {
  assert.match(parseError('').message, /file with no instructions/);
  assert.match(parseError('# a\n\n   \n# b\n').message, /file with no instructions/);
  // like BuildKit, a lone continuation yields an empty instruction for the instruction layer to refuse
  assert.equal(dump('\\\n'), '("")');
});

test('prevComment holds the comments directly above an instruction', () => {
  const r = parse('FROM x\n# first\n# second\nRUN a\n#\n# third\nRUN b\n');
  assert.deepEqual(r.ast.children[1]?.prevComment, ['first', 'second']);
  assert.deepEqual(r.ast.children[2]?.prevComment, ['third']);
});

test('original is the joined logical line; ranges span continuations', () => {
  const r = parse('FROM x\n\n  RUN a \\\n    b\n');
  const run = r.ast.children[1];
  assert.equal(run?.original, 'RUN a     b');
  assert.deepEqual(run?.range, { start: { line: 3, column: 3 }, end: { line: 4, column: 6 } });
  assert.deepEqual(r.ast.range, { start: { line: 1, column: 1 }, end: { line: 4, column: 6 } });
});

test('deeply nested ONBUILD is refused instead of exhausting the stack', () => {
  assert.match(parseError('ONBUILD '.repeat(10000) + 'RUN x').message, /nested too deeply/);
  assert.equal(dump('ONBUILD ONBUILD RUN x'), '(onbuild (onbuild (run "x")))');
});

test('dump quotes like Go strconv.Quote', () => {
  assert.equal(dump('RUN ["\\u0001", "\\u00a0", "é", "\\ud83d\\ude00", "\\u007f"]'), '(run "\\x01" "\\u00a0" "é" "😀" "\\x7f")');
});
