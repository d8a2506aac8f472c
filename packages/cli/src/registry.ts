import { TsbuildError, UsageError } from '@tsbuild/errors';
import { openRoot, pullToStore, pushFromStore, remoteImage } from '@tsbuild/builder';
import type { DistributionOptions, ImageFetcher } from '@tsbuild/builder';
import { login, logout, parseReference } from '@tsbuild/registry';
import type { Descriptor, ImageConfig } from '@tsbuild/oci';
import type { Command } from './command.ts';
import { asStrings, rootOf, signalController, withRoot } from './commands/common.ts';
import { readStdin } from './commands/check.ts';

function clientOptions(args: Record<string, unknown>): DistributionOptions {
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

/** What `build` needs from registries: pulling a missing base image, pushing the result. */
export function registryHooks(args: Record<string, unknown>): {
  fetchImage: ImageFetcher;
  push: (local: string, dest: string, o: { compression: 'gzip' | 'zstd'; signal: AbortSignal; quiet: boolean }) => Promise<string>;
} {
  return {
    fetchImage: async (ref, o) => {
      const { store } = await openRoot(rootOf(args));
      try {
        parseReference(ref);
      } catch {
        return;
      }
      try {
        await pullToStore(store, ref, { ...clientOptions(args), ...(o.signal ? { signal: o.signal } : {}) });
      } catch (e) {
        if (!(e instanceof TsbuildError)) throw e;
        throw new TsbuildError('IMAGE_NOT_FOUND', `image "${ref}" is not in the local store and pulling it failed: ${e.message}`, {
          hint: `import it with "tsbuild import ROOTFS.tar -t ${ref}", or build it first`,
          cause: e,
        });
      }
    },
    push: async (local, dest, o) => {
      const { store } = await openRoot(rootOf(args));
      return pushFromStore(store, local, dest, { ...clientOptions(args), compression: o.compression, signal: o.signal });
    },
  };
}

/** `tsbuild history REF` for an image that is not in the store: manifest and config only. */
export async function remoteHistory(
  ref: string,
  args: Record<string, unknown>,
): Promise<{ config: ImageConfig; layers: Descriptor[]; id: string } | undefined> {
  const parsed = (() => {
    try {
      return parseReference(ref);
    } catch {
      return undefined;
    }
  })();
  // Only names that point at a registry host are looked up remotely; bare names are local.
  if (!parsed || !ref.includes('/') || !/[.:]|^localhost/.test(ref.split('/')[0] ?? '')) return undefined;
  const r = await remoteImage(ref, clientOptions(args));
  return { config: r.config, layers: r.manifest.layers, id: r.manifest.config.digest };
}

const registryFlags = <T>(y: import('yargs').Argv<T>) =>
  y
    .option('insecure-registry', { type: 'string', describe: 'registries reached over plain HTTP' })
    .option('ca-file', { type: 'string', describe: 'PEM file of extra CAs for HTTPS registries' })
    .option('registry-timeout', { type: 'number', describe: 'seconds a registry connection may stay silent before the request is retried (default 60)' });

const pull: Command = {
  command: 'pull <image>',
  describe: 'Pull an image (linux/amd64) from a registry into the local store',
  builder: (y) => withRoot(registryFlags(y.positional('image', { type: 'string' }))),
  handler: async (args) => {
    const { store } = await openRoot(rootOf(args));
    const sig = signalController();
    try {
      const r = await pullToStore(store, String(args.image), { ...clientOptions(args), signal: sig.signal });
      process.stderr.write(`pulled ${r.ref.toString()}\n`);
      process.stdout.write(`${r.manifest.digest}\n`);
    } finally {
      sig.dispose();
    }
  },
};

const push: Command = {
  command: 'push <image> [destination]',
  describe: 'Push an image from the local store to a registry',
  builder: (y) =>
    withRoot(
      registryFlags(
        y
          .positional('image', { type: 'string' })
          .positional('destination', { type: 'string', describe: 'registry reference (default: the image name)' })
          .option('compression', { type: 'string', choices: ['gzip', 'zstd'], default: 'gzip' })
          .option('format', { type: 'string', choices: ['oci', 'docker'], default: 'oci' }),
      ),
    ),
  handler: async (args) => {
    const { store } = await openRoot(rootOf(args));
    const sig = signalController();
    const dest = typeof args.destination === 'string' ? args.destination : String(args.image);
    try {
      const digest = await pushFromStore(store, String(args.image), dest, {
        ...clientOptions(args),
        compression: String(args.compression) as 'gzip' | 'zstd',
        format: String(args.format) as 'oci' | 'docker',
        signal: sig.signal,
        onBlob: (e) => process.stderr.write(`${e.descriptor.digest.slice(7, 19)}: ${e.status}\n`),
      });
      process.stdout.write(`${digest}\n`);
    } finally {
      sig.dispose();
    }
  },
};

const loginCmd: Command = {
  command: 'login <server>',
  describe: 'Log in to a registry (stored in the Docker config.json)',
  builder: (y) =>
    registryFlags(
      y
        .positional('server', { type: 'string' })
        .option('username', { alias: 'u', type: 'string' })
        .option('password', { alias: 'p', type: 'string' })
        .option('password-stdin', { type: 'boolean' }),
    ),
  handler: async (args) => {
    const user = typeof args.username === 'string' ? args.username : undefined;
    let password = typeof args.password === 'string' ? args.password : undefined;
    if (args['password-stdin']) password = (await readStdin()).replace(/\r?\n$/, '');
    if (!user || password === undefined) throw new UsageError('login needs --username and --password or --password-stdin');
    await login(String(args.server), user, password, clientOptions(args));
    process.stdout.write('Login Succeeded\n');
  },
};

const logoutCmd: Command = {
  command: 'logout <server>',
  describe: 'Remove stored credentials for a registry',
  builder: (y) => y.positional('server', { type: 'string' }),
  handler: async (args) => {
    const removed = await logout(String(args.server));
    process.stdout.write(removed ? `Removing login credentials for ${String(args.server)}\n` : `Not logged in to ${String(args.server)}\n`);
  },
};

export const registryCommands: Command[] = [pull, push, loginCmd, logoutCmd];
