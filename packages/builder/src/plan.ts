import { DockerfileError, UsageError, excerptOf } from '@tsbuild/errors';
import type { Dockerfile, Stage } from '@tsbuild/dockerfile';
import { contextName } from './flags.ts';
import type { NamedContext } from './flags.ts';

/**
 * A Dockerfile seen with `--build-context` names: each name stands for a stage of its own, with
 * no instructions, whose base is the context. It wins over a stage or an image of that name
 * wherever FROM, COPY --from or RUN --mount from= names it, as in BuildKit.
 */
export interface ContextualDockerfile extends Dockerfile {
  contexts: ReadonlyMap<string, { stage: Stage; context: NamedContext }>;
}

/** The named context stage `s` stands for (undefined for the Dockerfile's own stages). */
export function contextOf(df: Dockerfile, s: Stage): NamedContext | undefined {
  if (s.index >= 0) return undefined;
  for (const c of (df as Partial<ContextualDockerfile>).contexts?.values() ?? []) if (c.stage === s) return c.context;
  return undefined;
}

/** `df` with a stage of its own for each named context (index -1: no `--from=N` reaches one). */
export function withContexts(df: Dockerfile, contexts: readonly NamedContext[]): Dockerfile {
  if (contexts.length === 0) return df;
  const map = new Map<string, { stage: Stage; context: NamedContext }>();
  const at = { line: 0, column: 0 };
  for (const c of contexts) {
    const range = { start: at, end: at };
    const value = c.spec.slice(c.spec.indexOf('=') + 1);
    const stage: Stage = { name: c.name, index: -1, from: { kind: 'from', image: value, original: `FROM ${value}`, range }, instructions: [], range };
    map.set(c.name, { stage, context: c });
  }
  const out: ContextualDockerfile = { ...df, contexts: map };
  return out;
}

function contextStage(df: Dockerfile, ref: string): Stage | undefined {
  const contexts = (df as Partial<ContextualDockerfile>).contexts;
  if (!contexts || contexts.size === 0) return undefined;
  const name = contextName(ref);
  return name === undefined ? undefined : contexts.get(name)?.stage;
}

/** How one stage refers to another: by `AS` name (case-insensitive) or by index; a named context first. */
export function findStage(df: Dockerfile, ref: string, before?: number): Stage | undefined {
  const ctx = contextStage(df, ref);
  if (ctx) return ctx;
  const lower = ref.toLowerCase();
  const limit = before ?? df.stages.length;
  for (let i = limit - 1; i >= 0; i--) {
    const s = df.stages[i] as Stage;
    if (s.name === lower) return s;
  }
  if (/^\d+$/.test(ref)) {
    const s = df.stages[Number(ref)];
    if (s && s.index < limit) return s;
  }
  return undefined;
}

export interface StageDeps {
  /** The stage FROM builds on, when it is a stage. */
  base: Stage | undefined;
  /** Stages read by COPY --from and RUN --mount from=. */
  reads: Stage[];
}

/**
 * The stages that the target needs, each with its dependencies, in an order where every
 * stage comes after what it needs. Stages the target does not reach are left out, so they
 * never run; a cycle is a DockerfileError.
 * `resolveFrom(stage)` returns the already expanded FROM image word.
 */
export function planStages(
  df: Dockerfile,
  target: string | undefined,
  resolveFrom: (s: Stage) => string,
  file: string,
  text: string,
): { order: Stage[]; deps: Map<Stage, StageDeps> } {
  let final: Stage | undefined;
  if (target !== undefined) {
    final = df.stages.find((s) => s.name === target.toLowerCase());
    if (!final) {
      const names = df.stages.map((s) => s.name).filter(Boolean);
      throw new UsageError(`target stage "${target}" could not be found in ${file}`, {
        hint: names.length > 0 ? `stages: ${names.join(', ')}` : 'the Dockerfile names no stages (FROM image AS name)',
      });
    }
  } else {
    final = df.stages.at(-1);
  }
  if (!final) throw new DockerfileError('the Dockerfile has no stages', { file });
  // A context named like the target stage replaces it too.
  if (final.name !== undefined) final = contextStage(df, final.name) ?? final;

  const deps = new Map<Stage, StageDeps>();
  const depsOf = (s: Stage): StageDeps => {
    let d = deps.get(s);
    if (d) return d;
    const base = contextOf(df, s) ? undefined : findStage(df, resolveFrom(s), s.index);
    const reads: Stage[] = [];
    for (const inst of s.instructions) {
      const refs: { ref: string; range: typeof inst.range }[] = [];
      if (inst.kind === 'copy' && inst.from !== undefined) refs.push({ ref: inst.from, range: inst.range });
      if (inst.kind === 'run') for (const m of inst.mounts) if (m.from !== undefined) refs.push({ ref: m.from, range: inst.range });
      for (const r of refs) {
        const st = findStage(df, r.ref);
        if (st === s) {
          throw new DockerfileError(`${inst.kind.toUpperCase()} --from=${r.ref} refers to its own stage`, {
            file,
            range: r.range,
            excerpt: excerptOf(text, r.range),
          });
        }
        if (st) reads.push(st);
      }
    }
    d = { base, reads };
    deps.set(s, d);
    return d;
  };

  const order: Stage[] = [];
  const state = new Map<Stage, 'visiting' | 'done'>();
  const visit = (s: Stage, path: Stage[]): void => {
    const st = state.get(s);
    if (st === 'done') return;
    if (st === 'visiting') {
      const cycle = [...path.slice(path.indexOf(s)), s].map((x) => x.name ?? String(x.index)).join(' -> ');
      throw new DockerfileError(`circular dependency between stages: ${cycle}`, {
        file,
        range: s.from.range,
        excerpt: excerptOf(text, s.from.range),
      });
    }
    state.set(s, 'visiting');
    const d = depsOf(s);
    for (const dep of [...(d.base ? [d.base] : []), ...d.reads]) visit(dep, [...path, s]);
    state.set(s, 'done');
    order.push(s);
  };
  visit(final, []);
  return { order, deps };
}
