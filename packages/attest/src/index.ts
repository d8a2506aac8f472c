export { provenanceStatement, SLSA_PROVENANCE_V1, TSBUILD_BUILD_TYPE, TSBUILD_DEFAULT_BUILDER_ID } from './provenance.ts';
export type { BaseImageInput, ProvenanceInput, ProvenanceMode, ProvenanceOptions, ProvenanceStep, SlsaProvenanceV1, StepInput } from './provenance.ts';
export { isSecretName } from './secrets.ts';
export { digestSet, IN_TOTO_MEDIA_TYPE, IN_TOTO_STATEMENT_V1, PREDICATE_TYPE_ANNOTATION, serializeStatement, statementSubjects } from './intoto.ts';
export type { DigestSet, ResourceDescriptor, Statement, SubjectInput } from './intoto.ts';
export { scanRootfs } from './scan.ts';
export type { ScanOptions, ScanResult } from './scan.ts';
export type { TreeLimits } from './tree.ts';
export type { OsRelease } from './osrelease.ts';
export type { Ecosystem, FoundPackage } from './package.ts';
export type { DeclaredLicense } from './license.ts';
export { sbomStatement, spdxDocument, SPDX_PREDICATE_TYPE, SPDX_ROOT_ID } from './spdx.ts';
export type { SpdxDocument, SpdxExternalRef, SpdxOptions, SpdxPackage, SpdxRelationship } from './spdx.ts';
export { apkPurl, debPurl, dockerImagePurl, formatPurl, normalizePypiName, npmPurl, pypiPurl } from './purl.ts';
export type { PurlParts } from './purl.ts';
export {
  attestationManifest,
  EMPTY_DESCRIPTOR,
  EMPTY_JSON,
  EMPTY_JSON_MEDIA_TYPE,
  referrerDescriptor,
  referrersFallbackTag,
  updateReferrersIndex,
} from './referrers.ts';
export type { ArtifactManifest, AttestationManifest, AttestationManifestOptions, AttestationBlob, ReferrersIndexUpdate } from './referrers.ts';
