import { sha256 } from './digest.ts';
import type { Digest } from './digest.ts';
import { canonicalJson } from './json.ts';
import { MediaType } from './types.ts';
import type { ContainerConfig, Descriptor, HistoryEntry, ImageConfig, Index, Manifest } from './types.ts';

/** A descriptor for bytes we are about to write. */
export function descriptorFor(mediaType: string, bytes: Uint8Array, annotations?: Record<string, string>): Descriptor {
  const d: Descriptor = { mediaType, digest: sha256(bytes), size: bytes.byteLength };
  if (annotations && Object.keys(annotations).length > 0) d.annotations = { ...annotations };
  return d;
}

function plain(d: Descriptor): Descriptor {
  const out: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (d.annotations && Object.keys(d.annotations).length > 0) out.annotations = { ...d.annotations };
  if (d.platform) out.platform = { ...d.platform };
  if (d.urls) out.urls = [...d.urls];
  if (d.artifactType) out.artifactType = d.artifactType;
  return out;
}

/**
 * An image manifest. A Docker config media type gives a Docker schema2 manifest (which has no
 * annotations), anything else an OCI one.
 */
export function buildManifest(config: Descriptor, layers: Descriptor[], annotations?: Record<string, string>): Manifest {
  const docker = config.mediaType === MediaType.DockerConfig;
  const m: Manifest = {
    schemaVersion: 2,
    mediaType: docker ? MediaType.DockerManifest : MediaType.OciManifest,
    config: plain(config),
    layers: layers.map(plain),
  };
  if (!docker && annotations && Object.keys(annotations).length > 0) m.annotations = { ...annotations };
  return m;
}

export function buildIndex(manifests: Descriptor[], annotations?: Record<string, string>): Index {
  const idx: Index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: manifests.map(plain) };
  if (annotations && Object.keys(annotations).length > 0) idx.annotations = { ...annotations };
  return idx;
}

export interface BuildConfigOptions {
  architecture: string;
  os: string;
  variant?: string;
  created?: string;
  author?: string;
  config?: ContainerConfig;
  diffIds: Digest[];
  history?: HistoryEntry[];
}

export function buildConfig(opts: BuildConfigOptions): ImageConfig {
  const c: ImageConfig = {
    architecture: opts.architecture,
    os: opts.os,
    rootfs: { type: 'layers', diff_ids: [...opts.diffIds] },
  };
  if (opts.variant !== undefined) c.variant = opts.variant;
  if (opts.created !== undefined) c.created = opts.created;
  if (opts.author !== undefined) c.author = opts.author;
  if (opts.config !== undefined) c.config = opts.config;
  if (opts.history !== undefined) c.history = opts.history.map((h) => ({ ...h }));
  return c;
}

/** Serialises a manifest, index or config the one way tsbuild writes them, with its descriptor. */
export function serialize(mediaType: string, value: Manifest | Index | ImageConfig): { bytes: Buffer; descriptor: Descriptor } {
  const bytes = canonicalJson(value);
  return { bytes, descriptor: descriptorFor(mediaType, bytes) };
}

/** Chain IDs name a stack of layers: each one commits to every layer beneath it. */
export function chainIds(diffIds: Digest[]): Digest[] {
  const out: Digest[] = [];
  let prev: Digest | undefined;
  for (const d of diffIds) {
    prev = prev === undefined ? d : sha256(`${prev} ${d}`);
    out.push(prev);
  }
  return out;
}
