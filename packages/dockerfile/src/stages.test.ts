import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DockerfileError } from '@tsbuild/errors';
import { parse } from './parser.ts';
import { parseDockerfile, stagesFromAst } from './stages.ts';

const multi = `# syntax=docker/dockerfile:1
ARG BASE=alpine
ARG VERSION
FROM --platform=$BUILDPLATFORM golang:1.22 AS Build
WORKDIR /src
RUN go build -o /out/app
CMD ["a"]
CMD ["b"]

FROM $BASE:\${VERSION:-3.20}
COPY --from=build /out/app /app
ENTRYPOINT ["/app"]
`;

test('stages group instructions under their FROM', () => {
  const df = parseDockerfile(multi);
  assert.equal(df.escapeToken, '\\');
  assert.equal(df.directives.syntax, 'docker/dockerfile:1');
  assert.deepEqual(
    df.globalArgs.map((a) => a.args),
    [[{ key: 'BASE', value: 'alpine' }], [{ key: 'VERSION' }]],
  );
  assert.equal(df.stages.length, 2);
  const [build, final] = df.stages;
  assert.ok(build && final);
  assert.equal(build.name, 'build');
  assert.equal(build.index, 0);
  assert.equal(build.from.image, 'golang:1.22');
  assert.equal(build.from.platform, '$BUILDPLATFORM');
  assert.deepEqual(build.instructions.map((i) => i.kind), ['workdir', 'run', 'cmd', 'cmd']);
  assert.deepEqual(build.range, { start: { line: 4, column: 1 }, end: build.instructions[3]?.range.end });
  assert.equal(final.name, undefined);
  assert.equal(final.index, 1);
  assert.equal(final.from.image, '$BASE:${VERSION:-3.20}');
  assert.deepEqual(final.instructions.map((i) => i.kind), ['copy', 'entrypoint']);
  const rules = df.warnings.map((w) => `${w.rule}@${w.range.start.line}`);
  assert.ok(rules.includes('StageNameCasing@4'), rules.join());
  assert.ok(rules.includes('FromAsCasing@4') === false, rules.join());
  assert.ok(rules.includes('MultipleInstructionsDisallowed@7'), rules.join());
  assert.ok(!rules.includes('MultipleInstructionsDisallowed@8'), rules.join());
});

test('style warnings', () => {
  const df = parseDockerfile('FROM a as b\nMAINTAINER me\nENV K V\nCMD run\n');
  assert.deepEqual(
    df.warnings.map((w) => `${w.rule}@${w.range.start.line}`).sort(),
    ['FromAsCasing@1', 'JSONArgsRecommended@4', 'LegacyKeyValueFormat@3', 'MaintainerDeprecated@2'],
  );
});

test('the escape directive is reported', () => {
  const df = parseDockerfile('# escape=`\nFROM a\nRUN dir c:\\ `\n  /w\n');
  assert.equal(df.escapeToken, '`');
  assert.equal(df.stages[0]?.instructions.length, 1);
});

test('stagesFromAst reuses a parsed AST', () => {
  const text = 'FROM a AS x\nRUN true\n';
  const df = stagesFromAst(parse(text), { file: 'F', text });
  assert.equal(df.stages[0]?.name, 'x');
  assert.throws(() => stagesFromAst(parse('RUN x\n'), { file: 'G' }), (e: unknown) => e instanceof DockerfileError && e.file === 'G' && e.excerpt === 'RUN x');
});

test('Dockerfile-level errors name file, line and column with an excerpt', () => {
  const cases: Array<[string, RegExp, number, string]> = [
    ['', /file with no instructions|no instructions/, 1, ''],
    ['# only a comment\n', /file with no instructions|no instructions/, 1, '# only a comment'],
    ['ARG A=1\nARG B\n', /no FROM instruction: the Dockerfile defines no build stage/, 2, 'ARG B'],
    ['ARG A\nRUN echo\nFROM x\n', /no FROM before RUN/, 2, 'RUN echo'],
    ['COPY a b\n', /no FROM before COPY/, 1, 'COPY a b'],
    ['FROM a AS x\nFROM b AS y\nFROM c AS X\n', /duplicate stage name "x" \(first defined on line 1\)/, 3, 'FROM c AS X'],
    ['FROM a\nFROM b AS -x\n', /invalid name for build stage: "-x"/, 2, 'FROM b AS -x'],
    ['FROM a\nRUN ok\nBOGUS thing\n', /unknown instruction: BOGUS/, 3, 'BOGUS thing'],
    ['FROM a\nRUN --mount=type=cache \\\n  make\n', /mount type cache requires a target/, 2, 'RUN --mount=type=cache \\'],
  ];
  for (const [text, re, line, excerpt] of cases) {
    assert.throws(
      () => parseDockerfile(text, { file: 'app/Containerfile' }),
      (e: unknown) => {
        assert.ok(e instanceof DockerfileError, String(e));
        assert.match(e.detail, re, text);
        assert.equal(e.file, 'app/Containerfile');
        assert.equal(e.range?.start.line, line, text);
        assert.ok(e.message.startsWith(`app/Containerfile:${line}:1: `), e.message);
        assert.equal(e.excerpt?.split('\n')[0] ?? '', excerpt, text);
        return true;
      },
      text,
    );
  }
});

test('BuildKit parser vectors convert, except those its instruction layer also rejects', () => {
  const dir = fileURLToPath(new URL('../../../../shared/conformance/buildkit/frontend/dockerfile/parser/testfiles/', import.meta.url));
  // flags: COPY --user; health: bare HEALTHCHECK; jeztah-*/json: CMD before any FROM.
  const rejected = /^(flags|health|json|jeztah-.*)$/;
  let converted = 0;
  const cases = readdirSync(dir).sort();
  for (const name of cases) {
    const text = readFileSync(`${dir}${name}/Dockerfile`, 'utf8');
    let error: unknown;
    try {
      const df = parseDockerfile(text, { file: name });
      assert.ok(df.stages.length > 0, name);
      converted++;
    } catch (e) {
      error = e;
    }
    if (rejected.test(name)) {
      assert.ok(error instanceof DockerfileError && error.range !== undefined && error.file === name, `${name}: ${String(error)}`);
    } else {
      assert.equal(error, undefined, name);
    }
  }
  console.log(`instruction conversion of parser vectors: ${converted}/${cases.length} convert, the rest fail as in BuildKit`);
  assert.ok(cases.length >= 30);
});
