import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TsbuildError, UsageError } from '@tsbuild/errors';
import { sha256 } from '@tsbuild/oci';
import { serializeStatement } from './intoto.ts';
import { provenanceStatement, SLSA_PROVENANCE_V1, TSBUILD_BUILD_TYPE } from './provenance.ts';
import type { ProvenanceInput } from './provenance.ts';
import { isSecretName } from './secrets.ts';

const IMAGE = sha256('image manifest');
const DOCKERFILE = sha256('FROM debian:bookworm\nRUN make\n');
const BASE = sha256('debian manifest');
const GHCR = sha256('ghcr manifest');
const LAYER = sha256('layer');
const hex = (d: string): string => d.slice('sha256:'.length);

function input(): ProvenanceInput {
  return {
    subject: { digest: IMAGE, names: ['registry.example/app:1.0', 'registry.example/app:latest', 'registry.example/app:1.0'] },
    dockerfile: { path: 'docker/Dockerfile', digest: DOCKERFILE },
    target: 'release',
    buildArgs: {
      VERSION: '1.2.3',
      GITHUB_TOKEN: 'ghp_supersecretvalue1',
      NPM_AUTH_TOKEN: 'npm_secretvalue22',
      AWS_SECRET_ACCESS_KEY: 'awsSecretValue333',
      dbPassword: 'hunter2hunter2',
      PUBLIC_KEY: 'ssh-ed25519 AAAA',
    },
    platform: 'linux/amd64',
    context: { path: '.', digest: `sources:${'ab'.repeat(32)}` },
    baseImages: [
      { ref: 'debian:bookworm', digest: BASE, platform: 'linux/amd64' },
      { ref: 'ghcr.io/acme/tools:2', digest: GHCR, platform: { os: 'linux', architecture: 'amd64' } },
    ],
    builder: { version: '0.1.0', id: 'https://ci.example/runs/42', platform: 'linux/amd64' },
    invocationId: 'inv-1',
    startedOn: new Date(Date.UTC(2024, 0, 2, 3, 4, 5)),
    finishedOn: '2024-01-02T03:05:06.500Z',
    secrets: [{ id: 'npmrc' }, { id: 'aws', optional: true }],
    ssh: [{ id: 'default' }],
    steps: [
      { stage: 'build', instruction: 'FROM debian:bookworm', cacheHit: true, cacheKey: 'k0', inputs: [{ name: 'image:debian:bookworm', digest: BASE }] },
      {
        stage: 'build',
        instruction: 'RUN echo ghp_supersecretvalue1 | login https://user:pw@example.com/x',
        cacheHit: false,
        cacheKey: 'k1',
        layer: { digest: LAYER, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', size: 123 },
      },
      { stage: 'build', instruction: 'COPY . /src', cacheHit: true, cacheKey: 'k2', inputs: [{ name: 'context', digest: `sources:${'cd'.repeat(32)}` }] },
      { stage: 'build', instruction: 'ENV A=b', cacheHit: true },
    ],
  };
}

test('min provenance: an in-toto v1 Statement of SLSA provenance v1 with the build parameters and base images', () => {
  const s = provenanceStatement(input(), { mode: 'min' });
  assert.equal(s._type, 'https://in-toto.io/Statement/v1');
  assert.equal(s.predicateType, SLSA_PROVENANCE_V1);
  assert.equal(s.predicateType, 'https://slsa.dev/provenance/v1');
  assert.deepEqual(s.subject, [
    { name: 'registry.example/app:1.0', digest: { sha256: hex(IMAGE) } },
    { name: 'registry.example/app:latest', digest: { sha256: hex(IMAGE) } },
  ]);
  const bd = s.predicate.buildDefinition;
  assert.equal(bd.buildType, TSBUILD_BUILD_TYPE);
  assert.deepEqual(bd.externalParameters, {
    dockerfile: { path: 'docker/Dockerfile', digest: { sha256: hex(DOCKERFILE) } },
    target: 'release',
    buildArgs: { VERSION: '1.2.3', PUBLIC_KEY: 'ssh-ed25519 AAAA' },
    platform: 'linux/amd64',
    context: { path: '.', digest: { sources: 'ab'.repeat(32) } },
  });
  assert.deepEqual(bd.internalParameters, { builderPlatform: 'linux/amd64' });
  assert.deepEqual(bd.resolvedDependencies, [
    { uri: `pkg:docker/acme/tools@${GHCR}?platform=linux%2Famd64&repository_url=ghcr.io`, name: 'ghcr.io/acme/tools:2', digest: { sha256: hex(GHCR) } },
    { uri: `pkg:docker/debian@${BASE}?platform=linux%2Famd64`, name: 'debian:bookworm', digest: { sha256: hex(BASE) } },
  ]);
  assert.deepEqual(s.predicate.runDetails, {
    builder: { id: 'https://ci.example/runs/42', version: { tsbuild: '0.1.0' } },
    metadata: { invocationId: 'inv-1', startedOn: '2024-01-02T03:04:05Z', finishedOn: '2024-01-02T03:05:06.500Z' },
  });
});

test('max provenance adds secret and ssh ids (never values) and every step with its inputs', () => {
  const s = provenanceStatement(input(), { mode: 'max' });
  const ext = s.predicate.buildDefinition.externalParameters;
  assert.deepEqual(ext.secrets, [{ id: 'aws', optional: true }, { id: 'npmrc' }]);
  assert.deepEqual(ext.ssh, [{ id: 'default' }]);
  assert.deepEqual(s.predicate.buildDefinition.internalParameters?.steps, [
    { stage: 'build', instruction: 'FROM debian:bookworm', cacheHit: true, cacheKey: 'k0', inputs: [{ name: 'image:debian:bookworm', digest: { sha256: hex(BASE) } }] },
    {
      stage: 'build',
      instruction: 'RUN echo [redacted] | login https://[redacted]@example.com/x',
      cacheHit: false,
      cacheKey: 'k1',
      layer: { digest: { sha256: hex(LAYER) }, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', size: 123 },
    },
    { stage: 'build', instruction: 'COPY . /src', cacheHit: true, cacheKey: 'k2', inputs: [{ name: 'context', digest: { sources: 'cd'.repeat(32) } }] },
    { stage: 'build', instruction: 'ENV A=b', cacheHit: true },
  ]);
  // min leaves all of that out, whatever the caller passed.
  const min = provenanceStatement(input(), { mode: 'min' });
  assert.equal(min.predicate.buildDefinition.externalParameters.secrets, undefined);
  assert.equal(min.predicate.buildDefinition.externalParameters.ssh, undefined);
  assert.equal(min.predicate.buildDefinition.internalParameters?.steps, undefined);
});

test('secret-looking build args are dropped and their values appear nowhere in the document', () => {
  for (const mode of ['min', 'max'] as const) {
    const text = serializeStatement(provenanceStatement(input(), { mode })).toString();
    for (const name of ['GITHUB_TOKEN', 'NPM_AUTH_TOKEN', 'AWS_SECRET_ACCESS_KEY', 'dbPassword']) assert.ok(!text.includes(name), `${mode}: ${name}`);
    for (const value of ['ghp_supersecretvalue1', 'npm_secretvalue22', 'awsSecretValue333', 'hunter2hunter2', 'user:pw']) assert.ok(!text.includes(value), `${mode}: ${value}`);
    assert.ok(text.includes('"VERSION":"1.2.3"'));
  }
});

test('isSecretName: BuildKit\'s words, split at _ - . and camel case, PUBLIC clears', () => {
  for (const name of [
    'GITHUB_TOKEN', 'token', 'NPM_AUTH_TOKEN', 'AWS_SECRET_ACCESS_KEY', 'API_KEY', 'apikey', 'PASSWORD', 'db_passwd', 'MY_PWORD',
    'credentials', 'GCP_CREDENTIAL', 'ssh-key', 'my.secret', 'npmToken', 'dbPassword', 'SECRETS', 'SSH_AUTH_SOCK',
  ]) {
    assert.equal(isSecretName(name), true, name);
  }
  for (const name of ['VERSION', 'NODE_ENV', 'PUBLIC_KEY', 'KEYBOARD_LAYOUT', 'MONKEY', 'TOKENIZER_MODEL', 'AUTHOR', 'BUILDKIT_INLINE_CACHE', 'HTTP_PROXY']) {
    assert.equal(isSecretName(name), false, name);
  }
});

test('build args may come as pairs; a nameless image gets one unnamed subject; optional fields stay out', () => {
  const s = provenanceStatement(
    {
      subject: { digest: IMAGE },
      dockerfile: { path: 'Dockerfile', digest: DOCKERFILE },
      buildArgs: [
        ['A', '1'],
        ['SECRET', 'x'],
      ],
      platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
      builder: { version: '9.9.9' },
    },
    { mode: 'max' },
  );
  assert.deepEqual(s.subject, [{ digest: { sha256: hex(IMAGE) } }]);
  assert.deepEqual(s.predicate.buildDefinition.externalParameters, {
    dockerfile: { path: 'Dockerfile', digest: { sha256: hex(DOCKERFILE) } },
    buildArgs: { A: '1' },
    platform: 'linux/arm64/v8',
  });
  assert.deepEqual(s.predicate.buildDefinition.resolvedDependencies, []);
  assert.deepEqual(s.predicate.runDetails, { builder: { id: 'urn:tsbuild:builder:local', version: { tsbuild: '9.9.9' } } });
});

test('the same input gives the same bytes; bad input is a clear error', () => {
  assert.deepEqual(serializeStatement(provenanceStatement(input(), { mode: 'max' })), serializeStatement(provenanceStatement(input(), { mode: 'max' })));
  assert.throws(() => provenanceStatement(input(), { mode: 'full' as 'max' }), UsageError);
  assert.throws(() => provenanceStatement({ ...input(), dockerfile: { path: 'Dockerfile', digest: 'sha256:nope' as typeof DOCKERFILE } }, { mode: 'min' }), TsbuildError);
  assert.throws(() => provenanceStatement({ ...input(), context: { digest: 'not a digest' } }, { mode: 'min' }), /invalid digest/);
  assert.throws(() => provenanceStatement({ ...input(), startedOn: 'yesterday' }, { mode: 'min' }), /startedOn: invalid time/);
});
