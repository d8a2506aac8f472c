import type * as ChildProcess from 'node:child_process';

/** Loaded on first use: a build that runs nothing (everything cached) never starts a process. */
const childProcess = (): typeof ChildProcess => process.getBuiltinModule('node:child_process');
import { readFile } from 'node:fs/promises';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a short host command to completion, capturing its output. */
export function runCommand(cmd: string, args: readonly string[], opts: { cwd?: string } = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = childProcess().spawn(cmd, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
  });
}

/**
 * A process identity that survives PID reuse: the PID plus its start time in clock ticks since
 * boot (field 22 of /proc/PID/stat). A transient directory named after a dead owner is garbage.
 */
export interface Owner {
  pid: number;
  start: number;
}

async function startTime(pid: number): Promise<number | undefined> {
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and parentheses; fields resume after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const v = Number(rest[19]);
  return Number.isFinite(v) ? v : undefined;
}

let self: Promise<Owner> | undefined;
export function selfOwner(): Promise<Owner> {
  self ??= startTime(process.pid).then((start) => ({ pid: process.pid, start: start ?? 0 }));
  return self;
}

export async function ownerAlive(o: Owner): Promise<boolean> {
  const start = await startTime(o.pid);
  return start !== undefined && (o.start === 0 || start === o.start);
}

export function ownerToken(o: Owner): string {
  return `${o.pid}-${o.start}`;
}

/** Parses the owner out of a transient directory name `<pid>-<start>-<suffix>`. */
export function parseOwnerToken(name: string): Owner | undefined {
  const m = /^(\d+)-(\d+)-/.exec(name);
  if (!m) return undefined;
  return { pid: Number(m[1]), start: Number(m[2]) };
}
