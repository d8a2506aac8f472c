import { openRoot, pullToStore } from '@tsbuild/builder';
import type { Command } from '../command.ts';
import { registryOptions, rootOf, signalController, withRegistryFlags, withRoot } from './common.ts';

export const pull: Command = {
  command: 'pull <image>',
  describe: 'Pull an image (linux/amd64) from a registry into the local store',
  builder: (y) => withRoot(withRegistryFlags(y.positional('image', { type: 'string' }))),
  handler: async (args) => {
    const { store } = await openRoot(rootOf(args));
    const sig = signalController();
    try {
      const r = await pullToStore(store, String(args.image), { ...registryOptions(args), signal: sig.signal });
      process.stderr.write(`pulled ${r.ref.toString()}\n`);
      process.stdout.write(`${r.manifest.digest}\n`);
    } finally {
      sig.dispose();
    }
  },
};
