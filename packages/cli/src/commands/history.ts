import { UsageError } from '@tsbuild/errors';
import { analyzeRemoteImage, analyzeStoredImage, openRoot, historyOf, remoteImage } from '@tsbuild/builder';
import { parseReference } from '@tsbuild/registry';
import type { Command } from '../command.ts';
import { formatHistory } from '../format/history.ts';
import type { HistoryRow } from '../format/history.ts';
import { formatLayerAnalysis } from '../format/layers.ts';
import { parseIntFlag, registryOptions, rootOf, signalController, withRegistryFlags, withRoot } from './common.ts';

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
        .option('format', { type: 'string', default: 'table', describe: 'table or json' })
        .option('files', { type: 'boolean', describe: 'what each layer adds, changes and removes, the bytes wasted and the efficiency (reads the layers)' })
        .option('layer', { type: 'string', describe: 'with --files: only layer N, counted from 0 at the bottom (implies --files)' }),
    ),
  handler: async (args) => {
    const ref = String(args.image);
    const format = String(args.format);
    if (format !== 'table' && format !== 'json') throw new UsageError(`--format: expected table or json, got ${JSON.stringify(format)}`);
    const layer = parseIntFlag('layer', args.layer, 0);
    if (args.files === true || layer !== undefined) {
      if (args.quiet === true) throw new UsageError('--quiet cannot be combined with --files or --layer');
      return files(args, ref, format, layer);
    }
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

/**
 * `--files`: a local image is read from the store (a lazily pulled layer is fetched into it, as
 * any read of it would); a registry image is streamed through the analysis and nothing of it is
 * stored, since looking at an image is not pulling it.
 */
async function files(args: Record<string, unknown>, ref: string, format: 'table' | 'json', layer: number | undefined): Promise<void> {
  const { store } = await openRoot(rootOf(args));
  const sig = signalController();
  try {
    const opts = { signal: sig.signal, through: layer };
    let analysis;
    if (await store.resolve(ref)) analysis = await analyzeStoredImage(store, ref, opts);
    else {
      if (!isRemote(ref)) throw new UsageError(`no such image: ${ref}`, { hint: 'list local images with tsbuild images' });
      analysis = await analyzeRemoteImage(ref, { ...registryOptions(args), ...opts });
    }
    process.stdout.write(formatLayerAnalysis(analysis, { trunc: args['no-trunc'] !== true, human: args.human !== false, format, layer }));
  } finally {
    sig.dispose();
  }
}

/** Only names that point at a registry host are looked up remotely; bare names are local. */
function isRemote(ref: string): boolean {
  try {
    parseReference(ref);
  } catch {
    return false;
  }
  return ref.includes('/') && /[.:]|^localhost/.test(ref.split('/')[0] ?? '');
}
