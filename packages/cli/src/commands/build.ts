import { UsageError } from '@tsbuild/errors';
import { build as runBuild, parseCacheFrom, parseCacheTo, parseOutput } from '@tsbuild/builder';
import type { BuildOptions, ResourceLimits } from '@tsbuild/builder';
import { parseAddHost, parseAnnotation, parseBuildContext, parseSsh, parseUlimits } from '@tsbuild/builder';
import type { Command } from '../command.ts';
import { createRenderer } from '../progress.ts';
import type { ProgressMode } from '../progress.ts';
import {
  asStrings, cpuLimits, keyValues, parseBytes, parseIntFlag, registryOptions, rootOf, signalController, withRegistryFlags, withRoot,
} from './common.ts';
import { readStdin } from './check.ts';
import { runChecks } from '../format/check.ts';

const PROGRESS = ['auto', 'tty', 'plain', 'rawjson', 'quiet'] as const;

/** `tsbuild build`: docker build's flags, one library call. */
export const build: Command = {
  command: 'build <context>',
  describe: 'Build an image from a Dockerfile',
  builder: (y) =>
    withRoot(
      withRegistryFlags(
        y
          .positional('context', { type: 'string', describe: 'build context directory' })
          .option('tag', { alias: 't', type: 'string', describe: 'name and optionally a tag (name:tag); repeatable' })
          .option('file', { alias: 'f', type: 'string', describe: 'Dockerfile (default CONTEXT/Dockerfile; - reads stdin)' })
          .option('build-arg', { type: 'string', describe: 'set a build-time variable (K=V, or K to take it from the environment)' })
          .option('target', { type: 'string', describe: 'build this stage and stop' })
          .option('no-cache', { type: 'boolean', describe: 'do not use the build cache' })
          .option('cache-from', { type: 'string', describe: 'reuse steps from a cache: type=registry,ref=REF | type=local,src=DIR | type=gha[,scope=S]; repeatable' })
          .option('provenance', { type: 'string', describe: 'attach SLSA provenance: true (mode=min), mode=min|max, or false' })
          .option('sbom', { type: 'string', describe: 'attach an SPDX SBOM of the final filesystem: true or false' })
          .option('attest', { type: 'string', describe: 'attestation, as buildx spells it: type=provenance[,mode=min|max] or type=sbom; repeatable' })
          .option('cache-to', {
            type: 'string',
            describe: 'write the cache: type=registry,ref=REF | type=local,dest=DIR | type=inline | type=gha, with [mode=min|max][,mounts=true][,ignore-error=true]; repeatable',
          })
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
          .option('ssh', { type: 'string', describe: 'SSH agent for RUN --mount=type=ssh: default | ID=SOCKET | ID=KEYFILE[,KEYFILE]; repeatable' })
          .option('add-host', { type: 'string', describe: 'add a host-to-IP mapping to RUN steps (HOST:IP); repeatable' })
          .option('ulimit', { type: 'string', describe: 'resource limit of RUN steps (TYPE=SOFT[:HARD], e.g. nofile=1024:2048); repeatable' })
          .option('shm-size', { type: 'string', describe: 'size of /dev/shm in RUN steps (e.g. 256m)' })
          .option('build-context', { type: 'string', describe: 'named context: NAME=DIR | NAME=docker-image://REF | NAME=oci-layout://DIR[:TAG|@DIGEST]; repeatable' })
          .option('annotation', { type: 'string', describe: 'annotate the image: [manifest:|manifest-descriptor:]KEY=VALUE; repeatable' })
          .option('progress', { type: 'string', choices: [...PROGRESS], default: 'auto', describe: 'progress output' })
          .option('quiet', { alias: 'q', type: 'boolean', describe: 'print only the image id' })
          .option('check', { type: 'boolean', describe: 'run the Dockerfile checks (as tsbuild check) and do not build' })
          .option('call', { type: 'string', choices: ['build', 'check'], describe: 'what to do: build (default) or check, as buildx spells --check' })
          .option('iidfile', { type: 'string', describe: 'write the image id to this file' })
          .option('metadata-file', { type: 'string', describe: 'write build metadata (JSON) to this file' })
          .option('source-date-epoch', { type: 'string', describe: 'timestamps for reproducible images (default $SOURCE_DATE_EPOCH)' })
          .option('platform', { type: 'string', describe: 'target platform (linux/amd64)' })
          .option('push', { type: 'boolean', describe: 'push every tag to its registry after the build' })
          .option('output', { alias: 'o', type: 'string', describe: 'output: type=image|registry|oci|docker|local|tar[,dest=PATH][,name=…]; repeatable' })
          .option('compression', { type: 'string', choices: ['gzip', 'zstd'], default: 'gzip', describe: 'layer compression for --push' }),
      ),
    ),
  handler: async (args) => {
    const file = typeof args.file === 'string' ? args.file : undefined;
    const epochRaw = args['source-date-epoch'] ?? process.env.SOURCE_DATE_EPOCH;
    const limits: ResourceLimits = { ...cpuLimits(args) };
    const memory = parseBytes('memory', args.memory);
    if (memory !== undefined) limits.memory = memory;
    const pids = parseIntFlag('pids-limit', args['pids-limit'], 1);
    if (pids !== undefined) limits.pidsLimit = pids;
    const outputs = asStrings(args.output).map(parseOutput);
    const quiet = args.quiet === true || args.progress === 'quiet';
    const renderer = createRenderer(quiet ? 'quiet' : (String(args.progress) as ProgressMode));
    const sig = signalController();
    const opts: BuildOptions = {
      context: String(args.context),
      file,
      tags: asStrings(args.tag),
      outputs,
      push: args.push === true,
      compression: String(args.compression) as 'gzip' | 'zstd',
      registry: registryOptions(args),
      buildArgs: keyValues('build-arg', args['build-arg'], true),
      labels: keyValues('label', args.label, false),
      noCache: args['no-cache'] === true,
      cacheFrom: asStrings(args['cache-from']).map((c) => parseCacheFrom(c)),
      cacheTo: asStrings(args['cache-to']).map((c) => parseCacheTo(c)),
      ...parseAttestFlags(args),
      pull: args.pull === true,
      network: String(args.network) as 'default' | 'none' | 'host',
      limits,
      secrets: parseSecrets(asStrings(args.secret)),
      ssh: Object.fromEntries(asStrings(args.ssh).map((s) => parseSsh(s)).map((s) => [s.id, s.paths])),
      extraHosts: asStrings(args['add-host']).map(parseAddHost),
      ulimits: parseUlimits(asStrings(args.ulimit)),
      shmSize: parseBytes('shm-size', args['shm-size']),
      annotations: asStrings(args.annotation).flatMap(parseAnnotation),
      buildContexts: asStrings(args['build-context']).map((c) => parseBuildContext(c)),
      target: typeof args.target === 'string' ? args.target : undefined,
      runtime: typeof args.runtime === 'string' ? args.runtime : undefined,
      platform: typeof args.platform === 'string' ? args.platform : undefined,
      sourceDateEpoch: parseIntFlag('source-date-epoch', epochRaw === '' ? undefined : epochRaw),
      iidFile: typeof args.iidfile === 'string' ? args.iidfile : undefined,
      metadataFile: typeof args['metadata-file'] === 'string' ? args['metadata-file'] : undefined,
      root: rootOf(args),
      onEvent: (e) => renderer.event(e),
      signal: sig.signal,
    };
    if (file === '-') opts.dockerfileText = await readStdin();
    if (args.check === true || args.call === 'check') {
      sig.dispose();
      return runChecks(opts, 'text');
    }
    try {
      const r = await runBuild(opts);
      renderer.close();
      for (const w of r.warnings) process.stderr.write(`warning: ${w}\n`);
      if (!quiet) for (const p of r.pushed) process.stderr.write(`pushed ${p.ref}@${p.digest}\n`);
      const id = r.configDigest;
      // An archive on stdout leaves only stderr for the id.
      if (r.exported.some((e) => e.dest === '-')) process.stderr.write(`${id}\n`);
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

function parseSecrets(specs: string[]): NonNullable<BuildOptions['secrets']> {
  const out: NonNullable<BuildOptions['secrets']> = {};
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

/** `--provenance`, `--sbom` and `--attest type=…` as buildx reads them. */
function parseAttestFlags(args: Record<string, unknown>): { provenance?: 'min' | 'max' | false; sbom?: boolean } {
  const out: { provenance?: 'min' | 'max' | false; sbom?: boolean } = {};
  const provenance = (spec: string, flag: string): 'min' | 'max' | false => {
    let mode: 'min' | 'max' | false = 'min';
    for (const part of spec.split(',').map((p) => p.trim()).filter(Boolean)) {
      if (part === 'true' || part === '1') mode = mode || 'min';
      else if (part === 'false' || part === '0') mode = false;
      else if (part === 'mode=min' || part === 'min') mode = 'min';
      else if (part === 'mode=max' || part === 'max') mode = 'max';
      else if (part !== 'type=provenance') throw new UsageError(`${flag} ${spec}: expected true, false or mode=min|max`);
    }
    return mode;
  };
  const bool = (spec: string, flag: string): boolean => {
    const v = spec.replace(/^type=sbom,?/, '').trim();
    if (v === '' || v === 'true' || v === '1') return true;
    if (v === 'false' || v === '0') return false;
    throw new UsageError(`${flag} ${spec}: expected true or false`);
  };
  if (typeof args.provenance === 'string') out.provenance = provenance(args.provenance, '--provenance');
  if (typeof args.sbom === 'string') out.sbom = bool(args.sbom, '--sbom');
  for (const a of asStrings(args.attest)) {
    if (/^type=provenance(,|$)/.test(a)) out.provenance = provenance(a, '--attest');
    else if (/^type=sbom(,|$)/.test(a)) out.sbom = bool(a.replace(/,?generator=[^,]*/, ''), '--attest');
    else throw new UsageError(`--attest ${a}: expected type=provenance[,mode=min|max] or type=sbom`);
  }
  return out;
}
