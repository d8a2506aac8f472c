/**
 * The inputs build-push-action has for buildx's own flags, read as it reads them (which lists
 * split at commas too), into the options `tsbuild build` gets from the same flags.
 */
import { resolve as resolvePath } from 'node:path';
import { UsageError } from '@tsbuild/errors';
import { parseAddHost, parseAnnotation, parseBuildContext, parseSize, parseSsh, parseUlimits } from '@tsbuild/builder';
import type { BuildOptions } from '@tsbuild/builder';
import type { Env } from './workflow.ts';
import { getInput, getList, keyValueList } from './workflow.ts';

const NETWORKS = ['default', 'none', 'host'] as const;

/** network, secret-envs, secret-files, annotations, add-hosts, ulimit, shm-size, build-contexts and ssh, set on `opts`. */
export function applyBuildxInputs(env: Env, opts: BuildOptions): void {
  const network = getInput(env, 'network');
  if (network !== '') {
    if (!(NETWORKS as readonly string[]).includes(network)) throw new UsageError(`network: expected one of ${NETWORKS.join(', ')}, got ${JSON.stringify(network)}`);
    opts.network = network as (typeof NETWORKS)[number];
  }
  // As buildx applies its --secret flags in build-push-action's order, a later one of the same id
  // wins: secret-envs, then secrets, then secret-files.
  const fromEnv: NonNullable<BuildOptions['secrets']> = {};
  for (const [id, name] of Object.entries(keyValueList(getList(env, 'secret-envs'), 'secret-envs'))) fromEnv[id] = { env: name };
  const fromFiles: NonNullable<BuildOptions['secrets']> = {};
  for (const [id, file] of Object.entries(keyValueList(getList(env, 'secret-files', { commas: false }), 'secret-files'))) fromFiles[id] = { file: resolvePath(file) };
  opts.secrets = { ...fromEnv, ...(opts.secrets ?? {}), ...fromFiles };

  const annotations = getList(env, 'annotations', { commas: false });
  if (annotations.length > 0) opts.annotations = annotations.flatMap(parseAnnotation);
  const hosts = getList(env, 'add-hosts');
  if (hosts.length > 0) opts.extraHosts = hosts.map(parseAddHost);
  const ulimits = getList(env, 'ulimit', { commas: false });
  if (ulimits.length > 0) opts.ulimits = parseUlimits(ulimits);
  const shm = getInput(env, 'shm-size');
  if (shm !== '') opts.shmSize = parseSize('shm-size', shm);
  const contexts = getList(env, 'build-contexts', { commas: false });
  if (contexts.length > 0) opts.buildContexts = contexts.map((c) => parseBuildContext(c));
  // One per line: `ID=KEY1,KEY2` names two keys of one agent, as on the command line.
  const ssh = getList(env, 'ssh', { commas: false });
  if (ssh.length > 0) opts.ssh = Object.fromEntries(ssh.map((s) => parseSsh(s, { ...process.env, ...env })).map((s) => [s.id, s.paths]));
  // A switch that reads as neither true nor false is an error now, not a summary written anyway.
  summaryEnabled(env, true);
}

/** build-push-action's switch: `DOCKER_BUILD_SUMMARY=false` leaves the job summary out. */
export function summaryEnabled(env: Env, strict = false): boolean {
  const v = env.DOCKER_BUILD_SUMMARY;
  if (v === undefined || v === '') return true;
  if (/^(1|t|true)$/i.test(v)) return true;
  if (/^(0|f|false)$/i.test(v)) return false;
  if (strict) throw new UsageError(`DOCKER_BUILD_SUMMARY: expected true or false, got ${JSON.stringify(v)}`);
  return true;
}
