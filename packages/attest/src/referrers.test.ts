import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TsbuildError } from '@tsbuild/errors';
import { canonicalJson, MediaType, sha256 } from '@tsbuild/oci';
import type { Descriptor } from '@tsbuild/oci';
import { IN_TOTO_STATEMENT_V1, serializeStatement } from './intoto.ts';
import type { Statement } from './intoto.ts';
import { attestationManifest, EMPTY_DESCRIPTOR, referrersFallbackTag, updateReferrersIndex } from './referrers.ts';

const image: Descriptor = {
  mediaType: MediaType.OciManifest,
  digest: sha256('image'),
  size: 1234,
  platform: { os: 'linux', architecture: 'amd64' },
  annotations: { 'org.opencontainers.image.ref.name': 'app' },
};

function statement(predicateType: string): Statement {
  return { _type: IN_TOTO_STATEMENT_V1, subject: [{ name: 'app', digest: { sha256: image.digest.slice(7) } }], predicateType, predicate: { x: predicateType } };
}

test('the attestation manifest: artifactType, the empty config, one annotated in-toto layer per statement, the image as subject', () => {
  const prov = statement('https://slsa.dev/provenance/v1');
  const sbom = statement('https://spdx.dev/Document');
  const a = attestationManifest([prov, sbom], image, { annotations: { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' } });
  assert.equal(EMPTY_DESCRIPTOR.digest, sha256('{}'));
  assert.deepEqual(a.manifest, {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    artifactType: 'application/vnd.in-toto+json',
    config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a', size: 2 },
    layers: [
      {
        mediaType: 'application/vnd.in-toto+json',
        digest: sha256(serializeStatement(prov)),
        size: serializeStatement(prov).length,
        annotations: { 'in-toto.io/predicate-type': 'https://slsa.dev/provenance/v1' },
      },
      {
        mediaType: 'application/vnd.in-toto+json',
        digest: sha256(serializeStatement(sbom)),
        size: serializeStatement(sbom).length,
        annotations: { 'in-toto.io/predicate-type': 'https://spdx.dev/Document' },
      },
    ],
    subject: { mediaType: MediaType.OciManifest, digest: image.digest, size: 1234 },
    annotations: { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' },
  });
  assert.deepEqual(a.bytes, canonicalJson(a.manifest));
  assert.deepEqual(a.descriptor, { mediaType: MediaType.OciManifest, digest: sha256(a.bytes), size: a.bytes.length });
  // Every referenced blob is there, with bytes that match its descriptor.
  assert.deepEqual(
    a.blobs.map((b) => b.descriptor.digest),
    [a.manifest.config.digest, ...a.manifest.layers.map((l) => l.digest)],
  );
  for (const b of a.blobs) {
    assert.equal(sha256(b.bytes), b.descriptor.digest);
    assert.equal(b.bytes.length, b.descriptor.size);
  }
  assert.equal(a.blobs[0]!.bytes.toString(), '{}');
  assert.deepEqual(a.referrer, {
    mediaType: MediaType.OciManifest,
    digest: a.descriptor.digest,
    size: a.descriptor.size,
    artifactType: 'application/vnd.in-toto+json',
    annotations: { 'org.opencontainers.image.created': '2024-01-01T00:00:00Z' },
  });
  assert.throws(() => attestationManifest([], image), TsbuildError);
  assert.throws(() => attestationManifest([prov], { ...image, mediaType: 'application/vnd.oci.image.layer.v1.tar' }), /subject must be an image manifest/);
});

test('the referrers tag schema, as distribution-spec 1.1 tabulates it', () => {
  assert.equal(referrersFallbackTag(`sha256:${'a'.repeat(64)}`), `sha256-${'a'.repeat(64)}`);
  assert.equal(referrersFallbackTag(`sha512:${'a'.repeat(128)}`), `sha512-${'a'.repeat(64)}`);
  assert.equal(
    referrersFallbackTag(
      'test+algorithm+using+algorithm+separators+and+lots+of+characters+to+excercise+overall+truncation:alsoSome=InTheEncodedSectionToShowHyphenReplacementAndLotsAndLotsOfCharactersToExcerciseEncodedTruncation',
    ),
    'test-algorithm-using-algorithm-s-alsoSome-InTheEncodedSectionToShowHyphenReplacementAndLotsAndLot',
  );
  assert.throws(() => referrersFallbackTag('nocolon'), /invalid digest/);
});

test('updateReferrersIndex starts an index, appends, keeps one entry per digest and refuses what is not an index', () => {
  const first = attestationManifest([statement('https://slsa.dev/provenance/v1')], image).referrer;
  const second = attestationManifest([statement('https://spdx.dev/Document')], image).referrer;

  const fresh = updateReferrersIndex(undefined, first);
  assert.equal(fresh.changed, true);
  assert.deepEqual(fresh.index, { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [first] });
  assert.deepEqual(fresh.descriptor, { mediaType: MediaType.OciIndex, digest: sha256(fresh.bytes), size: fresh.bytes.length });

  const appended = updateReferrersIndex(fresh.bytes, second);
  assert.equal(appended.changed, true);
  assert.deepEqual(appended.index.manifests, [first, second]);

  const again = updateReferrersIndex(appended.bytes, first);
  assert.equal(again.changed, false);
  assert.deepEqual(again.bytes, appended.bytes);

  // Someone else's referrer (a signature) and a duplicate: the first kept as it was, the duplicate dropped.
  const signature: Descriptor = { mediaType: MediaType.OciManifest, digest: sha256('sig'), size: 10, artifactType: 'application/vnd.dev.cosign.artifact.sig.v1+json' };
  const theirs = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [signature, signature], annotations: { a: 'b' } }));
  const merged = updateReferrersIndex(theirs, first);
  assert.deepEqual(merged.index, { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [signature, first], annotations: { a: 'b' } });
  const dedupOnly = updateReferrersIndex(Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [first, first] })), first);
  assert.equal(dedupOnly.changed, true);
  assert.deepEqual(dedupOnly.index.manifests, [first]);

  for (const bad of [
    canonicalJson({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: EMPTY_DESCRIPTOR, layers: [] }),
    canonicalJson({ schemaVersion: 2, mediaType: MediaType.DockerManifestList, manifests: [] }),
    Buffer.from('not json'),
    canonicalJson({ schemaVersion: 2, manifests: [{ mediaType: MediaType.OciManifest, digest: 'sha256:short', size: 1 }] }),
  ]) {
    assert.throws(() => updateReferrersIndex(bad, first), (e: unknown) => e instanceof TsbuildError && e.code === 'BAD_REFERRERS_INDEX');
  }
});
