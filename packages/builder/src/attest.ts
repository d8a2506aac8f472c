/**
 * Provenance and SBOM for a built image, attached as OCI referrers of its manifest: kept in the
 * local store beside the image, pushed with it (the referrers API where the registry has one, the
 * `sha256-<hex>` fallback tag otherwise), carried by OCI exports. Never a fake platform in an index.
 */
import { createHash, randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import {
  attestationManifest, provenanceStatement, referrersFallbackTag, sbomStatement, scanRootfs, spdxDocument, updateReferrersIndex,
} from '@tsbuild/attest';
import type { FoundPackage, ProvenanceMode, ProvenanceStep, Statement } from '@tsbuild/attest';
import { MediaType, isDigest, parseManifest } from '@tsbuild/oci';
import type { Descriptor, Digest, Manifest, Platform } from '@tsbuild/oci';
import { RegistryClient, getManifest, parseReference, pullScope, pushImage, pushManifest, withDigest, withTag } from '@tsbuild/registry';
import type { ClientOptions, Reference } from '@tsbuild/registry';
import type { Store } from '@tsbuild/store';
import { TsbuildError } from '@tsbuild/errors';

declare const TSBUILD_VERSION: string | undefined;
/** tsbuild's version, as the bundles define it (`0.0.0-dev` when run from sources). */
export const BUILDER_VERSION = typeof TSBUILD_VERSION === 'string' ? TSBUILD_VERSION : '0.0.0-dev';

export interface AttestOptions {
  /** `--provenance mode=min|max` (false: none). */
  provenance?: ProvenanceMode | false;
  /** `--sbom true`: an SPDX document of the final filesystem. */
  sbom?: boolean;
}

/** What a build knows that the statements describe. */
export interface AttestInput {
  dockerfile: { path: string; text: string };
  target: string | undefined;
  buildArgs: Record<string, string>;
  labels: Record<string, string> | undefined;
  platform: Platform;
  context: { path: string; digest: () => Promise<string> };
  baseImages: { ref: string; digest: Digest }[];
  secrets: string[];
  ssh: string[];
  steps: ProvenanceStep[];
  startedOn: Date;
  finishedOn: Date;
  /** The build's time for the SBOM (SOURCE_DATE_EPOCH when set). */
  created: Date;
  /** The final filesystem, mounted read-only for the scan; release it with the returned function. */
  rootfs: () => Promise<{ dir: string; release: () => Promise<void> }>;
  warn: (message: string) => void;
}

const NS = 'referrers';

/** Makes the statements for one subject (the local manifest and a pushed one are different manifests). */
export class Attestations {
  private packages: Promise<FoundPackage[]> | undefined;
  private readonly invocationId = randomUUID();

  constructor(
    private readonly opts: AttestOptions,
    private readonly input: AttestInput,
  ) {}

  get wanted(): boolean {
    return (this.opts.provenance !== undefined && this.opts.provenance !== false) || this.opts.sbom === true;
  }

  private scan(): Promise<FoundPackage[]> {
    return (this.packages ??= (async () => {
      const fs = await this.input.rootfs();
      try {
        const r = await scanRootfs(fs.dir);
        for (const w of r.warnings) this.input.warn(`sbom: ${w}`);
        return r.packages;
      } finally {
        await fs.release();
      }
    })());
  }

  async statements(subject: Descriptor, names: readonly string[]): Promise<Statement[]> {
    const out: Statement[] = [];
    const sub = { digest: subject.digest, names };
    const i = this.input;
    if (this.opts.provenance) {
      out.push(
        provenanceStatement(
          {
            subject: sub,
            dockerfile: { path: i.dockerfile.path, digest: `sha256:${createHash('sha256').update(i.dockerfile.text).digest('hex')}` as Digest },
            ...(i.target !== undefined ? { target: i.target } : {}),
            buildArgs: i.buildArgs,
            ...(i.labels ? { labels: i.labels } : {}),
            platform: i.platform,
            context: { path: i.context.path, digest: await i.context.digest() },
            baseImages: i.baseImages,
            builder: { version: BUILDER_VERSION },
            invocationId: this.invocationId,
            startedOn: i.startedOn,
            finishedOn: i.finishedOn,
            secrets: i.secrets.map((id) => ({ id })),
            ssh: i.ssh.map((id) => ({ id })),
            steps: i.steps,
          },
          { mode: this.opts.provenance },
        ),
      );
    }
    if (this.opts.sbom) {
      const name = names[0] ?? subject.digest;
      out.push(sbomStatement(spdxDocument(await this.scan(), { name, namespaceSeed: subject.digest, created: i.created, tsbuildVersion: BUILDER_VERSION }), sub));
    }
    return out;
  }
}

/** Writes an attestation manifest for `subject` into the store and remembers it as a referrer of it. */
export async function storeAttestations(store: Store, subject: Descriptor, statements: readonly Statement[]): Promise<Descriptor | undefined> {
  if (statements.length === 0) return undefined;
  const att = attestationManifest(statements, subject);
  for (const b of att.blobs) await store.writeBlob(b.bytes, { digest: b.descriptor.digest, size: b.descriptor.size });
  await store.writeBlob(att.bytes, { digest: att.descriptor.digest, size: att.descriptor.size });
  await storeReferrer(store, subject.digest, att.referrer, att.blobs.map((b) => b.descriptor));
  return att.referrer;
}

/** Records `referrer` (a manifest in the store, with its `blobs`) as a referrer of `subject`. */
export async function storeReferrer(store: Store, subject: Digest, referrer: Descriptor, blobs: readonly Descriptor[]): Promise<void> {
  const meta = store.meta(NS);
  const old = await meta.get(subject);
  const list = Array.isArray(old) ? (old as Descriptor[]).filter((d) => d.digest !== referrer.digest) : [];
  const next = [...list, referrer];
  // GC keeps every referrer's manifest and blobs while the entry exists.
  const roots: Digest[] = [];
  for (const r of next) {
    roots.push(r.digest);
    if (r.digest === referrer.digest) roots.push(...blobs.map((b) => b.digest));
    else if (await store.hasBlob(r.digest)) {
      const m = parseManifest(await store.readBlob(r.digest), { source: r.digest });
      roots.push(m.config.digest, ...m.layers.map((l) => l.digest));
    }
  }
  await meta.set(subject, next, { roots });
}

/** The referrers of a manifest in the store (attestation manifests, newest last). */
export async function referrersOf(store: Store, subject: Digest): Promise<Descriptor[]> {
  const v = await store.meta(NS).get(subject);
  return Array.isArray(v) ? (v as Descriptor[]).filter((d) => isDigest(d?.digest)) : [];
}

/** An attestation manifest's statements, read back from the store. */
export async function statementsOf(store: Store, referrer: Descriptor): Promise<{ manifest: Manifest; statements: Statement[] }> {
  const manifest = parseManifest(await store.readBlob(referrer.digest), { source: referrer.digest });
  const statements: Statement[] = [];
  for (const l of manifest.layers) {
    try {
      statements.push(JSON.parse((await store.readBlob(l.digest, { maxSize: 256 * 1024 * 1024 })).toString('utf8')) as Statement);
    } catch (e) {
      throw new TsbuildError('BAD_ATTESTATION', `attestation ${l.digest} of ${referrer.digest} is not JSON: ${(e as Error).message}`);
    }
  }
  return { manifest, statements };
}

/**
 * Pushes an attestation manifest for the pushed image `subject` to `dest`'s repository, and
 * makes it findable: through the referrers API when the registry has one (it then lists the
 * manifest by its `subject`), else through the `sha256-<hex>` tag the distribution spec defines.
 */
export async function pushAttestations(
  destText: string,
  subject: Descriptor,
  statements: readonly Statement[],
  opts: ClientOptions & { signal?: AbortSignal | undefined },
): Promise<{ digest: Digest; via: 'referrers-api' | 'fallback-tag' } | undefined> {
  if (statements.length === 0) return undefined;
  const att = attestationManifest(statements, subject);
  const dest = parseReference(destText);
  const client = new RegistryClient(opts);
  try {
    const blobs = new Map(att.blobs.map((b) => [b.descriptor.digest, b.bytes] as const));
    await pushImage(client, withDigest(dest, att.descriptor.digest), {
      manifest: async () => ({ bytes: att.bytes, mediaType: MediaType.OciManifest }),
      openBlob: async (d) => Readable.from([blobs.get(d.digest) ?? Buffer.alloc(0)]),
    }, { signal: opts.signal });
    if (await hasReferrersApi(client, dest, subject.digest, opts.signal)) return { digest: att.descriptor.digest, via: 'referrers-api' };
    const tagRef = withTag(dest, referrersFallbackTag(subject.digest));
    let existing: Buffer | undefined;
    try {
      existing = (await getManifest(client, tagRef, { signal: opts.signal })).bytes;
    } catch (e) {
      if (!(e instanceof TsbuildError && (e as { status?: number }).status === 404)) throw e;
    }
    const u = updateReferrersIndex(existing, att.referrer, { source: tagRef.toString() });
    if (u.changed) await pushManifest(client, tagRef, u.bytes, MediaType.OciIndex, { signal: opts.signal });
    return { digest: att.descriptor.digest, via: 'fallback-tag' };
  } finally {
    client.close();
  }
}

/** A registry with the referrers API answers GET /v2/<name>/referrers/<digest> (never 404, says the spec). */
async function hasReferrersApi(client: RegistryClient, ref: Reference, digest: Digest, signal: AbortSignal | undefined): Promise<boolean> {
  const res = await client.request(ref.registry, {
    method: 'GET',
    path: `/v2/${ref.repository}/referrers/${digest}`,
    scopes: [pullScope(ref.repository)],
    what: `referrers of ${digest}`,
    signal,
  });
  const type = res.header('content-type') ?? '';
  res.discard();
  return res.status === 200 && type.startsWith(MediaType.OciIndex);
}
