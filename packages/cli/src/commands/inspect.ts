import { UsageError } from '@tsbuild/errors';
import { openRoot, referrersOf, statementsOf } from '@tsbuild/builder';
import type { Command } from '../command.ts';
import { rootOf, withRoot } from './common.ts';

export const inspect: Command = {
  command: 'inspect <image>',
  describe: 'Show an image manifest and config as JSON (--attestations: its provenance and SBOM)',
  builder: (y) =>
    withRoot(
      y
        .positional('image', { type: 'string' })
        .option('attestations', { type: 'boolean', describe: 'show the attestations attached to the image (provenance, SBOM) instead' }),
    ),
  handler: async (args) => {
    const { store } = await openRoot(rootOf(args));
    const ref = String(args.image);
    if (!(await store.resolve(ref))) throw new UsageError(`no such image: ${ref}`);
    const img = await store.loadImage(ref);
    const descriptor = await img.descriptor();
    if (args.attestations === true) {
      const referrers = await referrersOf(store, descriptor.digest);
      const out = [];
      for (const r of referrers) {
        const { manifest, statements } = await statementsOf(store, r);
        out.push({ Digest: r.digest, ArtifactType: manifest.artifactType, Statements: statements });
      }
      process.stdout.write(JSON.stringify({ Subject: descriptor.digest, Attestations: out }, null, 2) + '\n');
      return;
    }
    const out = {
      Id: (await img.configDescriptor()).digest,
      Descriptor: descriptor,
      Manifest: await img.manifest(),
      Config: await img.config(),
    };
    process.stdout.write(JSON.stringify(out, null, 2) + '\n');
  },
};
