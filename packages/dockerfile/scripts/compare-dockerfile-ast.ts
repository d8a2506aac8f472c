/*
 * Measures the `dockerfile-ast` npm package against BuildKit's parser vectors, to back the
 * decision recorded in ../README.md. Run from the repository root:
 *
 *   node --import tsx packages/dockerfile/scripts/compare-dockerfile-ast.ts
 *
 * The reference is tsbuild's own AST, which dumps identically to every BuildKit `result` file
 * (see src/conformance.test.ts). Each instruction is compared at the level of meaning, not
 * syntax: keyword, flags, and arguments as the build would use them (JSON strings decoded,
 * ENV/LABEL/ARG values after quote removal, shell-form text with continuations joined).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { DockerfileParser, Healthcheck, JSONInstruction, ModifiableInstruction, Onbuild, PropertyInstruction } from 'dockerfile-ast';
import type { Instruction } from 'dockerfile-ast';
import { parse } from '../src/parser.ts';
import { processWord } from '../src/shell.ts';
import type { Node } from '../src/ast.ts';

const dir = fileURLToPath(
  new URL('../../../../shared/conformance/buildkit/frontend/dockerfile/parser/testfiles/', import.meta.url),
);

/** A comparable rendering of one instruction. */
type Shape = string;

function values(n: Node | undefined): string[] {
  const out: string[] = [];
  for (let c = n; c; c = c.next) out.push(c.value);
  return out;
}

/** The value a build would use; BuildKit refuses the build where the lexer fails. */
function unquote(word: string, escapeToken: string): string {
  try {
    return processWord(word, {}, { skipUnset: true, escapeToken });
  } catch {
    return '<build error>';
  }
}

/** Instructions whose words go through the shell-word lexer before use (quotes, escapes removed). */
const EXPANDED = new Set(['from', 'expose', 'add', 'copy', 'volume', 'workdir', 'user', 'stopsignal']);

function referenceShape(n: Node, escapeToken: string): Shape {
  const kw = n.value;
  const flags = n.flags;
  let args: string[];
  if (kw === 'onbuild') {
    const trigger = n.next?.children[0];
    args = [trigger ? referenceShape(trigger, escapeToken) : ''];
  } else if (kw === 'env' || kw === 'label') {
    const v = values(n.next);
    args = [];
    for (let i = 0; i + 1 < v.length; i += 3) args.push(`${unquote(v[i] ?? '', escapeToken)}=${unquote(v[i + 1] ?? '', escapeToken)}`);
  } else if (kw === 'arg' || (EXPANDED.has(kw) && n.attributes.json !== true)) {
    args = values(n.next).map((w) => unquote(w, escapeToken));
  } else {
    args = values(n.next);
  }
  return JSON.stringify([kw, flags, n.attributes.json === true, args]);
}

function candidateShape(ins: Instruction): Shape {
  const kw = ins.getKeyword().toLowerCase();
  const flags = ins instanceof ModifiableInstruction ? ins.getFlags().map((f) => f.toString()) : [];
  let json = false;
  let args: string[];
  if (ins instanceof Onbuild) {
    const trigger = ins.getTriggerInstruction();
    args = [trigger ? candidateShape(trigger) : ''];
  } else if (ins instanceof PropertyInstruction && (kw === 'env' || kw === 'label')) {
    args = ins.getProperties().map((p) => `${p.getName()}=${p.getValue() ?? ''}`);
  } else if (kw === 'arg' && ins instanceof PropertyInstruction) {
    args = ins.getProperties().map((p) => (p.getAssignmentOperator() ? `${p.getName()}=${p.getValue() ?? ''}` : p.getName()));
  } else if (ins instanceof JSONInstruction && ins.getOpeningBracket() && ins.getClosingBracket()) {
    json = true;
    args = ins.getJSONStrings().map((s) => s.getJSONValue());
  } else if (ins instanceof Healthcheck) {
    const sub = ins.getSubcommand();
    const content = ins.getArgumentsContent() ?? '';
    args = sub ? [sub.getValue(), content.slice(content.indexOf(sub.getValue()) + sub.getValue().length).trim()] : [];
    if (args[1] === '') args.pop();
  } else if (['run', 'cmd', 'entrypoint', 'shell', 'user', 'workdir', 'maintainer', 'stopsignal'].includes(kw)) {
    const content = ins.getArgumentsContent();
    args = content === null ? [] : [content];
  } else {
    args = ins.getArguments().map((a) => a.getValue());
  }
  return JSON.stringify([kw, flags, json, args]);
}

interface Miss {
  file: string;
  want: Shape;
  got: Shape;
}

const files = readdirSync(dir).sort();
let filesRight = 0;
let keywordFilesRight = 0;
let instructionsRight = 0;
let instructionsTotal = 0;
const misses: Miss[] = [];

for (const name of files) {
  const text = readFileSync(`${dir}${name}/Dockerfile`, 'utf8');
  const ref = parse(text);
  const want = ref.ast.children.map((n) => referenceShape(n, ref.escapeToken));
  const wantKw = ref.ast.children.map((n) => n.value);
  let got: Shape[] = [];
  let gotKw: string[] = [];
  try {
    const ins = DockerfileParser.parse(text).getInstructions();
    got = ins.map(candidateShape);
    gotKw = ins.map((i) => i.getKeyword().toLowerCase());
  } catch (err) {
    misses.push({ file: name, want: 'parse', got: `threw ${String(err)}` });
  }
  if (JSON.stringify(wantKw) === JSON.stringify(gotKw)) keywordFilesRight++;
  let right = 0;
  for (let i = 0; i < want.length; i++) {
    if (want[i] === got[i]) right++;
    else misses.push({ file: name, want: want[i] ?? '', got: got[i] ?? '(missing)' });
  }
  instructionsRight += right;
  instructionsTotal += want.length;
  if (right === want.length && got.length === want.length) filesRight++;
}

console.log(`dockerfile-ast ${'0.7.1'} against ${files.length} BuildKit testfiles:`);
console.log(`  files with the same instruction keywords:   ${keywordFilesRight}/${files.length}`);
console.log(`  files with every instruction right:         ${filesRight}/${files.length}`);
console.log(`  instructions right (keyword+flags+args):    ${instructionsRight}/${instructionsTotal}`);
console.log('mismatches:');
for (const m of misses) console.log(`  ${m.file}\n    want ${m.want}\n    got  ${m.got}`);

// Probes for what the vectors barely exercise.
const probes: Array<[string, string, () => string]> = [
  ['JSON \\u escape', 'CMD ["\\u0041"]', () => {
    const i = DockerfileParser.parse('CMD ["\\u0041"]').getInstructions()[0];
    return i instanceof JSONInstruction ? JSON.stringify(i.getJSONStrings().map((s) => s.getJSONValue())) : 'no JSON';
  }],
  ['heredoc body', 'RUN <<-EOF / \\tcat $A / \\tEOF', () => {
    const i = DockerfileParser.parse('FROM x\nRUN <<-EOF\n\tcat $A\n\tEOF\n').getInstructions()[1];
    return JSON.stringify({ args: i?.getArguments().map((a) => a.getValue()) });
  }],
  ['quoted heredoc', "RUN <<'EOF'", () => {
    const i = DockerfileParser.parse("FROM x\nRUN <<'EOF'\n$A\nEOF\n").getInstructions()[1];
    return JSON.stringify({ args: i?.getArguments().map((a) => a.getValue()) });
  }],
  ['variable expansion', 'ARG B=1 / FROM img:${B:-2}${C:+x}', () => {
    const i = DockerfileParser.parse('ARG B=1\nFROM img:${B:-2}${C:+x}\n').getInstructions()[1];
    return JSON.stringify(i?.getExpandedArguments().map((a) => a.getValue()));
  }],
];
console.log('probes (tsbuild: JSON ["A"]; heredoc content "cat $A\\n" expand=true / "$A\\n" expand=false; shell.ts expands to img:1):');
for (const [label, input, run] of probes) console.log(`  ${label}: ${input} -> ${run()}`);
