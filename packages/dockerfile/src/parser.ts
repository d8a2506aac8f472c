import { DockerfileError, excerptOf } from '@tsbuild/errors';
import type { DockerfileErrorOptions, SourceRange } from '@tsbuild/errors';
import type { Ast, Node, ParseResult, Warning } from './ast.ts';
import { DirectiveError, DirectiveScanner } from './directives.ts';
import { leadingSpaceWidth, trimLeftSpace, trimSpace } from './gotext.ts';
import { canContainHeredoc, heredocsFromLine, readHeredocBody } from './heredoc.ts';
import { LineError, nodeFromLine } from './line-parsers.ts';
import { isComment, physicalLines, trimContinuation, trimNewline } from './lines.ts';
import { RULES } from './lint/rules.ts';

/*
 * Text → AST, reproducing BuildKit's frontend/dockerfile/parser behaviour: the same line joining,
 * comment and directive handling, per-instruction argument splitting and JSON fallback, so that
 * the AST dumps byte-for-byte like BuildKit's golden `result` files. Directives, line handling,
 * heredocs and the per-instruction argument parsers each have their own module; this one drives
 * them over the text and attaches source ranges.
 */

/**
 * Parses a Dockerfile into BuildKit's AST shape. Throws DockerfileError (with a range and an
 * excerpt) for text BuildKit's parser refuses; never throws anything else.
 */
export function parse(text: string): ParseResult {
  const lines = physicalLines(text);
  if (lines.length > 0 && lines[0]?.startsWith('\uFEFF')) lines[0] = lines[0].slice(1);

  const directives = new DirectiveScanner();
  let escape = '\\';
  const warnings: Warning[] = [];
  const children: Node[] = [];
  let comments: string[] = [];

  const fail = (message: string, startLine: number, endLine: number, hint?: string): never => {
    const last = trimNewline(lines[endLine - 1] ?? '');
    const range: SourceRange = {
      start: { line: startLine, column: 1 },
      end: { line: endLine, column: last.length + 1 },
    };
    const options: DockerfileErrorOptions = {
      range,
      excerpt: excerptOf(text, range),
    };
    if (hint !== undefined) options.hint = hint;
    throw new DockerfileError(message, options);
  };

  /** Applies directive handling to one physical line; returns the line without newline. */
  const processLine = (raw: string, lineNo: number, stripLeft: boolean): { line: string; directive: boolean } => {
    let line = trimNewline(raw);
    if (stripLeft) line = trimLeftSpace(line);
    let directive = false;
    try {
      const found = directives.scan(line);
      if (found) {
        directive = true;
        if (found.name === 'escape') {
          if (found.value !== '\\' && found.value !== '`') {
            const shown = found.value.length > 20 ? `${found.value.slice(0, 20)}…` : found.value;
            fail(`invalid escape token '${shown}' does not match \` or \\`, lineNo, lineNo,
              'use # escape=\\ or # escape=`');
          }
          escape = found.value;
        }
      }
    } catch (err) {
      if (err instanceof DirectiveError) fail(err.message, lineNo, lineNo);
      throw err;
    }
    return { line: isComment(line) ? '' : line, directive };
  };

  let i = 0;
  while (i < lines.length) {
    const raw = lines[i] ?? '';
    const lineNo = i + 1;
    i++;
    if (isComment(raw)) {
      // BuildKit drops only the first character, even when the '#' is indented
      const comment = trimSpace(raw.slice(1));
      if (comment === '') comments = [];
      else comments.push(comment);
    }
    const first = processLine(raw, lineNo, true);
    if (first.directive) comments.pop();

    const startLine = lineNo;
    const startColumn = leadingSpaceWidth(raw) + 1;
    let buf = first.line;
    let continued = trimContinuation(buf, escape);
    if (continued === undefined && buf === '') continue;
    if (continued !== undefined) buf = continued;

    let emptyContinuation = false;
    while (continued !== undefined && i < lines.length) {
      const rawNext = lines[i] ?? '';
      const nextNo = i + 1;
      i++;
      const { line } = processLine(rawNext, nextNo, false);
      if (isComment(rawNext)) continue;
      if (trimLeftSpace(line) === '') {
        emptyContinuation = true;
        continue;
      }
      continued = trimContinuation(line, escape);
      buf += continued ?? line;
    }
    let endLine = i;

    if (emptyContinuation) {
      const range: SourceRange = { start: { line: endLine, column: 1 }, end: { line: endLine, column: 1 } };
      // BuildKit's parser words it this way; the check itself says RULES.NoEmptyContinuation.format().
      const rule = RULES.NoEmptyContinuation;
      warnings.push({
        message: `Empty continuation line found in: ${buf}`,
        rule: rule.name,
        range,
        detail: `${rule.description}; ${rule.url}`,
      });
    }

    let child: Node;
    try {
      child = nodeFromLine(buf, { escape, depth: 0 }, comments);
    } catch (err) {
      if (err instanceof LineError) return fail(err.message, startLine, endLine, err.hint);
      throw err;
    }

    if (buf.includes('<<') && canContainHeredoc(child)) {
      for (const doc of heredocsFromLine(buf)) {
        const body = readHeredocBody(lines, i, doc);
        i = body.next;
        endLine = i;
        if (!body.terminated) {
          fail(`unterminated heredoc ${doc.name}`, startLine, endLine,
            `end the heredoc with a line containing only ${doc.name}`);
        }
        child.heredocs.push(doc);
      }
    }

    const last = trimNewline(lines[endLine - 1] ?? '');
    const range: SourceRange = {
      start: { line: startLine, column: startColumn },
      end: { line: endLine, column: last.length + 1 },
    };
    setRange(child, range);
    children.push(child);
    comments = [];
  }

  const firstChild = children[0];
  const lastChild = children[children.length - 1];
  if (!firstChild || !lastChild) {
    const at = Math.max(1, lines.length);
    return fail('file with no instructions', at, at, 'a Dockerfile needs at least a FROM instruction');
  }

  const ast: Ast = {
    children,
    range: { start: firstChild.range.start, end: lastChild.range.end },
  };
  return { ast, escapeToken: escape, warnings, directives: { ...directives.values } };
}

/** Gives every token of an instruction the instruction's range. */
function setRange(top: Node, range: SourceRange): void {
  const stack: Node[] = [top];
  while (stack.length > 0) {
    const n = stack.pop();
    if (!n) break;
    n.range = range;
    if (n.next) stack.push(n.next);
    stack.push(...n.children);
  }
}
