import { TsbuildError } from '@tsbuild/errors';
import { MediaType } from './types.ts';
import type { Compression } from './types.ts';

export function isIndexMediaType(mt: string | undefined): boolean {
  return mt === MediaType.OciIndex || mt === MediaType.DockerManifestList;
}

export function isManifestMediaType(mt: string | undefined): boolean {
  return mt === MediaType.OciManifest || mt === MediaType.DockerManifest;
}

export function isConfigMediaType(mt: string | undefined): boolean {
  return mt === MediaType.OciConfig || mt === MediaType.DockerConfig;
}

const OCI_LAYER_RE = /^application\/vnd\.oci\.image\.layer\.(?:nondistributable\.)?v1\.tar(?:\+(gzip|zstd))?$/;
const DOCKER_LAYER_RE = /^application\/vnd\.docker\.image\.rootfs\.(?:foreign\.)?diff\.tar(?:\.(gzip))?$/;

export function isLayerMediaType(mt: string | undefined): boolean {
  return mt !== undefined && (OCI_LAYER_RE.test(mt) || DOCKER_LAYER_RE.test(mt));
}

/** How a layer blob of this media type is compressed; Docker schema2 types are accepted too. */
export function layerCompression(mediaType: string): Compression {
  const m = OCI_LAYER_RE.exec(mediaType) ?? DOCKER_LAYER_RE.exec(mediaType);
  if (!m) {
    throw new TsbuildError('UNSUPPORTED_MEDIA_TYPE', `unsupported layer media type ${JSON.stringify(mediaType)}`, {
      hint: 'tsbuild reads OCI and Docker schema2 layers (tar, tar+gzip, tar+zstd)',
    });
  }
  return m[1] === 'gzip' ? 'gzip' : m[1] === 'zstd' ? 'zstd' : 'none';
}

/** The OCI layer media type for a compression. */
export function layerMediaType(compression: Compression): string {
  switch (compression) {
    case 'none':
      return MediaType.OciLayer;
    case 'gzip':
      return MediaType.OciLayerGzip;
    case 'zstd':
      return MediaType.OciLayerZstd;
  }
}
