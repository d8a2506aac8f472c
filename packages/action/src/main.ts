/**
 * The GitHub Action entry (action.yml runs the bundle of this file). tsbuild needs root for
 * overlay mounts and runc; a hosted runner is a user with passwordless sudo, so the entry runs
 * itself again under `sudo -n`, keeping the environment (INPUT_*, GITHUB_*, DOCKER_CONFIG).
 */
import { spawnSync } from 'node:child_process';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { runAction } from './action.ts';
import { command } from './workflow.ts';

function viaSudo(): number {
  const env: NodeJS.ProcessEnv = { ...process.env, TSBUILD_ACTION_ELEVATED: '1' };
  // docker/login-action writes credentials for the runner user; root must read the same file.
  env.DOCKER_CONFIG ??= join(process.env.HOME || homedir(), '.docker');
  const r = spawnSync('sudo', ['-n', '--preserve-env', process.execPath, ...process.argv.slice(1)], { stdio: 'inherit', env });
  if (r.error || r.status === null) {
    process.stdout.write(command('error', { title: 'tsbuild' }, `tsbuild needs root (overlay mounts, runc) and "sudo -n" failed: ${r.error?.message ?? `killed by ${r.signal}`}`));
    return 1;
  }
  return r.status;
}

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    if (process.env.TSBUILD_ACTION_ELEVATED === '1') {
      process.stdout.write(command('error', { title: 'tsbuild' }, 'still not root after sudo'));
      return 1;
    }
    return viaSudo();
  }
  const ac = new AbortController();
  const stop = () => ac.abort(new Error('cancelled'));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return runAction({ env: process.env, write: (s) => process.stdout.write(s), signal: ac.signal });
}

process.exitCode = await main();
