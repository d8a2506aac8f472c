import { openRoot } from '@tsbuild/builder';
import type { Command } from '../command.ts';
import { humanDuration, humanSize, table } from '../format/units.ts';
import { rootOf, withRoot } from './common.ts';

export const images: Command = {
  command: ['images', 'image ls'],
  describe: 'List images in the local store',
  builder: (y) => withRoot(y.option('quiet', { alias: 'q', type: 'boolean', describe: 'only image ids' })),
  handler: async (args) => {
    const { store } = await openRoot(rootOf(args));
    const rows: string[][] = [];
    for (const e of await store.listImages()) {
      const img = await store.loadImage(e.name);
      const config = await img.config();
      const manifest = await img.manifest();
      const size = manifest.layers.reduce((n, l) => n + l.size, 0);
      const id = (await img.configDescriptor()).digest.slice(7, 19);
      const at = e.name.lastIndexOf(':');
      const slash = e.name.lastIndexOf('/');
      const [repo, tag] = at > slash ? [e.name.slice(0, at), e.name.slice(at + 1)] : [e.name, '<none>'];
      const created = config.created ? `${humanDuration(Date.now() - Date.parse(config.created))} ago` : 'N/A';
      rows.push([repo, tag, id, created, humanSize(size)]);
    }
    if (args.quiet) process.stdout.write([...new Set(rows.map((r) => r[2]))].map((x) => `${x}\n`).join(''));
    else process.stdout.write(table(['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE'], rows));
  },
};
