import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { DockerfileError } from '@tsbuild/errors';
import { parse } from './parser.ts';
import { dumpAst } from './dump.ts';

/*
 * Hostile-input properties: whatever the text, parse either returns an AST whose ranges stay
 * inside the file or throws a DockerfileError with a range; the dump of any result succeeds.
 */

const vectorsDir = fileURLToPath(
  new URL('../../../../shared/conformance/buildkit/frontend/dockerfile/parser/testfiles/', import.meta.url),
);

const inlineSeeds = [
  'FROM alpine\nRUN <<EOF\necho hi\nEOF\n',
  '# escape=`\nFROM x\nRUN a `\n  b\n',
  'FROM x\nCOPY --from=a --chmod=755 <<-"A" <<B /d/\n\tx\n\tA\ny\nB\n',
  'FROM x\nENV a=1 b="2 3" \\\n  c=\'4\'\nLABEL k v\nARG x y=z\n',
  'FROM x\nHEALTHCHECK --interval=5s CMD ["a", "b"]\nONBUILD RUN echo\nCMD ["x"\n',
];

function seeds(): string[] {
  const out = [...inlineSeeds];
  if (existsSync(vectorsDir)) {
    for (const name of readdirSync(vectorsDir).sort()) {
      const file = `${vectorsDir}${name}/Dockerfile`;
      if (existsSync(file)) out.push(readFileSync(file, 'utf8'));
    }
  }
  return out;
}

const TOKENS = [
  'FROM', 'RUN', 'COPY', 'ADD', 'ENV', 'ARG', 'LABEL', 'CMD', 'ENTRYPOINT', 'ONBUILD', 'HEALTHCHECK',
  'VOLUME', 'EXPOSE', 'SHELL', 'USER', 'WORKDIR', 'MAINTAINER', 'STOPSIGNAL', 'NONE', 'run', 'x', 'a=b',
  ' ', ' ', '\t', '\n', '\n', '\r\n', '\r', '\v', '\f', '\\', '\\\n', '`', '`\n', '"', "'", '[', ']', ',', '[]',
  '["a"]', '[1]', '[[', '{', '}', '${a:-b}', '$', '=', '--', '--x=y', '--m="a b"', '<<', '<<-', '<<EOF',
  "<<'EOF'", '<<"EOF"', 'EOF', 'EOF\n', '\tEOF', '#', '# ', '# escape=`\n', '# escape=\\\n', '#syntax=x\n',
  '# check=skip=all\n', '# escape=q\n', '\uFEFF', '\u00a0', '\u0085', '\u2028', '\u3000', 'é', '☃', '😀',
  '\ud800', '\udc00', '\0', '\u007f', '1e999', '\\\\', '2<<X', 'X',
];

const tokenText = fc.array(fc.constantFrom(...TOKENS), { maxLength: 60 }).map((t) => t.join(''));

type Mutation =
  | { kind: 'insert'; at: number; text: string }
  | { kind: 'delete'; at: number; length: number }
  | { kind: 'duplicate'; at: number; length: number }
  | { kind: 'replace'; at: number; text: string };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), text: fc.constantFrom(...TOKENS) }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), text: fc.string({ maxLength: 4, unit: 'binary' }) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ kind: fc.constant('duplicate' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ kind: fc.constant('replace' as const), at: fc.nat(), text: fc.constantFrom('\\', '`', '"', "'", '\n', '<<E', '[', '#') }),
);

function mutate(text: string, mutations: readonly Mutation[]): string {
  let s = text;
  for (const m of mutations) {
    const at = s.length === 0 ? 0 : m.at % (s.length + 1);
    switch (m.kind) {
      case 'insert':
        s = s.slice(0, at) + m.text + s.slice(at);
        break;
      case 'delete':
        s = s.slice(0, at) + s.slice(at + m.length);
        break;
      case 'duplicate':
        s = s.slice(0, at + m.length) + s.slice(at, at + m.length) + s.slice(at + m.length);
        break;
      case 'replace':
        s = s.slice(0, at) + m.text + s.slice(at + 1);
        break;
    }
  }
  return s;
}

function lineCount(text: string): number {
  const n = text.split('\n').length;
  return text.endsWith('\n') ? n - 1 : n;
}

/** The property itself: a result with sane ranges, or a located DockerfileError. */
function checkParse(text: string): 'parsed' | 'rejected' {
  let result;
  try {
    result = parse(text);
  } catch (err) {
    if (!(err instanceof DockerfileError)) throw err;
    assert.ok(err.range, `DockerfileError without range: ${err.message}`);
    assert.ok(err.range.start.line >= 1 && err.range.start.line <= err.range.end.line);
    return 'rejected';
  }
  const lines = lineCount(text);
  assert.ok(result.ast.children.length > 0);
  let previousEnd = 0;
  for (const child of result.ast.children) {
    const { start, end } = child.range;
    assert.ok(start.line > previousEnd, 'instructions are in order and do not overlap');
    assert.ok(start.line <= end.line && end.line <= lines, `range ${start.line}-${end.line} outside 1-${lines}`);
    assert.ok(start.column >= 1 && end.column >= 1);
    previousEnd = end.line;
  }
  assert.ok(result.escapeToken === '\\' || result.escapeToken === '`');
  assert.equal(typeof dumpAst(result.ast), 'string');
  return 'parsed';
}

test('random token soups parse or fail with DockerfileError', () => {
  const seen = { parsed: 0, rejected: 0 };
  fc.assert(fc.property(tokenText, (text) => { seen[checkParse(text)]++; }), { numRuns: 4000 });
  // both outcomes must be exercised, or the generator is not probing the error paths
  assert.ok(seen.parsed > 0 && seen.rejected > 0, JSON.stringify(seen));
});

test('random strings parse or fail with DockerfileError', () => {
  fc.assert(
    fc.property(fc.oneof(fc.string({ maxLength: 200, unit: 'binary' }), fc.string({ maxLength: 200 })), (text) => {
      checkParse(text);
    }),
    { numRuns: 2000 },
  );
});

test('mutated conformance Dockerfiles parse or fail with DockerfileError', () => {
  const all = seeds();
  const seen = { parsed: 0, rejected: 0 };
  fc.assert(
    fc.property(fc.nat({ max: all.length - 1 }), fc.array(mutation, { minLength: 1, maxLength: 8 }), (i, ms) => {
      seen[checkParse(mutate(all[i] ?? '', ms))]++;
    }),
    { numRuns: 5000 },
  );
  assert.ok(seen.parsed > 0 && seen.rejected > 0, JSON.stringify(seen));
});
