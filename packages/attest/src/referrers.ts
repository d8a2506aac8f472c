/**
 * Attestations as OCI 1.1 referrers: an artifact manifest whose `subject` is the image manifest,
 * found through the registry's referrers API, or on registries without it through an image index
 * under the referrers tag schema (`sha256-<hex>`), which the pushing client maintains.
 */
import { TsbuildError } from '@tsbuild/errors';
import { canonicalJson, descriptorFor, MediaType, parseDigest, parseIndex, serialize } from '@tsbuild/oci';
import type { Descriptor, Index, Manifest } from '@tsbuild/oci';
import { IN_TOTO_MEDIA_TYPE, PREDICATE_TYPE_ANNOTATION, serializeStatement } from './intoto.ts';
import type { Statement } from './intoto.ts';

/** The empty JSON blob `{}` and its descriptor (image-spec "Guidance for an Empty Descriptor"). */
export const EMPTY_JSON_MEDIA_TYPE = 'application/vnd.oci.empty.v1+json';
export const EMPTY_JSON = Buffer.from('{}');
export const EMPTY_DESCRIPTOR: Readonly<Descriptor> = Object.freeze({
  mediaType: EMPTY_JSON_MEDIA_TYPE,
  digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
  size: 2,
});

/** An image manifest used for an artifact: image-spec 1.1's `artifactType` and `subject`. */
export interface ArtifactManifest extends Manifest {
  artifactType: string;
  subject: Descriptor;
}

export interface AttestationBlob {
  descriptor: Descriptor;
  bytes: Buffer;
}

export interface AttestationManifest {
  manifest: ArtifactManifest;
  /** The manifest's bytes, to PUT by its digest. */
  bytes: Buffer;
  descriptor: Descriptor;
  /** Every blob the manifest references (the empty config, then one per statement): push these first. */
  blobs: AttestationBlob[];
  /** The manifest's entry in a referrers list (artifactType and annotations copied), for updateReferrersIndex. */
  referrer: Descriptor;
}

export interface AttestationManifestOptions {
  /** The manifest's artifactType (default application/vnd.in-toto+json). */
  artifactType?: string;
  /** Manifest annotations, e.g. `org.opencontainers.image.created`; copied into the referrer descriptor. */
  annotations?: Record<string, string>;
}

/** Only the fields a descriptor of a manifest needs as a subject. */
function subjectDescriptor(d: Descriptor): Descriptor {
  if (d.mediaType !== MediaType.OciManifest && d.mediaType !== MediaType.DockerManifest && d.mediaType !== MediaType.OciIndex) {
    throw new TsbuildError('BAD_SUBJECT', `an attestation's subject must be an image manifest or index, not ${JSON.stringify(d.mediaType)}`);
  }
  return { mediaType: d.mediaType, digest: parseDigest(d.digest), size: d.size };
}

/**
 * The artifact manifest carrying `statements` as referrers of `subject`: config is the empty
 * descriptor, each statement one `application/vnd.in-toto+json` layer annotated with its predicate type.
 */
export function attestationManifest(statements: readonly Statement[], subject: Descriptor, opts: AttestationManifestOptions = {}): AttestationManifest {
  if (statements.length === 0) throw new TsbuildError('NO_ATTESTATIONS', 'an attestation manifest needs at least one statement');
  const artifactType = opts.artifactType ?? IN_TOTO_MEDIA_TYPE;
  const blobs: AttestationBlob[] = [{ descriptor: { ...EMPTY_DESCRIPTOR }, bytes: Buffer.from(EMPTY_JSON) }];
  for (const s of statements) {
    const bytes = serializeStatement(s);
    blobs.push({ descriptor: descriptorFor(IN_TOTO_MEDIA_TYPE, bytes, { [PREDICATE_TYPE_ANNOTATION]: s.predicateType }), bytes });
  }
  const manifest: ArtifactManifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    artifactType,
    config: { ...EMPTY_DESCRIPTOR },
    layers: blobs.slice(1).map((b) => b.descriptor),
    subject: subjectDescriptor(subject),
  };
  if (opts.annotations && Object.keys(opts.annotations).length > 0) manifest.annotations = { ...opts.annotations };
  const bytes = canonicalJson(manifest);
  const descriptor = descriptorFor(MediaType.OciManifest, bytes);
  return { manifest, bytes, descriptor, blobs, referrer: referrerDescriptor(descriptor, manifest) };
}

/**
 * A manifest's entry in a referrers list (distribution-spec): its descriptor with `artifactType`
 * (the manifest's, else its config media type) and all of its annotations.
 */
export function referrerDescriptor(descriptor: Descriptor, manifest: Pick<Manifest, 'config' | 'annotations'> & { artifactType?: string }): Descriptor {
  const d: Descriptor = { mediaType: descriptor.mediaType, digest: parseDigest(descriptor.digest), size: descriptor.size };
  d.artifactType = manifest.artifactType !== undefined && manifest.artifactType !== '' ? manifest.artifactType : manifest.config.mediaType;
  if (manifest.annotations && Object.keys(manifest.annotations).length > 0) d.annotations = { ...manifest.annotations };
  return d;
}

/**
 * The referrers tag schema: the digest's algorithm (at most 32 characters), `-`, its encoded part
 * (at most 64), every character a tag cannot hold replaced by `-`.
 */
export function referrersFallbackTag(digest: string): string {
  const colon = digest.indexOf(':');
  if (colon <= 0 || colon === digest.length - 1) throw new TsbuildError('BAD_DIGEST', `invalid digest ${JSON.stringify(digest.slice(0, 100))}`);
  const alg = digest.slice(0, colon).slice(0, 32);
  const encoded = digest.slice(colon + 1).slice(0, 64);
  return `${alg}-${encoded}`.replace(/[^a-zA-Z0-9._-]/g, '-');
}

export interface ReferrersIndexUpdate {
  index: Index;
  /** The bytes to push under the fallback tag. */
  bytes: Buffer;
  descriptor: Descriptor;
  /** False when the referrer was already listed: there is nothing to push. */
  changed: boolean;
}

/**
 * The referrers index to push under the fallback tag after pushing a referrer: the existing one
 * (undefined when the tag did not exist) with `referrer` appended unless a manifest of that digest
 * is already listed. Entries listed twice in the existing index are listed once. An existing tag
 * that is not an OCI image index is an error: it must not be overwritten.
 */
export function updateReferrersIndex(existing: Uint8Array | undefined, referrer: Descriptor, opts: { source?: string } = {}): ReferrersIndexUpdate {
  const source = opts.source ?? 'the referrers tag';
  let index: Index;
  if (existing === undefined) index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] };
  else {
    try {
      index = parseIndex(existing, { source });
    } catch (e) {
      throw new TsbuildError('BAD_REFERRERS_INDEX', `${source} does not hold a referrers index: ${(e as Error).message}`, {
        cause: e,
        hint: 'the tag is not tsbuild\'s to overwrite; delete it or push to a registry with the OCI referrers API',
      });
    }
    if (index.mediaType !== undefined && index.mediaType !== MediaType.OciIndex) {
      throw new TsbuildError('BAD_REFERRERS_INDEX', `${source} is a ${index.mediaType}, not an OCI image index`);
    }
  }
  const seen = new Set<string>();
  const manifests: Descriptor[] = [];
  for (const d of index.manifests) {
    if (seen.has(d.digest)) continue;
    seen.add(d.digest);
    manifests.push(d);
  }
  const digest = parseDigest(referrer.digest);
  const changed = !seen.has(digest) || manifests.length !== index.manifests.length;
  if (!seen.has(digest)) manifests.push({ ...referrer, digest });
  const updated: Index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests };
  if (index.annotations && Object.keys(index.annotations).length > 0) updated.annotations = { ...index.annotations };
  const { bytes, descriptor } = serialize(MediaType.OciIndex, updated);
  return { index: updated, bytes, descriptor, changed };
}
