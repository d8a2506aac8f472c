import { UsageError } from '@tsbuild/errors';
import { openRoot, saveImages } from '@tsbuild/builder';
import type { Command } from '../command.ts';
import { asStrings, rootOf, signalController, withRoot } from './common.ts';

export const save: Command = {
  command: 'save <images..>',
  describe: 'Write images to an OCI or Docker archive (docker load reads the docker format)',
  builder: (y) =>
    withRoot(
      y
        .positional('images', { type: 'string' })
        .option('output', { alias: 'o', type: 'string', describe: 'archive file (default stdout)' })
        .option('format', { type: 'string', choices: ['docker', 'oci'], default: 'docker', describe: 'archive format' }),
    ),
  handler: async (args) => {
    const dest = typeof args.output === 'string' && args.output !== '' ? args.output : '-';
    if (dest === '-' && process.stdout.isTTY) throw new UsageError('refusing to write an archive to a terminal', { hint: 'pass -o FILE' });
    const { store } = await openRoot(rootOf(args));
    const sig = signalController();
    try {
      await saveImages(store, asStrings(args.images), { format: String(args.format) as 'oci' | 'docker', dest, signal: sig.signal });
    } finally {
      sig.dispose();
    }
  },
};
