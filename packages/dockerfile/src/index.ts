export { parse } from './parser.ts';
export { dumpAst, dumpNode } from './dump.ts';
export type { Ast, Heredoc, Node, ParseResult, Warning } from './ast.ts';
