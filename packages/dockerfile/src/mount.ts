import { DockerfileError } from '@tsbuild/errors';

export type MountType = 'bind' | 'cache' | 'tmpfs' | 'secret' | 'ssh';
export type CacheSharing = 'shared' | 'private' | 'locked';

/**
 * One `RUN --mount=...`. Defaults are filled in as BuildKit applies them: `type` is bind;
 * bind/secret/ssh are read-only unless `rw`; a cache's id is its target and its sharing `shared`;
 * a secret's id comes from `id`, else `source`, else the target's base name, and its target is
 * `/run/secrets/<id>` unless it is exposed only through `env`; an ssh mount's id is `default`.
 * An ssh mount without a target gets `/run/buildkit/ssh_agent.<n>` from the RUN that holds it.
 */
export interface Mount {
  type: MountType;
  target?: string;
  source?: string;
  /** Stage name, stage index or image the source is read from (bind, cache). */
  from?: string;
  id?: string;
  sharing?: CacheSharing;
  readonly: boolean;
  /** secret/ssh: fail the step when the secret or agent is not provided. */
  required: boolean;
  /** File mode (cache, secret, ssh). */
  mode?: number;
  uid?: number;
  gid?: number;
  /** tmpfs size limit in bytes. */
  size?: number;
  /** secret: also (or only) expose the value as this environment variable. */
  env?: string;
  /** The flag value as written, so it can be parsed again after variable expansion. */
  spec: string;
}

export interface ParseMountOptions {
  /**
   * Expands each value before it is validated. Without it values are taken as written, and a
   * number or keyword that still holds a `$` is left unvalidated (and unset) until expansion.
   */
  expand?: (word: string) => string;
}

const TYPES: readonly MountType[] = ['bind', 'cache', 'tmpfs', 'secret', 'ssh'];
const SHARING: readonly CacheSharing[] = ['shared', 'private', 'locked'];

/** Parses the value of one `--mount` flag (a CSV record of `key=value` fields). */
export function parseMount(spec: string, opts: ParseMountOptions = {}): Mount {
  const fail = (msg: string): DockerfileError => new DockerfileError(`--mount=${spec}: ${msg}`);
  const fields = parseCsvRecord(spec, fail);
  const values = new Map<string, { key: string; value: string | undefined }>();
  for (const field of fields) {
    const eq = field.indexOf('=');
    const key = (eq < 0 ? field : field.slice(0, eq)).toLowerCase();
    let value = eq < 0 ? undefined : field.slice(eq + 1);
    const canon = CANONICAL[key];
    if (canon === undefined) throw fail(`unexpected key '${key}' in '${field}'`);
    if (value === undefined && !FLAG_KEYS.has(canon)) throw fail(`invalid field '${field}' must be a key=value pair`);
    if (canon === 'from' && value !== undefined && /\$(?!$)/.test(value)) {
      throw fail("'from' doesn't support variable expansion, define alias stage instead");
    }
    if (value !== undefined && opts.expand) value = opts.expand(value);
    if ((canon === 'readonly' || canon === 'readwrite') && values.has(canon === 'readonly' ? 'readwrite' : 'readonly')) {
      values.delete(canon === 'readonly' ? 'readwrite' : 'readonly');
    }
    values.set(canon, { key, value });
  }
  // Without an expander a value holding `$` is not final yet.
  const ready = (v: string): boolean => opts.expand !== undefined || !v.includes('$');
  const text = (k: string): string | undefined => values.get(k)?.value;

  let type: MountType = 'bind';
  const typeText = text('type');
  // A type still holding `$` leaves everything that depends on the type for after expansion.
  const typeKnown = typeText === undefined || ready(typeText);
  if (typeText !== undefined && typeKnown) {
    const t = typeText.toLowerCase();
    if (!(TYPES as readonly string[]).includes(t)) {
      throw fail(`unsupported mount type ${JSON.stringify(typeText)} (use one of ${TYPES.join(', ')})`);
    }
    type = t as MountType;
  }
  const m: Mount = { type, readonly: type === 'bind' || type === 'secret' || type === 'ssh', required: false, spec };
  const boolOf = (k: string): boolean | undefined => {
    const entry = values.get(k);
    if (!entry) return undefined;
    if (entry.value === undefined) return true;
    if (!ready(entry.value)) return undefined;
    const b = parseGoBool(entry.value);
    if (b === undefined) throw fail(`invalid value for ${entry.key}: ${entry.value}`);
    return b;
  };
  const ro = boolOf('readonly');
  const rw = boolOf('readwrite');
  if (ro !== undefined) m.readonly = ro;
  if (rw !== undefined) m.readonly = !rw;

  const str = (k: 'target' | 'source' | 'from' | 'id' | 'env'): void => {
    const v = text(k);
    if (v !== undefined) m[k] = v;
  };
  str('target');
  str('source');
  str('from');
  str('id');
  str('env');
  if (!typeKnown) return m;

  const onlyFor = (k: string, allowed: readonly MountType[]): boolean => {
    const entry = values.get(k);
    if (!entry) return false;
    if (!allowed.includes(type)) throw fail(`unexpected key '${entry.key}' for mount type '${type}'`);
    return true;
  };
  if (onlyFor('required', ['secret', 'ssh'])) m.required = boolOf('required') ?? false;
  if (onlyFor('size', ['tmpfs'])) {
    const v = text('size') as string;
    if (ready(v)) m.size = parseByteSize(v, fail);
  }
  if (values.has('sharing')) {
    if (type !== 'cache') throw fail(`invalid cache sharing set for ${type} mount`);
    const v = text('sharing') as string;
    if (ready(v)) {
      const s = v.toLowerCase();
      if (!(SHARING as readonly string[]).includes(s)) {
        throw fail(`unsupported sharing value ${JSON.stringify(v)} (use one of ${SHARING.join(', ')})`);
      }
      m.sharing = s as CacheSharing;
    }
  }
  for (const k of ['mode', 'uid', 'gid'] as const) {
    const v = text(k);
    if (v === undefined) continue;
    if (type !== 'cache' && type !== 'secret' && type !== 'ssh') throw fail(`${k} not allowed for "${type}" type mounts`);
    if (!ready(v)) continue;
    const n = k === 'mode' ? parseUnsigned(v, 8) : parseUnsigned(v, 10);
    if (n === undefined) throw fail(`invalid value ${v} for ${k}`);
    m[k] = n;
  }
  if (values.has('env') && type !== 'secret') throw fail(`unexpected key 'env' for mount type '${type}'`);

  switch (type) {
    case 'bind':
    case 'tmpfs':
      if (!m.target) throw fail(`mount type ${type} requires a target`);
      break;
    case 'cache':
      if (!m.target) throw fail('mount type cache requires a target');
      if (m.id === undefined || m.id === '') m.id = m.target;
      if (!values.has('sharing')) m.sharing = 'shared';
      break;
    case 'secret': {
      if (m.from !== undefined) throw fail('secret mount should not have a from');
      if (m.source && m.id) throw fail("both source and id can't be set");
      const id = m.id || m.source || (m.target ? basename(m.target) : '');
      if (!id) throw fail('invalid secret mount: one of id, source or target is required');
      m.id = id;
      delete m.source;
      if (!m.target && m.env === undefined) m.target = `/run/secrets/${basename(id)}`;
      break;
    }
    case 'ssh':
      if (m.from !== undefined) throw fail('ssh mount should not have a from');
      if (!m.id) m.id = 'default';
      break;
  }
  return m;
}

const CANONICAL: Record<string, string> = Object.assign(Object.create(null) as Record<string, string>, {
  type: 'type',
  target: 'target',
  dst: 'target',
  destination: 'target',
  dest: 'target',
  source: 'source',
  src: 'source',
  from: 'from',
  id: 'id',
  sharing: 'sharing',
  mode: 'mode',
  uid: 'uid',
  gid: 'gid',
  ro: 'readonly',
  readonly: 'readonly',
  rw: 'readwrite',
  readwrite: 'readwrite',
  required: 'required',
  size: 'size',
  env: 'env',
});
const FLAG_KEYS = new Set(['readonly', 'readwrite', 'required']);

function basename(p: string): string {
  const parts = p.split('/').filter((s) => s !== '');
  return parts[parts.length - 1] ?? '/';
}

/** Go's strconv.ParseBool. */
function parseGoBool(v: string): boolean | undefined {
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(v)) return false;
  return undefined;
}

function parseUnsigned(v: string, radix: 8 | 10): number | undefined {
  const re = radix === 8 ? /^[0-7]+$/ : /^[0-9]+$/;
  if (!re.test(v)) return undefined;
  const n = parseInt(v, radix);
  return n <= 0xffffffff ? n : undefined;
}

/** Docker's RAMInBytes: `64m`, `1.5g`, `512KiB`, `1024` (binary multiples). */
function parseByteSize(v: string, fail: (msg: string) => DockerfileError): number {
  const m = /^(\d+(?:\.\d+)?) ?([kmgtp])?i?b?$/i.exec(v);
  if (!m) throw fail(`invalid value for size: ${v}`);
  const mult = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 }[(m[2] ?? '').toLowerCase()] ?? 1;
  const n = Math.floor(Number(m[1]) * mult);
  if (!Number.isSafeInteger(n)) throw fail(`invalid value for size: ${v}`);
  return n;
}

/**
 * One CSV record with Go encoding/csv rules: fields split on `,`; a field that starts with `"` is
 * quoted (`""` is a literal quote) and must end at a `,` or the end; a bare `"` elsewhere is an error.
 */
export function parseCsvRecord(text: string, fail: (msg: string) => Error = (m) => new DockerfileError(m)): string[] {
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    let field = '';
    if (text[i] === '"') {
      i++;
      for (;;) {
        if (i >= text.length) throw fail('failed to parse csv mounts: extraneous or missing " in quoted-field');
        const ch = text[i] as string;
        if (ch === '"') {
          if (text[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          if (i < text.length && text[i] !== ',') {
            throw fail('failed to parse csv mounts: extraneous or missing " in quoted-field');
          }
          break;
        }
        field += ch;
        i++;
      }
    } else {
      while (i < text.length && text[i] !== ',') {
        if (text[i] === '"') throw fail('failed to parse csv mounts: bare " in non-quoted-field');
        field += text[i];
        i++;
      }
    }
    fields.push(field);
    if (i >= text.length) return fields;
    i++; // the comma
  }
}
