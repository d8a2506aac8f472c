import { UsageError } from '@tsbuild/errors';
import { openRoot } from '@tsbuild/builder';
import type { Command } from '../command.ts';
import { rootOf, withRoot } from './common.ts';

export const tag: Command = {
  command: 'tag <source> <target>',
  describe: 'Give an image another name',
  builder: (y) => withRoot(y.positional('source', { type: 'string' }).positional('target', { type: 'string' })),
  handler: async (args) => {
    const { store } = await openRoot(rootOf(args));
    const desc = await store.resolve(String(args.source));
    if (!desc) throw new UsageError(`no such image: ${String(args.source)}`);
    const name = await store.tag(String(args.target), desc);
    process.stdout.write(`${name}\n`);
  },
};
