import { DockerfileError } from '@tsbuild/errors';

/** How a flag takes its value: `string` once, `list` any number of times, `bool` with or without `=true|false`. */
export type FlagKind = 'string' | 'list' | 'bool';

export type FlagSpec = Readonly<Record<string, FlagKind>>;

/** Values of the flags that were given; absent flags are absent. */
export interface ParsedFlags {
  strings: Map<string, string>;
  lists: Map<string, string[]>;
  bools: Map<string, boolean>;
}

/**
 * Parses the raw `--name[=value]` words of one instruction against the flags it accepts.
 * Errors name the flag and the instruction; the caller attaches the source location.
 */
export function parseFlags(raw: readonly string[], spec: FlagSpec, instruction: string): ParsedFlags {
  const out: ParsedFlags = { strings: new Map(), lists: new Map(), bools: new Map() };
  for (const arg of raw) {
    if (!arg.startsWith('--') || arg === '--') {
      throw new DockerfileError(`${instruction}: invalid flag ${JSON.stringify(arg)}: flags must start with --`);
    }
    const body = arg.slice(2);
    const eq = body.indexOf('=');
    const name = eq < 0 ? body : body.slice(0, eq);
    const value = eq < 0 ? undefined : body.slice(eq + 1);
    const kind = Object.hasOwn(spec, name) ? spec[name] : undefined;
    if (kind === undefined) {
      const known = Object.keys(spec).map((k) => `--${k}`);
      throw new DockerfileError(`${instruction}: unknown flag: --${name}`, {
        hint: known.length ? `${instruction} accepts ${known.join(', ')}` : `${instruction} accepts no flags`,
      });
    }
    if (kind === 'bool') {
      if (out.bools.has(name)) throw new DockerfileError(`${instruction}: duplicate flag specified: --${name}`);
      let v = true;
      if (value !== undefined) {
        const lower = value.toLowerCase();
        if (lower !== 'true' && lower !== 'false') {
          throw new DockerfileError(`${instruction}: expecting boolean value for flag --${name}, not: ${value}`);
        }
        v = lower === 'true';
      }
      out.bools.set(name, v);
      continue;
    }
    if (value === undefined) throw new DockerfileError(`${instruction}: missing a value on flag: --${name}`);
    if (kind === 'list') {
      const list = out.lists.get(name) ?? [];
      list.push(value);
      out.lists.set(name, list);
    } else {
      if (out.strings.has(name)) throw new DockerfileError(`${instruction}: duplicate flag specified: --${name}`);
      out.strings.set(name, value);
    }
  }
  return out;
}
