/**
 * Runs the stages a build needs: each stage once (a stage other stages read runs in parallel with
 * them), its FROM first, then its steps in order, each step dispatched to its instruction family
 * under steps/. Progress events are emitted here; what a step does and how it is keyed live in
 * its family's file.
 */
import type { Instruction, Stage } from '@tsbuild/dockerfile';
import type { Platform } from '@tsbuild/oci';
import { findStage } from './plan.ts';
import type { StageDeps } from './plan.ts';
import type { BuildSession } from './session.ts';
import type { ImageState } from './state.ts';
import { configStep } from './steps/config.ts';
import { copyStep } from './steps/copy.ts';
import type { FromResolver, Source } from './steps/from.ts';
import { StepKit, summary } from './steps/kit.ts';
import type { StageEnv, StepCtx, StepResult } from './steps/kit.ts';
import { runStep } from './steps/run.ts';
import { workdirStep } from './steps/workdir.ts';

/** What every stage of one build shares. */
export interface StagesEnv extends Omit<StageEnv, 'stageLabel' | 'stageResult' | 'file' | 'text' | 'escapeToken'> {
  src: Source;
  from: FromResolver;
  deps: ReadonlyMap<Stage, StageDeps>;
  platform: Platform;
}

/** Runs stages on demand, each at most once; `run(s)` resolves to the stage's final state. */
export class StageScheduler {
  private readonly results = new Map<Stage, Promise<ImageState>>();
  private readonly s: BuildSession;

  constructor(private readonly env: StagesEnv) {
    this.s = env.session;
  }

  run(stage: Stage): Promise<ImageState> {
    let p = this.results.get(stage);
    if (!p) {
      p = this.runStage(stage);
      this.results.set(stage, p);
    }
    return p;
  }

  /** Waits for every stage started so far, whatever its outcome (before the store is left alone). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.results.values()]);
  }

  private async runStage(stage: Stage): Promise<ImageState> {
    const { src, from } = this.env;
    const deps = this.env.deps.get(stage);
    const label = stage.name ?? `stage-${stage.index}`;
    const kit = new StepKit({
      ...this.env,
      file: src.file,
      text: src.text,
      escapeToken: src.df.escapeToken,
      stageLabel: label,
      stageResult: (ref) => {
        const st = findStage(src.df, ref);
        return st ? this.run(st) : undefined;
      },
    });
    // Start what this stage reads in parallel with its own base.
    for (const r of deps?.reads ?? []) void this.run(r).catch(() => {});
    const total = stage.instructions.length + 1;
    const id = this.s.nextStepId();
    const t0 = Date.now();
    const emit = this.s.opts.emit;
    emit({ type: 'step-start', time: t0, id, name: `[${label} 1/${total}] FROM ${from.image(stage)}`, stage: label, index: 1, total });
    let base: { state: ImageState; triggers: Instruction[] };
    try {
      base = await from.baseState(this.s, stage, deps?.base ? await this.run(deps.base) : undefined, this.env.platform, kit);
    } catch (e) {
      emit({ type: 'step-error', time: Date.now(), id, message: e instanceof Error ? e.message : String(e) });
      throw e;
    }
    emit({ type: 'step-done', time: Date.now(), id, cached: true, durationMs: Date.now() - t0 });
    const steps = [...base.triggers, ...stage.instructions];
    return runSteps(kit, base.state, steps, Math.max(total, steps.length + 1));
  }
}

/** Runs a stage's instructions over its base state, one after the other; every step is cached by its key. */
async function runSteps(kit: StepKit, state: ImageState, steps: Instruction[], total: number): Promise<ImageState> {
  const s = kit.s;
  let cur = state;
  for (const [i, inst] of steps.entries()) {
    s.checkAbort();
    const id = s.nextStepId();
    const start = Date.now();
    s.opts.emit({ type: 'step-start', time: start, id, name: `[${kit.env.stageLabel} ${i + 2}/${total}] ${summary(inst)}`, stage: kit.env.stageLabel, index: i + 2, total });
    try {
      const ctx: StepCtx = { id, inst, tail: [] };
      const r = await step(kit, cur, ctx);
      const miss = await s.explain?.step(`${kit.env.stageLabel}/${i + 2}`, {
        key: r.state.key, parent: cur.key, instruction: inst.original, inputs: ctx.inputs, cached: r.cached, noCache: s.opts.noCache,
      });
      const layer = r.state.layers.length > cur.layers.length ? r.state.layers.at(-1) : undefined;
      s.steps.push({ stage: kit.env.stageLabel, instruction: inst.original, cacheHit: r.cached, cacheKey: r.state.key, ...(layer ? { layer: { digest: layer.digest, mediaType: layer.mediaType, size: layer.size } } : {}) });
      cur = r.state;
      s.opts.emit({ type: 'step-done', time: Date.now(), id, cached: r.cached, durationMs: Date.now() - start, ...layerSize(r), ...(miss ? { miss } : {}) });
    } catch (e) {
      const err = kit.wrap(inst, e);
      s.opts.emit({ type: 'step-error', time: Date.now(), id, message: err instanceof Error ? err.message : String(err) });
      throw err;
    }
  }
  return cur;
}

function layerSize(r: StepResult): { layerSize?: number; usage?: { cpu_seconds: number; memory_peak_bytes?: number } } {
  const out: { layerSize?: number; usage?: { cpu_seconds: number; memory_peak_bytes?: number } } = {};
  if (r.layerSize !== undefined) out.layerSize = r.layerSize;
  if (r.usage) {
    out.usage = { cpu_seconds: Math.round(r.usage.cpuSeconds * 1000) / 1000 };
    if (r.usage.memoryPeakBytes !== undefined) out.usage.memory_peak_bytes = r.usage.memoryPeakBytes;
  }
  return out;
}

/** The dispatch: each instruction family has its own file under steps/. */
function step(kit: StepKit, state: ImageState, ctx: StepCtx): Promise<StepResult> {
  const inst = ctx.inst;
  switch (inst.kind) {
    case 'run':
      return runStep(kit, state, inst, ctx);
    case 'copy':
    case 'add':
      return copyStep(kit, state, inst, ctx);
    case 'workdir':
      return workdirStep(kit, state, inst, ctx);
    case 'from':
      throw kit.fail(inst, 'FROM cannot be used here');
    default:
      return configStep(kit, state, inst, ctx);
  }
}
