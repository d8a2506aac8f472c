import { DockerfileError } from '@tsbuild/errors';
import type { Heredoc } from './ast.ts';
import { checkChmod, locate } from './instructions.ts';
import type { Instruction, KeyValue } from './instructions.ts';
import { parseMount } from './mount.ts';
import { ShellError, processWordWithMatches } from './shell.ts';
import type { Env, ShellOptions } from './shell.ts';

/** Expands the words of an instruction; implementations decide which variables are visible. */
export interface Expander {
  /** One word, quotes removed (paths, keys, values). */
  word(word: string): string;
  /** One word split into fields (EXPOSE ports). */
  words(word: string): string[];
  /** A heredoc body: variables expand, quotes stay. */
  heredoc(body: string): string;
}

/** An Expander over one environment that records every variable name it looked up. */
export interface RecordingExpander extends Expander {
  readonly matched: Set<string>;
  readonly unmatched: Set<string>;
}

export function envExpander(env: Env, opts: ShellOptions = {}): RecordingExpander {
  const matched = new Set<string>();
  const unmatched = new Set<string>();
  const run = (w: string, o: ShellOptions) => {
    const r = processWordWithMatches(w, env, o);
    for (const n of r.matched) matched.add(n);
    for (const n of r.unmatched) unmatched.add(n);
    return r;
  };
  return {
    matched,
    unmatched,
    word: (w) => run(w, opts).result,
    words: (w) => run(w, opts).words,
    heredoc: (body) => run(body, { ...opts, skipQuotes: true }).result,
  };
}

export interface ExpandOptions {
  /** Named in errors; default 'Dockerfile'. */
  file?: string;
  /** The whole Dockerfile, for error excerpts. */
  text?: string;
}

/**
 * Returns a copy of the instruction with the words BuildKit expands at build time expanded:
 * FROM image and --platform; ENV/LABEL/ARG keys and values; EXPOSE (split into fields); VOLUME,
 * USER, WORKDIR, STOPSIGNAL; COPY/ADD sources, dest, --from, --chown, --chmod, --exclude,
 * --checksum and expandable heredoc bodies; RUN --mount values (re-validated). RUN/CMD/ENTRYPOINT
 * commands, SHELL, HEALTHCHECK and ONBUILD are left to the shell or to the later build.
 * A failed expansion becomes a DockerfileError at the instruction's range.
 */
export function expandInstruction<T extends Instruction>(inst: T, ex: Expander, opts: ExpandOptions = {}): T {
  try {
    return expand(inst, ex);
  } catch (e) {
    const err = e instanceof ShellError ? new DockerfileError(e.message, { cause: e }) : e;
    throw locate(err, inst.range, inst.original, opts);
  }
}

function expand<T extends Instruction>(inst: T, ex: Expander): T {
  const kv = (list: KeyValue[]): KeyValue[] => list.map((p) => ({ key: ex.word(p.key), value: ex.word(p.value) }));
  const i: Instruction = inst;
  switch (i.kind) {
    case 'from': {
      const out = { ...i, image: ex.word(i.image) };
      if (i.platform !== undefined) out.platform = ex.word(i.platform);
      return out as T;
    }
    case 'env':
      return { ...i, env: kv(i.env) } as T;
    case 'label':
      return { ...i, labels: kv(i.labels) } as T;
    case 'arg':
      return {
        ...i,
        args: i.args.map((a) => (a.value === undefined ? { key: ex.word(a.key) } : { key: ex.word(a.key), value: ex.word(a.value) })),
      } as T;
    case 'expose':
      return { ...i, ports: i.ports.flatMap((p) => ex.words(p)) } as T;
    case 'volume':
      // Not split: a volume path may contain spaces.
      return { ...i, volumes: i.volumes.map((v) => ex.word(v)) } as T;
    case 'user':
      return { ...i, user: ex.word(i.user) } as T;
    case 'workdir':
      return { ...i, path: ex.word(i.path) } as T;
    case 'stopsignal':
      return { ...i, signal: ex.word(i.signal) } as T;
    case 'copy':
    case 'add': {
      const out = {
        ...i,
        sources: i.sources.map((s) => ex.word(s)),
        dest: ex.word(i.dest),
        exclude: i.exclude.map((s) => ex.word(s)),
        heredocs: i.heredocs.map((h): Heredoc => (h.expand ? { ...h, content: ex.heredoc(h.content) } : { ...h })),
      };
      if (out.chown !== undefined) out.chown = ex.word(out.chown);
      if (out.chmod !== undefined) {
        out.chmod = ex.word(out.chmod);
        checkChmod(out.chmod);
        if (out.chmod.includes('$')) {
          throw new DockerfileError(`invalid --chmod value ${JSON.stringify(out.chmod)}: expected an octal mode such as 0755`);
        }
      }
      if (out.kind === 'copy' && out.from !== undefined) out.from = ex.word(out.from);
      if (out.kind === 'add' && out.checksum !== undefined) out.checksum = ex.word(out.checksum);
      return out as T;
    }
    case 'run': {
      let ssh = 0;
      const mounts = i.mounts.map((m) => {
        const e = parseMount(m.spec, { expand: (w) => ex.word(w) });
        if (e.type === 'ssh' && !e.target) e.target = `/run/buildkit/ssh_agent.${ssh}`;
        if (e.type === 'ssh') ssh++;
        return e;
      });
      return { ...i, mounts } as T;
    }
    default:
      return inst;
  }
}
