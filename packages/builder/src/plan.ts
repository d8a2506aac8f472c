import { DockerfileError, UsageError, excerptOf } from '@tsbuild/errors';
import type { Dockerfile, Stage } from '@tsbuild/dockerfile';

/** How one stage refers to another: by `AS` name (case-insensitive) or by index. */
export function findStage(df: Dockerfile, ref: string, before?: number): Stage | undefined {
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

  const deps = new Map<Stage, StageDeps>();
  const depsOf = (s: Stage): StageDeps => {
    let d = deps.get(s);
    if (d) return d;
    const base = findStage(df, resolveFrom(s), s.index);
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
