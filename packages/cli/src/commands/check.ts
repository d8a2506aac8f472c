import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DockerfileError, UsageError } from '@tsbuild/errors';
import { parseDockerfile } from '@tsbuild/dockerfile';
import type { Command } from '../command.ts';

/** `tsbuild check`: parse and validate a Dockerfile, print warnings and errors with their line. */
export const check: Command = {
  command: 'check [context]',
  describe: 'Parse and validate a Dockerfile without building',
  builder: (y) =>
    y
      .positional('context', { type: 'string', default: '.', describe: 'build context directory' })
      .option('file', { alias: 'f', type: 'string', describe: 'Dockerfile path (default CONTEXT/Dockerfile)' }),
  handler: async (args) => {
    const file = typeof args.file === 'string' ? args.file : join(String(args.context ?? '.'), 'Dockerfile');
    let text: string;
    try {
      text = file === '-' ? await readStdin() : await readFile(file, 'utf8');
    } catch (e) {
      throw new UsageError(`cannot read Dockerfile ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    try {
      const df = parseDockerfile(text, { file });
      for (const w of df.warnings) {
        process.stderr.write(`${file}:${w.range.start.line}:${w.range.start.column}: warning: ${w.message} [${w.rule}]\n`);
      }
      const stages = df.stages.length;
      const steps = df.stages.reduce((n, s) => n + s.instructions.length + 1, 0);
      process.stdout.write(`${file}: ok (${stages} stage${stages === 1 ? '' : 's'}, ${steps} instructions, ${df.warnings.length} warning${df.warnings.length === 1 ? '' : 's'})\n`);
      return 0;
    } catch (e) {
      if (!(e instanceof DockerfileError)) throw e;
      const line = e.range ? `${e.range.start.line}:${e.range.start.column}` : '1:1';
      process.stderr.write(`${e.file}:${line}: error: ${e.detail}\n`);
      if (e.excerpt) process.stderr.write(e.excerpt.split('\n').map((l) => `  | ${l}`).join('\n') + '\n');
      if (e.hint) process.stderr.write(`hint: ${e.hint}\n`);
      return 1;
    }
  },
};

export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
