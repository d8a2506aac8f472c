import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UsageError } from '@tsbuild/errors';
import type { DockerfileError } from '@tsbuild/errors';
import { loadIgnore } from '@tsbuild/builder';
import { checkDockerfile } from '@tsbuild/dockerfile';
import type { CheckOptions, CheckResult, CheckWarning } from '@tsbuild/dockerfile';
import type { Command } from '../command.ts';
import { keyValues } from './common.ts';

const FORMATS = ['text', 'json'] as const;

/**
 * `tsbuild check`: BuildKit's Dockerfile checks (`docker build --check`) without building.
 * Exit 0 with warnings only; 1 on a parse error, or when `error=true` is set and a rule fired.
 */
export const check: Command = {
  command: 'check [context]',
  describe: 'Run the Dockerfile checks of docker build --check without building',
  builder: (y) =>
    y
      .positional('context', { type: 'string', default: '.', describe: 'build context directory (its .dockerignore is read)' })
      .option('file', { alias: 'f', type: 'string', describe: 'Dockerfile path (default CONTEXT/Dockerfile; - reads stdin)' })
      .option('build-arg', { type: 'string', describe: 'build-time variable (K=V); BUILDKIT_DOCKERFILE_CHECK=skip=…;error=true overrides # check=' })
      .option('target', { type: 'string', describe: 'the stage a build would stop at (TARGETSTAGE)' })
      .option('format', { type: 'string', choices: [...FORMATS], default: 'text', describe: 'text, or one JSON document on stdout' }),
  handler: async (args) => {
    const context = String(args.context ?? '.');
    const file = typeof args.file === 'string' ? args.file : join(context, 'Dockerfile');
    let text: string;
    try {
      text = file === '-' ? await readStdin() : await readFile(file, 'utf8');
    } catch (e) {
      throw new UsageError(`cannot read Dockerfile ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    // A Dockerfile from stdin has no `<name>.dockerignore` of its own: only the context's applies.
    const ignore = await loadIgnore(context, file === '-' ? join(context, '-') : file);
    const opts: CheckOptions = {
      file,
      buildArgs: keyValues('build-arg', args['build-arg'], true),
      isIgnored: (p) => ignore.ignores(p),
      ignorePatterns: ignore.patterns,
    };
    if (typeof args.target === 'string' && args.target !== '') opts.target = args.target;
    const result = checkDockerfile(text, opts);
    const code = result.errors.length > 0 ? 1 : 0;
    if (args.format === 'json') process.stdout.write(`${JSON.stringify(jsonReport(file, result, code), null, 2)}\n`);
    else printText(file, result);
    return code;
  },
};

function position(e: DockerfileError): { line: number; column: number } {
  return { line: e.range?.start.line ?? 1, column: e.range?.start.column ?? 1 };
}

function printText(file: string, result: CheckResult): void {
  for (const w of result.warnings) {
    process.stderr.write(`${file}:${w.range.start.line}:${w.range.start.column}: warning: ${w.rule}: ${w.message}\n`);
  }
  for (const e of result.errors) {
    const at = position(e);
    process.stderr.write(`${e.file}:${at.line}:${at.column}: error: ${e.detail}\n`);
    if (e.excerpt) process.stderr.write(e.excerpt.split('\n').map((l) => `  | ${l}`).join('\n') + '\n');
    if (e.hint) process.stderr.write(`hint: ${e.hint}\n`);
  }
  const df = result.dockerfile;
  if (result.errors.length > 0 || !df) return;
  const stages = df.stages.length;
  const steps = df.stages.reduce((n, s) => n + s.instructions.length + 1, 0);
  const warnings = result.warnings.length;
  process.stdout.write(`${file}: ok (${stages} stage${stages === 1 ? '' : 's'}, ${steps} instructions, ${warnings} warning${warnings === 1 ? '' : 's'})\n`);
}

function jsonWarning(file: string, w: CheckWarning): Record<string, unknown> {
  return {
    rule: w.rule,
    message: w.message,
    description: w.description,
    url: w.url,
    file,
    line: w.range.start.line,
    column: w.range.start.column,
    endLine: w.range.end.line,
    endColumn: w.range.end.column,
  };
}

function jsonReport(file: string, result: CheckResult, exitCode: number): Record<string, unknown> {
  return {
    file,
    result: exitCode !== 0 ? 'failed' : result.warnings.length > 0 ? 'warnings' : 'ok',
    exitCode,
    settings: { ...result.settings, from: result.settingsFrom },
    warnings: result.warnings.map((w) => jsonWarning(file, w)),
    errors: result.errors.map((e) => {
      const out: Record<string, unknown> = { message: e.detail, file: e.file, ...position(e) };
      if (e.hint) out.hint = e.hint;
      return out;
    }),
  };
}

export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
