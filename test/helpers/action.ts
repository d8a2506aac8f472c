import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './base.ts';
import { spawnCollected } from './process.ts';

export const ACTION_BUNDLE = join(REPO, 'packages/action/dist/index.js');

export interface ActionRun {
  code: number | null;
  stdout: string;
  stderr: string;
  outputs: Map<string, string>;
  summary: string;
}

interface Runner {
  env: NodeJS.ProcessEnv;
  outputFile: string;
  summaryFile: string;
}

/** The environment the runner gives an action step: inputs in INPUT_*, outputs and the job summary in files under `work`. */
function runner(work: string, workspace: string, inputs: Record<string, string>, env: Record<string, string | undefined>): Runner {
  const runnerTemp = mkdtempSync(join(work, 'runner-temp-'));
  const outputFile = join(runnerTemp, 'output');
  const summaryFile = join(runnerTemp, 'summary');
  writeFileSync(outputFile, '');
  writeFileSync(summaryFile, '');
  const full: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: work,
    GITHUB_ACTIONS: 'true',
    GITHUB_WORKSPACE: workspace,
    GITHUB_OUTPUT: outputFile,
    GITHUB_STEP_SUMMARY: summaryFile,
    RUNNER_TEMP: runnerTemp,
    ...env,
  };
  for (const [k, v] of Object.entries(inputs)) full[`INPUT_${k.replace(/ /g, '_').toUpperCase()}`] = v;
  return { env: full, outputFile, summaryFile };
}

function finished(r: Runner, code: number | null, stdout: string, stderr: string): ActionRun {
  const outputs = new Map<string, string>();
  const lines = readFileSync(r.outputFile, 'utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^([\w-]+)<<(.+)$/.exec(lines[i] ?? '');
    if (!m) continue;
    const end = lines.indexOf(m[2]!, i + 1);
    assert.ok(end > i, `unterminated output ${m[1]}`);
    outputs.set(m[1]!, lines.slice(i + 1, end).join('\n'));
    i = end;
  }
  return { code, stdout, stderr, outputs, summary: readFileSync(r.summaryFile, 'utf8') };
}

/**
 * Runs the bundled action as the runner does: inputs in INPUT_*, outputs and the job summary in
 * files (made under `work`), the workspace as the working directory.
 */
export function runBundledAction(work: string, workspace: string, inputs: Record<string, string>, env: Record<string, string | undefined>): ActionRun {
  const r = runner(work, workspace, inputs, env);
  const p = spawnSync(process.execPath, [ACTION_BUNDLE], { cwd: workspace, env: r.env, encoding: 'utf8', timeout: 300_000 });
  return finished(r, p.status, p.stdout, p.stderr);
}

/**
 * runBundledAction without blocking this process, for tests whose servers (a stand-in cache
 * service, a fault proxy) run here and must keep answering the action's requests.
 */
export async function runBundledActionNonBlocking(work: string, workspace: string, inputs: Record<string, string>, env: Record<string, string | undefined>): Promise<ActionRun> {
  const r = runner(work, workspace, inputs, env);
  const p = await spawnCollected(process.execPath, [ACTION_BUNDLE], { cwd: workspace, env: r.env });
  return finished(r, p.code, p.stdout, p.stderr);
}
