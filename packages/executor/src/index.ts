export { checkRlimits, run } from './run.ts';
export type { RunOptions, RunResult, RunUser, RunMount } from './run.ts';
export type { Limits, Rlimit } from './spec.ts';
export { buildSpec, DEFAULT_CAPABILITIES, RLIM_INFINITY, RLIMIT_TYPES, specJson } from './spec.ts';
export type { RuntimeSpec, SpecInput, SpecMount } from './spec.ts';
export { cleanupContainers, findRuntime, runtimeInfo, ownerPid, pidAlive } from './runtime.ts';
export type { RuntimeInfo, RuntimeOptions } from './runtime.ts';
export { resolveInRoot } from './rootpath.ts';
export type { Usage } from './usage.ts';
