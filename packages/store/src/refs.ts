import { UsageError } from '@tsbuild/errors';
import { parseDigest } from '@tsbuild/oci';
import type { Digest } from '@tsbuild/oci';

const DOMAIN_RE = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?$/;
const COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;

export interface ParsedRef {
  /** `repo:tag` with `:latest` added when the tag was left out. */
  name: string;
  digest?: Digest;
}

function bad(ref: string, why: string): UsageError {
  return new UsageError(`invalid image reference ${JSON.stringify(ref.slice(0, 300))}: ${why}`);
}

/**
 * Parses `[host[:port]/]path[:tag][@sha256:...]`. The colon of a port is not a tag separator:
 * only a colon in the last path component is.
 */
export function parseRef(ref: string): ParsedRef {
  let rest = ref;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    try {
      digest = parseDigest(rest.slice(at + 1));
    } catch {
      throw bad(ref, 'the part after "@" must be sha256:<64 hex digits>');
    }
    rest = rest.slice(0, at);
  }
  if (rest.length === 0 || rest.length > 512) throw bad(ref, 'name must be 1 to 512 characters');
  const slash = rest.lastIndexOf('/');
  const last = rest.slice(slash + 1);
  const colon = last.indexOf(':');
  let repo = rest;
  let tag = 'latest';
  if (colon >= 0) {
    repo = rest.slice(0, slash + 1 + colon);
    tag = last.slice(colon + 1);
  }
  if (!TAG_RE.test(tag)) throw bad(ref, `tag ${JSON.stringify(tag)} must be letters, digits, "_", "." or "-" (at most 128, not starting with "." or "-")`);
  const parts = repo.split('/');
  const first = parts[0]!;
  const hasDomain = parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost' || /[A-Z]/.test(first));
  if (hasDomain && !DOMAIN_RE.test(first)) throw bad(ref, `registry host ${JSON.stringify(first)} is not a valid host[:port]`);
  for (const p of hasDomain ? parts.slice(1) : parts) {
    if (!COMPONENT_RE.test(p)) throw bad(ref, `path component ${JSON.stringify(p)} must be lowercase letters and digits separated by ".", "_", "__" or "-"`);
  }
  const out: ParsedRef = { name: `${repo}:${tag}` };
  if (digest !== undefined) out.digest = digest;
  return out;
}

/** The name as recorded in `org.opencontainers.image.ref.name`. */
export function normalizeName(name: string): string {
  const p = parseRef(name);
  if (p.digest !== undefined) throw bad(name, 'a tag cannot contain a digest');
  return p.name;
}
