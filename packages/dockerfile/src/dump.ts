import type { Ast, Node } from './ast.ts';
import { goQuote, trimSpace } from './gotext.ts';

/*
 * BuildKit's Node.Dump(): one s-expression per instruction, keyword lower-cased, flags as a Go
 * %q string slice, argument tokens Go-quoted, sub-instructions (ONBUILD) in parentheses.
 */

export function dumpNode(node: Node): string {
  let out = node.value.toLowerCase();
  if (node.flags.length > 0) out += ` [${node.flags.map(goQuote).join(' ')}]`;
  for (const child of node.children) out += `(${dumpNode(child)})\n`;
  for (let n = node.next; n !== undefined; n = n.next) {
    out += ' ' + (n.children.length > 0 ? dumpNode(n) : goQuote(n.value));
  }
  return trimSpace(out);
}

/** The whole file: one line per instruction, no trailing newline. */
export function dumpAst(ast: Ast): string {
  let out = '';
  for (const child of ast.children) out += `(${dumpNode(child)})\n`;
  return trimSpace(out);
}
