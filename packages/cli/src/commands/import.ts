import { importImage, openRoot } from '@tsbuild/builder';
import type { ImportOptions } from '@tsbuild/builder';
import type { Command } from '../command.ts';
import { asStrings, rootOf, withRoot } from './common.ts';

export const importCmd: Command = {
  command: 'import <file>',
  describe: 'Create a single-layer image from a root filesystem tarball',
  builder: (y) =>
    withRoot(
      y
        .positional('file', { type: 'string', describe: 'rootfs tarball (plain, gzip or zstd)' })
        .option('tag', { alias: 't', type: 'string', describe: 'name for the image' })
        .option('message', { alias: 'm', type: 'string', describe: 'history comment' }),
    ),
  handler: async (args) => {
    const { store, snapshots } = await openRoot(rootOf(args));
    const opts: ImportOptions = { tags: asStrings(args.tag) };
    // Unpacking needs root (owners and device nodes); without it the first build unpacks.
    if (process.getuid?.() === 0) opts.snapshots = snapshots;
    if (typeof args.message === 'string') opts.message = args.message;
    const desc = await importImage(store, String(args.file), opts);
    const img = await store.loadImage(desc.digest);
    process.stdout.write(`${(await img.configDescriptor()).digest}\n`);
  },
};
