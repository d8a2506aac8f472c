import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './base.ts';

export const ACTION_BUNDLE = join(REPO, 'packages/action/dist/index.js');

export interface ActionRun {
  code: number | null;
  stdout: string;
  stderr: string;
  outputs: Map<string, string>;
  summary: string;
}

/**
 * Runs the bundled action as the runner does: inputs in INPUT_*, outputs and the job summary in
 * files (made under `work`), the workspace as the working directory.
 */
export function runBundledAction(work: string, workspace: string, inputs: Record<string, string>, env: Record<string, string | undefined>): ActionRun {
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
  const r = spawnSync(process.execPath, [ACTION_BUNDLE], { cwd: workspace, env: full, encoding: 'utf8', timeout: 300_000 });
  const outputs = new Map<string, string>();
  const lines = readFileSync(outputFile, 'utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^([\w-]+)<<(.+)$/.exec(lines[i] ?? '');
    if (!m) continue;
    const end = lines.indexOf(m[2]!, i + 1);
    assert.ok(end > i, `unterminated output ${m[1]}`);
    outputs.set(m[1]!, lines.slice(i + 1, end).join('\n'));
    i = end;
  }
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, outputs, summary: readFileSync(summaryFile, 'utf8') };
}
