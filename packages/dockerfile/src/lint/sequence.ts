import type { Warning } from '../ast.ts';
import { instructionKeyword } from '../instructions.ts';
import type { Instruction } from '../instructions.ts';
import { RULES } from './rules.ts';

/**
 * What a stage has seen so far that the order-dependent rules need: whether a SHELL is set (its
 * own or its base stage's), and the last CMD, ENTRYPOINT and HEALTHCHECK.
 */
export interface SequenceState {
  shell: boolean;
  cmd?: Instruction;
  entrypoint?: Instruction;
  healthcheck?: Instruction;
}

/** A stage built on another stage keeps its SHELL but not its CMD/ENTRYPOINT/HEALTHCHECK history. */
export function childSequenceState(base: SequenceState | undefined): SequenceState {
  return { shell: base?.shell ?? false };
}

/**
 * MultipleInstructionsDisallowed and JSONArgsRecommended for one instruction, in stage order.
 * The repeated instruction is reported at the earlier one, which is the one that has no effect.
 * `governedBy` is the instruction whose `# check=` comment applies (BuildKit: the current one).
 */
export function sequenceStep(
  inst: Instruction,
  state: SequenceState,
  emit: (warning: Warning, governedBy: Instruction) => void,
): void {
  switch (inst.kind) {
    case 'shell':
      state.shell = true;
      return;
    case 'cmd':
    case 'entrypoint':
    case 'healthcheck': {
      const keyword = instructionKeyword(inst.original, inst.kind.toUpperCase());
      const previous = state[inst.kind];
      if (previous) {
        const r = RULES.MultipleInstructionsDisallowed;
        emit({ rule: r.name, message: r.format(keyword), range: previous.range }, inst);
      }
      state[inst.kind] = inst;
      // With a SHELL the shell form is a deliberate choice (BuildKit's reading of the rule).
      if (inst.kind !== 'healthcheck' && inst.cmd.form === 'shell' && !state.shell) {
        const r = RULES.JSONArgsRecommended;
        emit({ rule: r.name, message: r.format(keyword), range: inst.range }, inst);
      }
      return;
    }
    default:
      return;
  }
}
