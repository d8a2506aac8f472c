import type { SourceRange } from '@tsbuild/errors';
import type { Node } from '../ast.ts';
import type { Instruction } from '../instructions.ts';
import { parseMount } from '../mount.ts';
import { processWordWithMatches } from '../shell.ts';
import type { ShellOptions, WordResult } from '../shell.ts';
import type { Entry, Grouped, LintStage } from './names.ts';
import { parsePlatformSpec } from './platform.ts';
import type { PlatformParts } from './platform.ts';
import { isValidImageReference } from './reference.ts';
import type { Reporter } from './report.ts';
import { variablePattern, wordPattern } from './report.ts';
import { RULES } from './rules.ts';
import { childSequenceState, sequenceStep } from './sequence.ts';
import type { SequenceState } from './sequence.ts';
import { suggest } from './suggest.ts';

/*
 * The rules that need the build's variables: a walk over every stage (reachable or not, as
 * `docker build --check` does) that tracks what BuildKit's dispatcher would know at each step.
 */

/** What the caller knows about base images; see CheckOptions. */
export interface DispatchOptions {
  escapeToken: string;
  buildArgs: Readonly<Record<string, string>>;
  /** The ARGs every build defines (TARGETPLATFORM …), build-arg overrides already applied. */
  predefined: ReadonlyMap<string, string>;
  baseEnv?: (image: string) => readonly string[] | undefined;
  isIgnored?: (path: string) => boolean;
  ignorePatterns?: readonly string[];
}

/** Set by BuildKit from build args, never visible as variables. */
const NON_ENV_ARGS = new Set(['BUILDKIT_SBOM_SCAN_CONTEXT', 'BUILDKIT_SBOM_SCAN_STAGE']);
/** What a stage without PATH in its base image gets (BuildKit's default for Linux). */
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

interface StageState {
  name: string | undefined;
  env: Map<string, string>;
  /** False when the base image's environment is unknown: UndefinedVar cannot decide then. */
  envKnown: boolean;
  /** ARG names declared in the stage (or its base stage), with or without a value. */
  declared: Set<string>;
  workdirSet: boolean;
  sequence: SequenceState;
}

function expand(word: string, env: ReadonlyMap<string, string>, opts: ShellOptions): WordResult | undefined {
  try {
    return processWordWithMatches(word, env, opts);
  } catch {
    // a word that cannot be expanded fails the build there; no rule can say more about it
    return undefined;
  }
}

const has = (rec: Readonly<Record<string, string>>, k: string): boolean => Object.hasOwn(rec, k);

/** The global scope for FROM lines: predefined ARGs plus the ARGs before the first FROM. */
function metaArgs(
  grouped: Grouped,
  predefined: ReadonlyMap<string, string>,
  buildArgs: Readonly<Record<string, string>> | undefined,
  escapeToken: string,
): { env: Map<string, string>; declared: Set<string> } | undefined {
  const env = new Map(predefined);
  const declared = new Set<string>();
  for (const { inst } of grouped.metaArgs) {
    for (const def of inst.args) {
      declared.add(def.key);
      if (buildArgs && has(buildArgs, def.key)) {
        env.set(def.key, buildArgs[def.key] ?? '');
      } else if (def.value !== undefined) {
        const r = expand(def.value, env, { escapeToken });
        if (!r) return undefined;
        env.set(def.key, r.result);
      }
    }
  }
  return { env, declared };
}

/**
 * InvalidDefaultArgInFrom: with no build args at all, every FROM must still name a valid image
 * (an ARG without a default that leaves `busybox:` or an empty name is a trap).
 */
function checkDefaultBaseNames(grouped: Grouped, opts: DispatchOptions, r: Reporter): void {
  const defaults = metaArgs(grouped, opts.predefined, undefined, opts.escapeToken);
  if (!defaults) return;
  for (const { from } of grouped.stages) {
    const m = expand(from.inst.image, defaults.env, { escapeToken: opts.escapeToken });
    if (!m) return;
    if (!isValidImageReference(m.result)) {
      r.report('InvalidDefaultArgInFrom', RULES.InvalidDefaultArgInFrom.format(from.inst.image), from.inst.range);
    }
  }
}

/** UndefinedArgInFrom, RedundantTargetPlatform and FromPlatformFlagConstDisallowed for one FROM. */
function checkFrom(
  stage: LintStage,
  global: { env: Map<string, string>; declared: Set<string> },
  escapeToken: string,
  r: Reporter,
): string | undefined {
  const { node, inst } = stage.from;
  const known = new Set([...global.declared, ...global.env.keys()]);
  const undeclared = (m: WordResult): void => {
    for (const name of m.unmatched) {
      if (known.has(name)) continue;
      r.report('UndefinedArgInFrom', RULES.UndefinedArgInFrom.format(name, suggest(name, known, r.suggestions)), r.word(inst.range, variablePattern(name)), node);
    }
  };
  const base = expand(inst.image, global.env, { escapeToken });
  if (base) undeclared(base);
  if (inst.platform !== undefined) {
    const p = expand(inst.platform, global.env, { escapeToken });
    if (p) {
      undeclared(p);
      const at = r.word(inst.range, /--platform\b/);
      if (p.matched.size === 1 && p.unmatched.size === 0 && p.matched.has('TARGETPLATFORM') && p.result === global.env.get('TARGETPLATFORM')) {
        r.report('RedundantTargetPlatform', RULES.RedundantTargetPlatform.format(inst.platform), at, node);
      }
      if (p.matched.size === 0 && p.unmatched.size === 0) {
        const parsed: PlatformParts | undefined = parsePlatformSpec(p.result);
        const name = inst.stageName ?? '';
        // A stage named for its platform (build_amd64) is meant to be platform-specific.
        if (parsed && !name.includes(parsed.os) && !name.includes(parsed.architecture)) {
          r.report('FromPlatformFlagConstDisallowed', RULES.FromPlatformFlagConstDisallowed.format(p.result), at, node);
        }
      }
    }
  }
  return base?.result;
}

function envFromList(list: readonly string[]): Map<string, string> {
  const env = new Map<string, string>();
  for (const kv of list) {
    const eq = kv.indexOf('=');
    if (eq < 0) env.set(kv, '');
    else env.set(kv.slice(0, eq), kv.slice(eq + 1));
  }
  return env;
}

/** Docker's secret-looking names: a token such as `password` or `key` as a whole `_` part. */
const SECRET = /(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)/i;
const NOT_SECRET = /(?:_|^)(?:public|file|version)(?:_|$)/i;

/** Splits `[ip:][host:]port[/proto]` the way BuildKit reads EXPOSE values. */
function exposeParts(raw: string): { proto: string; mapped: boolean } | undefined {
  const parts = raw.split(':');
  const n = parts.length;
  const container = parts[n - 1] ?? '';
  const mapped = n > 1;
  const slash = container.indexOf('/');
  const port = slash < 0 ? container : container.slice(0, slash);
  const proto = slash < 0 ? '' : container.slice(slash + 1);
  if (port === '') return undefined;
  if (!['', 'tcp', 'udp', 'sctp'].includes(proto.toLowerCase())) return undefined;
  return { proto, mapped };
}

/** A source COPY/ADD fetches rather than reads from the context. */
const REMOTE_SOURCE = /^(?:https?:\/\/|git@|git:\/\/|ssh:\/\/)/;

/** Go's path.Clean for the context-relative sources CopyIgnoredFile names. */
function cleanPath(p: string): string {
  if (p === '') return '.';
  const rooted = p.startsWith('/');
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length > 0 && out[out.length - 1] !== '..') out.pop();
      else if (!rooted) out.push('..');
      continue;
    }
    out.push(part);
  }
  const joined = out.join('/');
  if (rooted) return `/${joined}`;
  return joined === '' ? '.' : joined;
}

/**
 * Every stage in order, each starting from its base stage's state (ARG values and SHELL carry
 * over, as in BuildKit). ONBUILD triggers a base stage leaves for its children are not replayed.
 */
export function runDispatchRules(grouped: Grouped, opts: DispatchOptions, r: Reporter): void {
  checkDefaultBaseNames(grouped, opts, r);
  const global = metaArgs(grouped, opts.predefined, opts.buildArgs, opts.escapeToken);
  const byName = new Map<string, StageState>();
  for (const stage of grouped.stages) {
    const baseName = global ? checkFrom(stage, global, opts.escapeToken, r) : undefined;
    const state = initialState(stage, baseName, byName, opts);
    for (const e of stage.commands) dispatch(e, state, global?.env ?? opts.predefined, opts, r);
    if (state.name !== undefined) byName.set(state.name, state);
  }
}

function initialState(stage: LintStage, baseName: string | undefined, byName: ReadonlyMap<string, StageState>, opts: DispatchOptions): StageState {
  const name = stage.from.inst.stageName;
  const base = baseName === undefined ? undefined : byName.get(baseName);
  if (base) {
    return {
      name,
      env: new Map(base.env),
      envKnown: base.envKnown,
      declared: new Set(base.declared),
      workdirSet: base.workdirSet,
      sequence: childSequenceState(base.sequence),
    };
  }
  let env = new Map<string, string>();
  let envKnown = baseName === 'scratch';
  if (baseName !== undefined && baseName !== 'scratch') {
    const list = opts.baseEnv?.(baseName);
    if (list) {
      env = envFromList(list);
      envKnown = true;
    }
  }
  if (!env.has('PATH')) env.set('PATH', DEFAULT_PATH);
  return { name, env, envKnown, declared: new Set(), workdirSet: false, sequence: childSequenceState(undefined) };
}

function dispatch(
  e: Entry,
  st: StageState,
  globalEnv: ReadonlyMap<string, string>,
  opts: DispatchOptions,
  r: Reporter,
): void {
  const { node, inst } = e;
  const shellOpts: ShellOptions = { escapeToken: opts.escapeToken };
  /** Expands a word BuildKit expands, reporting variables that are neither set nor declared. */
  const word = (w: string, o: ShellOptions = shellOpts): string => {
    const m = expand(w, st.env, o);
    if (!m) return w;
    if (st.envKnown) {
      for (const name of m.unmatched) {
        if (st.declared.has(name) || NON_ENV_ARGS.has(name)) continue;
        const message = RULES.UndefinedVar.format(name, suggest(name, st.env.keys(), r.suggestions));
        r.report('UndefinedVar', message, r.word(inst.range, variablePattern(name)), node);
      }
    }
    return m.result;
  };
  const secret = (instruction: 'ARG' | 'ENV', key: string): void => {
    if (SECRET.test(key) && !NOT_SECRET.test(key)) {
      r.report('SecretsUsedInArgOrEnv', RULES.SecretsUsedInArgOrEnv.format(instruction, key), r.word(inst.range, wordPattern(key)), node);
    }
  };

  switch (inst.kind) {
    case 'env': {
      // BuildKit expands the whole instruction before setting any of it
      const pairs = inst.env.map((kv) => ({ key: word(kv.key), value: word(kv.value) }));
      for (const { key, value } of pairs) {
        secret('ENV', key);
        st.env.set(key, value);
      }
      return;
    }
    case 'label':
      for (const kv of inst.labels) {
        word(kv.key);
        word(kv.value);
      }
      return;
    case 'copy':
    case 'add': {
      if (inst.chown !== undefined) word(inst.chown);
      if (inst.chmod !== undefined) word(inst.chmod);
      if (inst.kind === 'add' && inst.checksum !== undefined) word(inst.checksum);
      const sources = inst.sources.map((s) => word(s));
      word(inst.dest);
      // heredoc bodies expand with `\` and keep their quotes, whatever the escape directive
      for (const h of inst.heredocs) if (h.expand) word(h.content, { escapeToken: '\\', skipQuotes: true });
      if (inst.kind === 'add' || inst.from === undefined) checkIgnored(inst.kind, sources, inst.range, node, opts, r);
      return;
    }
    case 'workdir': {
      const path = word(inst.path);
      // Only the first WORKDIR of a stage (and its base stages) matters: fixing it fixes the rest.
      if (!st.workdirSet && !path.startsWith('/')) {
        r.report('WorkdirRelativePath', RULES.WorkdirRelativePath.format(path), inst.range, node);
      }
      st.workdirSet = true;
      return;
    }
    case 'user':
      word(inst.user);
      return;
    case 'volume':
      for (const v of inst.volumes) word(v);
      return;
    case 'stopsignal':
      word(inst.signal);
      return;
    case 'run':
      for (const m of inst.mounts) {
        try {
          parseMount(m.spec, { expand: (w) => word(w) });
        } catch {
          // an invalid mount fails the build; the variables in it were reported on the way
        }
      }
      return;
    case 'arg':
      for (const def of inst.args) {
        secret('ARG', def.key);
        let value: string | undefined;
        if (has(opts.buildArgs, def.key)) value = opts.buildArgs[def.key];
        else if (def.value !== undefined) value = word(def.value);
        else value = globalEnv.get(def.key);
        if (value !== undefined && !NON_ENV_ARGS.has(def.key)) st.env.set(def.key, value);
        st.declared.add(def.key);
      }
      return;
    case 'expose':
      for (const p of inst.ports) {
        const m = expand(p, st.env, shellOpts);
        for (const port of m?.words ?? [p]) {
          const parts = exposeParts(port);
          if (!parts) continue;
          const at = r.word(inst.range, wordPattern(port));
          if (parts.proto !== parts.proto.toLowerCase()) r.report('ExposeProtoCasing', RULES.ExposeProtoCasing.format(port), at, node);
          if (parts.mapped) r.report('ExposeInvalidFormat', RULES.ExposeInvalidFormat.format(port), at, node);
        }
      }
      return;
    case 'cmd':
    case 'entrypoint':
    case 'healthcheck':
    case 'shell':
      sequenceStep(inst, st.sequence, (w, governedBy: Instruction) => {
        r.report(w.rule, w.message, w.range, governedBy === inst ? node : undefined);
      });
      return;
    default:
      return;
  }
}

/**
 * CopyIgnoredFile. Like BuildKit it stays quiet when the ignore file has `!` exceptions (an
 * excluded directory may hold re-included files), and names the context root only when a
 * pattern excludes everything.
 */
function checkIgnored(
  kind: 'add' | 'copy',
  sources: readonly string[],
  range: SourceRange,
  node: Node,
  opts: DispatchOptions,
  r: Reporter,
): void {
  const isIgnored = opts.isIgnored;
  if (!isIgnored) return;
  const patterns = opts.ignorePatterns ?? [];
  if (patterns.some((p) => p.startsWith('!'))) return;
  for (const src of sources) {
    if (REMOTE_SOURCE.test(src)) continue;
    const clean = cleanPath(src);
    const root = clean === '.' || clean === '/';
    const ignored = root ? patterns.some((p) => p === '*' || p === '**' || p === '**/*') : isIgnored(clean.replace(/^\/+/, ''));
    if (!ignored) continue;
    const at = r.word(range, wordPattern(src));
    r.report('CopyIgnoredFile', RULES.CopyIgnoredFile.format(kind === 'add' ? 'Add' : 'Copy', clean), at, node);
  }
}
