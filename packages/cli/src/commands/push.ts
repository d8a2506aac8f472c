import { openRoot, pushFromStore } from '@tsbuild/builder';
import type { Command } from '../command.ts';
import { registryOptions, rootOf, signalController, withRegistryFlags, withRoot } from './common.ts';

export const push: Command = {
  command: 'push <image> [destination]',
  describe: 'Push an image from the local store to a registry',
  builder: (y) =>
    withRoot(
      withRegistryFlags(
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
        ...registryOptions(args),
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
