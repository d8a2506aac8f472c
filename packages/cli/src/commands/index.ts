import type { Command } from '../command.ts';
import { build } from './build.ts';
import { check } from './check.ts';
import { history } from './history.ts';
import { images } from './images.ts';
import { importCmd } from './import.ts';
import { inspect } from './inspect.ts';
import { load } from './load.ts';
import { login } from './login.ts';
import { logout } from './logout.ts';
import { prune } from './prune.ts';
import { pull } from './pull.ts';
import { push } from './push.ts';
import { rm } from './rm.ts';
import { run } from './run.ts';
import { save } from './save.ts';
import { tag } from './tag.ts';

/** Every command, in the order `tsbuild --help` lists them. */
export const commands: Command[] = [build, check, history, images, inspect, tag, rm, importCmd, save, load, run, pull, push, login, logout, prune];
