import { UsageError } from '@tsbuild/errors';
import type { Digest } from '@tsbuild/oci';

/** An image reference, normalised the way `docker pull` reads it. */
export interface Reference {
  /** Registry host (with port), `docker.io` for Docker Hub. */
  readonly registry: string;
  /** Repository path inside the registry, e.g. `library/busybox`. */
  readonly repository: string;
  readonly tag: string | undefined;
  readonly digest: Digest | undefined;
  /** The short form Docker prints: `busybox:latest`, `user/app@sha256:…`. */
  readonly familiar: string;
  /** The tag or digest to ask the registry for (the digest wins when both are given). */
  readonly identifier: string;
  /** Fully qualified: `docker.io/library/busybox:latest`. */
  toString(): string;
}

export const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_API = 'registry-1.docker.io';
const DEFAULT_TAG = 'latest';

// Each path component: lower-case alphanumerics joined by `.`, `_`, `__` or runs of `-`.
const COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const HOST_LABEL = '(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])';
const DOMAIN_RE = new RegExp(`^(?:${HOST_LABEL}(?:\\.${HOST_LABEL})*|\\[[0-9A-Fa-f:.]+\\])(?::[0-9]+)?$`);
const MAX_NAME = 255;

function bad(input: string, why: string): UsageError {
  return new UsageError(`invalid image reference ${JSON.stringify(input)}: ${why}`, {
    hint: 'references look like [HOST[:PORT]/]NAME[:TAG][@sha256:DIGEST], with a lower-case NAME',
  });
}

/**
 * Parses `busybox`, `user/app:1`, `host:5000/a/b:tag`, `localhost/a`, `a@sha256:…`,
 * `a:tag@sha256:…`. A reference without tag or digest gets `latest`.
 */
export function parseReference(input: string): Reference {
  if (input.length === 0) throw bad(input, 'it is empty');
  if (/\s/.test(input)) throw bad(input, 'it contains white space');

  let rest = input;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const d = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!/^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(d)) throw bad(input, `"${d}" is not a digest`);
    if (!d.startsWith('sha256:')) throw bad(input, `digest algorithm "${d.split(':')[0]}" is not supported (only sha256)`);
    if (!/^sha256:[a-f0-9]{64}$/.test(d)) throw bad(input, 'a sha256 digest has 64 lower-case hex digits');
    digest = d as Digest;
  }

  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw bad(input, `"${tag}" is not a valid tag`);
  }
  if (rest.length === 0) throw bad(input, 'the repository name is empty');

  let registry = DOCKER_HUB;
  let repository = rest;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    // Docker's rule: the first component is a host only if it looks like one.
    if (first === 'localhost' || /[.:]/.test(first) || /[A-Z]/.test(first)) {
      if (!DOMAIN_RE.test(first)) throw bad(input, `"${first}" is not a valid registry host`);
      registry = first;
      repository = rest.slice(slash + 1);
    }
  }
  if (registry === 'index.docker.io') registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !repository.includes('/')) repository = `library/${repository}`;

  if (repository.length === 0) throw bad(input, 'the repository name is empty');
  for (const component of repository.split('/')) {
    if (COMPONENT_RE.test(component)) continue;
    if (COMPONENT_RE.test(component.toLowerCase())) throw bad(input, 'repository name must be lowercase');
    throw bad(input, `"${component}" is not a valid repository path component`);
  }
  if (registry.length + 1 + repository.length > MAX_NAME) throw bad(input, `the name is longer than ${MAX_NAME} characters`);

  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  return makeReference(registry, repository, tag, digest);
}

function makeReference(registry: string, repository: string, tag: string | undefined, digest: Digest | undefined): Reference {
  const suffix = (tag === undefined ? '' : `:${tag}`) + (digest === undefined ? '' : `@${digest}`);
  let short = `${registry}/${repository}`;
  if (registry === DOCKER_HUB) short = repository.startsWith('library/') && repository.split('/').length === 2 ? repository.slice(8) : repository;
  const full = `${registry}/${repository}${suffix}`;
  return {
    registry,
    repository,
    tag,
    digest,
    familiar: short + suffix,
    identifier: digest ?? tag ?? DEFAULT_TAG,
    toString: () => full,
  };
}

/** The same repository with another tag or digest (e.g. a platform manifest picked from an index). */
export function withDigest(ref: Reference, digest: Digest): Reference {
  return makeReference(ref.registry, ref.repository, undefined, digest);
}

export function withTag(ref: Reference, tag: string): Reference {
  if (!TAG_RE.test(tag)) throw bad(tag, 'not a valid tag');
  return makeReference(ref.registry, ref.repository, tag, undefined);
}

/** The host that serves the registry API: Docker Hub's API lives on another name than its references. */
export function registryApiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
}
