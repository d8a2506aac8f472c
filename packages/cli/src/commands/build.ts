import { writeFile } from 'node:fs/promises';
import { UsageError } from '@tsbuild/errors';
import { build as runBuild, parseOutput } from '@tsbuild/builder';
import type { BuildOptions } from '@tsbuild/builder';
import type { Command } from '../command.ts';
import { createRenderer } from '../progress.ts';
import type { ProgressMode } from '../progress.ts';
import { asStrings, cpuLimits, keyValues, parseBytes, parseIntFlag, rootOf, signalController, withRoot } from './common.ts';
import { readStdin } from './check.ts';
import { registryHooks } from '../registry.ts';
import { writeOutputs } from './save.ts';

const PROGRESS = ['auto', 'tty', 'plain', 'rawjson'] as const;

/** `tsbuild build`: docker build's flags, one library call. */
export const build: Command = {
  command: 'build <context>',
  describe: 'Build an image from a Dockerfile',
  builder: (y) =>
    withRoot(
      y
        .positional('context', { type: 'string', describe: 'build context directory' })
        .option('tag', { alias: 't', type: 'string', describe: 'name and optionally a tag (name:tag); repeatable' })
        .option('file', { alias: 'f', type: 'string', describe: 'Dockerfile (default CONTEXT/Dockerfile; - reads stdin)' })
        .option('build-arg', { type: 'string', describe: 'set a build-time variable (K=V, or K to take it from the environment)' })
        .option('target', { type: 'string', describe: 'build this stage and stop' })
        .option('no-cache', { type: 'boolean', describe: 'do not use the build cache' })
        .option('pull', { type: 'boolean', describe: 'always pull base images again' })
        .option('label', { type: 'string', describe: 'set image labels (K=V)' })
        .option('network', { type: 'string', choices: ['default', 'none', 'host'], default: 'default', describe: 'network for RUN steps' })
        .option('memory', { alias: 'm', type: 'string', describe: 'memory limit for RUN steps (e.g. 512m)' })
        .option('cpus', { type: 'string', describe: 'CPU limit for RUN steps (e.g. 1.5)' })
        .option('cpu-quota', { type: 'string', describe: 'CFS quota in microseconds' })
        .option('cpu-period', { type: 'string', describe: 'CFS period in microseconds' })
        .option('pids-limit', { type: 'string', describe: 'process limit for RUN steps' })
        .option('runtime', { type: 'string', describe: 'OCI runtime name or path (default runc)' })
        .option('secret', { type: 'string', describe: 'secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR' })
        .option('progress', { type: 'string', choices: [...PROGRESS], default: 'auto', describe: 'progress output' })
        .option('quiet', { alias: 'q', type: 'boolean', describe: 'print only the image id' })
        .option('iidfile', { type: 'string', describe: 'write the image id to this file' })
        .option('metadata-file', { type: 'string', describe: 'write build metadata (JSON) to this file' })
        .option('source-date-epoch', { type: 'string', describe: 'timestamps for reproducible images (default $SOURCE_DATE_EPOCH)' })
        .option('platform', { type: 'string', describe: 'target platform (linux/amd64)' })
        .option('push', { type: 'boolean', describe: 'push every tag to its registry after the build' })
        .option('output', { alias: 'o', type: 'string', describe: 'output: type=image|registry|oci|docker|local|tar[,dest=PATH][,name=…]; repeatable' })
        .option('compression', { type: 'string', choices: ['gzip', 'zstd'], default: 'gzip', describe: 'layer compression for --push' })
        .option('insecure-registry', { type: 'string', describe: 'registries reached over plain HTTP' }),
    ),
  handler: async (args) => {
    const file = typeof args.file === 'string' ? args.file : undefined;
    const epochRaw = args['source-date-epoch'] ?? process.env.SOURCE_DATE_EPOCH;
    const epoch = parseIntFlag('source-date-epoch', epochRaw === '' ? undefined : epochRaw);
    const outputs = asStrings(args.output).map(parseOutput);
    const tags = [...asStrings(args.tag), ...outputs.flatMap((o) => ('names' in o ? o.names : []))];
    const push = args.push === true || outputs.some((o) => o.type === 'registry' || (o.type === 'image' && o.push));
    const toStdout = outputs.some((o) => 'dest' in o && o.dest === '-');
    if (push && tags.length === 0) throw new UsageError('--push needs at least one -t NAME to push to');
    const limits: NonNullable<BuildOptions['limits']> = { ...cpuLimits(args) };
    const memory = parseBytes('memory', args.memory);
    if (memory !== undefined) limits.memory = memory;
    const pids = parseIntFlag('pids-limit', args['pids-limit'], 1);
    if (pids !== undefined) limits.pidsLimit = pids;
    const quiet = args.quiet === true;
    const renderer = createRenderer(quiet ? 'quiet' : (String(args.progress) as ProgressMode));
    const sig = signalController();
    const hooks = registryHooks(args);
    const opts: BuildOptions = {
      context: String(args.context),
      tags,
      buildArgs: keyValues('build-arg', args['build-arg'], true),
      labels: keyValues('label', args.label, false),
      noCache: args['no-cache'] === true,
      pull: args.pull === true,
      network: String(args.network) as 'default' | 'none' | 'host',
      limits,
      secrets: parseSecrets(asStrings(args.secret)),
      onEvent: (e) => renderer.event(e),
      signal: sig.signal,
      fetchImage: hooks.fetchImage,
    };
    if (file !== undefined) opts.file = file;
    if (file === '-') opts.dockerfileText = await readStdin();
    if (typeof args.target === 'string') opts.target = args.target;
    if (typeof args.runtime === 'string') opts.runtime = args.runtime;
    if (typeof args.platform === 'string') opts.platform = args.platform;
    if (epoch !== undefined) opts.sourceDateEpoch = epoch;
    const root = rootOf(args);
    if (root) opts.root = root;
    try {
      const r = await runBuild(opts);
      renderer.close();
      for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
      const id = r.configDigest;
      if (typeof args.iidfile === 'string') await writeFile(args.iidfile, id);
      if (typeof args['metadata-file'] === 'string') {
        const meta = {
          'containerimage.digest': r.manifest.digest,
          'containerimage.config.digest': r.configDigest,
          'containerimage.descriptor': r.manifest,
          'image.name': r.tags.join(','),
        };
        await writeFile(args['metadata-file'], JSON.stringify(meta, null, 2) + '\n');
      }
      await writeOutputs(root, r.manifest.digest, r.tags, outputs, sig.signal);
      if (push) {
        for (const t of r.tags) {
          const pushed = await hooks.push(t, t, { compression: String(args.compression) as 'gzip' | 'zstd', signal: sig.signal, quiet });
          if (!quiet) process.stderr.write(`pushed ${t}@${pushed}\n`);
        }
      }
      if (toStdout) process.stderr.write(`${id}\n`);
      else if (quiet) process.stdout.write(`${id}\n`);
      else {
        for (const t of r.tags) process.stderr.write(`naming to ${t}\n`);
        process.stdout.write(`${id}\n`);
      }
      return 0;
    } catch (e) {
      renderer.close();
      if (sig.signal.aborted) {
        process.stderr.write('error: build interrupted; containers and mounts were cleaned up\n');
        return 130;
      }
      throw e;
    } finally {
      sig.dispose();
    }
  },
};

function parseSecrets(specs: string[]): Record<string, { file?: string; env?: string }> {
  const out: Record<string, { file?: string; env?: string }> = {};
  for (const spec of specs) {
    const fields = new Map<string, string>();
    for (const part of spec.split(',')) {
      const eq = part.indexOf('=');
      if (eq <= 0) throw new UsageError(`--secret ${spec}: expected id=ID,src=FILE or id=ID,env=VAR`);
      fields.set(part.slice(0, eq).trim().toLowerCase(), part.slice(eq + 1));
    }
    const id = fields.get('id');
    if (!id) throw new UsageError(`--secret ${spec}: id= is required`);
    const src = fields.get('src') ?? fields.get('source');
    const env = fields.get('env');
    if (src !== undefined) out[id] = { file: src };
    else if (env !== undefined) out[id] = { env };
    else out[id] = { env: id };
  }
  return out;
}
