/**
 * The one path from a built image to its outputs, for the CLI and the Action alike: names in the
 * store, archives and directories (`--output type=oci|docker|local|tar`), pushes to registries
 * (`--push`, `type=registry`, `type=image,push=true`), the image id file and the metadata JSON
 * buildx writes. It uses the store the build already holds.
 */
import { writeFile } from 'node:fs/promises';
import { UsageError } from '@tsbuild/errors';
import type { Descriptor, Digest } from '@tsbuild/oci';
import type { Store } from '@tsbuild/store';
import { pushFromStore } from './distribution.ts';
import type { DistributionOptions } from './distribution.ts';
import type { EventSink } from './events.ts';
import { exportImage } from './export.ts';
import type { ExportType, OutputSpec } from './export.ts';
import { pushAttestations, storeAttestations } from './attest.ts';
import type { Attestations } from './attest.ts';
import { RegistryClient, getManifest, parseReference, withDigest } from '@tsbuild/registry';
import type { ClientOptions } from '@tsbuild/registry';

export interface PublishOptions {
  /** `-t` names; names given by `--output …,name=` are added to them. */
  tags?: string[];
  outputs?: OutputSpec[];
  /** `--push`: push every name to its registry. */
  push?: boolean;
  /** Layer compression for pushes (default gzip). */
  compression?: 'gzip' | 'zstd';
  /** How registries are reached (plain-HTTP hosts, extra CAs, timeouts; credentials come from the Docker config). */
  registry?: DistributionOptions;
  /** Writes the image id (the config digest, as Docker has it). */
  iidFile?: string;
  /** Writes buildx's metadata JSON. */
  metadataFile?: string;
}

/** What publish will do, checked before a build starts so a bad flag costs nothing. */
export interface PublishPlan {
  names: string[];
  push: boolean;
  files: { type: ExportType; dest: string }[];
}

export function planPublish(opts: PublishOptions): PublishPlan {
  const outputs = opts.outputs ?? [];
  const names = [...new Set([...(opts.tags ?? []), ...outputs.flatMap((o) => ('names' in o ? o.names : []))])];
  const push = opts.push === true || outputs.some((o) => o.type === 'registry' || (o.type === 'image' && o.push));
  if (push && names.length === 0) throw new UsageError('push needs at least one tag to push to', { hint: 'name the image with -t (the tags input of the Action), or with name= in the output' });
  const files = outputs.filter((o): o is { type: ExportType; dest: string } => 'dest' in o);
  if (files.filter((o) => o.dest === '-').length > 1) throw new UsageError('only one --output can write to stdout');
  return { names, push, files };
}

export interface BuiltImage {
  manifest: Descriptor;
  configDigest: Digest;
}

export interface Published {
  /** The names the image was tagged with in the store. */
  tags: string[];
  /** The manifest digest the registries hold (the pushed manifest names compressed layers), else the local one. */
  digest: Digest;
  pushed: { ref: string; digest: Digest }[];
  exported: { type: ExportType; dest: string; size: number }[];
  /** buildx's metadata: `containerimage.digest`, `containerimage.config.digest`, … */
  metadata: Record<string, unknown>;
}

export async function publish(
  store: Store,
  image: BuiltImage,
  opts: PublishOptions & {
    emit?: EventSink;
    signal?: AbortSignal | undefined;
    /** Annotations of the pushed manifest, made only when something is pushed (an inline cache). */
    pushAnnotations?: (() => Promise<Record<string, string>>) | undefined;
    /** Provenance and SBOM to attach to the image in the store and to every pushed manifest. */
    attestations?: Attestations | undefined;
  },
): Promise<Published> {
  const plan = planPublish(opts);
  const emit = opts.emit ?? (() => {});
  const tags: string[] = [];
  for (const t of plan.names) tags.push(await store.tag(t, image.manifest));
  const att = opts.attestations?.wanted ? opts.attestations : undefined;
  // Kept with the image before the exports, so OCI archives carry them.
  if (att) await storeAttestations(store, image.manifest, await att.statements(image.manifest, tags));
  if (opts.iidFile !== undefined) await writeFile(opts.iidFile, image.configDigest);
  const exported: Published['exported'] = [];
  for (const o of plan.files) {
    const r = await exportImage(store, image.manifest.digest, { type: o.type, dest: o.dest, tags, annotations: image.manifest.annotations, signal: opts.signal });
    exported.push({ type: o.type, dest: o.dest, size: r.size });
    emit({ type: 'exported', time: Date.now(), output: o.type, dest: o.dest, size: r.size });
  }
  const pushed: Published['pushed'] = [];
  if (plan.push) {
    const annotations = await opts.pushAnnotations?.();
    for (const t of tags) {
      const digest = await pushFromStore(store, t, t, {
        ...opts.registry,
        annotations,
        compression: opts.compression ?? 'gzip',
        signal: opts.signal,
        onBlob: (b) => emit({ type: 'push-blob', time: Date.now(), ref: t, digest: b.descriptor.digest, status: b.status }),
      });
      pushed.push({ ref: t, digest });
      emit({ type: 'pushed', time: Date.now(), ref: t, digest });
      if (att) {
        // The pushed manifest names compressed layers: it is another manifest, with its own attestations.
        const subject = await pushedDescriptor(t, digest, opts.registry ?? {}, opts.signal);
        const r = await pushAttestations(t, subject, await att.statements(subject, [t]), { ...opts.registry, signal: opts.signal });
        if (r) emit({ type: 'attested', time: Date.now(), ref: t, digest: r.digest, subject: digest, via: r.via });
      }
    }
  }
  const digest = pushed.at(-1)?.digest ?? image.manifest.digest;
  const metadata = {
    'containerimage.digest': digest,
    'containerimage.config.digest': image.configDigest,
    'containerimage.descriptor': image.manifest,
    'image.name': tags.join(','),
  };
  if (opts.metadataFile !== undefined) await writeFile(opts.metadataFile, JSON.stringify(metadata, null, 2) + '\n');
  return { tags, digest, pushed, exported, metadata };
}

/** The descriptor of a manifest just pushed (its media type and size, for a subject). */
async function pushedDescriptor(ref: string, digest: Digest, registry: ClientOptions, signal: AbortSignal | undefined): Promise<Descriptor> {
  const client = new RegistryClient(registry);
  try {
    return (await getManifest(client, withDigest(parseReference(ref), digest), { signal })).descriptor;
  } finally {
    client.close();
  }
}
