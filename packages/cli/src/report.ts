import { isTsbuildError, DockerfileError } from '@tsbuild/errors';
/** Bad flags or arguments, reported by yargs. */
export class CliUsageError extends Error {}

/** The one place an error becomes output: `error: <message>`, a hint, and an exit code. */
export function reportError(e: unknown, debug: boolean): number {
  const out = process.stderr;
  if (e instanceof CliUsageError) {
    out.write(`error: ${e.message}\nhint: see tsbuild --help\n`);
    return 2;
  }
  if (isTsbuildError(e)) {
    out.write(`error: ${e.message}\n`);
    if (e instanceof DockerfileError && e.excerpt) {
      out.write(e.excerpt.split('\n').map((l) => `  | ${l}`).join('\n') + '\n');
    }
    if (e.hint) out.write(`hint: ${e.hint}\n`);
    if (debug && e.stack) out.write(`${e.stack}\n`);
    return e.exitCode;
  }
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err === 'object' && typeof err.code === 'string' && typeof err.path === 'string') {
    // A filesystem error the caller did not map: still name the file, never dump a stack.
    out.write(`error: ${err.code}: ${err.path}: ${err.message.replace(/^[A-Z]+: /, '')}\n`);
    if (debug && err.stack) out.write(`${err.stack}\n`);
    return 1;
  }
  out.write(`error: internal error: ${err instanceof Error ? err.message : String(e)}\n`);
  out.write('hint: this is a bug in tsbuild; rerun with --debug and report the output\n');
  if (debug && err instanceof Error && err.stack) out.write(`${err.stack}\n`);
  return 70;
}
