/** How check results are shown, by `tsbuild check` and `tsbuild build --check` alike. */
import type { DockerfileError } from '@tsbuild/errors';
import { checkBuild } from '@tsbuild/builder';
import type { CheckBuildOptions } from '@tsbuild/builder';
import type { CheckResult, CheckWarning } from '@tsbuild/dockerfile';

/**
 * Runs the Dockerfile checks of a build and prints them: `FILE:LINE:COL: warning: RULE: message`
 * on stderr (or one JSON document on stdout). Exit code 0 with warnings only; 1 on a parse error,
 * or when `error=true` is set and a rule fired.
 */
export async function runChecks(opts: CheckBuildOptions, format: 'text' | 'json'): Promise<number> {
  const c = await checkBuild(opts);
  const code = c.result.errors.length > 0 ? 1 : 0;
  if (format === 'json') process.stdout.write(`${JSON.stringify(jsonReport(c.shownFile, c.result, code), null, 2)}\n`);
  else printText(c.shownFile, c.result);
  return code;
}

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
