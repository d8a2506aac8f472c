export { runAction, GroupedLog, errorCommand } from './action.ts';
export type { ActionOptions } from './action.ts';
export { inputName, getInput, getList, getBool, keyValueList, escapeData, escapeProperty, command, formatOutputs, summaryMarkdown, humanBytes } from './workflow.ts';
export type { Env, StepRow } from './workflow.ts';
export { loadNative, nativeCacheDir } from './native.ts';
