import type { SourceRange } from '@tsbuild/errors';
import type { RuleName } from './lint/rules.ts';

/** A heredoc attached to a RUN, COPY or ADD line (`<<EOF`, `<<-EOF`, `<<'EOF'`). */
export interface Heredoc {
  /** The delimiter word, without quotes. */
  name: string;
  /** The body; for `<<-` leading tabs are already stripped. Ends with a newline when non-empty. */
  content: string;
  /** False when the delimiter was quoted: no variable expansion in the body. */
  expand: boolean;
  /** True for `<<-`. */
  chomp: boolean;
}

/**
 * One parsed line (an instruction) or one token inside it, shaped like BuildKit's parser.Node so
 * that `dumpAst` reproduces BuildKit's `result` files exactly.
 * A top-level instruction node has `value` = lower-cased keyword, `next` = the chain of argument
 * tokens, `flags` = the raw `--x=y` flags, `original` = the full source text of the instruction.
 * For ONBUILD, `next.children[0]` is the trigger instruction node.
 */
export interface Node {
  value: string;
  next: Node | undefined;
  children: Node[];
  heredocs: Heredoc[];
  /** `json` is true when the arguments came from a valid JSON array (exec form). */
  attributes: { json?: boolean };
  original: string;
  flags: string[];
  /** 1-based lines/columns; on top-level nodes this spans the whole instruction. */
  range: SourceRange;
  /** Comments directly above the instruction. */
  prevComment: string[];
}

/**
 * A check rule that fired while parsing (see lint/rules.ts for the rules). `checkDockerfile` turns
 * these into CheckWarnings and applies the `# check=` settings; parsing alone reports them all.
 */
export interface Warning {
  message: string;
  /** BuildKit's rule name, e.g. 'NoEmptyContinuation'. */
  rule: RuleName;
  range: SourceRange;
  /** Documentation URL or hint; optional. */
  detail?: string;
}

/** The root: `children` are the instructions in order. */
export interface Ast {
  children: Node[];
  range: SourceRange;
}

export interface ParseResult {
  ast: Ast;
  escapeToken: string;
  warnings: Warning[];
  /** Parser directives found before the first instruction (lower-cased keys). */
  directives: Record<string, string>;
}
