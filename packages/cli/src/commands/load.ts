import { UsageError } from '@tsbuild/errors';
import { loadArchive, openRoot } from '@tsbuild/builder';
import type { Command } from '../command.ts';
import { rootOf, signalController, withRoot } from './common.ts';

export const load: Command = {
  command: 'load',
  describe: 'Load images from an OCI or Docker archive (plain, gzip or zstd)',
  builder: (y) =>
    withRoot(
      y
        .option('input', { alias: 'i', type: 'string', describe: 'archive file (default stdin)' })
        .option('quiet', { alias: 'q', type: 'boolean', describe: 'print nothing but errors' }),
    ),
  handler: async (args) => {
    const input = typeof args.input === 'string' && args.input !== '' && args.input !== '-' ? args.input : undefined;
    if (input === undefined && process.stdin.isTTY) throw new UsageError('no archive given', { hint: 'pass -i FILE or pipe one in' });
    const { store } = await openRoot(rootOf(args));
    const sig = signalController();
    try {
      const r = await loadArchive(store, input ?? process.stdin, { signal: sig.signal });
      if (args.quiet) return;
      for (const img of r.images) {
        if (img.tags.length === 0) process.stdout.write(`Loaded image ID: ${img.manifest.digest}\n`);
        for (const t of img.tags) process.stdout.write(`Loaded image: ${t}\n`);
      }
    } finally {
      sig.dispose();
    }
  },
};
