/**
 * Where blobs the store may not hold can be found: the registry repository an image was pulled
 * from (lazily) or pushed to, a local cache directory, GitHub's cache. Pushes use registry
 * origins to mount blobs across repositories instead of uploading them; the fetcher uses every
 * kind to download a blob on first read.
 */
import type { Digest } from '@tsbuild/oci';
import type { Store } from '@tsbuild/store';

export type Origin =
  /** `host/repository` of a registry. */
  | { kind: 'registry'; repo: string }
  /** An OCI image layout directory (`--cache-to type=local`). */
  | { kind: 'oci-layout'; dir: string }
  /** GitHub's Actions cache of the running workflow. */
  | { kind: 'gha' };

const NS = 'blob-origins';
/** How many origins a blob keeps (the most recent). */
const KEEP = 8;

function encode(o: Origin): string {
  switch (o.kind) {
    case 'registry':
      return o.repo;
    case 'oci-layout':
      return `oci-layout:${o.dir}`;
    case 'gha':
      return 'gha:';
  }
}

function decode(s: string): Origin {
  if (s.startsWith('oci-layout:')) return { kind: 'oci-layout', dir: s.slice('oci-layout:'.length) };
  if (s === 'gha:') return { kind: 'gha' };
  return { kind: 'registry', repo: s };
}

/** What is kept per blob: its size (a download is checked against it) and where it is. */
interface Known {
  size: number | undefined;
  at: string[];
}

function known(v: unknown): Known {
  // Stores written before sizes were recorded hold a bare list.
  if (Array.isArray(v)) return { size: undefined, at: v.filter((x): x is string => typeof x === 'string') };
  if (v !== null && typeof v === 'object') {
    const o = v as { size?: unknown; at?: unknown };
    const size = Number.isSafeInteger(o.size) && (o.size as number) >= 0 ? (o.size as number) : undefined;
    return { size, at: Array.isArray(o.at) ? o.at.filter((x): x is string => typeof x === 'string') : [] };
  }
  return { size: undefined, at: [] };
}

/** Remembers that these blobs can be found at `origin`. */
export async function recordOrigins(store: Store, blobs: Iterable<{ digest: Digest; size: number }>, origin: Origin): Promise<void> {
  const meta = store.meta(NS, { durable: false });
  const value = encode(origin);
  const seen = new Set<string>();
  for (const b of blobs) {
    if (seen.has(b.digest)) continue;
    seen.add(b.digest);
    await meta.update(b.digest, (old) => {
      const k = known(old);
      if (k.at.includes(value) && k.size === b.size) return old;
      return { size: b.size, at: [...k.at.filter((x) => x !== value), value].slice(-KEEP) };
    });
  }
}

/** Where `digest` is known to be (most recently recorded last) and its size. */
export async function originsOf(store: Store, digest: Digest): Promise<{ size: number | undefined; origins: Origin[] }> {
  const k = known(await store.meta(NS, { durable: false }).get(digest));
  return { size: k.size, origins: k.at.map(decode) };
}

/** A registry repository other than `exclude` on `registry` that holds `digest`, for a cross-repository mount. */
export async function mountSource(store: Store, digest: Digest, registry: string, exclude: string): Promise<string | undefined> {
  const same = (await originsOf(store, digest)).origins.filter(
    (o): o is { kind: 'registry'; repo: string } => o.kind === 'registry' && o.repo.startsWith(`${registry}/`) && o.repo !== `${registry}/${exclude}`,
  );
  return same.at(-1)?.repo.slice(registry.length + 1);
}
