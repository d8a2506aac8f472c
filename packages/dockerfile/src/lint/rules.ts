/*
 * The one list of Dockerfile check rules: BuildKit's names, descriptions, documentation pages and
 * message texts (frontend/dockerfile/linter), so that `tsbuild check` reads like
 * `docker build --check`. Every warning in this package, from the parser up, names one of these.
 */

export interface RuleInfo {
  readonly name: string;
  /** One sentence on what the rule wants (BuildKit's Description). */
  readonly description: string;
  /** https://docs.docker.com/go/dockerfile/rule/<kebab-name>/ */
  readonly url: string;
  /** Off unless named in `# check=experimental=…` or `experimental=all`. */
  readonly experimental: boolean;
}

export interface Rule<A extends readonly unknown[]> extends RuleInfo {
  /** The message of one finding (BuildKit's Format). */
  format(...args: A): string;
}

/** `JSONArgsRecommended` → `json-args-recommended`: the page names docs.docker.com uses. */
export function kebabRuleName(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1-$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1-$2')
    .toLowerCase();
}

function rule<const N extends string, A extends readonly unknown[]>(
  name: N,
  description: string,
  format: (...args: A) => string,
  experimental = false,
): Rule<A> & { readonly name: N } {
  return { name, description, url: `https://docs.docker.com/go/dockerfile/rule/${kebabRuleName(name)}/`, experimental, format };
}

/** Go's %q for the ASCII text these messages quote (stage names, keys, paths). */
function q(s: string): string {
  return JSON.stringify(s);
}

export const RULES = {
  StageNameCasing: rule('StageNameCasing', 'Stage names should be lowercase',
    (stage: string) => `Stage name '${stage}' should be lowercase`),
  FromAsCasing: rule('FromAsCasing', "The 'as' keyword should match the case of the 'from' keyword",
    (from: string, as: string) => `'${as}' and '${from}' keywords' casing do not match`),
  NoEmptyContinuation: rule('NoEmptyContinuation', 'Empty continuation lines will become errors in a future release',
    () => 'Empty continuation line'),
  ConsistentInstructionCasing: rule('ConsistentInstructionCasing',
    'All commands within the Dockerfile should use the same casing (either upper or lower)',
    (command: string, casing: 'lowercase' | 'uppercase') => `Command '${command}' should match the case of the command majority (${casing})`),
  DuplicateStageName: rule('DuplicateStageName', 'Stage names should be unique',
    (stage: string) => `Duplicate stage name ${q(stage)}, stage names should be unique`),
  ReservedStageName: rule('ReservedStageName', 'Reserved words should not be used as stage names',
    (stage: string) => `Stage name should not use the same name as reserved stage ${q(stage)}`),
  JSONArgsRecommended: rule('JSONArgsRecommended',
    'JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals',
    (instruction: string) => `JSON arguments recommended for ${instruction} to prevent unintended behavior related to OS signals`),
  MaintainerDeprecated: rule('MaintainerDeprecated',
    'The MAINTAINER instruction is deprecated, use a label instead to define an image author',
    () => 'Maintainer instruction is deprecated in favor of using label'),
  UndefinedArgInFrom: rule('UndefinedArgInFrom', 'FROM command must use declared ARGs',
    (arg: string, suggestion: string) => `FROM argument '${arg}' is not declared${suggestion ? ` (did you mean ${suggestion}?)` : ''}`),
  WorkdirRelativePath: rule('WorkdirRelativePath',
    'Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes',
    (workdir: string) => `Relative workdir ${q(workdir)} can have unexpected results if the base image changes`),
  UndefinedVar: rule('UndefinedVar', 'Variables should be defined before their use',
    (name: string, suggestion: string) => `Usage of undefined variable '$${name}'${suggestion ? ` (did you mean $${suggestion}?)` : ''}`),
  MultipleInstructionsDisallowed: rule('MultipleInstructionsDisallowed',
    'Multiple instructions of the same type should not be used in the same stage',
    (instruction: string) => `Multiple ${instruction} instructions should not be used in the same stage because only the last one will be used`),
  LegacyKeyValueFormat: rule('LegacyKeyValueFormat', 'Legacy key/value format with whitespace separator should not be used',
    (instruction: string) => `"${instruction} key=value" should be used instead of legacy "${instruction} key value" format`),
  RedundantTargetPlatform: rule('RedundantTargetPlatform',
    'Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior',
    (platform: string) => `Setting platform to predefined ${platform} in FROM is redundant as this is the default behavior`),
  SecretsUsedInArgOrEnv: rule('SecretsUsedInArgOrEnv', 'Sensitive data should not be used in the ARG or ENV commands',
    (instruction: 'ARG' | 'ENV', key: string) => `Do not use ARG or ENV instructions for sensitive data (${instruction} ${q(key)})`),
  InvalidDefaultArgInFrom: rule('InvalidDefaultArgInFrom', 'Default value for global ARG results in an empty or invalid base image name',
    (image: string) => `Default value for ARG ${image} results in empty or invalid base image name`),
  FromPlatformFlagConstDisallowed: rule('FromPlatformFlagConstDisallowed', 'FROM --platform flag should not use a constant value',
    (platform: string) => `FROM --platform flag should not use constant value ${q(platform)}`),
  CopyIgnoredFile: rule('CopyIgnoredFile', 'Attempting to Copy file that is excluded by .dockerignore',
    (instruction: 'Copy' | 'Add', file: string) => `Attempting to ${instruction} file ${q(file)} that is excluded by .dockerignore`),
  InvalidDefinitionDescription: rule('InvalidDefinitionDescription',
    'Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.',
    (instruction: 'ARG' | 'FROM', name: string) => `Comment for ${instruction} should follow the format: \`# ${name} <description>\``,
    true),
  ExposeProtoCasing: rule('ExposeProtoCasing', 'Protocol in EXPOSE instruction should be lowercase',
    (port: string) => `Defined protocol '${port}' in EXPOSE instruction should be lowercase`),
  ExposeInvalidFormat: rule('ExposeInvalidFormat',
    'IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release',
    (port: string) => `EXPOSE instruction should not define an IP address or host-port mapping, found '${port}'`),
} as const;

export type RuleName = keyof typeof RULES;

/** Every rule, in BuildKit's order. */
export const RULE_LIST: readonly RuleInfo[] = Object.values(RULES);

export function isRuleName(name: string): name is RuleName {
  return Object.hasOwn(RULES, name);
}
