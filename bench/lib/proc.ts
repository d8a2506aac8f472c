/**
 * Running and cleaning up after the processes a benchmark starts. Everything here is
 * synchronous on purpose: a benchmark times one command at a time, and nothing else of ours
 * should run in this process while it does.
 */
import { type SpawnSyncOptions, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, realpathSync, rmSync } from 'node:fs';

export function log(s: string): void {
  process.stderr.write(s + '\n');
}

export type RunOptions = SpawnSyncOptions & { logFile?: string; allowFail?: boolean };
export interface RunResult {
  ms: number;
  status: number;
  stdout: string;
}

/** Runs a command to its end and times it; output goes to `logFile` (appended) or is captured. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): RunResult {
  const fd = opts.logFile ? openSync(opts.logFile, 'a') : undefined;
  const start = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { ...opts, stdio: ['ignore', fd === undefined ? 'pipe' : fd, fd === undefined ? 'pipe' : fd], encoding: 'utf8', maxBuffer: 64 << 20 });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (fd !== undefined) closeSync(fd);
  const status = r.status ?? 128;
  if (r.error) throw r.error;
  if (status !== 0 && !opts.allowFail) {
    const detail = opts.logFile ? `see ${opts.logFile}` : `${r.stderr ?? ''}`.trim().slice(-2000);
    throw new Error(`${cmd} ${args.join(' ')} exited ${status}${r.signal ? ` (${r.signal})` : ''}: ${detail}`);
  }
  return { ms, status, stdout: typeof r.stdout === 'string' ? r.stdout : '' };
}

export const sh = (script: string, opts: RunOptions = {}): RunResult => run('bash', ['-o', 'pipefail', '-c', script], opts);

export const have = (bin: string): boolean => spawnSync('bash', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0 || existsSync(bin);

export function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Whether `pid` is still running (a zombie, exited but not yet reaped, is not). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // A zombie (exited, not yet reaped because the event loop is blocked) still answers kill 0.
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** Overlay and bind mounts left under `dir` by a tool (buildah's storage, a killed build) must go before rm -rf. */
export function unmountUnder(dir: string): void {
  const real = realpathSync(dir);
  const points = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .map((p) => p.replace(/\\(\d{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((p) => p === real || p.startsWith(real + '/'))
    .sort((a, b) => b.length - a.length);
  for (const p of points) spawnSync('umount', ['-l', p], { stdio: 'ignore' });
}

export function removeTree(dir: string): void {
  if (!existsSync(dir)) return;
  unmountUnder(dir);
  rmSync(dir, { recursive: true, force: true });
}
