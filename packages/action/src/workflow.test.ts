import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DockerfileError, TsbuildError } from '@tsbuild/errors';
import { GroupedLog, errorCommand } from './action.ts';
import { command, formatOutputs, getBool, getInput, getList, inputName, keyValueList, summaryMarkdown } from './workflow.ts';

test('inputs are read the way the runner names them', () => {
  assert.equal(inputName('build-args'), 'INPUT_BUILD-ARGS');
  assert.equal(inputName('no cache'), 'INPUT_NO_CACHE');
  const env = {
    'INPUT_BUILD-ARGS': 'A=1\nB=x,y\n\n',
    INPUT_TAGS: 'a:1, b:2\nc:3',
    INPUT_PUSH: 'True',
    'INPUT_NO-CACHE': 'maybe',
    INPUT_CONTEXT: '  ./app  ',
  };
  assert.equal(getInput(env, 'context'), './app');
  assert.equal(getInput(env, 'missing'), '');
  assert.deepEqual(getList(env, 'tags'), ['a:1', 'b:2', 'c:3']);
  assert.deepEqual(keyValueList(getList(env, 'build-args', { commas: false }), 'build-args'), { A: '1', B: 'x,y' });
  assert.equal(getBool(env, 'push'), true);
  assert.equal(getBool(env, 'target'), false);
  assert.throws(() => getBool(env, 'no-cache'), /expected true or false/);
  assert.throws(() => keyValueList(['=v'], 'labels'), /not KEY=VALUE/);
});

test('workflow commands escape data and properties', () => {
  assert.equal(command('error', { file: 'a,b:c', line: 3 }, '50% done\nnext'), '::error file=a%2Cb%3Ac,line=3::50%25 done%0Anext\n');
  assert.equal(command('endgroup', {}, ''), '::endgroup::\n');
});

test('outputs use the heredoc form, so multiline values survive', () => {
  const text = formatOutputs({ digest: 'sha256:x', metadata: '{\n  "a": 1\n}' });
  const parsed = new Map<string, string>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length - 1; i++) {
    const m = /^([^<]+)<<(.+)$/.exec(lines[i]!);
    assert.ok(m, lines[i]);
    const end = lines.indexOf(m[2]!, i + 1);
    parsed.set(m[1]!, lines.slice(i + 1, end).join('\n'));
    i = end;
  }
  assert.deepEqual(Object.fromEntries(parsed), { digest: 'sha256:x', metadata: '{\n  "a": 1\n}' });
});

test('logs are grouped per stage, reopened when stages interleave, and RUN output cannot issue commands', () => {
  let out = '';
  const log = new GroupedLog((s) => (out += s));
  const t = 0;
  log.event({ type: 'step-start', time: t, id: 's1', name: '[a 1/2] FROM busybox', stage: 'a', index: 1, total: 2 });
  log.event({ type: 'step-start', time: t, id: 's2', name: '[b 1/2] FROM busybox', stage: 'b', index: 1, total: 2 });
  log.event({ type: 'step-log', time: t, id: 's1', stream: 'stdout', data: '::error::injected\npart' });
  log.event({ type: 'step-log', time: t, id: 's1', stream: 'stdout', data: 'ial\n' });
  log.event({ type: 'step-done', time: t, id: 's1', cached: false, durationMs: 1500, layerSize: 2048 });
  log.event({ type: 'step-error', time: t, id: 's2', message: 'exit code 1' });
  log.close();
  assert.deepEqual(out.split('\n').filter((l) => l.startsWith('::')), [
    '::group::[a] FROM busybox',
    '::endgroup::',
    '::group::[b] FROM busybox',
    '::endgroup::',
    '::group::[a] (output)',
    '::endgroup::',
    '::group::[b] (error)',
    '::endgroup::',
  ]);
  assert.match(out, /^#s1 ::error::injected$/m);
  assert.match(out, /^#s1 partial$/m);
  assert.match(out, /^#s1 DONE 1\.5s$/m);
  assert.deepEqual(log.steps.get('s1'), { name: '[a 1/2] FROM busybox', durationMs: 1500, cached: false, layerSize: 2048, failed: false });
  assert.equal(log.steps.get('s2')?.failed, true);
  const md = summaryMarkdown('img', [['digest', 'sha256:x']], [...log.steps.values()]);
  assert.match(md, /\| `\[a 1\/2\] FROM busybox` \| 1\.50s \| miss \| 2\.00 KiB \|/);
  assert.match(md, /\| `\[b 1\/2\] FROM busybox` \|  \| failed \|  \|/);
});

test('a Dockerfile error becomes a file annotation relative to the workspace', () => {
  const e = new DockerfileError('unknown instruction: FORM', {
    file: '/ws/app/Dockerfile',
    range: { start: { line: 2, column: 1 }, end: { line: 2, column: 9 } },
  });
  assert.equal(
    errorCommand(e, { GITHUB_WORKSPACE: '/ws' }),
    '::error file=app/Dockerfile,line=2,col=1,endLine=2,endColumn=9,title=Dockerfile::unknown instruction: FORM\n',
  );
  assert.match(errorCommand(e, { GITHUB_WORKSPACE: '/elsewhere' }), /file=\/ws\/app\/Dockerfile,/);
  assert.equal(errorCommand(new TsbuildError('X', 'boom', { hint: 'try again' }), {}), '::error title=tsbuild::boom%0Atry again\n');
});
