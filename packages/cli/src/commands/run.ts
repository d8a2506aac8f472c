import { openRoot, runImage } from '@tsbuild/builder';
import type { RunImageOptions } from '@tsbuild/builder';
import type { Command } from '../command.ts';
import { commandIndex } from '../argv.ts';
import { asStrings, cpuLimits, parseBytes, parseIntFlag, rootOf, signalController, withRoot } from './common.ts';

const VALUE_FLAGS = new Set([
  '--memory', '-m', '--cpus', '--cpu-quota', '--cpu-period', '--pids-limit', '--network', '--env', '-e',
  '--user', '-u', '--workdir', '-w', '--entrypoint', '--runtime', '--root',
]);

/**
 * Everything after the image is the container's command, flags included (`run img sh -c 'x'`):
 * insert `--` after the image so the flag parser leaves the command alone.
 */
export function splitRunArgv(argv: string[]): string[] {
  // Flags may stand before the command (`tsbuild --root DIR run …`): find the command word itself.
  const at = commandIndex(argv);
  if (at < 0 || argv[at] !== 'run') return argv;
  for (let i = at + 1; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '--') return argv;
    if (a.startsWith('-')) {
      if (VALUE_FLAGS.has(a)) i++;
      continue;
    }
    return i + 1 < argv.length && argv[i + 1] !== '--' ? [...argv.slice(0, i + 1), '--', ...argv.slice(i + 1)] : argv;
  }
  return argv;
}

export const run: Command = {
  command: 'run <image> [command..]',
  describe: 'Run a command in a new container from an image (always removed afterwards)',
  builder: (y) =>
    withRoot(
      y
        .positional('image', { type: 'string' })
        .positional('command', { type: 'string' })
        .option('rm', { type: 'boolean', describe: 'accepted for docker compatibility: containers are always removed' })
        .option('memory', { alias: 'm', type: 'string', describe: 'memory limit (e.g. 64m)' })
        .option('cpus', { type: 'string', describe: 'CPU limit (e.g. 0.5)' })
        .option('cpu-quota', { type: 'string' })
        .option('cpu-period', { type: 'string' })
        .option('pids-limit', { type: 'string' })
        .option('network', { type: 'string', choices: ['none', 'host'], default: 'host' })
        .option('env', { alias: 'e', type: 'string', describe: 'set environment variables' })
        .option('user', { alias: 'u', type: 'string' })
        .option('workdir', { alias: 'w', type: 'string' })
        .option('entrypoint', { type: 'string' })
        .option('runtime', { type: 'string', describe: 'OCI runtime name or path (default runc)' }),
    ),
  handler: async (args) => {
    const env = await openRoot(rootOf(args));
    const limits: NonNullable<RunImageOptions['limits']> = { ...cpuLimits(args) };
    const memory = parseBytes('memory', args.memory);
    if (memory !== undefined) limits.memory = memory;
    const pids = parseIntFlag('pids-limit', args['pids-limit'], 1);
    if (pids !== undefined) limits.pidsLimit = pids;
    const sig = signalController();
    try {
      const opts: RunImageOptions = {
        args: [...asStrings(args.command), ...asStrings(args['--'])],
        env: asStrings(args.env),
        network: String(args.network) as 'none' | 'host',
        limits,
        signal: sig.signal,
        warn: (m) => process.stderr.write(`warning: ${m}\n`),
      };
      if (typeof args.user === 'string') opts.user = args.user;
      if (typeof args.workdir === 'string') opts.workdir = args.workdir;
      if (typeof args.entrypoint === 'string') opts.entrypoint = args.entrypoint;
      if (typeof args.runtime === 'string') opts.runtime = args.runtime;
      const code = await runImage(env, String(args.image), opts);
      return sig.signal.aborted ? 130 : code;
    } finally {
      sig.dispose();
    }
  },
};
