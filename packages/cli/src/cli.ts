import yargs from 'yargs';
import { recordSpan, span } from '@tsbuild/builder';
import { commands } from './commands/index.ts';
import { splitRunArgv } from './commands/run.ts';
import { commandIndex, unknownFlag } from './argv.ts';
import type { KnownOptions } from './argv.ts';
import { reportError, CliUsageError } from './report.ts';

declare const TSBUILD_VERSION: string | undefined;
const version = typeof TSBUILD_VERSION === 'string' ? TSBUILD_VERSION : '0.0.0-dev';

/** Parses argv, runs one command, and maps any failure to a message and an exit code. */
export async function run(argv: string[]): Promise<number> {
  const started = performance.now();
  const debug = argv.includes('--debug');
  let exitCode = 0;
  try {
    const args = splitRunArgv(argv);
    let parser = yargs(args)
      .scriptName('tsbuild')
      .usage('$0 <command> [options]\n\nBuild OCI images from Dockerfiles without a daemon.')
      .version(version)
      .option('debug', { type: 'boolean', describe: 'Print stack traces for errors', global: true })
      .strict()
      .parserConfiguration({ 'populate--': true, 'boolean-negation': false })
      .demandCommand(1, 'Name a command; see tsbuild --help.')
      .recommendCommands()
      // yargs renders the help text on every run to cache it; only pay for wrapping when shown.
      .wrap(argv.some((a) => a === '--help' || a === '-h') || argv.length === 0 ? Math.min(110, process.stdout.columns || 100) : null)
      .fail((msg, err) => {
        if (err) throw err;
        // A flag the command does not know is the likelier cause of whatever yargs reports.
        const flag = unknownFlagIn(args);
        throw new CliUsageError(flag !== undefined ? `Unknown argument: ${flag}` : (msg ?? 'invalid arguments'));
      });
    for (const c of commands) {
      parser = parser.command({
        command: c.command,
        describe: c.describe,
        builder: c.builder,
        handler: async (args: Record<string, unknown>) => {
          recordSpan('cli.args', started);
          exitCode = (await span(`cli.${String((args._ as unknown[] | undefined)?.[0] ?? 'command')}`, () => c.handler(args))) ?? 0;
        },
      } as never);
    }
    await parser.parseAsync();
    return exitCode;
  } catch (e) {
    return reportError(e, debug);
  }
}

/** The first flag the command named in `argv` does not accept (undefined when no command is named). */
function unknownFlagIn(argv: string[]): string | undefined {
  const nameOf = (c: (typeof commands)[number]) => String(Array.isArray(c.command) ? c.command[0] : c.command).split(' ')[0];
  const at = commandIndex(argv);
  const command = commands.find((c) => nameOf(c) === argv[at]) ?? commands.find((c) => argv.includes(nameOf(c) ?? ''));
  if (!command) return undefined;
  // getOptions() is yargs's own record of an instance's options (not in its type declarations).
  const known = (command.builder(yargs([])) as unknown as { getOptions(): KnownOptions }).getOptions();
  return unknownFlag(argv, { ...known, key: { ...known.key, debug: true }, boolean: [...known.boolean, 'debug'] });
}
