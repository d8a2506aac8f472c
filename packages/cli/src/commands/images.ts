import { UsageError } from '@tsbuild/errors';
import { openRoot, historyOf, importImage, prune as pruneAll } from '@tsbuild/builder';
import type { Command } from '../command.ts';
import { humanDuration, humanSize, table } from '../format/units.ts';
import { asStrings, rootOf, withRoot } from './common.ts';

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
    const { store } = await openRoot(rootOf(args));
    const opts: Parameters<typeof importImage>[2] = { tags: asStrings(args.tag) };
    if (typeof args.message === 'string') opts.message = args.message;
    const desc = await importImage(store, String(args.file), opts);
    const img = await store.loadImage(desc.digest);
    process.stdout.write(`${(await img.configDescriptor()).digest}\n`);
  },
};

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

export { historyOf };
