import { importImage, openRoot } from '@tsbuild/builder';
import type { ImportOptions } from '@tsbuild/builder';
import type { Command } from '../command.ts';
import { asStrings, parseIntFlag, rootOf, withRoot } from './common.ts';

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
    // As docker import and build do: reproducible images take their time from SOURCE_DATE_EPOCH.
    const epoch = parseIntFlag('SOURCE_DATE_EPOCH', process.env.SOURCE_DATE_EPOCH || undefined);
    if (epoch !== undefined) opts.sourceDateEpoch = epoch;
    const desc = await importImage(store, String(args.file), opts);
    const img = await store.loadImage(desc.digest);
    process.stdout.write(`${(await img.configDescriptor()).digest}\n`);
  },
};
