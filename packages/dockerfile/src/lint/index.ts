export { checkDockerfile, CHECK_BUILD_ARG } from './check.ts';
export type { CheckOptions, CheckResult } from './check.ts';
export type { CheckWarning } from './report.ts';
export { RULES, RULE_LIST, isRuleName, kebabRuleName } from './rules.ts';
export type { Rule, RuleInfo, RuleName } from './rules.ts';
export { parseCheckSettings, findCheckDirective, ruleEnabled, withComments, DEFAULT_SETTINGS, CheckOptionError } from './settings.ts';
export type { CheckSettings, CheckDirective } from './settings.ts';
