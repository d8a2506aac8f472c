/**
 * SLSA provenance v1 for a tsbuild image, wrapped in an in-toto Statement. What each field holds
 * is the specification of the buildType (TSBUILD_BUILD_TYPE) and is written out in the package
 * README; keep the two in step.
 */
import { redactSecrets, UsageError } from '@tsbuild/errors';
import { formatPlatform, hostPlatform, parseDigest, parsePlatform } from '@tsbuild/oci';
import type { Digest, Platform } from '@tsbuild/oci';
import { digestSet, IN_TOTO_STATEMENT_V1, statementSubjects, timestamp } from './intoto.ts';
import type { DigestSet, ResourceDescriptor, Statement, SubjectInput } from './intoto.ts';
import { dockerImagePurl } from './purl.ts';
import { isSecretName } from './secrets.ts';

export const SLSA_PROVENANCE_V1 = 'https://slsa.dev/provenance/v1';
/**
 * The buildType of tsbuild's provenance: a Dockerfile build. A URN rather than a URL because
 * tsbuild has no published home to host the definition; packages/attest/README.md is it.
 */
export const TSBUILD_BUILD_TYPE = 'urn:tsbuild:buildtype:dockerfile:v1';
/** builder.id when the caller names no more specific one (such as a CI run URL). */
export const TSBUILD_DEFAULT_BUILDER_ID = 'urn:tsbuild:builder:local';

export type ProvenanceMode = 'min' | 'max';

export interface ProvenanceOptions {
  /** `min`: the build's parameters and dependencies; `max` adds secret and ssh ids and every step. */
  mode: ProvenanceMode;
}

export interface BaseImageInput {
  /** The reference as the Dockerfile (or --build-context) named it, e.g. `debian:bookworm`. */
  ref: string;
  /** The digest of the platform manifest the build used. */
  digest: Digest;
  platform?: Platform | string;
}

export interface StepInput {
  /** What the input is: `context`, `stage:build`, `image:debian:bookworm`, `url:https://…`. */
  name: string;
  /** `algorithm:hex`, e.g. `sha256:…` or tsbuild's `sources:…` content digest. */
  digest?: string;
  uri?: string;
}

export interface ProvenanceStep {
  /** Stage name (or index when unnamed). */
  stage: string;
  /** The instruction as written in the Dockerfile, e.g. `RUN make`. */
  instruction: string;
  cacheHit: boolean;
  /** The step's cache key. */
  cacheKey?: string;
  /** The layer the step produced, as the image manifest lists it; absent for config-only steps. */
  layer?: { digest: Digest; mediaType?: string; size?: number };
  inputs?: readonly StepInput[];
}

export interface ProvenanceInput {
  subject: SubjectInput;
  /** The Dockerfile as the user named it (relative to where tsbuild ran) and the sha256 of its bytes. */
  dockerfile: { path: string; digest: Digest };
  target?: string;
  /**
   * Build args the caller sets. Never pass secret values here: tsbuild drops any whose name looks
   * like a secret (see isSecretName) and redacts their values from step instructions, but secrets
   * belong in `--secret`, whose ids (not values) go in `secrets`.
   */
  buildArgs?: Readonly<Record<string, string>> | readonly (readonly [string, string])[];
  labels?: Readonly<Record<string, string>>;
  /** The platform the image was built for. */
  platform: Platform | string;
  /** The build context: its path as the user gave it and its content digest (`sources:<hex>` from the builder). */
  context?: { path?: string; digest: string };
  baseImages?: readonly BaseImageInput[];
  builder: {
    /** tsbuild's version. */
    version: string;
    /** builder.id; default TSBUILD_DEFAULT_BUILDER_ID. */
    id?: string;
    /** Platform of the machine that ran the build; default this process's. */
    platform?: Platform | string;
  };
  invocationId?: string;
  startedOn?: Date | string;
  finishedOn?: Date | string;
  /** `--secret` ids (max only; values are never taken). */
  secrets?: readonly { id: string; optional?: boolean }[];
  /** `--ssh` ids (max only). */
  ssh?: readonly { id: string }[];
  /** Every step in plan order (max only). */
  steps?: readonly ProvenanceStep[];
}

export interface SlsaProvenanceV1 {
  buildDefinition: {
    buildType: string;
    externalParameters: Record<string, unknown>;
    internalParameters?: Record<string, unknown>;
    resolvedDependencies?: ResourceDescriptor[];
  };
  runDetails: {
    builder: { id: string; version?: Record<string, string> };
    metadata?: { invocationId?: string; startedOn?: string; finishedOn?: string };
  };
}

function platformString(p: Platform | string, what: string): string {
  return formatPlatform(typeof p === 'string' ? parsePlatform(p, what) : p);
}

function argEntries(args: ProvenanceInput['buildArgs']): [string, string][] {
  if (args === undefined) return [];
  return Array.isArray(args) ? args.map(([k, v]) => [k, v] as [string, string]) : Object.entries(args as Record<string, string>);
}

/** Replaces every occurrence of the given values (long enough to be meaningful) in text. */
function redactValues(text: string, values: readonly string[]): string {
  let out = text;
  for (const v of values) if (v.length >= 4) out = out.split(v).join('[redacted]');
  return redactSecrets(out);
}

function sha256Set(d: Digest): DigestSet {
  return { sha256: parseDigest(d).slice('sha256:'.length) };
}

export function provenanceStatement(input: ProvenanceInput, options: ProvenanceOptions): Statement<SlsaProvenanceV1> {
  if (options.mode !== 'min' && options.mode !== 'max') {
    throw new UsageError(`provenance mode must be min or max, got ${JSON.stringify(options.mode)}`);
  }
  const max = options.mode === 'max';

  const buildArgs: Record<string, string> = {};
  const droppedValues: string[] = [];
  for (const [k, v] of argEntries(input.buildArgs)) {
    if (isSecretName(k)) droppedValues.push(v);
    else buildArgs[k] = v;
  }

  const external: Record<string, unknown> = {
    dockerfile: { path: input.dockerfile.path, digest: sha256Set(input.dockerfile.digest) },
    platform: platformString(input.platform, 'provenance platform'),
  };
  if (input.target !== undefined && input.target !== '') external.target = input.target;
  if (Object.keys(buildArgs).length > 0) external.buildArgs = buildArgs;
  if (input.labels && Object.keys(input.labels).length > 0) external.labels = { ...input.labels };
  if (input.context) {
    const ctx: Record<string, unknown> = { digest: digestSet(input.context.digest) };
    if (input.context.path !== undefined) ctx.path = input.context.path;
    external.context = ctx;
  }
  if (max && input.secrets && input.secrets.length > 0) {
    external.secrets = [...input.secrets]
      .map((s) => (s.optional ? { id: s.id, optional: true } : { id: s.id }))
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }
  if (max && input.ssh && input.ssh.length > 0) external.ssh = [...new Set(input.ssh.map((s) => s.id))].sort().map((id) => ({ id }));

  const internal: Record<string, unknown> = {
    builderPlatform: platformString(input.builder.platform ?? hostPlatform(), 'builder platform'),
  };
  if (max && input.steps) {
    internal.steps = input.steps.map((s) => {
      const step: Record<string, unknown> = { stage: s.stage, instruction: redactValues(s.instruction, droppedValues), cacheHit: s.cacheHit };
      if (s.cacheKey !== undefined) step.cacheKey = s.cacheKey;
      if (s.layer) {
        const layer: Record<string, unknown> = { digest: sha256Set(s.layer.digest) };
        if (s.layer.mediaType !== undefined) layer.mediaType = s.layer.mediaType;
        if (s.layer.size !== undefined) layer.size = s.layer.size;
        step.layer = layer;
      }
      if (s.inputs && s.inputs.length > 0) {
        step.inputs = s.inputs.map((i) => {
          const r: ResourceDescriptor = { name: i.name };
          if (i.uri !== undefined) r.uri = redactSecrets(i.uri);
          if (i.digest !== undefined) r.digest = digestSet(i.digest);
          return r;
        });
      }
      return step;
    });
  }

  const deps = new Map<string, ResourceDescriptor>();
  for (const b of input.baseImages ?? []) {
    const platform = b.platform === undefined ? undefined : platformString(b.platform, `platform of ${b.ref}`);
    const uri = dockerImagePurl(b.ref, parseDigest(b.digest), platform);
    deps.set(uri, { uri, name: b.ref, digest: sha256Set(b.digest) });
  }
  const resolved = [...deps.values()].sort((a, b) => (a.uri! < b.uri! ? -1 : a.uri! > b.uri! ? 1 : 0));

  const metadata: NonNullable<SlsaProvenanceV1['runDetails']['metadata']> = {};
  if (input.invocationId !== undefined) metadata.invocationId = input.invocationId;
  if (input.startedOn !== undefined) metadata.startedOn = timestamp(input.startedOn, 'startedOn');
  if (input.finishedOn !== undefined) metadata.finishedOn = timestamp(input.finishedOn, 'finishedOn');

  const predicate: SlsaProvenanceV1 = {
    buildDefinition: {
      buildType: TSBUILD_BUILD_TYPE,
      externalParameters: external,
      internalParameters: internal,
      resolvedDependencies: resolved,
    },
    runDetails: {
      builder: { id: input.builder.id ?? TSBUILD_DEFAULT_BUILDER_ID, version: { tsbuild: input.builder.version } },
    },
  };
  if (Object.keys(metadata).length > 0) predicate.runDetails.metadata = metadata;

  return { _type: IN_TOTO_STATEMENT_V1, subject: statementSubjects(input.subject), predicateType: SLSA_PROVENANCE_V1, predicate };
}
