import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DockerfileError } from '@tsbuild/errors';
import { parse } from './parser.ts';
import { dumpAst } from './dump.ts';

// BuildKit's own parser vectors live in the shared folder beside the repository, not in it.
const root = fileURLToPath(new URL('../../../../shared/conformance/buildkit/frontend/dockerfile/parser/', import.meta.url));
const positiveDir = `${root}testfiles/`;
const negativeDir = `${root}testfiles-negative/`;

function cases(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
}

test('the BuildKit parser vectors are present', () => {
  assert.ok(existsSync(positiveDir), `missing ${positiveDir}`);
  assert.ok(existsSync(negativeDir), `missing ${negativeDir}`);
});

const positives = existsSync(positiveDir) ? cases(positiveDir) : [];
const negatives = existsSync(negativeDir) ? cases(negativeDir) : [];
let positivePassed = 0;
let negativePassed = 0;

describe('testfiles: dump of parse(Dockerfile) equals result', () => {
  for (const name of positives) {
    test(name, () => {
      const text = readFileSync(`${positiveDir}${name}/Dockerfile`, 'utf8');
      const expected = readFileSync(`${positiveDir}${name}/result`, 'utf8');
      assert.equal(dumpAst(parse(text).ast) + '\n', expected);
      positivePassed++;
    });
  }
});

describe('testfiles-negative: rejected with a DockerfileError', () => {
  for (const name of negatives) {
    test(name, () => {
      const text = readFileSync(`${negativeDir}${name}/Dockerfile`, 'utf8');
      assert.throws(() => parse(text), (err: unknown) => {
        assert.ok(err instanceof DockerfileError, `not a DockerfileError: ${String(err)}`);
        assert.ok(err.range, 'error carries a range');
        return true;
      });
      negativePassed++;
    });
  }
});

test('testfile-line: instruction and file ranges', () => {
  const text = readFileSync(`${root}testfile-line/Dockerfile`, 'utf8');
  const { ast } = parse(text);
  assert.deepEqual(
    ast.children.map((c) => [c.range.start.line, c.range.end.line]),
    [[5, 5], [11, 12], [17, 31]],
  );
  assert.equal(ast.range.start.line, 5);
  assert.equal(ast.range.end.line, 31);
});

test('at least the known vectors were found', () => {
  assert.ok(positives.length >= 33, `only ${positives.length} testfiles`);
  assert.ok(negatives.length >= 4, `only ${negatives.length} negative cases`);
});

after(() => {
  console.log(
    `parser conformance: ${positivePassed}/${positives.length} testfiles, ${negativePassed}/${negatives.length} negative`,
  );
});
