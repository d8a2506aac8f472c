import type { Node } from '../ast.ts';
import { instructionKeyword } from '../instructions.ts';
import type { ArgInstruction, FromInstruction, Instruction } from '../instructions.ts';
import type { Reporter } from './report.ts';
import { wordPattern } from './report.ts';
import { RULES } from './rules.ts';

/** An instruction with the AST node it came from (its comments govern its findings). */
export interface Entry<I extends Instruction = Instruction> {
  node: Node;
  inst: I;
}

export interface LintStage {
  from: Entry<FromInstruction>;
  commands: Entry[];
}

export interface Grouped {
  metaArgs: Entry<ArgInstruction>[];
  stages: LintStage[];
}

/**
 * Groups instructions into stages as BuildKit does; undefined when an instruction other than ARG
 * comes before the first FROM (the build fails there, and BuildKit checks nothing further).
 */
export function group(entries: readonly Entry[]): Grouped | undefined {
  const out: Grouped = { metaArgs: [], stages: [] };
  for (const e of entries) {
    const inst = e.inst;
    if (inst.kind === 'from') {
      out.stages.push({ from: { node: e.node, inst }, commands: [] });
      continue;
    }
    const current = out.stages[out.stages.length - 1];
    if (current) current.commands.push(e);
    else if (inst.kind === 'arg') out.metaArgs.push({ node: e.node, inst });
    else return undefined;
  }
  return out;
}

/** The stage name word as written after AS. */
function writtenStageName(node: Node): string | undefined {
  const args: string[] = [];
  for (let n = node.next; n; n = n.next) args.push(n.value);
  return args.length === 3 ? args[2] : undefined;
}

const RESERVED_STAGE_NAMES = new Set(['context', 'scratch']);

/** ReservedStageName and DuplicateStageName (file-wide settings). */
export function checkStageNames(stages: readonly LintStage[], r: Reporter): void {
  const seen = new Set<string>();
  for (const { from } of stages) {
    const name = from.inst.stageName;
    if (name === undefined) continue;
    const at = r.word(from.inst.range, wordPattern(writtenStageName(from.node) ?? name), true);
    if (RESERVED_STAGE_NAMES.has(name)) r.report('ReservedStageName', RULES.ReservedStageName.format(name), at);
    if (seen.has(name)) r.report('DuplicateStageName', RULES.DuplicateStageName.format(name), at);
    seen.add(name);
  }
}

const consistent = (s: string): boolean => s === s.toLowerCase() || s === s.toUpperCase();

/**
 * ConsistentInstructionCasing: every keyword in the stages (not the ARGs before the first FROM)
 * in one case, that of the majority (a tie counts as uppercase), and none in mixed case.
 */
export function checkInstructionCasing(stages: readonly LintStage[], r: Reporter): void {
  const all: Instruction[] = [];
  for (const s of stages) all.push(s.from.inst, ...s.commands.map((c) => c.inst));
  const keywords = all.map((i) => instructionKeyword(i.original, i.kind));
  let lower = 0;
  let upper = 0;
  for (const k of keywords) {
    if (!consistent(k)) continue;
    if (k === k.toLowerCase()) lower++;
    else upper++;
  }
  const majorityLower = lower > upper;
  all.forEach((inst, i) => {
    const k = keywords[i] ?? '';
    let casing: 'lowercase' | 'uppercase' | undefined;
    if (majorityLower && k.toLowerCase() !== k) casing = 'lowercase';
    else if (!majorityLower && k.toUpperCase() !== k) casing = 'uppercase';
    if (casing === undefined) return;
    const start = inst.range.start;
    const at = { start, end: { line: start.line, column: start.column + k.length } };
    r.report('ConsistentInstructionCasing', RULES.ConsistentInstructionCasing.format(k, casing), at);
  });
}

/**
 * InvalidDefinitionDescription (experimental): the comment right above `FROM … AS name` or an
 * ARG documents it (`--call=outline`) when it starts with the name; any other comment there
 * reads as a broken description.
 */
export function checkDescription(e: Entry, r: Reporter): void {
  const comments = e.node.prevComment;
  const last = comments[comments.length - 1];
  if (last === undefined) return;
  let instruction: 'ARG' | 'FROM';
  let keys: string[];
  if (e.inst.kind === 'from') {
    if (e.inst.stageName === undefined) return;
    instruction = 'FROM';
    keys = [e.inst.stageName];
  } else if (e.inst.kind === 'arg') {
    instruction = 'ARG';
    keys = e.inst.args.map((a) => a.key);
  } else {
    return;
  }
  if (keys.length === 0 || keys.includes(last.split(' ')[0] ?? '')) return;
  const example = keys.length > 1 ? '<arg_key>' : (keys[0] ?? '');
  r.report('InvalidDefinitionDescription', RULES.InvalidDefinitionDescription.format(instruction, example), e.inst.range, e.node);
}
