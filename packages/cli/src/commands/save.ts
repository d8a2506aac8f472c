import { UsageError } from '@tsbuild/errors';
import { exportImage, loadArchive, openRoot, saveImages } from '@tsbuild/builder';
import type { ExportType, OutputSpec } from '@tsbuild/builder';
import type { Command } from '../command.ts';
import { asStrings, rootOf, signalController, withRoot } from './common.ts';

/** Writes the built image to every file or directory output (`image` and `registry` are the caller's). */
export async function writeOutputs(root: string | undefined, manifestDigest: string, tags: string[], outputs: OutputSpec[], signal: AbortSignal): Promise<void> {
  const files = outputs.filter((o): o is { type: ExportType; dest: string } => 'dest' in o);
  if (files.filter((o) => o.dest === '-').length > 1) throw new UsageError('only one --output can write to stdout');
  if (files.length === 0) return;
  const { store } = await openRoot(root);
  for (const o of files) await exportImage(store, manifestDigest, { type: o.type, dest: o.dest, tags, signal });
}

export const save: Command = {
  command: 'save <images..>',
  describe: 'Write images to an OCI or Docker archive (docker load reads the docker format)',
  builder: (y) =>
    withRoot(
      y
        .positional('images', { type: 'string' })
        .option('output', { alias: 'o', type: 'string', describe: 'archive file (default stdout)' })
        .option('format', { type: 'string', choices: ['docker', 'oci'], default: 'docker', describe: 'archive format' }),
    ),
  handler: async (args) => {
    const dest = typeof args.output === 'string' && args.output !== '' ? args.output : '-';
    if (dest === '-' && process.stdout.isTTY) throw new UsageError('refusing to write an archive to a terminal', { hint: 'pass -o FILE' });
    const { store } = await openRoot(rootOf(args));
    const sig = signalController();
    try {
      await saveImages(store, asStrings(args.images), { format: String(args.format) as 'oci' | 'docker', dest, signal: sig.signal });
    } finally {
      sig.dispose();
    }
  },
};

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
