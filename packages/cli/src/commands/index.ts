import type { Command } from '../command.ts';

/** Every command, in the order `tsbuild --help` lists them. */
export const commands: Command[] = [];
