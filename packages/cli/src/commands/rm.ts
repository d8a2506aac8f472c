import { openRoot } from '@tsbuild/builder';
import type { Command } from '../command.ts';
import { asStrings, rootOf, withRoot } from './common.ts';

export const rm: Command = {
  command: ['rm <images..>', 'rmi <images..>'],
  describe: 'Remove image tags (blobs go with tsbuild prune)',
  builder: (y) => withRoot(y.positional('images', { type: 'string' })),
  handler: async (args) => {
    const { store } = await openRoot(rootOf(args));
    let failed = 0;
    for (const ref of asStrings(args.images)) {
      const removed = await store.removeImage(ref);
      if (removed.length === 0) {
        process.stderr.write(`error: no such image: ${ref}\n`);
        failed++;
      }
      for (const r of removed) process.stdout.write(`Untagged: ${r}\n`);
    }
    return failed > 0 ? 1 : 0;
  },
};
