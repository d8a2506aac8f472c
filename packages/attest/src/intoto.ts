/** in-toto attestation framework v1: the Statement that binds a predicate to its subjects. */
import { TsbuildError } from '@tsbuild/errors';
import { canonicalJson, parseDigest } from '@tsbuild/oci';
import type { Digest } from '@tsbuild/oci';

export const IN_TOTO_STATEMENT_V1 = 'https://in-toto.io/Statement/v1';
/** Media type of a JSON in-toto Statement (unsigned), as an OCI layer or artifact type. */
export const IN_TOTO_MEDIA_TYPE = 'application/vnd.in-toto+json';
/** Layer annotation naming the predicate type a Statement layer carries (BuildKit's key). */
export const PREDICATE_TYPE_ANNOTATION = 'in-toto.io/predicate-type';

/** Algorithm → lower-case hex, as in-toto's DigestSet. */
export type DigestSet = Record<string, string>;

/** in-toto ResourceDescriptor: a subject, a dependency or a byproduct. */
export interface ResourceDescriptor {
  uri?: string;
  digest?: DigestSet;
  name?: string;
  downloadLocation?: string;
  mediaType?: string;
  annotations?: Record<string, string>;
}

export interface Statement<P = unknown> {
  _type: typeof IN_TOTO_STATEMENT_V1;
  subject: ResourceDescriptor[];
  predicateType: string;
  predicate: P;
}

/** What an attestation is about: the image manifest, by digest, under the names it was built as. */
export interface SubjectInput {
  /** The image manifest's digest (of the platform manifest the attestation describes). */
  digest: Digest;
  /** Names the image was tagged or pushed as (e.g. `registry.example/app:1.0`); may be empty. */
  names?: readonly string[];
}

/** One subject per distinct name, all with the manifest digest; a nameless image gets one unnamed subject. */
export function statementSubjects(s: SubjectInput): ResourceDescriptor[] {
  const digest = parseDigest(s.digest);
  const set: DigestSet = { sha256: digest.slice('sha256:'.length) };
  const names = [...new Set((s.names ?? []).filter((n) => n !== ''))].sort();
  if (names.length === 0) return [{ digest: set }];
  return names.map((name) => ({ name, digest: { ...set } }));
}

/**
 * `algorithm:hex` → `{ algorithm: hex }`. tsbuild's context digest (`sources:<hex>`) passes through
 * under its own algorithm name, as in-toto allows for algorithms of one's own.
 */
export function digestSet(digest: string): DigestSet {
  const m = /^([a-z0-9][a-z0-9_+.-]*):([a-f0-9]{32,})$/.exec(digest);
  if (!m) throw new TsbuildError('BAD_DIGEST', `invalid digest ${JSON.stringify(digest.slice(0, 100))}: expected <algorithm>:<hex>`);
  return { [m[1]!]: m[2]! };
}

/** The bytes of a Statement as tsbuild stores and pushes it: canonical JSON (sorted keys), so the same Statement is always the same blob. */
export function serializeStatement(statement: Statement): Buffer {
  return canonicalJson(statement);
}

/** RFC 3339 UTC as in-toto's Timestamp; whole seconds print without a fraction. */
export function timestamp(t: Date | string, what: string): string {
  const d = typeof t === 'string' ? new Date(t) : t;
  if (Number.isNaN(d.getTime())) throw new TsbuildError('BAD_TIMESTAMP', `${what}: invalid time ${JSON.stringify(String(t))}`);
  return d.toISOString().replace('.000Z', 'Z');
}
