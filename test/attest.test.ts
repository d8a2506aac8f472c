/**
 * Provenance and SBOM as OCI referrers, through the CLI: kept in the local store with the image,
 * shown by `inspect --attestations`, pushed to docker-registry 2.8 (no referrers API: the
 * `sha256-<hex>` fallback tag) and to a registry with the referrers API, carried by OCI archives;
 * the SBOM of a Debian image lists every package dpkg-query lists.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { busyboxTar, debianTar } from './helpers/base.ts';
import { CLI, ensureCli, type CliResult } from './helpers/cli.ts';
import { startRegistry, type RunningRegistry } from './helpers/registry.ts';
import { startReferrersProxy, type ReferrersRegistry } from './helpers/referrers-proxy.ts';

let work: string;
let root: string;
let reg: RunningRegistry;
let api: ReferrersRegistry;
const EPOCH = { SOURCE_DATE_EPOCH: '1700000000' };

function tsbuild(args: string[], r = root): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('node', [CLI, ...args], { env: { ...process.env, TSBUILD_ROOT: r, ...EPOCH }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function ok(r: CliResult, what: string): CliResult {
  assert.equal(r.code, 0, `${what} failed:\n${r.stderr}`);
  return r;
}

interface Inspected {
  Subject: string;
  Attestations: { Digest: string; ArtifactType?: string; Statements: { predicateType: string; subject: { digest: { sha256: string } }[]; predicate: Record<string, unknown> }[] }[];
}

const skopeoRaw = (ref: string): Record<string, unknown> =>
  JSON.parse(execFileSync('skopeo', ['inspect', '--tls-verify=false', '--raw', ref], { encoding: 'utf8' })) as Record<string, unknown>;

before(async () => {
  ensureCli();
  work = mkdtempSync(join(tmpdir(), 'tsbuild-attest-'));
  root = join(work, 'root');
  ok(await tsbuild(['import', busyboxTar(), '-t', 'busybox:latest']), 'import');
  reg = await startRegistry();
  api = await startReferrersProxy(reg.host);
});

after(async () => {
  await api?.stop();
  await reg?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

function context(name: string, dockerfile: string): string {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'Dockerfile'), dockerfile);
  return dir;
}

const APP = 'FROM busybox:latest\nARG VERSION=1\nARG API_TOKEN\nRUN echo "$VERSION" > /version\n';

test('provenance (max) and SBOM are kept with the image and shown by inspect --attestations', async () => {
  const ctx = context('local', APP);
  ok(await tsbuild(['build', '-q', '-t', 'app:local', '--provenance', 'mode=max', '--sbom', 'true', '--build-arg', 'VERSION=7', '--build-arg', 'API_TOKEN=s3cret-t0ken', ctx]), 'build');
  const r = ok(await tsbuild(['inspect', '--attestations', 'app:local']), 'inspect');
  const got = JSON.parse(r.stdout) as Inspected;
  assert.equal(got.Attestations.length, 1);
  const statements = got.Attestations[0]!.Statements;
  assert.deepEqual(statements.map((s) => s.predicateType).sort(), ['https://slsa.dev/provenance/v1', 'https://spdx.dev/Document']);
  for (const s of statements) assert.equal(`sha256:${s.subject[0]!.digest.sha256}`, got.Subject);
  const prov = statements.find((s) => s.predicateType.includes('slsa'))!.predicate as { buildDefinition: { externalParameters: { buildArgs?: Record<string, string> }; internalParameters: { steps: unknown[] } } };
  assert.deepEqual(prov.buildDefinition.externalParameters.buildArgs, { VERSION: '7' });
  assert.ok(prov.buildDefinition.internalParameters.steps.length >= 3);
  assert.ok(!r.stdout.includes('s3cret-t0ken'), 'a secret-looking build arg never reaches the provenance');
  // No attestation is a fake platform: the image is still a plain manifest.
  const plain = JSON.parse(ok(await tsbuild(['inspect', 'app:local']), 'inspect').stdout) as { Descriptor: { mediaType: string } };
  assert.equal(plain.Descriptor.mediaType, 'application/vnd.oci.image.manifest.v1+json');
});

test('pushed to docker-registry 2.8 (no referrers API): the sha256-<hex> fallback tag lists the attestation of the pushed manifest', async () => {
  const ctx = context('push', APP);
  const tag = `${reg.host}/app:1`;
  const r = ok(await tsbuild(['build', '--progress', 'plain', '-t', tag, '--push', '--provenance', 'true', '--sbom', 'true', ctx]), 'build --push');
  const pushed = /pushed \S+@(sha256:([0-9a-f]{64}))/.exec(r.stderr);
  assert.ok(pushed, r.stderr);
  const index = skopeoRaw(`docker://${reg.host}/app:sha256-${pushed[2]}`) as { mediaType: string; manifests: { digest: string; artifactType?: string }[] };
  assert.equal(index.mediaType, 'application/vnd.oci.image.index.v1+json');
  assert.equal(index.manifests.length, 1);
  assert.equal(index.manifests[0]!.artifactType, 'application/vnd.in-toto+json');
  const att = skopeoRaw(`docker://${reg.host}/app@${index.manifests[0]!.digest}`) as { subject: { digest: string }; layers: { annotations: Record<string, string> }[] };
  assert.equal(att.subject.digest, pushed[1]);
  assert.deepEqual(att.layers.map((l) => l.annotations['in-toto.io/predicate-type']).sort(), ['https://slsa.dev/provenance/v1', 'https://spdx.dev/Document']);
  // The image itself is untouched: one manifest, no index with unknown/unknown entries.
  assert.equal(skopeoRaw(`docker://${tag}`).mediaType, 'application/vnd.oci.image.manifest.v1+json');
});

test('pushed to a registry with the referrers API: it lists the attestation, and no fallback tag is made', async () => {
  const ctx = context('api', APP.replace('VERSION=1', 'VERSION=2'));
  const tag = `${api.host}/app:2`;
  const before = api.lookups;
  const r = ok(await tsbuild(['build', '--progress', 'plain', '-t', tag, '--push', '--provenance', 'true', ctx]), 'build --push');
  const pushed = /pushed \S+@(sha256:([0-9a-f]{64}))/.exec(r.stderr)!;
  assert.ok(api.lookups > before, 'the referrers API was asked');
  const listed = (await (await fetch(`http://${api.host}/v2/app/referrers/${pushed[1]}`)).json()) as { manifests: { artifactType: string }[] };
  assert.deepEqual(listed.manifests.map((m) => m.artifactType), ['application/vnd.in-toto+json']);
  const tags = (await (await fetch(`http://${reg.host}/v2/app/tags/list`)).json()) as { tags: string[] };
  assert.ok(!tags.tags.includes(`sha256-${pushed[2]}`), JSON.stringify(tags));
});

test('an OCI archive carries the attestations, and loading it keeps them with the image', async () => {
  const ctx = context('archive', APP.replace('VERSION=1', 'VERSION=3'));
  const archive = join(work, 'app.oci.tar');
  ok(await tsbuild(['build', '-q', '-t', 'app:archived', '--provenance', 'true', '--sbom', 'true', '-o', `type=oci,dest=${archive}`, ctx]), 'build -o oci');
  const index = JSON.parse(execFileSync('tar', ['-xOf', archive, 'index.json'], { encoding: 'utf8' })) as { manifests: { artifactType?: string }[] };
  assert.ok(index.manifests.some((m) => m.artifactType === 'application/vnd.in-toto+json'), JSON.stringify(index));
  const fresh = join(work, 'fresh-root');
  ok(await tsbuild(['load', '-i', archive], fresh), 'load');
  const got = JSON.parse(ok(await tsbuild(['inspect', '--attestations', 'app:archived'], fresh), 'inspect').stdout) as Inspected;
  assert.equal(got.Attestations.length, 1);
  assert.equal(got.Attestations[0]!.Statements.length, 2);
});

test('the SBOM of a Debian image lists every package dpkg-query lists in it', async (t) => {
  const tar = debianTar();
  if (!tar) {
    t.skip('the debian base could not be made (debootstrap needs the Debian archive)');
    return;
  }
  ok(await tsbuild(['import', tar, '-t', 'debian:bookworm']), 'import debian');
  const ctx = context('debian', 'FROM debian:bookworm\nRUN echo built > /built\n');
  ok(await tsbuild(['build', '-q', '-t', 'deb:sbom', '--sbom', 'true', ctx]), 'build');
  const got = JSON.parse(ok(await tsbuild(['inspect', '--attestations', 'deb:sbom']), 'inspect').stdout) as Inspected;
  const sbom = got.Attestations[0]!.Statements.find((s) => s.predicateType === 'https://spdx.dev/Document')!.predicate as { packages: { name: string; versionInfo?: string; externalRefs?: { referenceLocator: string }[] }[] };
  const inSbom = new Map(sbom.packages.filter((p) => p.externalRefs?.some((r) => r.referenceLocator.startsWith('pkg:deb/'))).map((p) => [p.name, p.versionInfo]));
  // dpkg-query over the image's own database (unpacked from the import).
  const rootfs = join(work, 'debian-rootfs');
  mkdirSync(rootfs);
  execFileSync('tar', ['-C', rootfs, '-xf', tar, './var/lib/dpkg']);
  const listed = execFileSync('dpkg-query', [`--admindir=${join(rootfs, 'var/lib/dpkg')}`, '-W', '-f', '${db:Status-Abbrev}|${Package}|${Version}\n'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => /^.i/.test(l))
    .map((l) => l.split('|'));
  assert.ok(listed.length > 50, `dpkg-query listed ${listed.length}`);
  for (const [, name, version] of listed) assert.equal(inSbom.get(name!), version, `${name} ${version}`);
  assert.equal(inSbom.size, listed.length, 'the SBOM lists no deb package dpkg does not');
  t.diagnostic(`SBOM deb packages: ${inSbom.size}, dpkg-query installed: ${listed.length}`);
});
