import { openRoot, prune as pruneAll } from '@tsbuild/builder';
import type { Command } from '../command.ts';
import { humanSize } from '../format/units.ts';
import { rootOf, withRoot } from './common.ts';

export const prune: Command = {
  command: 'prune',
  describe: 'Remove the build cache, unused snapshots and unreferenced blobs',
  builder: (y) => withRoot(y.option('all', { alias: 'a', type: 'boolean', describe: 'also drop unpacked snapshots of tagged images' })),
  handler: async (args) => {
    const env = await openRoot(rootOf(args));
    const r = await pruneAll(env, { all: args.all === true });
    process.stdout.write(
      `Deleted ${r.cacheEntries} cache entries, ${r.snapshots} snapshots, ${r.blobs} blobs\nTotal reclaimed space: ${humanSize(r.freedBytes)}\n`,
    );
  },
};
