import { UsageError } from '@tsbuild/errors';
import { openRoot } from '@tsbuild/builder';
import type { Command } from '../command.ts';
import { rootOf, withRoot } from './common.ts';

export const inspect: Command = {
  command: 'inspect <image>',
  describe: 'Show an image manifest and config as JSON',
  builder: (y) => withRoot(y.positional('image', { type: 'string' })),
  handler: async (args) => {
    const { store } = await openRoot(rootOf(args));
    const ref = String(args.image);
    if (!(await store.resolve(ref))) throw new UsageError(`no such image: ${ref}`);
    const img = await store.loadImage(ref);
    const out = {
      Id: (await img.configDescriptor()).digest,
      Descriptor: await img.descriptor(),
      Manifest: await img.manifest(),
      Config: await img.config(),
    };
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
  },
};
