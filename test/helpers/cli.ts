import { spawnSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './base.ts';
import { spawnCollected } from './process.ts';

export const CLI = join(REPO, 'packages/cli/dist/tsbuild.js');

/** Builds the CLI bundle if it is missing (CI builds before testing; a bare checkout may not have). */
export function ensureCli(): void {
  if (!existsSync(CLI)) spawnSync('node', [join(REPO, 'scripts/build.mjs')], { stdio: 'inherit' });
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `tsbuild ARGS` with the given root and returns its output. */
export function tsbuild(root: string, args: string[], opts: { input?: string; env?: Record<string, string> } = {}): CliResult {
  const r = spawnSync('node', [CLI, ...args], {
    encoding: 'utf8',
    input: opts.input ?? '',
    env: { ...process.env, TSBUILD_ROOT: root, ...(opts.env ?? {}) },
    timeout: 300_000,
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function tsbuildAsync(root: string, args: string[]): ChildProcess {
  return spawn('node', [CLI, ...args], { env: { ...process.env, TSBUILD_ROOT: root }, stdio: ['ignore', 'pipe', 'pipe'] });
}

/**
 * `tsbuild ARGS` without blocking this process, for tests whose servers (a fault proxy, a stand-in
 * cache service) run here: a synchronous spawn would stop them from answering the very requests
 * the CLI makes through them.
 */
export function tsbuildNonBlocking(root: string, args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<CliResult> {
  return spawnCollected('node', [CLI, ...args], { env: { ...process.env, TSBUILD_ROOT: root, ...(opts.env ?? {}) }, input: opts.input });
}
