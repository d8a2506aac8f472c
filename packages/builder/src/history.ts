import type { CommandLine } from '@tsbuild/dockerfile';

/** Go's `%q` of a []string, which is how Docker writes CMD/ENTRYPOINT in history. */
export function goQuoteList(args: readonly string[]): string {
  return `[${args.map((a) => JSON.stringify(a)).join(' ')}]`;
}

/** The argv a shell-form or exec-form command runs as. */
export function commandArgs(cmd: CommandLine, shell: readonly string[]): string[] {
  return cmd.form === 'exec' ? [...cmd.args] : [...shell, cmd.command];
}

/** `RUN |2 A=1 B=2 /bin/sh -c make`: build args the step saw, then its argv (the layer step adds ` # tsbuild`). */
export function runCreatedBy(args: readonly string[], buildArgs: readonly [string, string][]): string {
  const prefix = buildArgs.length > 0 ? `|${buildArgs.length} ${buildArgs.map(([k, v]) => `${k}=${v}`).join(' ')} ` : '';
  return `RUN ${prefix}${args.join(' ')}`;
}
