import { DockerfileError, UsageError, excerptOf } from '@tsbuild/errors';
import type { SourceRange } from '@tsbuild/errors';
import type { Node, ParseResult, Warning } from '../ast.ts';
import { parseInstruction } from '../instructions.ts';
import { parse } from '../parser.ts';
import { stagesFromAst } from '../stages.ts';
import type { Dockerfile } from '../stages.ts';
import { runDispatchRules } from './dispatch.ts';
import type { DispatchOptions } from './dispatch.ts';
import { checkDescription, checkInstructionCasing, checkStageNames, group } from './names.ts';
import type { Entry } from './names.ts';
import { DEFAULT_PLATFORM, parsePlatformSpec, predefinedArgs } from './platform.ts';
import { Reporter, escapeRegExp, wordPattern } from './report.ts';
import type { CheckWarning } from './report.ts';
import { RULES } from './rules.ts';
import { CheckOptionError, findCheckDirective, parseCheckSettings } from './settings.ts';
import type { CheckDirective, CheckSettings } from './settings.ts';

/** The build arg that carries check settings, as BuildKit spells it. */
export const CHECK_BUILD_ARG = 'BUILDKIT_DOCKERFILE_CHECK';

export interface CheckOptions {
  /** Named in errors; default 'Dockerfile'. */
  file?: string;
  /**
   * `--build-arg` values: they decide ARG values as in a build, and BUILDKIT_DOCKERFILE_CHECK
   * (same syntax as `# check=`) replaces the Dockerfile's `# check=` directive entirely.
   */
  buildArgs?: Readonly<Record<string, string>>;
  /** For CopyIgnoredFile: whether a context path (relative, `/`-separated) is in .dockerignore. */
  isIgnored?: (path: string) => boolean;
  /**
   * The .dockerignore patterns behind `isIgnored`. With a `!` exception among them the rule stays
   * quiet (as BuildKit's does); `*`, `**` or `**\/*` make `COPY . …` a finding too.
   */
  ignorePatterns?: readonly string[];
  /**
   * The environment (`KEY=VALUE` entries, as in an image config) of a base image, by the name the
   * FROM line expands to; undefined when unknown. UndefinedVar stays quiet in stages built on an
   * image whose environment is unknown, since the image may define any variable.
   */
  baseEnv?: (image: string) => readonly string[] | undefined;
  /** Target platform for TARGETPLATFORM & co.; default linux/amd64, the platform tsbuild builds. */
  platform?: string;
  /** The stage being built (TARGETSTAGE); default the last one. */
  target?: string;
}

export interface CheckResult {
  /** Findings of the rules in effect, in source order. */
  warnings: CheckWarning[];
  /**
   * Why a build of this Dockerfile fails: a parse error, an unreadable `# check=` directive, or,
   * with `error=true`, BuildKit's "lint violation found for rules: …". Empty when it may proceed.
   */
  errors: DockerfileError[];
  /** The Dockerfile's `# check=` directive, when it has one (even when the build arg overrides it). */
  directive: CheckDirective | undefined;
  /** The settings in effect. */
  settings: CheckSettings;
  /** Where they came from: the build arg, the directive, or neither. */
  settingsFrom: 'build-arg' | 'directive' | 'default';
  /** The parsed stages when the text parses (so a build need not parse again). */
  dockerfile: Dockerfile | undefined;
}

/**
 * Runs BuildKit's Dockerfile checks (`docker build --check`) over Dockerfile text. Pure: it reads
 * nothing but its arguments; the caller supplies .dockerignore and base image knowledge.
 *
 * For a build: `const r = checkDockerfile(text, { file, buildArgs, isIgnored, ignorePatterns })`,
 * print `r.warnings`, and stop with `r.errors[0]` when `r.errors` is not empty; `r.dockerfile`
 * holds the parsed stages (its own `warnings` are the unfiltered parse-time subset: print
 * `r.warnings` instead). `baseEnv`, when the caller has resolved base images, makes UndefinedVar
 * exact. Only an invalid BUILDKIT_DOCKERFILE_CHECK build arg throws (a UsageError).
 * InvalidBaseImagePlatform is not among the rules: it needs the pulled image's platform.
 */
export function checkDockerfile(text: string, opts: CheckOptions = {}): CheckResult {
  const file = opts.file ?? 'Dockerfile';
  const buildArgs = opts.buildArgs ?? {};
  const directive = findCheckDirective(text);
  const result: CheckResult = {
    warnings: [],
    errors: [],
    directive,
    settings: parseCheckSettings(''),
    settingsFrom: 'default',
    dockerfile: undefined,
  };

  if (Object.hasOwn(buildArgs, CHECK_BUILD_ARG)) {
    try {
      result.settings = parseCheckSettings(buildArgs[CHECK_BUILD_ARG] ?? '');
    } catch (e) {
      if (!(e instanceof CheckOptionError)) throw e;
      throw new UsageError(`failed to parse ${CHECK_BUILD_ARG}: ${e.message}`, {
        hint: 'expected skip=RULE,…|all;error=true|false;experimental=RULE,…|all',
      });
    }
    result.settingsFrom = 'build-arg';
  } else if (directive) {
    try {
      result.settings = parseCheckSettings(directive.value);
    } catch (e) {
      if (!(e instanceof CheckOptionError)) throw e;
      result.errors.push(new DockerfileError(`failed to parse check options: ${e.message}`, {
        file,
        range: directive.range,
        excerpt: excerptOf(text, directive.range),
        hint: 'write # check=skip=RULE,…|all;error=true|false;experimental=RULE,…|all',
      }));
      return result;
    }
    result.settingsFrom = 'directive';
  }

  const r = new Reporter(result.settings, text);
  let parsed: ParseResult;
  try {
    parsed = parse(text);
  } catch (e) {
    if (!(e instanceof DockerfileError)) throw e;
    result.errors.push(e.withFile(file, text));
    return result;
  }
  for (const w of parsed.warnings) {
    if (w.rule === 'NoEmptyContinuation') r.report(w.rule, RULES.NoEmptyContinuation.format(), w.range);
  }

  // Instruction by instruction, so the findings before a broken instruction are kept.
  const entries: Entry[] = [];
  let broken = false;
  for (const node of parsed.ast.children) {
    const found: Warning[] = [];
    try {
      const inst = parseInstruction(node, { file, text, warnings: found });
      entries.push({ node, inst });
    } catch (e) {
      if (!(e instanceof DockerfileError)) throw e;
      result.errors.push(e);
      broken = true;
    }
    for (const w of found) r.report(w.rule, w.message, findingRange(r, w, node), node);
    if (broken) break;
    const last = entries[entries.length - 1];
    if (last) checkDescription(last, r);
  }

  if (!broken) {
    try {
      result.dockerfile = stagesFromAst(parsed, { file, text });
    } catch (e) {
      if (!(e instanceof DockerfileError)) throw e;
      result.errors.push(e);
    }
    const grouped = group(entries);
    if (grouped && grouped.stages.length > 0) {
      checkStageNames(grouped.stages, r);
      checkInstructionCasing(grouped.stages, r);
      const target = opts.target ?? grouped.stages[grouped.stages.length - 1]?.from.inst.stageName ?? 'default';
      const targetPlatform = parsePlatformSpec(opts.platform ?? '') ?? DEFAULT_PLATFORM;
      const predefined = predefinedArgs(targetPlatform, DEFAULT_PLATFORM, target);
      for (const key of predefined.keys()) if (Object.hasOwn(buildArgs, key)) predefined.set(key, buildArgs[key] ?? '');
      const dispatchOpts: DispatchOptions = {
        escapeToken: parsed.escapeToken,
        buildArgs,
        predefined,
      };
      if (opts.baseEnv) dispatchOpts.baseEnv = opts.baseEnv;
      if (opts.isIgnored) dispatchOpts.isIgnored = opts.isIgnored;
      if (opts.ignorePatterns) dispatchOpts.ignorePatterns = opts.ignorePatterns;
      runDispatchRules(grouped, dispatchOpts, r);
    }
  }

  result.warnings = r.result();
  const first = result.warnings[0];
  if (result.errors.length === 0 && result.settings.error && first) {
    const rules = [...new Set(result.warnings.map((w) => w.rule))];
    result.errors.push(new DockerfileError(`lint violation found for rules: ${rules.join(', ')}`, {
      file,
      range: first.range,
      excerpt: excerptOf(text, first.range),
      hint: `error=true is set by ${result.settingsFrom === 'build-arg' ? `the ${CHECK_BUILD_ARG} build arg` : 'the # check= directive'}; fix the findings or skip their rules`,
    }));
  }
  return result;
}

/** Parse-time findings carry the instruction's range; the FROM ones point at their word. */
function findingRange(r: Reporter, w: Warning, node: Node): SourceRange {
  const args: string[] = [];
  for (let n = node.next; n; n = n.next) args.push(n.value);
  const [, as, name] = args;
  if (args.length !== 3 || as === undefined || name === undefined) return w.range;
  if (w.rule === 'StageNameCasing') return r.word(w.range, wordPattern(name), true);
  if (w.rule === 'FromAsCasing') {
    return r.word(w.range, new RegExp(`(?<=\\s)${escapeRegExp(as)}(?=\\s+${escapeRegExp(name)}(?![A-Za-z0-9_.-]))`), true);
  }
  return w.range;
}
