import { join } from 'node:path';
import type { Command } from '../command.ts';
import { runChecks } from '../format/check.ts';
import { keyValues } from './common.ts';

const FORMATS = ['text', 'json'] as const;

/**
 * `tsbuild check`: BuildKit's Dockerfile checks (`docker build --check`) without building.
 * Exit 0 with warnings only; 1 on a parse error, or when `error=true` is set and a rule fired.
 */
export const check: Command = {
  command: 'check [context]',
  describe: 'Run the Dockerfile checks of docker build --check without building',
  builder: (y) =>
    y
      .positional('context', { type: 'string', default: '.', describe: 'build context directory (its .dockerignore is read)' })
      .option('file', { alias: 'f', type: 'string', describe: 'Dockerfile path (default CONTEXT/Dockerfile; - reads stdin)' })
      .option('build-arg', { type: 'string', describe: 'build-time variable (K=V); BUILDKIT_DOCKERFILE_CHECK=skip=…;error=true overrides # check=' })
      .option('target', { type: 'string', describe: 'the stage a build would stop at (TARGETSTAGE)' })
      .option('format', { type: 'string', choices: [...FORMATS], default: 'text', describe: 'text, or one JSON document on stdout' }),
  handler: async (args) => {
    const context = String(args.context ?? '.');
    const file = typeof args.file === 'string' ? args.file : join(context, 'Dockerfile');
    return runChecks({
      context,
      file,
      shownAs: file,
      dockerfileText: file === '-' ? await readStdin() : undefined,
      buildArgs: keyValues('build-arg', args['build-arg'], true),
      target: typeof args.target === 'string' && args.target !== '' ? args.target : undefined,
    }, args.format === 'json' ? 'json' : 'text');
  },
};

export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
