export { run } from './run.ts';
export type { RunOptions, RunResult, RunUser, RunMount } from './run.ts';
export type { Limits } from './spec.ts';
export { buildSpec, DEFAULT_CAPABILITIES } from './spec.ts';
export type { RuntimeSpec, SpecInput, SpecMount } from './spec.ts';
export { cleanupContainers, findRuntime, runtimeInfo, ownerPid, pidAlive } from './runtime.ts';
export type { RuntimeInfo, RuntimeOptions } from './runtime.ts';
export { resolveInRoot } from './rootpath.ts';
