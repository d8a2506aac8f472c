import { DockerfileError, excerptOf } from '@tsbuild/errors';
import type { DockerfileErrorOptions, SourceRange } from '@tsbuild/errors';
import type { Heredoc, Node, Warning } from './ast.ts';
import { parseDuration } from './duration.ts';
import { parseFlags } from './flags.ts';
import type { FlagSpec, ParsedFlags } from './flags.ts';
import { parseMount } from './mount.ts';
import type { Mount } from './mount.ts';
import { RULES } from './lint/rules.ts';
import type { RuleName } from './lint/rules.ts';

/** How RUN, CMD, ENTRYPOINT and HEALTHCHECK CMD were written: one shell string or an argv. */
export type CommandLine = { form: 'shell'; command: string } | { form: 'exec'; args: string[] };

export interface KeyValue {
  key: string;
  value: string;
}

interface Base {
  range: SourceRange;
  /** The instruction's source text. */
  original: string;
}

export interface FromInstruction extends Base {
  kind: 'from';
  /** The image word as written (may hold `$ARG`s from the global scope). */
  image: string;
  /** Lower-cased `AS` name. */
  stageName?: string;
  platform?: string;
}
export type NetworkMode = 'default' | 'none' | 'host';
export type SecurityMode = 'sandbox' | 'insecure';
export interface RunInstruction extends Base {
  kind: 'run';
  cmd: CommandLine;
  heredocs: Heredoc[];
  mounts: Mount[];
  network?: NetworkMode;
  security?: SecurityMode;
}
export interface CmdInstruction extends Base {
  kind: 'cmd';
  cmd: CommandLine;
}
export interface EntrypointInstruction extends Base {
  kind: 'entrypoint';
  cmd: CommandLine;
}
export interface LabelInstruction extends Base {
  kind: 'label';
  labels: KeyValue[];
}
export interface MaintainerInstruction extends Base {
  kind: 'maintainer';
  maintainer: string;
}
export interface ExposeInstruction extends Base {
  kind: 'expose';
  ports: string[];
}
export interface EnvInstruction extends Base {
  kind: 'env';
  env: KeyValue[];
}
interface CopyLike extends Base {
  /** Source paths as written; heredoc sources are in `heredocs` instead. */
  sources: string[];
  /** Inline sources (`COPY <<EOF /dest`); `name` is the file name written. */
  heredocs: Heredoc[];
  dest: string;
  chown?: string;
  chmod?: string;
  link: boolean;
  parents: boolean;
  exclude: string[];
}
export interface CopyInstruction extends CopyLike {
  kind: 'copy';
  from?: string;
}
export interface AddInstruction extends CopyLike {
  kind: 'add';
  checksum?: string;
  keepGitDir?: boolean;
  unpack?: boolean;
}
export interface VolumeInstruction extends Base {
  kind: 'volume';
  volumes: string[];
}
export interface UserInstruction extends Base {
  kind: 'user';
  user: string;
}
export interface WorkdirInstruction extends Base {
  kind: 'workdir';
  path: string;
}
export interface ArgDefinition {
  key: string;
  /** Undefined for `ARG name` (no default). */
  value?: string;
}
export interface ArgInstruction extends Base {
  kind: 'arg';
  args: ArgDefinition[];
}
export interface OnbuildInstruction extends Base {
  kind: 'onbuild';
  trigger: Instruction;
  /** The trigger text stored in the image config's OnBuild list. */
  expression: string;
}
export interface StopsignalInstruction extends Base {
  kind: 'stopsignal';
  signal: string;
}
export interface HealthcheckInstruction extends Base {
  kind: 'healthcheck';
  /** `none` disables a health check inherited from the base image. */
  test: { type: 'none' } | { type: 'cmd'; cmd: CommandLine };
  /** Nanoseconds; absent when not given (0 in the image config means "inherit the default"). */
  interval?: number;
  timeout?: number;
  startPeriod?: number;
  startInterval?: number;
  retries?: number;
}
export interface ShellInstruction extends Base {
  kind: 'shell';
  shell: string[];
}

export type Instruction =
  | FromInstruction
  | RunInstruction
  | CmdInstruction
  | LabelInstruction
  | MaintainerInstruction
  | ExposeInstruction
  | EnvInstruction
  | AddInstruction
  | CopyInstruction
  | EntrypointInstruction
  | VolumeInstruction
  | UserInstruction
  | WorkdirInstruction
  | ArgInstruction
  | OnbuildInstruction
  | StopsignalInstruction
  | HealthcheckInstruction
  | ShellInstruction;

export type InstructionKind = Instruction['kind'];

export interface ParseInstructionOptions {
  /** Named in errors; default 'Dockerfile'. */
  file?: string;
  /** The whole Dockerfile, for error excerpts (the instruction's own text is used otherwise). */
  text?: string;
  /** Findings of the check rules that are visible while parsing one instruction are appended here. */
  warnings?: Warning[];
}

/** Converts one AST node into a typed instruction; every error carries the node's location. */
export function parseInstruction(node: Node, opts: ParseInstructionOptions = {}): Instruction {
  try {
    return convert(node, opts);
  } catch (e) {
    throw locate(e, node.range, node.original, opts);
  }
}

/** Re-attributes a location-less DockerfileError to an instruction. */
export function locate(e: unknown, range: SourceRange, original: string, opts: { file?: string; text?: string }): unknown {
  if (!(e instanceof DockerfileError) || e.range !== undefined) return e;
  const options: DockerfileErrorOptions = {
    file: opts.file ?? 'Dockerfile',
    range,
    excerpt: opts.text !== undefined ? excerptOf(opts.text, range) : original,
    cause: e.cause,
  };
  if (e.hint !== undefined) options.hint = e.hint;
  return new DockerfileError(e.detail, options);
}

const COPY_FLAGS: FlagSpec = { chown: 'string', chmod: 'string', link: 'bool', parents: 'bool', exclude: 'list' };

/** The instruction keyword as written (`From`, `copy`): BuildKit's messages quote it that way. */
export function instructionKeyword(original: string, fallback = ''): string {
  return /^\s*(\S+)/.exec(original)?.[1] ?? fallback;
}

function convert(node: Node, opts: ParseInstructionOptions): Instruction {
  const base: Base = { range: node.range, original: node.original };
  const kw = node.value.toLowerCase();
  const name = kw.toUpperCase();
  const written = instructionKeyword(node.original, name);
  const args = argsOf(node);
  const flags = (spec: FlagSpec): ParsedFlags => parseFlags(node.flags, spec, name);
  const warn = (rule: RuleName, message: string): void => {
    opts.warnings?.push({ rule, message, range: node.range });
  };
  const exactlyOne = (): string => {
    if (args.length !== 1) throw new DockerfileError(`${name} requires exactly one argument`);
    return args[0] as string;
  };
  const atLeastOne = (): void => {
    if (args.length === 0) throw new DockerfileError(`${name} requires at least one argument`);
  };

  switch (kw) {
    case 'from': {
      const f = flags({ platform: 'string' });
      const out: FromInstruction = { kind: 'from', ...base, image: '' };
      if (args.length === 3 && (args[1] as string).toLowerCase() === 'as') {
        const stage = args[2] as string;
        // Reported before the name is validated, as BuildKit does (warnings come before the error).
        if (stage !== stage.toLowerCase()) warn(RULES.StageNameCasing.name, RULES.StageNameCasing.format(stage));
        const asWord = args[1] as string;
        // A FROM keyword of mixed case is ConsistentInstructionCasing's business, not this rule's.
        const fromLower = written === written.toLowerCase();
        const fromUpper = written === written.toUpperCase();
        if ((fromLower && asWord !== asWord.toLowerCase()) || (!fromLower && fromUpper && asWord !== asWord.toUpperCase())) {
          warn(RULES.FromAsCasing.name, RULES.FromAsCasing.format(written, asWord));
        }
        if (!/^[a-z][a-z0-9\-_.]*$/.test(stage.toLowerCase())) {
          throw new DockerfileError(
            `invalid name for build stage: ${JSON.stringify(stage)}, name can't start with a number or contain symbols`,
          );
        }
        out.stageName = stage.toLowerCase();
      } else if (args.length !== 1) {
        throw new DockerfileError('FROM requires either one or three arguments (FROM image [AS name])');
      }
      out.image = args[0] as string;
      if (out.image === '') throw new DockerfileError('FROM requires an image name');
      const platform = f.strings.get('platform');
      if (platform !== undefined) out.platform = platform;
      return out;
    }
    case 'run': {
      const f = flags({ mount: 'list', network: 'string', security: 'string' });
      if (args.length === 0 && node.heredocs.length === 0) {
        throw new DockerfileError('RUN requires at least one argument');
      }
      const out: RunInstruction = {
        kind: 'run',
        ...base,
        cmd: commandLine(node, args),
        heredocs: node.heredocs.map((h) => ({ ...h })),
        mounts: runMounts(f.lists.get('mount') ?? []),
      };
      const network = f.strings.get('network');
      if (network !== undefined) {
        if (network !== 'default' && network !== 'none' && network !== 'host') {
          throw new DockerfileError(`RUN --network: unsupported network mode ${JSON.stringify(network)} (use default, none or host)`);
        }
        out.network = network;
      }
      const security = f.strings.get('security');
      if (security !== undefined) {
        if (security !== 'sandbox' && security !== 'insecure') {
          throw new DockerfileError(`RUN --security: unsupported value ${JSON.stringify(security)} (use sandbox or insecure)`);
        }
        out.security = security;
      }
      return out;
    }
    case 'cmd':
    case 'entrypoint': {
      flags({});
      if (!node.attributes.json && args.length === 0) throw new DockerfileError(`${name} requires at least one argument`);
      // JSONArgsRecommended depends on the stage's SHELL: see lint/sequence.ts.
      return { kind: kw, ...base, cmd: commandLine(node, args) };
    }
    case 'env':
    case 'label': {
      flags({});
      const pairs = keyValues(args, name, written, warn);
      return kw === 'env' ? { kind: 'env', ...base, env: pairs } : { kind: 'label', ...base, labels: pairs };
    }
    case 'maintainer':
      flags({});
      warn(RULES.MaintainerDeprecated.name, RULES.MaintainerDeprecated.format());
      return { kind: 'maintainer', ...base, maintainer: exactlyOne() };
    case 'expose':
      flags({});
      atLeastOne();
      return { kind: 'expose', ...base, ports: args };
    case 'add':
    case 'copy': {
      const f =
        kw === 'copy'
          ? flags({ ...COPY_FLAGS, from: 'string' })
          : flags({ ...COPY_FLAGS, checksum: 'string', 'keep-git-dir': 'bool', unpack: 'bool' });
      return copyLike(kw, base, node, args, f);
    }
    case 'volume': {
      flags({});
      atLeastOne();
      for (const v of args) if (v.trim() === '') throw new DockerfileError('VOLUME specified can not be an empty string');
      return { kind: 'volume', ...base, volumes: args };
    }
    case 'user':
      flags({});
      return { kind: 'user', ...base, user: exactlyOne() };
    case 'workdir':
      flags({});
      return { kind: 'workdir', ...base, path: exactlyOne() };
    case 'stopsignal':
      flags({});
      return { kind: 'stopsignal', ...base, signal: exactlyOne() };
    case 'arg': {
      flags({});
      atLeastOne();
      const defs = args.map((a): ArgDefinition => {
        const eq = a.indexOf('=');
        if (eq < 0) return { key: a };
        if (eq === 0) throw new DockerfileError('ARG names can not be blank');
        return { key: a.slice(0, eq), value: a.slice(eq + 1) };
      });
      return { kind: 'arg', ...base, args: defs };
    }
    case 'onbuild':
      flags({});
      return onbuild(node, base, opts);
    case 'healthcheck':
      return healthcheck(node, base, args);
    case 'shell': {
      flags({});
      if (!node.attributes.json) throw new DockerfileError('SHELL requires the arguments to be in JSON form');
      if (args.length === 0) throw new DockerfileError('SHELL requires at least one argument');
      return { kind: 'shell', ...base, shell: args };
    }
    default: {
      throw new DockerfileError(`unknown instruction: ${instructionKeyword(node.original, node.value).toUpperCase()}`);
    }
  }
}

function argsOf(node: Node): string[] {
  const out: string[] = [];
  for (let n = node.next; n; n = n.next) out.push(n.value);
  return out;
}

function commandLine(node: Node, args: string[]): CommandLine {
  if (node.attributes.json) return { form: 'exec', args };
  return { form: 'shell', command: args.join(' ') };
}

function runMounts(specs: string[]): Mount[] {
  const mounts = specs.map((s) => parseMount(s));
  let ssh = 0;
  for (const m of mounts) {
    if (m.type !== 'ssh') continue;
    // BuildKit numbers the agent sockets of one RUN in order.
    if (!m.target) m.target = `/run/buildkit/ssh_agent.${ssh}`;
    ssh++;
  }
  return mounts;
}

function keyValues(
  args: string[],
  name: string,
  written: string,
  warn: (rule: RuleName, message: string) => void,
): KeyValue[] {
  if (args.length === 0) throw new DockerfileError(`${name} requires at least one argument`);
  if (args.length % 3 !== 0) throw new DockerfileError(`${name}: malformed key-value arguments`);
  const out: KeyValue[] = [];
  for (let i = 0; i < args.length; i += 3) {
    const key = args[i] as string;
    if (key === '') throw new DockerfileError(`${name} names can not be blank`);
    if (args[i + 2] === '') warn(RULES.LegacyKeyValueFormat.name, RULES.LegacyKeyValueFormat.format(written));
    out.push({ key, value: args[i + 1] as string });
  }
  return out;
}

const HEREDOC_WORD = /^<<(-?)\s*(["']?)([^<"']*)\2$/;

function copyLike(
  kind: 'add' | 'copy',
  base: Base,
  node: Node,
  args: string[],
  f: ParsedFlags,
): AddInstruction | CopyInstruction {
  const name = kind.toUpperCase();
  if (args.length < 2) {
    throw new DockerfileError(
      `${name} requires at least two arguments, but ${args.length === 0 ? 'none were' : 'only one was'} provided. Destination could not be determined`,
    );
  }
  const dest = args[args.length - 1] as string;
  if (node.heredocs.length > 0 && HEREDOC_WORD.test(dest)) {
    throw new DockerfileError(`${name} cannot accept a heredoc as a destination`);
  }
  const sources: string[] = [];
  const heredocs: Heredoc[] = [];
  for (const src of args.slice(0, -1)) {
    const m = node.heredocs.length > 0 ? HEREDOC_WORD.exec(src) : null;
    const doc = m ? node.heredocs.find((h) => h.name === m[3]) : undefined;
    if (doc) heredocs.push({ ...doc });
    else sources.push(src);
  }
  const common: CopyLike = {
    ...base,
    sources,
    heredocs,
    dest,
    link: f.bools.get('link') ?? false,
    parents: f.bools.get('parents') ?? false,
    exclude: f.lists.get('exclude') ?? [],
  };
  const chown = f.strings.get('chown');
  if (chown !== undefined) common.chown = chown;
  const chmod = f.strings.get('chmod');
  if (chmod !== undefined) {
    checkChmod(chmod);
    common.chmod = chmod;
  }
  if (kind === 'copy') {
    const out: CopyInstruction = { kind: 'copy', ...common };
    const from = f.strings.get('from');
    if (from !== undefined) out.from = from;
    return out;
  }
  const out: AddInstruction = { kind: 'add', ...common };
  const checksum = f.strings.get('checksum');
  if (checksum !== undefined) {
    if (!checksum.includes('$') && !/^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$/.test(checksum)) {
      throw new DockerfileError(`ADD --checksum: invalid checksum ${JSON.stringify(checksum)} (expected sha256:<64 hex digits>)`);
    }
    if (sources.length !== 1 || heredocs.length !== 0) {
      throw new DockerfileError('ADD --checksum requires exactly one source');
    }
    const src = sources[0] as string;
    if (!src.includes('$') && !/^(https?:\/\/|git@|git:\/\/)/.test(src)) {
      throw new DockerfileError('ADD --checksum can only be used with an HTTP(S) or Git source');
    }
    out.checksum = checksum;
  }
  const keep = f.bools.get('keep-git-dir');
  if (keep !== undefined) out.keepGitDir = keep;
  const unpack = f.bools.get('unpack');
  if (unpack !== undefined) out.unpack = unpack;
  return out;
}

/** `--chmod` takes an octal mode; words holding variables are checked after expansion. */
export function checkChmod(chmod: string): void {
  if (chmod.includes('$')) return;
  // Octal (0755) or chmod(1)-style symbolic clauses (u+x,g-w), which BuildKit also accepts.
  const clause = '[ugoa]*(?:[-+=](?:[rwxXst]*|[ugo]))+';
  if (!/^[0-7]{1,4}$/.test(chmod) && !new RegExp(`^${clause}(?:,${clause})*$`).test(chmod)) {
    throw new DockerfileError(`invalid --chmod value ${JSON.stringify(chmod)}: expected an octal mode such as 0755 or symbolic clauses such as u+x,g-w`);
  }
}

function onbuild(node: Node, base: Base, opts: ParseInstructionOptions): OnbuildInstruction {
  const triggerNode = node.next?.children[0];
  if (!triggerNode) throw new DockerfileError('ONBUILD requires at least one argument');
  const trigger = triggerNode.value.toUpperCase();
  if (trigger === 'ONBUILD') throw new DockerfileError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
  if (trigger === 'FROM' || trigger === 'MAINTAINER') {
    throw new DockerfileError(`${trigger} isn't allowed as an ONBUILD trigger`);
  }
  // Trigger nodes may lack a location of their own; report them at the ONBUILD line.
  // The parser attaches a trigger's heredocs to the ONBUILD line itself.
  const located: Node = {
    ...triggerNode,
    range: node.range,
    original: triggerNode.original || node.original,
    heredocs: triggerNode.heredocs.length ? triggerNode.heredocs : node.heredocs,
  };
  // Lint rules apply to the Dockerfile's own lines, not to triggers stored for later builds.
  const parsed = convert(located, { ...opts, warnings: undefined });
  let expression = node.original.replace(/^\s*ONBUILD\s*/i, '');
  for (const h of triggerNode.heredocs.length ? triggerNode.heredocs : node.heredocs) {
    if (!expression.includes(`\n${h.content}${h.name}`)) expression += `\n${h.content}${h.name}`;
  }
  return { kind: 'onbuild', ...base, trigger: parsed, expression };
}

function healthcheck(node: Node, base: Base, args: string[]): HealthcheckInstruction {
  if (args.length === 0) throw new DockerfileError('HEALTHCHECK requires at least one argument');
  const type = (args[0] as string).toUpperCase();
  const rest = args.slice(1);
  const f = parseFlags(
    node.flags,
    { interval: 'string', timeout: 'string', 'start-period': 'string', 'start-interval': 'string', retries: 'string' },
    'HEALTHCHECK',
  );
  if (type === 'NONE') {
    if (rest.length !== 0) throw new DockerfileError('HEALTHCHECK NONE takes no arguments');
    if (node.flags.length !== 0) throw new DockerfileError('HEALTHCHECK NONE takes no flags');
    return { kind: 'healthcheck', ...base, test: { type: 'none' } };
  }
  if (type !== 'CMD') throw new DockerfileError(`Unknown type ${JSON.stringify(type)} in HEALTHCHECK (try CMD)`);
  if (rest.length === 0) throw new DockerfileError('Missing command after HEALTHCHECK CMD');
  const out: HealthcheckInstruction = { kind: 'healthcheck', ...base, test: { type: 'cmd', cmd: commandLine(node, rest) } };
  const durations = [
    ['interval', 'interval'],
    ['timeout', 'timeout'],
    ['start-period', 'startPeriod'],
    ['start-interval', 'startInterval'],
  ] as const;
  for (const [flag, field] of durations) {
    const text = f.strings.get(flag);
    if (text === undefined) continue;
    let ns: number;
    try {
      ns = parseDuration(text);
    } catch (e) {
      throw new DockerfileError(`HEALTHCHECK --${flag}: ${(e as DockerfileError).detail}`);
    }
    // Zero means "use the default"; anything else below 1ms is refused, as the engine does.
    if (ns !== 0 && ns < 1_000_000) throw new DockerfileError(`HEALTHCHECK --${flag} cannot be less than 1ms (got ${text})`);
    out[field] = ns;
  }
  const retries = f.strings.get('retries');
  if (retries !== undefined) {
    if (!/^[+-]?\d+$/.test(retries) || Math.abs(Number(retries)) > 2 ** 31 - 1) {
      throw new DockerfileError(`HEALTHCHECK --retries: invalid number ${JSON.stringify(retries)}`);
    }
    const n = Number(retries);
    if (n < 0) throw new DockerfileError(`HEALTHCHECK --retries cannot be negative (${n})`);
    out.retries = n;
  }
  return out;
}
