import { UsageError } from '@tsbuild/errors';
import { MediaType, type Descriptor, type Manifest } from '@tsbuild/oci';

export type ImageFormat = 'oci' | 'docker';

const TO_DOCKER: Record<string, string> = {
  [MediaType.OciManifest]: MediaType.DockerManifest,
  [MediaType.OciConfig]: MediaType.DockerConfig,
  [MediaType.OciLayer]: MediaType.DockerLayer,
  [MediaType.OciLayerGzip]: MediaType.DockerLayerGzip,
};
const TO_OCI: Record<string, string> = Object.fromEntries(Object.entries(TO_DOCKER).map(([oci, docker]) => [docker, oci]));
TO_OCI[MediaType.DockerForeignLayerGzip] = 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip';

function mapType(type: string, table: Record<string, string>, format: ImageFormat, what: string): string {
  const mapped = table[type];
  if (mapped !== undefined) return mapped;
  if (Object.values(table).includes(type)) return type;
  if (format === 'docker' && type === MediaType.OciLayerZstd) {
    throw new UsageError(`${what}: zstd layers have no Docker media type`, { hint: 'push with --format oci, or compress with gzip' });
  }
  throw new UsageError(`${what}: media type ${type} has no ${format} equivalent`);
}

function convertDescriptor(d: Descriptor, table: Record<string, string>, format: ImageFormat, what: string): Descriptor {
  const out: Descriptor = { mediaType: mapType(d.mediaType, table, format, what), digest: d.digest, size: d.size };
  // Docker schema 2 descriptors carry urls (foreign layers) but no annotations.
  if (d.urls !== undefined) out.urls = d.urls;
  if (format === 'oci' && d.annotations !== undefined) out.annotations = d.annotations;
  return out;
}

/**
 * The same image in the other manifest format. Only media types change: the config JSON and
 * layer bytes are identical in both formats, so every blob digest stays the same and only the
 * manifest's own digest changes.
 */
export function convertManifest(manifest: Manifest, format: ImageFormat): Manifest {
  const table = format === 'docker' ? TO_DOCKER : TO_OCI;
  const what = `convert manifest to ${format}`;
  const out: Manifest = {
    schemaVersion: 2,
    mediaType: format === 'docker' ? MediaType.DockerManifest : MediaType.OciManifest,
    config: convertDescriptor(manifest.config, table, format, what),
    layers: manifest.layers.map((l) => convertDescriptor(l, table, format, what)),
  };
  if (format === 'oci' && manifest.annotations !== undefined) out.annotations = manifest.annotations;
  return out;
}

export function toDockerManifest(manifest: Manifest): Manifest {
  return convertManifest(manifest, 'docker');
}

export function toOciManifest(manifest: Manifest): Manifest {
  return convertManifest(manifest, 'oci');
}

/** The manifest media type a format uses, for the PUT's Content-Type. */
export function manifestMediaType(format: ImageFormat): string {
  return format === 'docker' ? MediaType.DockerManifest : MediaType.OciManifest;
}

export function formatOfManifest(manifest: Manifest): ImageFormat {
  return manifest.mediaType === MediaType.DockerManifest || manifest.config.mediaType === MediaType.DockerConfig ? 'docker' : 'oci';
}
