import { DockerfileError, excerptOf } from '@tsbuild/errors';
import type { DockerfileErrorOptions, SourceRange } from '@tsbuild/errors';
import type { ParseResult, Warning } from './ast.ts';
import { parseInstruction } from './instructions.ts';
import type { ArgInstruction, FromInstruction, Instruction } from './instructions.ts';
import { parse } from './parser.ts';
import { childSequenceState, sequenceStep } from './lint/sequence.ts';
import type { SequenceState } from './lint/sequence.ts';

/** One build stage: a FROM and the instructions up to the next FROM. */
export interface Stage {
  /** The lower-cased `AS` name, if any. */
  name?: string;
  /** Position among the stages (what `COPY --from=0` refers to). */
  index: number;
  from: FromInstruction;
  instructions: Instruction[];
  /** From the FROM line to the stage's last instruction. */
  range: SourceRange;
}

export interface Dockerfile {
  stages: Stage[];
  /** ARGs before the first FROM: visible to FROM lines, and to stages that redeclare them. */
  globalArgs: ArgInstruction[];
  warnings: Warning[];
  escapeToken: string;
  directives: Record<string, string>;
}

export interface ParseDockerfileOptions {
  /** Named in errors; default 'Dockerfile'. */
  file?: string;
}

/** Parses Dockerfile text into typed stages. Every error is a DockerfileError naming file, line and column. */
export function parseDockerfile(text: string, opts: ParseDockerfileOptions = {}): Dockerfile {
  const file = opts.file ?? 'Dockerfile';
  let result: ParseResult;
  try {
    result = parse(text);
  } catch (e) {
    if (e instanceof DockerfileError) throw e.withFile(file, text);
    throw e;
  }
  return stagesFromAst(result, { file, text });
}

/** Groups an already parsed AST into stages (for callers that parse once and reuse the AST). */
export function stagesFromAst(result: ParseResult, opts: { file?: string; text?: string } = {}): Dockerfile {
  const file = opts.file ?? 'Dockerfile';
  const warnings: Warning[] = [...result.warnings];
  const ctx = opts.text === undefined ? { file, warnings } : { file, text: opts.text, warnings };
  const fail = (message: string, range: SourceRange, original: string, hint?: string): never => {
    const options: DockerfileErrorOptions = {
      file,
      range,
      excerpt: opts.text !== undefined ? excerptOf(opts.text, range) : original,
    };
    if (hint !== undefined) options.hint = hint;
    throw new DockerfileError(message, options);
  };

  const children = result.ast.children;
  if (children.length === 0) {
    fail('the Dockerfile has no instructions', result.ast.range, '', 'a Dockerfile starts with FROM <image>');
  }
  const stages: Stage[] = [];
  const globalArgs: ArgInstruction[] = [];
  const names = new Map<string, FromInstruction>();
  for (const node of children) {
    const inst = parseInstruction(node, ctx);
    if (inst.kind === 'from') {
      if (inst.stageName !== undefined) {
        const previous = names.get(inst.stageName);
        if (previous) {
          fail(
            `duplicate stage name ${JSON.stringify(inst.stageName)} (first defined on line ${previous.range.start.line})`,
            inst.range,
            inst.original,
          );
        }
        names.set(inst.stageName, inst);
      }
      const stage: Stage = { index: stages.length, from: inst, instructions: [], range: inst.range };
      if (inst.stageName !== undefined) stage.name = inst.stageName;
      stages.push(stage);
      continue;
    }
    const current = stages[stages.length - 1];
    if (!current) {
      if (inst.kind === 'arg') {
        globalArgs.push(inst);
        continue;
      }
      fail(
        `no FROM before ${inst.kind.toUpperCase()}: only ARG may come before the first FROM (no build stage in current context)`,
        inst.range,
        inst.original,
        'start the build stage with FROM <image>',
      );
      continue;
    }
    current.instructions.push(inst);
    current.range = { start: current.range.start, end: inst.range.end };
  }
  if (stages.length === 0) {
    const last = children[children.length - 1];
    fail('no FROM instruction: the Dockerfile defines no build stage', last?.range ?? result.ast.range, last?.original ?? '', 'add FROM <image>');
  }
  lintStages(stages, warnings);
  return { stages, globalArgs, warnings, escapeToken: result.escapeToken, directives: { ...result.directives } };
}

/**
 * The order-dependent rules (MultipleInstructionsDisallowed, JSONArgsRecommended) per stage. The
 * base is matched as written here; `checkDockerfile` matches it after ARG expansion.
 */
function lintStages(stages: Stage[], warnings: Warning[]): void {
  const finalState = new Map<string, SequenceState>();
  for (const stage of stages) {
    const state = childSequenceState(finalState.get(stage.from.image));
    for (const inst of stage.instructions) sequenceStep(inst, state, (w) => warnings.push(w));
    if (stage.name !== undefined) finalState.set(stage.name, state);
  }
}
