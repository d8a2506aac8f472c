import type { ContainerConfig, Descriptor, Digest, HistoryEntry, ImageConfig } from '@tsbuild/oci';
import { chainIds } from '@tsbuild/oci';

export const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
export const DEFAULT_SHELL = ['/bin/sh', '-c'];

/** An image as a build step sees it: config, layers, and the cache key that produced it. */
export interface ImageState {
  config: ImageConfig;
  /** Layer descriptors in manifest order (base images keep their compressed descriptors). */
  layers: Descriptor[];
  /** Cache key of the step that produced this state. */
  key: string;
  /** ARG values in scope (name → value), in declaration order. */
  args: Map<string, string>;
  /** Whether CMD was set in this stage (ENTRYPOINT resets only an inherited CMD). */
  cmdSet: boolean;
}

export function diffIds(s: ImageState): Digest[] {
  return s.config.rootfs.diff_ids;
}

export function topChain(s: ImageState): Digest | undefined {
  return chainIds(diffIds(s)).at(-1);
}

export function containerConfig(s: ImageState): ContainerConfig {
  return (s.config.config ??= {});
}

/** A deep copy, so that a step never mutates the state a cache or another stage holds. */
export function cloneState(s: ImageState): ImageState {
  return {
    config: structuredClone(s.config),
    layers: s.layers.map((l) => ({ ...l })),
    key: s.key,
    args: new Map(s.args),
    cmdSet: s.cmdSet,
  };
}

export function envList(s: ImageState): string[] {
  return containerConfig(s).Env ?? [];
}

export function envMap(s: ImageState): Map<string, string> {
  const m = new Map<string, string>();
  for (const kv of envList(s)) {
    const eq = kv.indexOf('=');
    if (eq > 0) m.set(kv.slice(0, eq), kv.slice(eq + 1));
    else m.set(kv, '');
  }
  return m;
}

export function setEnv(s: ImageState, key: string, value: string): void {
  const c = containerConfig(s);
  const list = (c.Env ?? []).filter((kv) => kv !== key && !kv.startsWith(`${key}=`));
  list.push(`${key}=${value}`);
  c.Env = list;
}

/** What variable expansion sees: ARGs in scope, overridden by ENV (Docker's precedence). */
export function expansionEnv(s: ImageState): Map<string, string> {
  const m = new Map(s.args);
  for (const [k, v] of envMap(s)) m.set(k, v);
  return m;
}

export function addHistory(s: ImageState, entry: HistoryEntry): void {
  (s.config.history ??= []).push(entry);
}

export function shellOf(s: ImageState): string[] {
  const sh = containerConfig(s).Shell;
  return sh && sh.length > 0 ? sh : DEFAULT_SHELL;
}
