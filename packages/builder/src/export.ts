/**
 * Images out of and into the store as files: OCI image-layout archives, Docker archives
 * (`docker save` / `docker load`), and an image's final filesystem as a directory or a tarball.
 * Archives are written as streams, blob by blob; archives read back are hostile input.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, readdir, rename, rm, mkdir, stat } from 'node:fs/promises';
import { dirname, basename, join, resolve as resolvePath } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { TsbuildError, UnsafeArchiveError, UsageError } from '@tsbuild/errors';
import { apply, cleanArchivePath, decompress, diff, encodeHeader, endOfArchive, padding, readTar, sniffCompression } from '@tsbuild/layer';
import {
  ANNOTATION_REF_NAME, MAX_JSON_BLOB_SIZE, MAX_MANIFEST_SIZE, MediaType, buildManifest, digestHex, isDigest, isManifestMediaType, layerCompression, parseConfig,
  parseIndex, parseManifest,
} from '@tsbuild/oci';
import type { Descriptor, Digest, ImageConfig, Manifest } from '@tsbuild/oci';
import type { Store } from '@tsbuild/store';
import { referrersOf, storeReferrer } from './attest.ts';
import { normalizeName } from '@tsbuild/store';

/** What `--output type=…` can write; `image` and `registry` are the store and a push, handled by callers. */
export type ExportType = 'oci' | 'docker' | 'local' | 'tar';

export interface ExportOptions {
  type: ExportType;
  /** A file (or directory for `local`); `-` or a stream writes archives to that stream. */
  dest: string | Writable;
  /** Names recorded in the archive (ref.name annotations, RepoTags); default the ref itself. */
  tags?: string[];
  /** Annotations of the manifest's descriptor in an OCI archive's index.json (`--annotation manifest-descriptor:`). */
  annotations?: Record<string, string>;
  signal?: AbortSignal;
}

export interface ExportResult {
  /** Bytes written for archives; 0 for `local`. */
  size: number;
}

/** The containerd annotation buildx also writes: the full image name next to ref.name. */
const ANNOTATION_IMAGE_NAME = 'io.containerd.image.name';

interface LoadedImage {
  manifest: Manifest;
  manifestDesc: Descriptor;
  rawManifest: Buffer;
  rawConfig: Buffer;
  config: ImageConfig;
  names: string[];
  descriptorAnnotations?: Record<string, string> | undefined;
}

/** An image named by digest or id prefix is exported without a name. */
function defaultNames(ref: string): string[] {
  return ref.startsWith('sha256:') || ref.includes('@') || /^[0-9a-f]{12,64}$/.test(ref) ? [] : [ref];
}

async function loadFromStore(store: Store, ref: string, names: string[]): Promise<LoadedImage> {
  if (!(await store.resolve(ref))) throw new UsageError(`no such image: ${ref}`);
  const img = await store.loadImage(ref);
  const manifestDesc = await img.descriptor();
  if (!isManifestMediaType(manifestDesc.mediaType)) throw new UsageError(`${ref} is an index; export one platform's image`);
  const rawManifest = await store.readBlob(manifestDesc.digest);
  const manifest = await img.manifest();
  const rawConfig = await store.readBlob(manifest.config.digest);
  return { manifest, manifestDesc, rawManifest, rawConfig, config: await img.config(), names: names.map((n) => normalizeName(n)) };
}

/** Writes an image from the store as an archive, a directory or a filesystem tarball. */
export async function exportImage(store: Store, ref: string, opts: ExportOptions): Promise<ExportResult> {
  const names = opts.tags && opts.tags.length > 0 ? opts.tags : defaultNames(ref);
  const images = [{ ...(await loadFromStore(store, ref, names)), descriptorAnnotations: opts.annotations }];
  switch (opts.type) {
    case 'oci':
    case 'docker':
      return writeArchive(store, images, opts.type, opts.dest, opts.signal);
    case 'local':
      if (typeof opts.dest !== 'string' || opts.dest === '-') throw new UsageError('type=local needs dest=DIRECTORY');
      await unpackImage(store, images[0]!, opts.dest, opts.signal);
      return { size: 0 };
    case 'tar':
      return writeFilesystemTar(store, images[0]!, opts.dest, opts.signal);
    default:
      throw new UsageError(`unknown export type ${JSON.stringify(opts.type as string)}`);
  }
}

/** One `--output` of `tsbuild build`, spelled as docker buildx spells it. */
export type OutputSpec =
  | { type: 'image'; names: string[]; push: boolean }
  | { type: 'registry'; names: string[] }
  | { type: ExportType; dest: string };

const TYPES = ['image', 'registry', 'oci', 'docker', 'local', 'tar'];

/** `type=oci,dest=out.tar`; a bare `DIR` means type=local and `-` a tarball on stdout, as buildx has it. */
export function parseOutput(spec: string): OutputSpec {
  if (spec === '-') return { type: 'tar', dest: '-' };
  if (!spec.includes('=')) return { type: 'local', dest: spec };
  const fields = new Map<string, string>();
  for (const part of spec.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new UsageError(`--output ${spec}: expected KEY=VALUE pairs, got ${JSON.stringify(part)}`);
    fields.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1));
  }
  const type = fields.get('type') ?? 'image';
  if (!TYPES.includes(type)) throw new UsageError(`--output ${spec}: unknown type ${JSON.stringify(type)}`, { hint: `one of ${TYPES.join(', ')}` });
  const names = (fields.get('name') ?? '').split(/[;\s]+/).filter((n) => n !== '');
  if (type === 'image') return { type, names, push: ['true', '1'].includes(fields.get('push') ?? '') };
  if (type === 'registry') return { type, names };
  const dest = fields.get('dest');
  if (dest === undefined || dest === '') throw new UsageError(`--output ${spec}: type=${type} needs dest=${type === 'local' ? 'DIRECTORY' : 'FILE'}`);
  if (type === 'local' && dest === '-') throw new UsageError(`--output ${spec}: type=local writes a directory, not stdout`);
  return { type: type as ExportType, dest };
}

export interface SaveOptions {
  format: 'oci' | 'docker';
  dest: string | Writable;
  signal?: AbortSignal;
}

/** `tsbuild save`: several images in one archive, each under the name it was given. */
export async function saveImages(store: Store, refs: string[], opts: SaveOptions): Promise<ExportResult> {
  if (refs.length === 0) throw new UsageError('save needs at least one image');
  const images: LoadedImage[] = [];
  for (const r of refs) images.push(await loadFromStore(store, r, defaultNames(r)));
  return writeArchive(store, images, opts.format, opts.dest, opts.signal);
}

// ---------------------------------------------------------------------------------------------
// Writing archives

function fileHeader(path: string, size: number): Buffer {
  return encodeHeader({ path, type: 'file', mode: 0o644, uid: 0, gid: 0, size, mtime: 0 });
}

function dirHeader(path: string): Buffer {
  return encodeHeader({ path, type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 0 });
}

/** Opens the destination: a stream given by the caller, stdout for `-`, or a temp file renamed on success. */
function openSink(dest: string | Writable): { out: Writable; done: () => Promise<void>; fail: () => Promise<void> } {
  if (typeof dest !== 'string') return { out: dest, done: async () => {}, fail: async () => {} };
  if (dest === '-') return { out: process.stdout, done: async () => {}, fail: async () => {} };
  const final = resolvePath(dest);
  const tmp = join(dirname(final), `.${basename(final)}.tmp-${process.pid}-${Date.now()}`);
  return {
    out: createWriteStream(tmp, { mode: 0o644 }),
    done: () => rename(tmp, final),
    fail: () => rm(tmp, { force: true }),
  };
}

/** Streams `gen` into the destination; stdout is left open for whatever the caller writes next. */
async function writeTo(dest: string | Writable, gen: AsyncIterable<Buffer>, signal: AbortSignal | undefined): Promise<number> {
  const sink = openSink(dest);
  let size = 0;
  const counted = async function* () {
    for await (const c of gen) {
      size += c.length;
      yield c;
    }
  };
  try {
    const end = sink.out !== process.stdout;
    if (end) await pipeline(Readable.from(counted()), sink.out, { signal });
    else await pipeline(Readable.from(counted()), sink.out, { end: false, signal });
    await sink.done();
  } catch (e) {
    await sink.fail().catch(() => {});
    throw e;
  }
  return size;
}

async function* blobEntry(store: Store, path: string, d: Descriptor): AsyncGenerator<Buffer> {
  yield fileHeader(path, d.size);
  let n = 0;
  for await (const c of await store.openBlob(d.digest)) {
    const chunk = c as Buffer;
    n += chunk.length;
    if (n > d.size) break;
    yield chunk;
  }
  if (n !== d.size) throw new TsbuildError('DIGEST_MISMATCH', `store blob ${d.digest} is ${n} bytes, its descriptor says ${d.size}`);
  const pad = padding(d.size);
  if (pad > 0) yield Buffer.alloc(pad);
}

function* bytesEntry(path: string, bytes: Buffer): Generator<Buffer> {
  yield fileHeader(path, bytes.length);
  yield bytes;
  const pad = padding(bytes.length);
  if (pad > 0) yield Buffer.alloc(pad);
}

function blobPath(d: Digest): string {
  return `blobs/sha256/${digestHex(d)}`;
}

/** Splits a normalized name into the repository and tag Docker's `repositories` file wants. */
function repoTag(name: string): [string, string] | undefined {
  if (name.includes('@')) return undefined;
  const slash = name.lastIndexOf('/');
  const colon = name.lastIndexOf(':');
  return colon > slash ? [name.slice(0, colon), name.slice(colon + 1)] : [name, 'latest'];
}

async function writeArchive(store: Store, images: LoadedImage[], format: 'oci' | 'docker', dest: string | Writable, signal?: AbortSignal): Promise<ExportResult> {
  const referrers: Descriptor[] = [];
  const gen = async function* (): AsyncGenerator<Buffer> {
    const written = new Set<string>();
    yield dirHeader('blobs/');
    yield dirHeader('blobs/sha256/');
    for (const img of images) {
      if (!written.has(img.manifest.config.digest)) {
        written.add(img.manifest.config.digest);
        yield* bytesEntry(blobPath(img.manifest.config.digest), img.rawConfig);
      }
      for (const [i, l] of img.manifest.layers.entries()) {
        if (format === 'docker') {
          // docker load reads plain or gzip layers; anything else is written uncompressed.
          const c = layerCompression(l.mediaType);
          if (c !== 'none' && c !== 'gzip') {
            const diffId = img.config.rootfs.diff_ids[i];
            if (diffId === undefined || !(await store.hasBlob(diffId))) {
              throw new UsageError(`layer ${l.digest} is ${c}-compressed, which Docker archives cannot carry`, {
                hint: 'save it with --format oci',
              });
            }
            if (written.has(diffId)) continue;
            written.add(diffId);
            const { size } = await stat(store.blobPath(diffId));
            yield* blobEntry(store, blobPath(diffId), { mediaType: MediaType.OciLayer, digest: diffId, size });
            continue;
          }
        }
        if (written.has(l.digest)) continue;
        written.add(l.digest);
        yield* blobEntry(store, blobPath(l.digest), l);
      }
      if (format === 'oci' && !written.has(img.manifestDesc.digest)) {
        written.add(img.manifestDesc.digest);
        yield* bytesEntry(blobPath(img.manifestDesc.digest), img.rawManifest);
      }
      if (format === 'oci') {
        // Attestations travel as what they are: manifests whose subject is the image (image-spec 1.1).
        for (const r of await referrersOf(store, img.manifestDesc.digest)) {
          if (written.has(r.digest) || !(await store.hasBlob(r.digest))) continue;
          const raw = await store.readBlob(r.digest);
          const m = parseManifest(raw, { source: r.digest });
          for (const b of [m.config, ...m.layers]) {
            if (written.has(b.digest)) continue;
            written.add(b.digest);
            yield* blobEntry(store, blobPath(b.digest), b);
          }
          written.add(r.digest);
          yield* bytesEntry(blobPath(r.digest), raw);
          referrers.push(r);
        }
      }
    }
    if (format === 'oci') {
      yield* bytesEntry('oci-layout', Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
      const manifests: Descriptor[] = [];
      for (const img of images) {
        const base: Descriptor = { mediaType: img.manifestDesc.mediaType, digest: img.manifestDesc.digest, size: img.manifestDesc.size };
        const extra = img.descriptorAnnotations ?? {};
        if (img.names.length === 0) manifests.push(Object.keys(extra).length > 0 ? { ...base, annotations: { ...extra } } : base);
        for (const n of img.names) manifests.push({ ...base, annotations: { ...extra, [ANNOTATION_REF_NAME]: n, [ANNOTATION_IMAGE_NAME]: fullName(n) } });
      }
      manifests.push(...referrers);
      yield* bytesEntry('index.json', Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests })));
    } else {
      const entries = [];
      const repositories: Record<string, Record<string, string>> = {};
      for (const img of images) {
        const layers = img.manifest.layers.map((l, i) => {
          const c = layerCompression(l.mediaType);
          return blobPath(c === 'none' || c === 'gzip' ? l.digest : (img.config.rootfs.diff_ids[i] as Digest));
        });
        entries.push({ Config: blobPath(img.manifest.config.digest), RepoTags: img.names.filter((n) => repoTag(n)), Layers: layers });
        const top = img.config.rootfs.diff_ids.at(-1);
        for (const n of img.names) {
          const rt = repoTag(n);
          if (!rt || top === undefined) continue;
          (repositories[rt[0]] ??= {})[rt[1]] = digestHex(top);
        }
      }
      yield* bytesEntry('manifest.json', Buffer.from(JSON.stringify(entries)));
      yield* bytesEntry('repositories', Buffer.from(JSON.stringify(repositories)));
    }
    yield endOfArchive();
  };
  return { size: await writeTo(dest, gen(), signal) };
}

/** `busybox:latest` → `docker.io/library/busybox:latest`, the form containerd records. */
function fullName(n: string): string {
  const first = n.split('/')[0] ?? '';
  const hasHost = n.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost');
  if (hasHost) return n;
  return n.includes('/') ? `docker.io/${n}` : `docker.io/library/${n}`;
}

// ---------------------------------------------------------------------------------------------
// Filesystems

async function unpackImage(store: Store, img: LoadedImage, dest: string, signal: AbortSignal | undefined): Promise<void> {
  const dir = resolvePath(dest);
  await mkdir(dir, { recursive: true });
  // A whiteout in a layer would delete what the directory already held, so it must start empty.
  if ((await readdir(dir)).length > 0) throw new UsageError(`output directory ${dest} is not empty`);
  for (const [i, l] of img.manifest.layers.entries()) {
    const stats = await apply(await store.openBlob(l.digest), dir, { signal });
    const want = img.config.rootfs.diff_ids[i];
    if (stats.diffId !== want) {
      throw new TsbuildError('DIGEST_MISMATCH', `layer ${i + 1} (${l.digest}) unpacks to ${stats.diffId}, the image config says ${want ?? 'nothing'}`);
    }
  }
}

async function writeFilesystemTar(store: Store, img: LoadedImage, dest: string | Writable, signal: AbortSignal | undefined): Promise<ExportResult> {
  const tmp = await mkdtemp(join(store.root, 'export-'));
  try {
    const tree = join(tmp, 'rootfs');
    await unpackImage(store, img, tree, signal);
    // The unpacked tree is a plain directory: its diff is the whole filesystem, in layer order.
    const pass = new PassThrough({ highWaterMark: 1 << 20 });
    const diffing = diff(tree, pass, { signal });
    const [size] = await Promise.all([writeTo(dest, pass, signal), diffing]);
    return { size };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// Loading archives

export interface LoadOptions {
  signal?: AbortSignal;
}

export interface LoadResult {
  format: 'oci' | 'docker';
  images: Array<{ manifest: Descriptor; tags: string[] }>;
}

/** An archive entry name, refused when it could mean anything outside the archive. */
function archiveName(unsafe: string): string {
  if (unsafe.includes('\0')) throw new UnsafeArchiveError(`archive entry name contains NUL`, { entry: unsafe });
  if (unsafe.startsWith('/')) throw new UnsafeArchiveError(`archive entry ${JSON.stringify(unsafe)} is an absolute path`, { entry: unsafe });
  const parts = unsafe.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new UnsafeArchiveError(`archive entry ${JSON.stringify(unsafe)} contains ".."`, { entry: unsafe });
  return parts.join('/');
}

/**
 * A name a manifest or link refers to, relative to the archive root. `..` is resolved lexically
 * (old `docker save` links layers as `../ID/layer.tar`) but may not climb out of the archive.
 */
function referencedName(unsafe: string, what: string): string {
  try {
    if (unsafe.startsWith('/')) throw new UnsafeArchiveError('absolute');
    return cleanArchivePath(unsafe).join('/');
  } catch (e) {
    throw new UnsafeArchiveError(`${what} ${JSON.stringify(unsafe)} points outside the archive`, { entry: unsafe, cause: e });
  }
}

const CONTROL = new Set(['oci-layout', 'index.json', 'manifest.json', 'repositories']);

function parseJson(text: Buffer, what: string): unknown {
  try {
    return JSON.parse(text.toString('utf8'));
  } catch (e) {
    throw new TsbuildError('BAD_ARCHIVE', `${what} is not valid JSON: ${(e as Error).message}`);
  }
}

/** `tsbuild load`: an OCI or Docker archive (plain, gzip or zstd) into the store, every blob verified. */
export async function loadArchive(store: Store, src: string | Readable, opts: LoadOptions = {}): Promise<LoadResult> {
  const shown = typeof src === 'string' ? src : 'archive';
  const input = typeof src === 'string' ? createReadStream(src) : src;
  if (typeof src === 'string') {
    await new Promise<void>((res, rej) => {
      input.once('open', () => res());
      input.once('error', (e: NodeJS.ErrnoException) => rej(new UsageError(`cannot read ${src}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`)));
    });
  }
  const control = new Map<string, Buffer>();
  const files = new Map<string, { digest: Digest; size: number }>();
  const links = new Map<string, string>();
  const signal = opts.signal;
  for await (const { header, body } of readTar(decompress(input), { signal })) {
    const name = archiveName(header.path);
    if (header.type === 'symlink' || header.type === 'hardlink') {
      const target = header.linkpath ?? '';
      const resolved = header.type === 'symlink' && !target.startsWith('/') ? `${dirname(name)}/${target}` : target;
      links.set(name, referencedName(resolved, `link ${name} →`));
      continue;
    }
    if (header.type !== 'file') {
      for await (const _ of body) void _;
      continue;
    }
    if (CONTROL.has(name)) {
      // Control files (index.json, manifest.json, …) are read into memory, so they are held to a manifest's size.
      if (header.size > MAX_MANIFEST_SIZE) throw new UnsafeArchiveError(`${shown}: ${name} is ${header.size} bytes, more than the ${MAX_MANIFEST_SIZE} allowed`, { entry: name });
      const chunks: Buffer[] = [];
      for await (const c of body) chunks.push(c);
      control.set(name, Buffer.concat(chunks));
      continue;
    }
    if (/(^|\/)(json|VERSION)$/.test(name)) {
      // Legacy per-layer metadata of old `docker save` archives: nothing reads it.
      for await (const _ of body) void _;
      continue;
    }
    const w = store.blobWriter();
    try {
      await pipeline(Readable.from(body), w.stream, { signal });
      const m = /^blobs\/sha256\/([0-9a-f]{64})$/.exec(name);
      const got = await w.commit(m ? { digest: `sha256:${m[1]}` as Digest } : undefined);
      files.set(name, got);
    } catch (e) {
      await w.abort().catch(() => {});
      if (e instanceof TsbuildError && e.code === 'DIGEST_MISMATCH') {
        throw new TsbuildError('DIGEST_MISMATCH', `${shown}: ${name} does not match its digest: ${e.message}`, { cause: e });
      }
      throw e;
    }
  }
  const lookup = (unsafe: string, what: string): { digest: Digest; size: number } => {
    let n = referencedName(unsafe, what);
    for (let hops = 0; links.has(n) && hops < 32; hops++) n = links.get(n)!;
    const f = files.get(n);
    if (!f) throw new TsbuildError('BAD_ARCHIVE', `${shown}: ${what} ${unsafe} is missing from the archive`);
    return f;
  };
  if (control.has('manifest.json')) return { format: 'docker', images: await loadDocker(store, shown, control, lookup) };
  if (control.has('index.json')) return { format: 'oci', images: await loadOci(store, shown, control, lookup) };
  throw new TsbuildError('BAD_ARCHIVE', `${shown} is neither an OCI archive (no index.json) nor a Docker archive (no manifest.json)`);
}

type Lookup = (unsafe: string, what: string) => { digest: Digest; size: number };

async function loadOci(store: Store, shown: string, control: Map<string, Buffer>, lookup: Lookup): Promise<LoadResult['images']> {
  const layout = control.get('oci-layout');
  if (layout && (parseJson(layout, 'oci-layout') as { imageLayoutVersion?: unknown }).imageLayoutVersion !== '1.0.0') {
    throw new TsbuildError('BAD_ARCHIVE', `${shown}: unsupported oci-layout version`);
  }
  const index = parseIndex(control.get('index.json')!);
  const out: LoadResult['images'] = [];
  const verify = (d: Descriptor, what: string): void => {
    if (!isDigest(d.digest)) throw new TsbuildError('BAD_ARCHIVE', `${shown}: ${what} has an invalid digest`);
    const f = lookup(blobPath(d.digest), what);
    if (f.digest !== d.digest || f.size !== d.size) {
      throw new TsbuildError('DIGEST_MISMATCH', `${shown}: ${what} ${d.digest} is ${f.size} bytes with digest ${f.digest}, the descriptor says ${d.size} bytes`);
    }
  };
  for (const d of index.manifests) {
    if (!isManifestMediaType(d.mediaType)) throw new TsbuildError('BAD_ARCHIVE', `${shown}: index.json entry ${d.digest} is ${d.mediaType}; only image manifests are loaded`);
    verify(d, 'manifest');
    const manifest = parseManifest(await store.readBlob(d.digest, { maxSize: MAX_JSON_BLOB_SIZE }));
    verify(manifest.config, 'config');
    if (manifest.subject) {
      // An attestation (or another artifact) about an image: kept as a referrer of its subject.
      for (const l of manifest.layers) verify(l, 'attestation layer');
      await storeReferrer(store, manifest.subject.digest, { ...d, ...(manifest.artifactType ? { artifactType: manifest.artifactType } : {}) }, [manifest.config, ...manifest.layers]);
      continue;
    }
    parseConfig(await store.readBlob(manifest.config.digest, { maxSize: MAX_JSON_BLOB_SIZE }));
    for (const l of manifest.layers) verify(l, 'layer');
    const desc: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
    // ref.name is a full name when tsbuild or skopeo wrote it, but only a tag ("latest") when buildx did.
    const refName = d.annotations?.[ANNOTATION_REF_NAME];
    const name = refName !== undefined && /[:/]/.test(refName) ? refName : (d.annotations?.[ANNOTATION_IMAGE_NAME] ?? refName);
    const tags: string[] = [];
    if (name !== undefined) tags.push(await store.tag(name, desc));
    out.push({ manifest: desc, tags });
  }
  return out;
}

interface DockerEntry {
  Config?: unknown;
  RepoTags?: unknown;
  Layers?: unknown;
}

async function loadDocker(store: Store, shown: string, control: Map<string, Buffer>, lookup: Lookup): Promise<LoadResult['images']> {
  const entries = parseJson(control.get('manifest.json')!, `${shown}: manifest.json`);
  if (!Array.isArray(entries)) throw new TsbuildError('BAD_ARCHIVE', `${shown}: manifest.json is not a list`);
  const out: LoadResult['images'] = [];
  for (const e of entries as DockerEntry[]) {
    if (typeof e?.Config !== 'string' || !Array.isArray(e.Layers) || !e.Layers.every((l) => typeof l === 'string')) {
      throw new TsbuildError('BAD_ARCHIVE', `${shown}: manifest.json entry needs Config and Layers`);
    }
    const cfg = lookup(e.Config, 'config');
    const rawConfig = await store.readBlob(cfg.digest, { maxSize: MAX_JSON_BLOB_SIZE });
    const config = parseConfig(rawConfig);
    const layerNames = e.Layers as string[];
    if (layerNames.length !== config.rootfs.diff_ids.length) {
      throw new TsbuildError('BAD_ARCHIVE', `${shown}: ${layerNames.length} layers listed but the config has ${config.rootfs.diff_ids.length} diff_ids`);
    }
    const layers: Descriptor[] = [];
    for (const [i, ln] of layerNames.entries()) {
      const f = lookup(ln, 'layer');
      const want = config.rootfs.diff_ids[i]!;
      const head = await firstBytes(await store.openBlob(f.digest), 8);
      const kind = sniffCompression(head);
      let diffId = f.digest;
      if (kind !== 'none') {
        const hash = createHash('sha256');
        await pipeline(decompress(await store.openBlob(f.digest)), new Writable({ write: (c: Buffer, _e, cb) => { hash.update(c); cb(); } }));
        diffId = `sha256:${hash.digest('hex')}`;
      }
      if (diffId !== want) throw new TsbuildError('DIGEST_MISMATCH', `${shown}: layer ${ln} has diff_id ${diffId}, the config says ${want}`);
      const mediaType = kind === 'none' ? MediaType.OciLayer : kind === 'gzip' ? MediaType.OciLayerGzip : MediaType.OciLayerZstd;
      layers.push({ mediaType, digest: f.digest, size: f.size });
    }
    // The archive's own config bytes are already stored, so the image id stays what it was.
    const cd: Descriptor = { mediaType: MediaType.OciConfig, digest: cfg.digest, size: cfg.size };
    const manifestDesc = await store.putJson(MediaType.OciManifest, buildManifest(cd, layers));
    const tags: string[] = [];
    for (const t of Array.isArray(e.RepoTags) ? e.RepoTags : []) {
      if (typeof t !== 'string') throw new TsbuildError('BAD_ARCHIVE', `${shown}: RepoTags holds a non-string`);
      tags.push(await store.tag(t, manifestDesc));
    }
    out.push({ manifest: manifestDesc, tags });
  }
  return out;
}

async function firstBytes(s: Readable, n: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let len = 0;
  for await (const c of s) {
    chunks.push(c as Buffer);
    len += (c as Buffer).length;
    if (len >= n) break;
  }
  s.destroy();
  return Buffer.concat(chunks).subarray(0, n);
}
