import type { Argv } from 'yargs';

/** One CLI command: flags (builder) and a handler that calls one library function. */
export interface Command {
  command: string | string[];
  describe: string;
  builder: (y: Argv) => Argv;
  /** Returns the exit code (0 when undefined). */
  handler: (args: Record<string, unknown>) => Promise<number | void>;
}
