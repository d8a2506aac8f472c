export { parse } from './parser.ts';
export { dumpAst, dumpNode } from './dump.ts';
export type { Ast, Heredoc, Node, ParseResult, Warning } from './ast.ts';
export { processWord, processWords, processWordWithMatches, lookupEnv, compileShellPattern, ShellError } from './shell.ts';
export type { Env, ShellOptions, WordResult } from './shell.ts';
export { parseDockerfile, stagesFromAst } from './stages.ts';
export type { Dockerfile, Stage, ParseDockerfileOptions } from './stages.ts';
export { parseInstruction } from './instructions.ts';
export type {
  Instruction, InstructionKind, CommandLine, KeyValue, ArgDefinition, NetworkMode, SecurityMode,
  ParseInstructionOptions, FromInstruction, RunInstruction, CmdInstruction, EntrypointInstruction,
  LabelInstruction, MaintainerInstruction, ExposeInstruction, EnvInstruction, AddInstruction,
  CopyInstruction, VolumeInstruction, UserInstruction, WorkdirInstruction, ArgInstruction,
  OnbuildInstruction, StopsignalInstruction, HealthcheckInstruction, ShellInstruction,
} from './instructions.ts';
export { expandInstruction, envExpander } from './expand.ts';
export type { Expander, RecordingExpander, ExpandOptions } from './expand.ts';
export { parseMount, parseCsvRecord } from './mount.ts';
export type { Mount, MountType, CacheSharing, ParseMountOptions } from './mount.ts';
export { parseFlags } from './flags.ts';
export type { FlagKind, FlagSpec, ParsedFlags } from './flags.ts';
export { parseDuration, formatDuration } from './duration.ts';
export {
  checkDockerfile, CHECK_BUILD_ARG, RULES, RULE_LIST, isRuleName, parseCheckSettings, findCheckDirective,
  CheckOptionError,
} from './lint/index.ts';
export type {
  CheckOptions, CheckResult, CheckWarning, CheckSettings, CheckDirective, RuleInfo, RuleName,
} from './lint/index.ts';
