/**
 * Package URLs (purl) as the purl specification builds them: type/namespace/name@version?qualifiers.
 * tsbuild writes its own rather than using packageurl-js because that library (2.0.1) fails the
 * specification's own test vectors for two of the types an SBOM here is made of: it leaves `+`
 * unencoded in versions (`1:2.4.47-2+b1` must become `1:2.4.47-2%2Bb1`, which nearly every Debian
 * security update has) and does not collapse runs of `-`, `_` and `.` in PyPI names
 * (`My.PyPI_.--._Package` must become `my-pypi-package`).
 */
import { TsbuildError } from '@tsbuild/errors';

export interface PurlParts {
  type: string;
  namespace?: string | undefined;
  name: string;
  version?: string | undefined;
  qualifiers?: Readonly<Record<string, string | undefined>> | undefined;
}

// The spec's "allowed set": alphanumerics and the punctuation `.-_~`; `:` is never encoded either.
const UNRESERVED = /[A-Za-z0-9._~:-]/;

/** Percent-encodes a purl component: UTF-8, every octet outside the allowed set as %XX (upper case). */
export function purlEncode(component: string): string {
  let out = '';
  for (const ch of component) {
    if (UNRESERVED.test(ch)) {
      out += ch;
      continue;
    }
    for (const byte of Buffer.from(ch, 'utf8')) out += '%' + byte.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

/** The canonical purl string: lower-case type, encoded segments, qualifiers sorted, empty values dropped. */
export function formatPurl(p: PurlParts): string {
  const type = p.type.toLowerCase();
  if (!/^[a-z][a-z0-9.-]*$/.test(type)) throw new TsbuildError('BAD_PURL', `invalid purl type ${JSON.stringify(p.type)}`);
  if (p.name === '') throw new TsbuildError('BAD_PURL', `a ${type} purl needs a name`);
  let out = `pkg:${type}/`;
  const ns = (p.namespace ?? '').split('/').filter((s) => s !== '');
  if (ns.length > 0) out += ns.map(purlEncode).join('/') + '/';
  out += purlEncode(p.name.replace(/^\/+|\/+$/g, ''));
  if (p.version !== undefined && p.version !== '') out += '@' + purlEncode(p.version);
  const quals = Object.entries(p.qualifiers ?? {})
    .filter((kv): kv is [string, string] => kv[1] !== undefined && kv[1] !== '')
    .map(([k, v]) => {
      const key = k.toLowerCase();
      if (!/^[a-z][a-z0-9._-]*$/.test(key)) throw new TsbuildError('BAD_PURL', `invalid purl qualifier key ${JSON.stringify(k)}`);
      return `${key}=${purlEncode(v)}`;
    })
    .sort();
  if (quals.length > 0) out += '?' + quals.join('&');
  return out;
}

/** `pkg:deb/<vendor>/<name>@<version>?arch=…&distro=…`; names are case-insensitive, so lower-cased. */
export function debPurl(vendor: string, name: string, version: string, qualifiers: { arch?: string; distro?: string }): string {
  return formatPurl({ type: 'deb', namespace: vendor.toLowerCase(), name: name.toLowerCase(), version, qualifiers });
}

/** `pkg:apk/<vendor>/<name>@<version>?arch=…&distro=…`. */
export function apkPurl(vendor: string, name: string, version: string, qualifiers: { arch?: string; distro?: string }): string {
  return formatPurl({ type: 'apk', namespace: vendor.toLowerCase(), name: name.toLowerCase(), version, qualifiers });
}

/** `pkg:npm/<name>@<version>`, a scope as the namespace with its `@` encoded: `pkg:npm/%40babel/core@7.0.0`. */
export function npmPurl(packageName: string, version: string): string {
  const lower = packageName.toLowerCase();
  const slash = lower.startsWith('@') ? lower.indexOf('/') : -1;
  if (slash > 0) return formatPurl({ type: 'npm', namespace: lower.slice(0, slash), name: lower.slice(slash + 1), version });
  return formatPurl({ type: 'npm', name: lower, version });
}

/** The normalized PyPI name (PEP 503 / the purl spec): runs of `-`, `_`, `.` become one `-`, lower case. */
export function normalizePypiName(name: string): string {
  return name.replace(/[-_.]+/g, '-').toLowerCase();
}

export function pypiPurl(name: string, version: string): string {
  return formatPurl({ type: 'pypi', name: normalizePypiName(name), version });
}

export interface ImageReferenceParts {
  /** Registry host[:port]; `docker.io` for Docker Hub. */
  domain: string;
  /** Repository path on that registry, e.g. `library/debian`. */
  path: string;
  tag?: string;
  digest?: string;
}

/**
 * Splits an image reference the way Docker names images: a first component with a `.` or `:` (or
 * `localhost`) is a registry, anything else is on Docker Hub, where one-part names are `library/`.
 */
export function splitImageReference(ref: string): ImageReferenceParts {
  let rest = ref.trim();
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  const parts = rest.split('/');
  let domain = 'docker.io';
  const first = parts[0] ?? '';
  if (parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    domain = first;
    parts.shift();
  }
  if (domain === 'index.docker.io' || domain === 'registry-1.docker.io') domain = 'docker.io';
  if (domain === 'docker.io' && parts.length === 1) parts.unshift('library');
  const path = parts.join('/');
  if (path === '' || parts.some((s) => s === '')) throw new TsbuildError('BAD_REFERENCE', `invalid image reference ${JSON.stringify(ref)}`);
  const out: ImageReferenceParts = { domain, path: path.toLowerCase() };
  if (tag !== undefined && tag !== '') out.tag = tag;
  if (digest !== undefined && digest !== '') out.digest = digest;
  return out;
}

/**
 * `pkg:docker/<namespace>/<name>@<digest>?platform=…&repository_url=…`: Docker Hub images by their
 * familiar name (`library/` dropped, as BuildKit writes them), other registries in `repository_url`
 * (the spec forbids a host as the namespace).
 */
export function dockerImagePurl(ref: string, digest: string, platform?: string): string {
  const r = splitImageReference(ref);
  let segments = r.path.split('/');
  if (r.domain === 'docker.io' && segments[0] === 'library' && segments.length === 2) segments = segments.slice(1);
  const name = segments.pop()!;
  return formatPurl({
    type: 'docker',
    namespace: segments.join('/'),
    name,
    version: digest,
    qualifiers: { platform, repository_url: r.domain === 'docker.io' ? undefined : r.domain },
  });
}
