import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DockerfileError } from '@tsbuild/errors';
import { envExpander, expandInstruction } from './expand.ts';
import type { Instruction } from './instructions.ts';
import { parseDockerfile } from './stages.ts';

function first(line: string, escape = '\\'): Instruction {
  const df = parseDockerfile(`# escape=${escape}\nFROM scratch\n${line}\n`);
  const inst = df.stages[0]?.instructions[0];
  assert.ok(inst);
  return inst;
}

const env = new Map([
  ['A', 'one'],
  ['DIR', '/srv/app'],
  ['PORTS', '80 443'],
  ['MODE', '0640'],
  ['STAGE', 'build'],
  ['T', 'cache'],
  ['EMPTY', ''],
]);

test('expandInstruction expands the words BuildKit expands', () => {
  const cases: Array<[string, Record<string, unknown>]> = [
    ['ENV K_$A="$A two" L=${DIR}', { env: [{ key: 'K_one', value: 'one two' }, { key: 'L', value: '/srv/app' }] }],
    ['LABEL "x y"=\'$A\'', { labels: [{ key: 'x y', value: '$A' }] }],
    ['ARG N=${A:-z} M', { args: [{ key: 'N', value: 'one' }, { key: 'M' }] }],
    ['EXPOSE $PORTS 8080', { ports: ['80', '443', '8080'] }],
    ['VOLUME $DIR/data /b', { volumes: ['/srv/app/data', '/b'] }],
    ['VOLUME ["$DIR", "$PORTS"]', { volumes: ['/srv/app', '80 443'] }],
    ['USER ${A}:${A}', { user: 'one:one' }],
    ['WORKDIR $DIR', { path: '/srv/app' }],
    ['STOPSIGNAL SIG$A', { signal: 'SIGone' }],
    [
      'COPY --from=$STAGE --chown=$A --chmod=$MODE --exclude=$A.md $DIR/x y\\$A /$A/',
      { from: 'build', chown: 'one', chmod: '0640', exclude: ['one.md'], sources: ['/srv/app/x', 'y$A'], dest: '/one/' },
    ],
    ['RUN echo $A', { cmd: { form: 'shell', command: 'echo $A' } }],
    ['CMD ["$A"]', { cmd: { form: 'exec', args: ['$A'] } }],
  ];
  for (const [line, want] of cases) {
    const inst = first(line);
    const out = expandInstruction(inst, envExpander(env)) as unknown as Record<string, unknown>;
    for (const [k, v] of Object.entries(want)) assert.deepEqual(out[k], v, `${line}: ${k}`);
    assert.equal(out.kind, inst.kind);
    assert.deepEqual(out.range, inst.range);
  }
});

test('heredoc bodies expand only when the delimiter is unquoted, and keep quotes', () => {
  const inst = first("COPY <<A <<'B' /d/\n\"$A\" '$A'\nA\n$A\nB");
  const out = expandInstruction(inst, envExpander(env));
  assert.ok(out.kind === 'copy');
  assert.deepEqual(out.heredocs.map((h) => h.content), ['"one" \'one\'\n', '$A\n']);
});

test('FROM expands image and platform; RUN mounts are re-validated after expansion', () => {
  const df = parseDockerfile('ARG IMG=alpine\nFROM --platform=$P ${IMG}:3\nRUN --mount=type=$T,target=$DIR,mode=$MODE --mount=type=ssh true\n');
  const stage = df.stages[0];
  assert.ok(stage);
  const from = expandInstruction(stage.from, envExpander(new Map([['IMG', 'busybox'], ['P', 'linux/arm64']])));
  assert.equal(from.image, 'busybox:3');
  assert.equal(from.platform, 'linux/arm64');
  const run = expandInstruction(stage.instructions[0] as Instruction, envExpander(env));
  assert.ok(run.kind === 'run');
  assert.deepEqual(
    run.mounts.map((m) => [m.type, m.target, m.mode, m.id]),
    [
      ['cache', '/srv/app', 0o640, '/srv/app'],
      ['ssh', '/run/buildkit/ssh_agent.0', undefined, 'default'],
    ],
  );
});

test('the escape directive applies to expansion', () => {
  const inst = first('WORKDIR C:\\$A\\`$A', '`');
  const out = expandInstruction(inst, envExpander(env, { escapeToken: '`' }));
  assert.ok(out.kind === 'workdir');
  assert.equal(out.path, 'C:\\one\\$A');
});

test('the expander records which variables an instruction read', () => {
  const ex = envExpander(env);
  expandInstruction(first('COPY --chown=$A $DIR/$MISSING ${OTHER:-x} /d'), ex);
  assert.deepEqual([...ex.matched].sort(), ['A', 'DIR']);
  assert.deepEqual([...ex.unmatched].sort(), ['MISSING', 'OTHER']);
});

test('expansion failures become located DockerfileErrors', () => {
  const cases: Array<[string, RegExp]> = [
    ['WORKDIR ${NOPE?must be set}', /failed to process "\$\{NOPE\?must be set\}": NOPE: must be set/],
    ['ENV X=${A', /missing '}'/],
    ['USER ${EMPTY:?}', /EMPTY: is not allowed to be empty/],
    ['COPY --chmod=$A a b', /invalid --chmod value "one"/],
    ['COPY --chmod=$UNSET a b', /invalid --chmod value ""/],
    ['RUN --mount=type=cache,target=/c,uid=$A true', /invalid value one for uid/],
    ['RUN --mount=type=$A,target=/c true', /unsupported mount type "one"/],
  ];
  for (const [line, re] of cases) {
    const inst = first(line);
    assert.throws(
      () => expandInstruction(inst, envExpander(env), { file: 'Dockerfile.ci' }),
      (e: unknown) => {
        assert.ok(e instanceof DockerfileError, String(e));
        assert.match(e.detail, re, line);
        assert.equal(e.file, 'Dockerfile.ci');
        assert.equal(e.range?.start.line, 3);
        assert.equal(e.excerpt, inst.original);
        return true;
      },
      line,
    );
  }
});
