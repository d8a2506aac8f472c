import { TsbuildError } from '@tsbuild/errors';
import { isDigest } from './digest.ts';
import type { Digest } from './digest.ts';
import { isIndexMediaType, isManifestMediaType } from './media.ts';
import { MediaType } from './types.ts';
import type { ContainerConfig, Descriptor, HealthConfig, HistoryEntry, ImageConfig, Index, Manifest, Platform } from './types.ts';

export interface ParseOptions {
  /** Where the bytes came from (a digest, a reference, a file), used in error messages. */
  source?: string;
}

/**
 * Manifests, indexes and configs come from registries and archives: they are checked field by
 * field and only the known, well-typed fields are kept.
 */
class Checker {
  constructor(
    private readonly code: string,
    private readonly what: string,
  ) {}

  fail(path: string, problem: string): never {
    throw new TsbuildError(this.code, `${this.what}: ${path ? `${path} ` : ''}${problem}`);
  }

  obj(v: unknown, path: string): Record<string, unknown> {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) this.fail(path, `must be an object, got ${kind(v)}`);
    return v as Record<string, unknown>;
  }

  str(v: unknown, path: string): string {
    if (typeof v !== 'string') this.fail(path, `must be a string, got ${kind(v)}`);
    return v;
  }

  optStr(v: unknown, path: string): string | undefined {
    return v === undefined ? undefined : this.str(v, path);
  }

  bool(v: unknown, path: string): boolean {
    if (typeof v !== 'boolean') this.fail(path, `must be a boolean, got ${kind(v)}`);
    return v;
  }

  size(v: unknown, path: string): number {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) this.fail(path, `must be a non-negative integer, got ${short(v)}`);
    return v;
  }

  int(v: unknown, path: string): number {
    if (typeof v !== 'number' || !Number.isSafeInteger(v)) this.fail(path, `must be an integer, got ${short(v)}`);
    return v;
  }

  digest(v: unknown, path: string): Digest {
    if (!isDigest(v)) this.fail(path, `must be a sha256 digest (sha256:<64 hex>), got ${short(v)}`);
    return v;
  }

  arr(v: unknown, path: string): unknown[] {
    if (!Array.isArray(v)) this.fail(path, `must be an array, got ${kind(v)}`);
    return v;
  }

  strArr(v: unknown, path: string): string[] {
    return this.arr(v, path).map((x, i) => this.str(x, `${path}[${i}]`));
  }

  strMap(v: unknown, path: string): Record<string, string> {
    const o = this.obj(v, path);
    const out: Record<string, string> = {};
    for (const [k, x] of Object.entries(o)) out[k] = this.str(x, `${path}[${JSON.stringify(k)}]`);
    return out;
  }

  emptyObjMap(v: unknown, path: string): Record<string, Record<string, never>> {
    const o = this.obj(v, path);
    const out: Record<string, Record<string, never>> = {};
    for (const k of Object.keys(o)) {
      this.obj(o[k], `${path}[${JSON.stringify(k)}]`);
      out[k] = {};
    }
    return out;
  }

  platform(v: unknown, path: string): Platform {
    const o = this.obj(v, path);
    const p: Platform = { architecture: this.str(o.architecture, `${path}.architecture`), os: this.str(o.os, `${path}.os`) };
    if (o.variant !== undefined) p.variant = this.str(o.variant, `${path}.variant`);
    if (o['os.version'] !== undefined) p['os.version'] = this.str(o['os.version'], `${path}.os.version`);
    if (o['os.features'] !== undefined) p['os.features'] = this.strArr(o['os.features'], `${path}.os.features`);
    return p;
  }

  descriptor(v: unknown, path: string): Descriptor {
    const o = this.obj(v, path);
    const d: Descriptor = {
      mediaType: this.str(o.mediaType, `${path}.mediaType`),
      digest: this.digest(o.digest, `${path}.digest`),
      size: this.size(o.size, `${path}.size`),
    };
    if (o.annotations !== undefined) d.annotations = this.strMap(o.annotations, `${path}.annotations`);
    if (o.platform !== undefined) d.platform = this.platform(o.platform, `${path}.platform`);
    if (o.urls !== undefined) d.urls = this.strArr(o.urls, `${path}.urls`);
    if (o.artifactType !== undefined) d.artifactType = this.str(o.artifactType, `${path}.artifactType`);
    return d;
  }
}

function kind(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'undefined' ? 'nothing' : `a ${typeof v}`;
}

function short(v: unknown): string {
  const s = v === undefined ? 'nothing' : JSON.stringify(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function parseJson(bytes: Uint8Array | string, code: string, what: string): unknown {
  const text = typeof bytes === 'string' ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new TsbuildError(code, `${what}: not valid JSON (${(e as Error).message})`, { cause: e });
  }
}

function label(kindName: string, opts: ParseOptions | undefined): string {
  return opts?.source ? `${kindName} ${opts.source}` : kindName;
}

function schemaVersion(c: Checker, v: unknown): 2 {
  if (v !== 2) c.fail('schemaVersion', `must be 2, got ${short(v)}`);
  return 2;
}

export function parseManifest(bytes: Uint8Array | string, opts?: ParseOptions): Manifest {
  const what = label('manifest', opts);
  const c = new Checker('BAD_MANIFEST', what);
  const o = c.obj(parseJson(bytes, 'BAD_MANIFEST', what), '');
  const m: Manifest = {
    schemaVersion: schemaVersion(c, o.schemaVersion),
    config: c.descriptor(o.config, 'config'),
    layers: c.arr(o.layers, 'layers').map((l, i) => c.descriptor(l, `layers[${i}]`)),
  };
  if (o.mediaType !== undefined) {
    m.mediaType = c.str(o.mediaType, 'mediaType');
    if (!isManifestMediaType(m.mediaType)) c.fail('mediaType', `is ${short(m.mediaType)}, not an image manifest type`);
  }
  if (o.artifactType !== undefined) m.artifactType = c.str(o.artifactType, 'artifactType');
  if (o.subject !== undefined) m.subject = c.descriptor(o.subject, 'subject');
  if (o.annotations !== undefined) m.annotations = c.strMap(o.annotations, 'annotations');
  return m;
}

export function parseIndex(bytes: Uint8Array | string, opts?: ParseOptions): Index {
  const what = label('image index', opts);
  const c = new Checker('BAD_INDEX', what);
  const o = c.obj(parseJson(bytes, 'BAD_INDEX', what), '');
  const idx: Index = {
    schemaVersion: schemaVersion(c, o.schemaVersion),
    manifests: c.arr(o.manifests, 'manifests').map((d, i) => c.descriptor(d, `manifests[${i}]`)),
  };
  if (o.mediaType !== undefined) {
    idx.mediaType = c.str(o.mediaType, 'mediaType');
    if (!isIndexMediaType(idx.mediaType)) c.fail('mediaType', `is ${short(idx.mediaType)}, not an image index type`);
  }
  if (o.annotations !== undefined) idx.annotations = c.strMap(o.annotations, 'annotations');
  return idx;
}

function nullableStrArr(c: Checker, v: unknown, path: string): string[] | null {
  return v === null ? null : c.strArr(v, path);
}

function containerConfig(c: Checker, v: unknown): ContainerConfig {
  const o = c.obj(v, 'config');
  const cc: ContainerConfig = {};
  if (o.User !== undefined) cc.User = c.str(o.User, 'config.User');
  if (o.ExposedPorts != null) cc.ExposedPorts = c.emptyObjMap(o.ExposedPorts, 'config.ExposedPorts');
  if (o.Env != null) cc.Env = c.strArr(o.Env, 'config.Env');
  if (o.Entrypoint !== undefined) cc.Entrypoint = nullableStrArr(c, o.Entrypoint, 'config.Entrypoint');
  if (o.Cmd !== undefined) cc.Cmd = nullableStrArr(c, o.Cmd, 'config.Cmd');
  if (o.Volumes != null) cc.Volumes = c.emptyObjMap(o.Volumes, 'config.Volumes');
  if (o.WorkingDir !== undefined) cc.WorkingDir = c.str(o.WorkingDir, 'config.WorkingDir');
  if (o.Labels != null) cc.Labels = c.strMap(o.Labels, 'config.Labels');
  if (o.StopSignal !== undefined) cc.StopSignal = c.str(o.StopSignal, 'config.StopSignal');
  if (o.ArgsEscaped !== undefined) cc.ArgsEscaped = c.bool(o.ArgsEscaped, 'config.ArgsEscaped');
  if (o.OnBuild !== undefined) cc.OnBuild = nullableStrArr(c, o.OnBuild, 'config.OnBuild');
  if (o.Shell != null) cc.Shell = c.strArr(o.Shell, 'config.Shell');
  if (o.Healthcheck != null) {
    const h = c.obj(o.Healthcheck, 'config.Healthcheck');
    const hc: HealthConfig = {};
    if (h.Test != null) hc.Test = c.strArr(h.Test, 'config.Healthcheck.Test');
    for (const k of ['Interval', 'Timeout', 'StartPeriod', 'StartInterval', 'Retries'] as const) {
      if (h[k] !== undefined) hc[k] = c.int(h[k], `config.Healthcheck.${k}`);
    }
    cc.Healthcheck = hc;
  }
  return cc;
}

export function parseConfig(bytes: Uint8Array | string, opts?: ParseOptions): ImageConfig {
  const what = label('image config', opts);
  const c = new Checker('BAD_CONFIG', what);
  const o = c.obj(parseJson(bytes, 'BAD_CONFIG', what), '');
  const rootfs = c.obj(o.rootfs, 'rootfs');
  if (rootfs.type !== 'layers') c.fail('rootfs.type', `must be "layers", got ${short(rootfs.type)}`);
  const cfg: ImageConfig = {
    architecture: c.str(o.architecture, 'architecture'),
    os: c.str(o.os, 'os'),
    rootfs: {
      type: 'layers',
      diff_ids: rootfs.diff_ids == null ? [] : c.arr(rootfs.diff_ids, 'rootfs.diff_ids').map((d, i) => c.digest(d, `rootfs.diff_ids[${i}]`)),
    },
  };
  const variant = c.optStr(o.variant, 'variant');
  if (variant !== undefined) cfg.variant = variant;
  const created = c.optStr(o.created, 'created');
  if (created !== undefined) cfg.created = created;
  const author = c.optStr(o.author, 'author');
  if (author !== undefined) cfg.author = author;
  if (o.config != null) cfg.config = containerConfig(c, o.config);
  if (o.history != null) {
    cfg.history = c.arr(o.history, 'history').map((h, i) => {
      const ho = c.obj(h, `history[${i}]`);
      const e: HistoryEntry = {};
      for (const k of ['created', 'created_by', 'author', 'comment'] as const) {
        const s = c.optStr(ho[k], `history[${i}].${k}`);
        if (s !== undefined) e[k] = s;
      }
      if (ho.empty_layer !== undefined) e.empty_layer = c.bool(ho.empty_layer, `history[${i}].empty_layer`);
      return e;
    });
  }
  return cfg;
}

/** Reads just the mediaType of a manifest-or-index JSON document, to decide which parser applies. */
export function sniffMediaType(bytes: Uint8Array | string): string | undefined {
  let v: unknown;
  try {
    v = parseJson(bytes, 'BAD_MANIFEST', 'manifest');
  } catch {
    return undefined;
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o.mediaType === 'string') return o.mediaType;
  if (Array.isArray(o.manifests)) return MediaType.OciIndex;
  if (o.config !== undefined && Array.isArray(o.layers)) return MediaType.OciManifest;
  return undefined;
}
