import type { Command } from '../command.ts';
import { build } from './build.ts';
import { check } from './check.ts';
import { history } from './history.ts';
import { images, importCmd, inspect, prune, rm, tag } from './images.ts';
import { run } from './run.ts';
import { load, save } from './save.ts';
import { registryCommands } from '../registry.ts';

/** Every command, in the order `tsbuild --help` lists them. */
export const commands: Command[] = [build, check, history, images, inspect, tag, rm, importCmd, save, load, run, ...registryCommands, prune];
