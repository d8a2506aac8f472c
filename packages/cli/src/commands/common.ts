import type { Argv } from 'yargs';
import { UsageError } from '@tsbuild/errors';
import { parseByteSize, type DistributionOptions } from '@tsbuild/builder';

/** `--root`, shared by every command that touches the store. */
export function withRoot<T>(y: Argv<T>): Argv<T> {
  return y.option('root', {
    type: 'string',
    describe: 'tsbuild root (store, snapshots, cache); default $TSBUILD_ROOT, else /var/lib/tsbuild as root and ~/.local/share/tsbuild ($XDG_DATA_HOME/tsbuild) otherwise',
  }) as unknown as Argv<T>;
}

export function rootOf(args: Record<string, unknown>): string | undefined {
  return typeof args.root === 'string' && args.root !== '' ? args.root : undefined;
}

/** `--memory` and `--shm-size`: Docker-style sizes (`64m`, `1g`, `512k`, `1048576`, `2GiB`); unset when empty. */
export function parseBytes(flag: string, v: unknown): number | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  return parseByteSize(`--${flag}`, String(v));
}

export function parseIntFlag(flag: string, v: unknown, min = 0): number | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${flag}: expected a whole number ≥ ${min}, got ${JSON.stringify(v)}`);
  return n;
}

/** `--cpus 0.5` → a CFS quota over a 100 ms period, as docker does. */
export function cpuLimits(args: Record<string, unknown>): { cpuQuota?: number; cpuPeriod?: number } {
  const out: { cpuQuota?: number; cpuPeriod?: number } = {};
  const period = parseIntFlag('cpu-period', args['cpu-period'], 1000);
  const quota = parseIntFlag('cpu-quota', args['cpu-quota'], 1000);
  if (args.cpus !== undefined && args.cpus !== '') {
    const cpus = Number(args.cpus);
    if (!Number.isFinite(cpus) || cpus <= 0) throw new UsageError(`--cpus: expected a positive number, got ${JSON.stringify(args.cpus)}`);
    out.cpuPeriod = period ?? 100_000;
    out.cpuQuota = Math.round(cpus * out.cpuPeriod);
    return out;
  }
  if (period !== undefined) out.cpuPeriod = period;
  if (quota !== undefined) out.cpuQuota = quota;
  return out;
}

export function asStrings(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}

/** `K=V` pairs; a bare `K` takes its value from the environment (and is skipped when unset). */
export function keyValues(flag: string, v: unknown, fromEnv: boolean): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of asStrings(v)) {
    const eq = item.indexOf('=');
    if (eq === 0) throw new UsageError(`--${flag}: invalid value ${JSON.stringify(item)}: expected KEY=VALUE`);
    if (eq < 0) {
      if (!fromEnv) throw new UsageError(`--${flag}: invalid value ${JSON.stringify(item)}: expected KEY=VALUE`);
      const env = process.env[item];
      if (env !== undefined) out[item] = env;
      continue;
    }
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/** Aborts on SIGINT/SIGTERM so running containers are killed and mounts removed before exit. */
export function signalController(): { signal: AbortSignal; dispose: () => void } {
  const ac = new AbortController();
  const onSig = () => ac.abort(new Error('interrupted'));
  process.once('SIGINT', onSig);
  process.once('SIGTERM', onSig);
  return {
    signal: ac.signal,
    dispose: () => {
      process.off('SIGINT', onSig);
      process.off('SIGTERM', onSig);
    },
  };
}

/** The flags that say how registries are reached, shared by every command that talks to one. */
export function withRegistryFlags<T>(y: Argv<T>): Argv<T> {
  return y
    .option('insecure-registry', { type: 'string', describe: 'registries reached over plain HTTP (repeatable)' })
    .option('ca-file', { type: 'string', describe: 'PEM file of extra CAs for HTTPS registries' })
    .option('registry-timeout', {
      type: 'number',
      describe: 'seconds a registry connection may stay silent before the request is retried (default 60)',
    }) as unknown as Argv<T>;
}

/** The registry client options those flags give. */
export function registryOptions(args: Record<string, unknown>): DistributionOptions {
  const o: DistributionOptions = { insecure: asStrings(args['insecure-registry']) };
  if (typeof args['ca-file'] === 'string') o.caFile = args['ca-file'];
  const t = args['registry-timeout'];
  if (t !== undefined) {
    const seconds = Number(t);
    if (!Number.isFinite(seconds) || seconds <= 0) throw new UsageError(`--registry-timeout must be a positive number of seconds, got "${String(t)}"`);
    o.timeoutMs = Math.round(seconds * 1000);
  }
  return o;
}
