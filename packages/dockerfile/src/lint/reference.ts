/*
 * Whether a FROM image name is a valid reference once normalised (the grammar of
 * distribution/reference, which Docker and BuildKit use): `[domain[:port]/]path[:tag][@digest]`,
 * path components lowercase, docker.io names without a slash under `library/`.
 */

const ALNUM = '[a-z0-9]+';
const SEPARATOR = '(?:[._]|__|[-]+)';
const PATH_COMPONENT = `${ALNUM}(?:${SEPARATOR}${ALNUM})*`;
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN_NAME = `${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*`;
const IPV6 = '\\[(?:[a-fA-F0-9:]+)\\]';
const DOMAIN = `(?:${DOMAIN_NAME}|${IPV6})(?::[0-9]+)?`;
const NAME = `(?:${DOMAIN}/)?${PATH_COMPONENT}(?:/${PATH_COMPONENT})*`;
const TAG = '[\\w][\\w.-]{0,127}';
const DIGEST = '[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}';
const REFERENCE = new RegExp(`^(${NAME})(?::${TAG})?(?:@(${DIGEST}))?$`);
const IDENTIFIER = /^[a-f0-9]{64}$/;
const NAME_TOTAL_LENGTH_MAX = 255;
const DIGEST_HEX_LENGTH: Readonly<Record<string, number>> = { sha256: 64, sha384: 96, sha512: 128 };

/** Docker's splitDockerDomain: a first component without `.` or `:` (and not localhost) is a path. */
function normalize(name: string): string | undefined {
  const slash = name.indexOf('/');
  let domain: string;
  let remainder: string;
  const first = slash < 0 ? '' : name.slice(0, slash);
  if (slash < 0 || (!/[.:]/.test(first) && first !== 'localhost' && first.toLowerCase() === first)) {
    domain = 'docker.io';
    remainder = name;
  } else {
    domain = first;
    remainder = name.slice(slash + 1);
  }
  if (domain === 'index.docker.io') domain = 'docker.io';
  if (domain === 'docker.io' && !remainder.includes('/')) remainder = `library/${remainder}`;
  if (remainder.toLowerCase() !== remainder) return undefined;
  return `${domain}/${remainder}`;
}

export function isValidImageReference(ref: string): boolean {
  if (ref === '' || IDENTIFIER.test(ref)) return false;
  // The grammar is linear, but there is no reason to run it over a megabyte of hostile text.
  if (ref.length > 4096) return false;
  // The tag and digest are not part of the name that gets the docker.io prefix.
  const at = ref.indexOf('@');
  const beforeDigest = at < 0 ? ref : ref.slice(0, at);
  const colon = beforeDigest.lastIndexOf(':');
  const hasTag = colon > beforeDigest.lastIndexOf('/');
  const name = hasTag ? beforeDigest.slice(0, colon) : beforeDigest;
  const normalized = normalize(name);
  if (normalized === undefined) return false;
  const full = normalized + ref.slice(name.length);
  const m = REFERENCE.exec(full);
  if (!m) return false;
  if ((m[1] ?? '').length > NAME_TOTAL_LENGTH_MAX) return false;
  const digest = m[2];
  if (digest !== undefined) {
    const [algorithm = '', hex = ''] = digest.split(':');
    const want = DIGEST_HEX_LENGTH[algorithm];
    if (want === undefined || hex.length !== want || !/^[0-9a-f]+$/.test(hex)) return false;
  }
  return true;
}
