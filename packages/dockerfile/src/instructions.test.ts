import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DockerfileError } from '@tsbuild/errors';
import type { Node } from './ast.ts';
import { parseInstruction } from './instructions.ts';
import type { Instruction } from './instructions.ts';
import { parseDockerfile } from './stages.ts';

/** The first instruction after a FROM line, parsed through the real parser. */
function one(line: string): Instruction {
  const df = parseDockerfile(`FROM scratch\n${line}\n`);
  const inst = df.stages[0]?.instructions[0];
  assert.ok(inst, line);
  return inst;
}

function pick(inst: Instruction, keys: string[]): Record<string, unknown> {
  const rec = inst as unknown as Record<string, unknown>;
  return Object.fromEntries(keys.map((k) => [k, rec[k]]));
}

test('instructions convert to typed values, keeping raw words', () => {
  const cases: Array<[string, Record<string, unknown>]> = [
    ['RUN echo "$HOME" \\\n  && true', { kind: 'run', cmd: { form: 'shell', command: 'echo "$HOME"   && true' }, mounts: [], heredocs: [] }],
    ['RUN ["sh", "-c", "x"]', { kind: 'run', cmd: { form: 'exec', args: ['sh', '-c', 'x'] } }],
    ['RUN --network=none --security=insecure make', { network: 'none', security: 'insecure' }],
    ['RUN --network=host x', { network: 'host', security: undefined }],
    ['CMD ["a", "b"]', { kind: 'cmd', cmd: { form: 'exec', args: ['a', 'b'] } }],
    ['CMD []', { kind: 'cmd', cmd: { form: 'exec', args: [] } }],
    ['CMD run $X', { kind: 'cmd', cmd: { form: 'shell', command: 'run $X' } }],
    ['ENTRYPOINT ["/bin/app"]', { kind: 'entrypoint', cmd: { form: 'exec', args: ['/bin/app'] } }],
    ['ENTRYPOINT exec app', { kind: 'entrypoint', cmd: { form: 'shell', command: 'exec app' } }],
    ['ENV A=1 B="two words" C=$A', { kind: 'env', env: [{ key: 'A', value: '1' }, { key: 'B', value: '"two words"' }, { key: 'C', value: '$A' }] }],
    ['ENV A legacy value', { env: [{ key: 'A', value: 'legacy value' }] }],
    ['LABEL a=b "c d"=e', { kind: 'label', labels: [{ key: 'a', value: 'b' }, { key: '"c d"', value: 'e' }] }],
    ['MAINTAINER Jane <j@example.com>', { kind: 'maintainer', maintainer: 'Jane <j@example.com>' }],
    ['EXPOSE 80/tcp 443 $PORT', { kind: 'expose', ports: ['80/tcp', '443', '$PORT'] }],
    ['VOLUME /a /b', { kind: 'volume', volumes: ['/a', '/b'] }],
    ['VOLUME ["/data"]', { kind: 'volume', volumes: ['/data'] }],
    ['USER app:app', { kind: 'user', user: 'app:app' }],
    ['WORKDIR $HOME/src', { kind: 'workdir', path: '$HOME/src' }],
    ['STOPSIGNAL SIGTERM', { kind: 'stopsignal', signal: 'SIGTERM' }],
    ['ARG A B=2 C=', { kind: 'arg', args: [{ key: 'A' }, { key: 'B', value: '2' }, { key: 'C', value: '' }] }],
    ['SHELL ["/bin/bash", "-c"]', { kind: 'shell', shell: ['/bin/bash', '-c'] }],
    ['COPY a b /dst/', { kind: 'copy', sources: ['a', 'b'], dest: '/dst/', link: false, parents: false, exclude: [], from: undefined }],
    ['COPY ["a b", "/c d"]', { sources: ['a b'], dest: '/c d' }],
    [
      'COPY --from=build --chown=1:1 --chmod=0755 --link --parents --exclude=*.md --exclude=.git ./ /app',
      { from: 'build', chown: '1:1', chmod: '0755', link: true, parents: true, exclude: ['*.md', '.git'] },
    ],
    ['COPY --link=false --chmod=$MODE a b', { link: false, chmod: '$MODE' }],
    ['ADD https://example.com/x.tgz /x', { kind: 'add', sources: ['https://example.com/x.tgz'], dest: '/x', keepGitDir: undefined }],
    [
      `ADD --checksum=sha256:${'a'.repeat(64)} --keep-git-dir --unpack=false https://example.com/x /x`,
      { checksum: `sha256:${'a'.repeat(64)}`, keepGitDir: true, unpack: false },
    ],
    ['ONBUILD RUN echo hi', { kind: 'onbuild', expression: 'RUN echo hi' }],
    ['HEALTHCHECK NONE', { kind: 'healthcheck', test: { type: 'none' } }],
    ['HEALTHCHECK CMD curl -f http://localhost/', { test: { type: 'cmd', cmd: { form: 'shell', command: 'curl -f http://localhost/' } } }],
    [
      'HEALTHCHECK --interval=1m30s --timeout=1.5s --start-period=0s --start-interval=5ms --retries=3 CMD ["check"]',
      { test: { type: 'cmd', cmd: { form: 'exec', args: ['check'] } }, interval: 90e9, timeout: 1.5e9, startPeriod: 0, startInterval: 5e6, retries: 3 },
    ],
    ['healthcheck cmd x', { test: { type: 'cmd', cmd: { form: 'shell', command: 'x' } }, interval: undefined }],
  ];
  for (const [line, want] of cases) {
    const inst = one(line);
    assert.deepEqual(pick(inst, Object.keys(want)), want, line);
    assert.equal(inst.range.start.line, 2, line);
    assert.ok(inst.original.length > 0, line);
  }
});

test('RUN keeps mounts, heredocs and numbers ssh agents', () => {
  const inst = one(
    'RUN --mount=type=cache,target=/c --mount=type=ssh --mount=type=ssh,id=b --mount=type=secret,id=s <<EOF\nmake\nEOF',
  );
  assert.equal(inst.kind, 'run');
  if (inst.kind !== 'run') return;
  assert.deepEqual(inst.cmd, { form: 'shell', command: '<<EOF' });
  assert.deepEqual(inst.heredocs, [{ name: 'EOF', content: 'make\n', expand: true, chomp: false }]);
  assert.deepEqual(
    inst.mounts.map((m) => [m.type, m.target, m.id]),
    [
      ['cache', '/c', '/c'],
      ['ssh', '/run/buildkit/ssh_agent.0', 'default'],
      ['ssh', '/run/buildkit/ssh_agent.1', 'b'],
      ['secret', '/run/secrets/s', 's'],
    ],
  );
});

test('COPY and ADD separate heredoc sources from paths', () => {
  const inst = one("COPY <<EOF <<-'RAW' plain /dst/\nhello $X\nEOF\n\tkept $Y\nRAW");
  assert.equal(inst.kind, 'copy');
  if (inst.kind !== 'copy') return;
  assert.deepEqual(inst.sources, ['plain']);
  assert.equal(inst.dest, '/dst/');
  assert.deepEqual(
    inst.heredocs.map((h) => [h.name, h.content, h.expand]),
    [
      ['EOF', 'hello $X\n', true],
      ['RAW', 'kept $Y\n', false],
    ],
  );
});

test('ONBUILD parses its trigger', () => {
  const inst = one('ONBUILD COPY --chown=1 <<EOF /x\nhi\nEOF');
  assert.equal(inst.kind, 'onbuild');
  if (inst.kind !== 'onbuild') return;
  assert.equal(inst.trigger.kind, 'copy');
  if (inst.trigger.kind !== 'copy') return;
  assert.equal(inst.trigger.chown, '1');
  assert.deepEqual(inst.trigger.heredocs.map((h) => h.content), ['hi\n']);
  assert.equal(inst.expression, 'COPY --chown=1 <<EOF /x\nhi\nEOF');
  const run = one('onbuild run ["a"]');
  assert.ok(run.kind === 'onbuild' && run.trigger.kind === 'run' && run.trigger.cmd.form === 'exec');
});

test('invalid instructions fail at their line with a message naming the problem', () => {
  const cases: Array<[string, RegExp]> = [
    ['FOO bar', /unknown instruction: FOO/],
    ['frobnicate', /unknown instruction: FROBNICATE/],
    ['RUN --mount=type=nope,target=/x true', /--mount=type=nope,target=\/x: unsupported mount type "nope"/],
    ['RUN --mount true', /RUN: missing a value on flag: --mount/],
    ['RUN --network=bridge true', /RUN --network: unsupported network mode "bridge"/],
    ['RUN --security=privileged true', /RUN --security: unsupported value "privileged"/],
    ['RUN --network=none --network=host true', /RUN: duplicate flag specified: --network/],
    ['RUN --device=/dev/x true', /RUN: unknown flag: --device/],
    ['CMD --x=1 a', /CMD: unknown flag: --x/],
    ['COPY a', /COPY requires at least two arguments, but only one was provided/],
    ['ADD a', /ADD requires at least two arguments/],
    ['COPY --link=maybe a b', /COPY: expecting boolean value for flag --link, not: maybe/],
    ['COPY --from a b', /COPY: missing a value on flag: --from/],
    ['COPY --chmod=rwx a b', /invalid --chmod value "rwx"/],
    ['COPY --chmod=99999 a b', /invalid --chmod value "99999"/],
    ['COPY --checksum=sha256:00 a b', /COPY: unknown flag: --checksum/],
    ['COPY --keep-git-dir a b', /COPY: unknown flag: --keep-git-dir/],
    ['ADD --from=x a b', /ADD: unknown flag: --from/],
    ['ADD --checksum=md5:abc https://x/y /y', /ADD --checksum: invalid checksum "md5:abc"/],
    [`ADD --checksum=sha256:${'0'.repeat(64)} a b /c`, /ADD --checksum requires exactly one source/],
    [`ADD --checksum=sha256:${'0'.repeat(64)} local.txt /c`, /only be used with an HTTP\(S\) or Git source/],
    ['COPY a <<EOF\nx\nEOF', /COPY cannot accept a heredoc as a destination/],
    ['COPY', /COPY requires at least two arguments, but none were provided/],
    ['MAINTAINER', /MAINTAINER requires exactly one argument/],
    ['EXPOSE', /EXPOSE requires at least one argument/],
    ['USER', /USER requires exactly one argument/],
    ['WORKDIR', /WORKDIR requires exactly one argument/],
    ['STOPSIGNAL', /STOPSIGNAL requires exactly one argument/],
    ['VOLUME', /VOLUME requires at least one argument/],
    ['VOLUME ["/a", " "]', /VOLUME specified can not be an empty string/],
    ['RUN', /RUN requires at least one argument/],
    ['RUN []', /RUN requires at least one argument/],
    ['CMD', /CMD requires at least one argument/],
    ['ENTRYPOINT', /ENTRYPOINT requires at least one argument/],
    ['ENV', /ENV requires at least one argument/],
    ['LABEL', /LABEL requires at least one argument/],
    ['ARG', /ARG requires at least one argument/],
    ['ONBUILD', /ONBUILD requires at least one argument/],
    ['FROM', /FROM requires either one or three arguments/],
    ['FROM a b', /FROM requires either one or three arguments/],
    ['FROM a AS b c', /FROM requires either one or three arguments/],
    ['FROM a FROM b', /FROM requires either one or three arguments/],
    ['FROM a AS 1st', /invalid name for build stage: "1st", name can't start with a number or contain symbols/],
    ['FROM a AS my$stage', /invalid name for build stage: "my\$stage"/],
    ['FROM --platform a', /FROM: missing a value on flag: --platform/],
    ['FROM --plat=x a', /FROM: unknown flag: --plat/],
    ['SHELL /bin/sh -c', /SHELL requires the arguments to be in JSON form/],
    ['SHELL []', /SHELL requires at least one argument/],
    ['ARG =x', /ARG names can not be blank/],
    ['ENV A=1 =2', /ENV names can not be blank/],
    ['LABEL =2', /LABEL names can not be blank/],
    ['ONBUILD ONBUILD RUN x', /Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed/],
    ['ONBUILD FROM alpine', /FROM isn't allowed as an ONBUILD trigger/],
    ['ONBUILD MAINTAINER me', /MAINTAINER isn't allowed as an ONBUILD trigger/],
    ['ONBUILD FOO x', /unknown instruction: FOO/],
    ['ONBUILD COPY --bogus a b', /COPY: unknown flag: --bogus/],
    ['HEALTHCHECK', /HEALTHCHECK requires at least one argument/],
    ['HEALTHCHECK CMD', /Missing command after HEALTHCHECK CMD/],
    ['HEALTHCHECK NONE x', /HEALTHCHECK NONE takes no arguments/],
    ['HEALTHCHECK --interval=5s NONE', /HEALTHCHECK NONE takes no flags/],
    ['HEALTHCHECK CONNECT TCP 7000', /Unknown type "CONNECT" in HEALTHCHECK \(try CMD\)/],
    ['HEALTHCHECK --interval=5 CMD x', /HEALTHCHECK --interval: invalid duration "5"/],
    ['HEALTHCHECK --timeout=1q CMD x', /HEALTHCHECK --timeout: invalid duration "1q": unknown unit "q"/],
    ['HEALTHCHECK --start-period=10us CMD x', /HEALTHCHECK --start-period cannot be less than 1ms/],
    ['HEALTHCHECK --start-interval=-1s CMD x', /HEALTHCHECK --start-interval cannot be less than 1ms/],
    ['HEALTHCHECK --retries=-1 CMD x', /HEALTHCHECK --retries cannot be negative \(-1\)/],
    ['HEALTHCHECK --retries=three CMD x', /HEALTHCHECK --retries: invalid number "three"/],
    ['HEALTHCHECK --retries CMD x', /HEALTHCHECK: missing a value on flag: --retries/],
    ['HEALTHCHECK --bogus=1 CMD x', /HEALTHCHECK: unknown flag: --bogus/],
  ];
  for (const [line, re] of cases) {
    assert.throws(
      () => parseDockerfile(`FROM scratch\n${line}\n`, { file: 'ctx/Dockerfile.dev' }),
      (e: unknown) => {
        assert.ok(e instanceof DockerfileError, `${line}: ${String(e)}`);
        assert.match(e.detail, re, line);
        assert.equal(e.file, 'ctx/Dockerfile.dev');
        assert.equal(e.range?.start.line, 2, line);
        assert.ok(e.message.startsWith('ctx/Dockerfile.dev:2:1: '), e.message);
        assert.equal(e.excerpt?.split('\n')[0], line.split('\n')[0], line);
        return true;
      },
      line,
    );
  }
});

test('hand-built nodes convert without the parser', () => {
  const range = { start: { line: 7, column: 1 }, end: { line: 7, column: 9 } };
  const leaf = (value: string, next?: Node): Node => ({
    value, next, children: [], heredocs: [], attributes: {}, original: '', flags: [], range, prevComment: [],
  });
  const node: Node = { ...leaf('workdir', leaf('/srv')), original: 'WORKDIR /srv' };
  assert.deepEqual(parseInstruction(node), { kind: 'workdir', range, original: 'WORKDIR /srv', path: '/srv' });
  const bad: Node = { ...leaf('workdir'), original: 'WORKDIR' };
  assert.throws(
    () => parseInstruction(bad, { file: 'F', text: 'a\nb\nc\nd\ne\nf\nWORKDIR\n' }),
    (e: unknown) => e instanceof DockerfileError && e.message === 'F:7:1: WORKDIR requires exactly one argument' && e.excerpt === 'WORKDIR',
  );
});
