import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { importImage, openRoot } from '../packages/builder/src/index.ts';
import { REPO, busyboxTar } from './helpers/base.ts';
import { startRegistry } from './helpers/registry.ts';
import type { RunningRegistry } from './helpers/registry.ts';
import { createNetns } from './helpers/netns.ts';
import { ACTION_BUNDLE, runBundledAction, type ActionRun } from './helpers/action.ts';

const USER = 'ci-user';
const PASSWORD = 'ci-secret-pw';

let work: string;
let root: string;
let registry: RunningRegistry;
let dockerConfig: string;

before(async () => {
  if (!existsSync(ACTION_BUNDLE)) execFileSync('node', [join(REPO, 'scripts/build.mjs')], { stdio: 'inherit' });
  work = mkdtempSync(join(tmpdir(), 'tsbuild-action-'));
  root = join(work, 'root');
  const { store } = await openRoot(root);
  await importImage(store, busyboxTar(), { tags: ['busybox:latest'] });
  registry = await startRegistry({ auth: { htpasswd: { user: USER, password: PASSWORD } } });
  // What docker/login-action leaves behind.
  dockerConfig = join(work, 'docker-config');
  mkdirSync(dockerConfig);
  const auth = Buffer.from(`${USER}:${PASSWORD}`).toString('base64');
  writeFileSync(join(dockerConfig, 'config.json'), JSON.stringify({ auths: { [registry.host]: { auth } } }));
});

after(async () => {
  await registry?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Runs the committed bundle the way the runner does: inputs in INPUT_*, outputs and summary in files. */
function runAction(workspace: string, inputs: Record<string, string>, extraEnv: Record<string, string> = {}): ActionRun {
  return runBundledAction(work, workspace, inputs, { TSBUILD_ROOT: root, DOCKER_CONFIG: dockerConfig, ...extraEnv });
}

test('the bundled action builds and pushes with login-action credentials, and reports outputs, groups and a summary', () => {
  const ws = join(work, 'ws-good');
  mkdirSync(join(ws, 'app'), { recursive: true });
  writeFileSync(
    join(ws, 'app', 'Dockerfile'),
    'FROM busybox:latest AS base\nRUN --mount=type=secret,id=token,env=TOKEN echo "token is $TOKEN" && echo one > /one\n\nFROM base\nARG GREETING\nCOPY f /f\nRUN echo "$GREETING" > /greeting && cat /one /f\n',
  );
  writeFileSync(join(ws, 'app', 'f'), 'from the context\n');
  const tag = `${registry.host}/ci/app:1`;
  const r = runAction(ws, { context: 'app', tags: tag, push: 'true', 'build-args': 'GREETING=hello, world', labels: 'org.example=yes', secrets: 'token=s3cr3t-value' });
  assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /^::add-mask::s3cr3t-value$/m);
  // The secret reached RUN, and the runner was told to mask it before any output could show it.
  const masked = r.stdout.indexOf('::add-mask::s3cr3t-value');
  const printed = r.stdout.search(/^#\S+ token is s3cr3t-value$/m);
  assert.ok(masked >= 0 && printed > masked, r.stdout);

  assert.match(r.stdout, /^::group::\[base\] FROM busybox:latest$/m);
  assert.match(r.stdout, /^::group::\[stage-1\] /m);
  assert.match(r.stdout, /^#\S+ from the context$/m);
  assert.equal(r.stdout.match(/^::group::/gm)?.length, r.stdout.match(/^::endgroup::$/gm)?.length);

  const imageid = r.outputs.get('imageid') ?? '';
  const digest = r.outputs.get('digest') ?? '';
  assert.match(imageid, /^sha256:[0-9a-f]{64}$/);
  assert.match(digest, /^sha256:[0-9a-f]{64}$/);
  const metadata = JSON.parse(r.outputs.get('metadata') ?? '') as Record<string, unknown>;
  assert.equal(metadata['containerimage.digest'], digest);
  assert.equal(metadata['containerimage.config.digest'], imageid);
  assert.equal(metadata['image.name'], tag);

  // The registry holds what the outputs name.
  const creds = `${USER}:${PASSWORD}`;
  const inspected = JSON.parse(execFileSync('skopeo', ['inspect', '--tls-verify=false', '--creds', creds, `docker://${tag}`], { encoding: 'utf8' })) as { Digest: string; Labels: Record<string, string> };
  assert.equal(inspected.Digest, digest);
  assert.equal(inspected.Labels['org.example'], 'yes');
  const manifest = JSON.parse(execFileSync('skopeo', ['inspect', '--tls-verify=false', '--creds', creds, '--raw', `docker://${tag}`], { encoding: 'utf8' })) as { config: { digest: string } };
  assert.equal(manifest.config.digest, imageid);

  assert.match(r.summary, /\| Step \| Time \| Cache \| Layer size \|/);
  assert.match(r.summary, /\| `\[base 2\/2\] RUN --mount=type=secret,id=token,env=TOKEN echo \"token is \$TOKEN\" && echo one > \/one` \| \d+\.\d\ds \| miss \| \d/);
  assert.match(r.summary, /\| `\[stage-1 4\/4\] RUN echo "\$GREETING" > \/greeting && cat \/one \/f` \| \d+\.\d\ds \| miss \| /);
  assert.ok(r.summary.includes(digest));

  // A second run is served from the cache, and the summary says so.
  const again = runAction(ws, { context: 'app', tags: tag, 'build-args': 'GREETING=hello, world', labels: 'org.example=yes', secrets: 'token=s3cr3t-value' });
  assert.equal(again.code, 0, again.stdout);
  assert.equal(again.outputs.get('imageid'), imageid);
  assert.match(again.summary, /\| `\[base 2\/2\] RUN --mount=type=secret,id=token,env=TOKEN echo \"token is \$TOKEN\" && echo one > \/one` \| \d+\.\d\ds \| hit \|/);
});

test('a broken Dockerfile fails the step with a file/line annotation', () => {
  const ws = join(work, 'ws-bad');
  mkdirSync(ws, { recursive: true });
  writeFileSync(join(ws, 'Dockerfile'), 'FROM busybox:latest\nRUN true\nFORM busybox\n');
  const r = runAction(ws, { context: '.', tags: `${registry.host}/ci/bad:1`, push: 'true' });
  assert.equal(r.code, 1, r.stdout);
  assert.match(r.stdout, /^::error file=Dockerfile,line=3,col=\d+,endLine=3,endColumn=\d+,title=Dockerfile::.*FORM/m);
  assert.equal(r.outputs.size, 0);
  assert.match(r.summary, /failed/);
});

test('inputs the action cannot honour are refused with an error annotation', () => {
  const ws = join(work, 'ws-good');
  const r = runAction(ws, { context: 'app', platforms: 'linux/amd64,linux/arm64' });
  assert.equal(r.code, 1);
  assert.match(r.stdout, /^::error title=tsbuild::platforms: tsbuild builds one platform per run/m);
  const p = runAction(ws, { context: 'app', push: 'true' });
  assert.equal(p.code, 1);
  assert.match(p.stdout, /^::error title=tsbuild::push needs at least one tag/m);
});

test('a base image is pulled through the registry options the CLI has: a plain-HTTP registry off loopback needs insecure-registry', async (t) => {
  const ns = createNetns();
  t.after(() => ns.destroy());
  const remote = await startRegistry({ netns: ns });
  t.after(() => remote.stop());
  // Put a base there with the CLI, which needs the same option.
  const cliRoot = join(work, 'netns-root');
  const push = spawnSync(process.execPath, [join(REPO, 'packages/cli/dist/tsbuild.js'), 'push', '--insecure-registry', remote.host, 'busybox:latest', `${remote.host}/base/busybox:1`], {
    env: { ...process.env, TSBUILD_ROOT: root, DOCKER_CONFIG: dockerConfig },
    encoding: 'utf8',
  });
  assert.equal(push.status, 0, push.stderr);
  const ws = join(work, 'ws-netns');
  mkdirSync(ws, { recursive: true });
  writeFileSync(join(ws, 'Dockerfile'), `FROM ${remote.host}/base/busybox:1\nRUN echo pulled > /pulled\n`);
  const env = { TSBUILD_ROOT: cliRoot };
  // Without the option the registry is taken to be HTTPS, and the pull fails with a clear error.
  const refused = runAction(ws, { context: '.', tags: 'netns-app:1' }, env);
  assert.equal(refused.code, 1, refused.stdout);
  assert.match(refused.stdout, /^::error file=Dockerfile,line=1,.*::FROM 10\.213\.[\d.]+:5000\/base\/busybox:1: .*does not speak HTTPS.*--insecure-registry/m);
  const r = runAction(ws, { context: '.', tags: 'netns-app:1', 'insecure-registry': remote.host }, env);
  assert.equal(r.code, 0, r.stdout);
  assert.match(r.outputs.get('imageid') ?? '', /^sha256:[0-9a-f]{64}$/);
});

test('Dockerfile check warnings become annotations on their line', () => {
  const ws = join(work, 'ws-checks');
  mkdirSync(ws, { recursive: true });
  writeFileSync(join(ws, 'Dockerfile'), 'FROM busybox:latest as base\nRUN true\nMAINTAINER someone\n');
  const r = runAction(ws, { context: '.' });
  assert.equal(r.code, 0, r.stdout);
  assert.match(r.stdout, /^::warning file=Dockerfile,line=1,col=\d+,endLine=1,endColumn=\d+,title=FromAsCasing::'as' and 'FROM' keywords' casing do not match%0Ahttps:\/\/docs\.docker\.com\/go\/dockerfile\/rule\/from-as-casing\//m);
  assert.match(r.stdout, /^::warning file=Dockerfile,line=3,col=1,.*title=MaintainerDeprecated::/m);
});
