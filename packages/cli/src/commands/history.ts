import { UsageError } from '@tsbuild/errors';
import { openRoot, historyOf, remoteImage } from '@tsbuild/builder';
import { parseReference } from '@tsbuild/registry';
import type { Command } from '../command.ts';
import { formatHistory } from '../format/history.ts';
import type { HistoryRow } from '../format/history.ts';
import { registryOptions, rootOf, withRegistryFlags, withRoot } from './common.ts';

export const history: Command = {
  command: 'history <image>',
  describe: 'Show the history of an image (local, or a registry reference)',
  builder: (y) =>
    withRoot(
      withRegistryFlags(y)
        .positional('image', { type: 'string' })
        .option('no-trunc', { type: 'boolean', describe: 'do not truncate output' })
        .option('human', { alias: 'H', type: 'boolean', default: true, describe: 'sizes and dates in human-readable form' })
        .option('quiet', { alias: 'q', type: 'boolean', describe: 'only image ids' })
        .option('format', { type: 'string', default: 'table', describe: 'table or json' }),
    ),
  handler: async (args) => {
    const ref = String(args.image);
    const format = String(args.format);
    if (format !== 'table' && format !== 'json') throw new UsageError(`--format: expected table or json, got ${JSON.stringify(format)}`);
    const { store } = await openRoot(rootOf(args));
    let config;
    let layers;
    let id: string;
    if (await store.resolve(ref)) {
      const img = await store.loadImage(ref);
      config = await img.config();
      layers = (await img.manifest()).layers;
      id = (await img.configDescriptor()).digest;
    } else {
      if (!isRemote(ref)) throw new UsageError(`no such image: ${ref}`, { hint: 'list local images with tsbuild images' });
      const remote = await remoteImage(ref, registryOptions(args));
      config = remote.config;
      layers = remote.manifest.layers;
      id = remote.manifest.config.digest;
    }
    const items = historyOf(config, layers).reverse();
    const trunc = args['no-trunc'] !== true;
    const rows: HistoryRow[] = items.map((it, i) => ({
      id: i === 0 ? (trunc ? id.slice(7, 19) : id) : undefined,
      entry: it.entry,
      size: it.size,
    }));
    process.stdout.write(
      formatHistory(rows, { now: Date.now(), trunc, human: args.human !== false, quiet: args.quiet === true, format }),
    );
  },
};

/** Only names that point at a registry host are looked up remotely; bare names are local. */
function isRemote(ref: string): boolean {
  try {
    parseReference(ref);
  } catch {
    return false;
  }
  return ref.includes('/') && /[.:]|^localhost/.test(ref.split('/')[0] ?? '');
}
