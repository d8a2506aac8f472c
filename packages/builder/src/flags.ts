/**
 * The values of `docker buildx build` flags that go beyond docker build's, parsed as buildx
 * parses them, for the CLI and the Action alike: `--add-host`, `--ulimit`, `--shm-size`,
 * `--ssh`, `--build-context` and `--annotation`.
 */
import { statSync } from 'node:fs';
import type { Stats } from 'node:fs';

import { isAbsolute, resolve as resolvePath } from 'node:path';
import { UsageError } from '@tsbuild/errors';
import { parseSize as parseByteSize } from '@tsbuild/cache';
import { RLIM_INFINITY } from '@tsbuild/executor';
import type { Rlimit } from '@tsbuild/executor';
import { formatPlatform, parseDigest, parsePlatform } from '@tsbuild/oci';
import type { Digest, Platform } from '@tsbuild/oci';
import { parseReference } from '@tsbuild/registry';

/** `--add-host HOST:IP` (or `HOST=IP`; an IPv6 address may stand in brackets). */
export function parseAddHost(spec: string): { host: string; ip: string } {
  const eq = spec.indexOf('=');
  const colon = spec.indexOf(':');
  const at = eq >= 0 && (colon < 0 || eq < colon) ? eq : colon;
  if (at <= 0) throw new UsageError(`--add-host ${spec}: expected HOST:IP`, { hint: 'for example --add-host db.internal:10.0.0.5' });
  const host = spec.slice(0, at);
  let ip = spec.slice(at + 1);
  if (ip.startsWith('[') && ip.endsWith(']')) ip = ip.slice(1, -1);
  if (!/^[A-Za-z0-9_.-]+$/.test(host)) throw new UsageError(`--add-host ${spec}: ${JSON.stringify(host)} is not a host name`);
  if (ip === 'host-gateway') {
    throw new UsageError(`--add-host ${spec}: host-gateway is not supported`, {
      hint: 'RUN steps share the host network by default, so the host is 127.0.0.1',
    });
  }
  if (process.getBuiltinModule('node:net').isIP(ip) === 0) throw new UsageError(`--add-host ${spec}: ${JSON.stringify(ip)} is not an IP address`);
  return { host, ip };
}

/** Docker's `--ulimit` names (go-units' list), and the setrlimit resource each stands for. */
const ULIMITS: Record<string, string> = {
  core: 'RLIMIT_CORE', cpu: 'RLIMIT_CPU', data: 'RLIMIT_DATA', fsize: 'RLIMIT_FSIZE', locks: 'RLIMIT_LOCKS', memlock: 'RLIMIT_MEMLOCK',
  msgqueue: 'RLIMIT_MSGQUEUE', nice: 'RLIMIT_NICE', nofile: 'RLIMIT_NOFILE', nproc: 'RLIMIT_NPROC', rss: 'RLIMIT_RSS',
  rtprio: 'RLIMIT_RTPRIO', rttime: 'RLIMIT_RTTIME', sigpending: 'RLIMIT_SIGPENDING', stack: 'RLIMIT_STACK',
};

/** `--ulimit TYPE=SOFT[:HARD]`: the hard limit defaults to the soft one; -1 (or `unlimited`) is no limit. */
export function parseUlimit(spec: string): Rlimit {
  const eq = spec.indexOf('=');
  const name = eq < 0 ? spec : spec.slice(0, eq);
  const type = Object.hasOwn(ULIMITS, name) ? ULIMITS[name] : undefined;
  if (eq < 0) throw new UsageError(`--ulimit ${spec}: expected TYPE=SOFT[:HARD]`, { hint: 'for example --ulimit nofile=1024:2048' });
  if (type === undefined) throw new UsageError(`--ulimit ${spec}: unknown type ${JSON.stringify(name)}`, { hint: `one of ${Object.keys(ULIMITS).join(', ')}` });
  const values = spec.slice(eq + 1).split(':');
  if (values.length > 2) throw new UsageError(`--ulimit ${spec}: expected SOFT[:HARD], got ${values.length} values`);
  const num = (v: string): bigint => {
    if (v === '-1' || v === 'unlimited') return RLIM_INFINITY;
    if (!/^\d{1,19}$/.test(v) || BigInt(v) >= RLIM_INFINITY) throw new UsageError(`--ulimit ${spec}: ${JSON.stringify(v)} is not a limit (a whole number, or -1 for none)`);
    return BigInt(v);
  };
  const soft = num(values[0] ?? '');
  const hard = values[1] === undefined ? soft : num(values[1]);
  if (soft > hard) throw new UsageError(`--ulimit ${spec}: the soft limit must not be above the hard limit`);
  return { type, soft, hard };
}

/** Several `--ulimit` flags: as with docker, a later one for the same type replaces an earlier one. */
export function parseUlimits(specs: readonly string[]): Rlimit[] {
  const byType = new Map<string, Rlimit>();
  for (const s of specs) {
    const r = parseUlimit(s);
    byType.delete(r.type);
    byType.set(r.type, r);
  }
  return [...byType.values()];
}

/** Docker's sizes (`--memory 512m`, `--memory 0`): a number with an optional k, m, g or t (powers of 1024) and an optional b. */
export { parseByteSize };

/** A size that must be above zero (`--shm-size 2g`). */
export function parseSize(what: string, v: string): number {
  const n = parseByteSize(what, v);
  if (n <= 0 || !Number.isSafeInteger(n)) throw new UsageError(`${what}: size ${JSON.stringify(v)} must be above zero`);
  return n;
}

/** What `--ssh ID[=SOCKET|KEY[,KEY…]]` gives a RUN --mount=type=ssh of that id. */
export type SshSource = { type: 'socket'; path: string } | { type: 'keys'; paths: string[] };

/**
 * `--ssh default`, `--ssh ID=SOCKET`, `--ssh ID=KEYFILE[,KEYFILE]`. An id without a path is the
 * agent at $SSH_AUTH_SOCK. Whether a path is a socket or key files is decided when it is used.
 */
export function parseSsh(spec: string, env: NodeJS.ProcessEnv = process.env): { id: string; paths: string[] } {
  const eq = spec.indexOf('=');
  const id = eq < 0 ? spec : spec.slice(0, eq);
  if (!/^[A-Za-z0-9_.-]+$/.test(id)) throw new UsageError(`--ssh ${spec}: expected ID[=SOCKET|KEY[,KEY]]`, { hint: 'for example --ssh default or --ssh deploy=$HOME/.ssh/id_ed25519' });
  const paths = eq < 0 ? [] : spec.slice(eq + 1).split(',').filter((p) => p !== '');
  if (paths.length === 0) {
    const sock = env.SSH_AUTH_SOCK;
    if (!sock) throw new UsageError(`--ssh ${spec}: no path given and SSH_AUTH_SOCK is not set`, { hint: 'start an agent (eval $(ssh-agent); ssh-add) or name a socket or key file' });
    paths.push(sock);
  }
  const resolved = paths.map((p) => resolvePath(p));
  // Checked now, as buildx does, rather than when (or whether) a step first asks for the agent.
  for (const p of resolved) {
    const st = statOrUndefined(p);
    if (!st) throw new UsageError(`--ssh ${spec}: ${p === resolved[0] && resolved.length === 1 && eq < 0 ? `${p} ($SSH_AUTH_SOCK)` : p} does not exist`, { hint: 'name an agent socket ($SSH_AUTH_SOCK) or private key files' });
    if (st.isSocket() && resolved.length > 1) throw new UsageError(`--ssh ${spec}: an agent socket cannot be combined with other paths`);
    if (!st.isSocket() && !st.isFile()) throw new UsageError(`--ssh ${spec}: ${p} is neither an agent socket nor a key file`);
  }
  return { id, paths: resolved };
}

function statOrUndefined(p: string): Stats | undefined {
  try {
    return statSync(p);
  } catch {
    return undefined;
  }
}

/** Where a `--build-context NAME=…` comes from. */
export type ContextSource =
  | { type: 'local'; dir: string }
  | { type: 'image'; ref: string }
  | { type: 'oci-layout'; dir: string; tag?: string; digest?: Digest };

export interface NamedContext {
  /** The name as FROM, COPY --from and RUN --mount from= write it, normalised as buildx does (`alpine`, not `alpine:latest`). */
  name: string;
  /** The value as given, for messages. */
  spec: string;
  source: ContextSource;
}

/**
 * A reference's short form without `:latest`, which is how BuildKit matches a FROM or --from
 * word against the named contexts (`FROM docker.io/library/alpine:latest` finds `alpine`);
 * undefined for a word that is no reference at all.
 */
export function contextName(word: string): string | undefined {
  let ref;
  try {
    ref = parseReference(word);
  } catch {
    return undefined;
  }
  return ref.digest === undefined && ref.familiar.endsWith(':latest') ? ref.familiar.slice(0, -':latest'.length) : ref.familiar;
}

/** `--build-context NAME=DIR`, `NAME=docker-image://REF`, `NAME=oci-layout://DIR[:TAG|@DIGEST]`. */
export function parseBuildContext(spec: string, cwd: string = process.cwd()): NamedContext {
  const eq = spec.indexOf('=');
  if (eq <= 0 || eq === spec.length - 1) throw new UsageError(`--build-context ${spec}: expected NAME=VALUE`, { hint: 'for example --build-context src=../shared or base=docker-image://busybox:1.36' });
  const rawName = spec.slice(0, eq);
  const value = spec.slice(eq + 1);
  const name = contextName(rawName);
  if (name === undefined) throw new UsageError(`--build-context ${spec}: ${JSON.stringify(rawName)} is not a valid context name`, { hint: 'names are written as FROM and --from= write them: lower-case, like an image name' });
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(value)?.[1]?.toLowerCase();
  if (scheme === 'docker-image') {
    const ref = value.slice('docker-image://'.length);
    parseReference(ref);
    return { name, spec, source: { type: 'image', ref } };
  }
  if (scheme === 'oci-layout') {
    let rest = value.slice('oci-layout://'.length);
    let digest: Digest | undefined;
    let tag: string | undefined;
    const at = rest.lastIndexOf('@');
    if (at > 0 && /^sha256:/.test(rest.slice(at + 1))) {
      try {
        digest = parseDigest(rest.slice(at + 1));
      } catch {
        throw new UsageError(`--build-context ${spec}: ${JSON.stringify(rest.slice(at + 1))} is not a sha256 digest`);
      }
      rest = rest.slice(0, at);
    }
    const colon = rest.lastIndexOf(':');
    if (digest === undefined && colon > rest.lastIndexOf('/')) {
      tag = rest.slice(colon + 1);
      rest = rest.slice(0, colon);
    }
    if (rest === '') throw new UsageError(`--build-context ${spec}: oci-layout:// needs a directory`);
    const src: ContextSource = { type: 'oci-layout', dir: isAbsolute(rest) ? rest : resolvePath(cwd, rest) };
    if (tag !== undefined && tag !== '') src.tag = tag;
    if (digest !== undefined) src.digest = digest;
    return { name, spec, source: src };
  }
  if (scheme !== undefined || /^git@/.test(value)) {
    throw new UsageError(`--build-context ${spec}: ${scheme ?? 'git'} contexts are not supported`, {
      hint: 'a context is a local directory, docker-image://REF or oci-layout://DIR[:TAG|@DIGEST]',
    });
  }
  return { name, spec, source: { type: 'local', dir: resolvePath(cwd, value) } };
}

export type AnnotationLevel = 'manifest' | 'index' | 'manifest-descriptor' | 'index-descriptor';
const LEVELS: readonly AnnotationLevel[] = ['manifest', 'index', 'manifest-descriptor', 'index-descriptor'];

/** One annotation at one level (a flag naming several levels, `index,manifest:KEY=VALUE`, gives one each). */
export interface Annotation {
  level: AnnotationLevel;
  /** Only for the image of this platform (`manifest[linux/amd64]:KEY=VALUE`). */
  platform?: Platform;
  key: string;
  value: string;
}

/** `--annotation [TYPE[,TYPE…]:]KEY=VALUE`, TYPE one of manifest (the default), index, manifest-descriptor, index-descriptor, each optionally `[PLATFORM]`. */
export function parseAnnotation(spec: string): Annotation[] {
  const eq = spec.indexOf('=');
  if (eq <= 0) throw new UsageError(`--annotation ${spec}: expected [TYPE:]KEY=VALUE`, { hint: 'for example --annotation org.opencontainers.image.title=app' });
  const k = spec.slice(0, eq);
  const value = spec.slice(eq + 1);
  const colon = k.indexOf(':');
  const types = colon < 0 || colon === 0 ? 'manifest' : k.slice(0, colon);
  const key = colon < 0 ? k : k.slice(colon + 1);
  if (key === '') throw new UsageError(`--annotation ${spec}: the key is empty`);
  const out: Annotation[] = [];
  for (const t of types.split(',')) {
    const m = /^([a-z-]*)(?:\[([^\]]+)\])?$/.exec(t);
    const level = (m?.[1] || 'manifest') as AnnotationLevel;
    if (!m || !LEVELS.includes(level)) {
      throw new UsageError(`--annotation ${spec}: unknown annotation type ${JSON.stringify(t)}`, { hint: `one of ${LEVELS.join(', ')}, optionally with [PLATFORM]` });
    }
    const a: Annotation = { level, key, value };
    if (m[2] !== undefined) a.platform = parsePlatform(m[2], `--annotation ${spec}`);
    out.push(a);
  }
  return out;
}

/**
 * Where a single-platform image keeps the annotations asked for: the manifest itself, and the
 * descriptor that points at it (in the store's index.json and an OCI archive's). There is no
 * image index, so `index` and `index-descriptor` are refused, as BuildKit refuses them for a
 * single-platform export; an annotation for another platform does not apply.
 */
export function imageAnnotations(list: readonly Annotation[], platform: Platform): { manifest: Record<string, string>; descriptor: Record<string, string> } {
  const out = { manifest: {} as Record<string, string>, descriptor: {} as Record<string, string> };
  for (const a of list) {
    if (a.level === 'index' || a.level === 'index-descriptor') {
      throw new UsageError(`--annotation ${a.level}:${a.key}: index annotations are not supported for a single-platform image, which has no image index`, {
        hint: 'annotate the manifest (manifest:KEY=VALUE, the default) or its descriptor (manifest-descriptor:KEY=VALUE)',
      });
    }
    if (a.platform && formatPlatform(a.platform) !== formatPlatform(platform)) continue;
    (a.level === 'manifest' ? out.manifest : out.descriptor)[a.key] = a.value;
  }
  return out;
}
