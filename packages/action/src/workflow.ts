/**
 * The GitHub Actions runner protocol, spoken directly: inputs arrive as `INPUT_*` environment
 * variables, commands are `::name props::data` lines on stdout, outputs and the job summary are
 * files named by `GITHUB_OUTPUT` and `GITHUB_STEP_SUMMARY`.
 */
import { randomUUID } from 'node:crypto';
import { appendFileSync } from 'node:fs';
import { UsageError } from '@tsbuild/errors';

export type Env = Record<string, string | undefined>;

/** The runner upper-cases input names and turns spaces into `_`; dashes stay. */
export function inputName(name: string): string {
  return `INPUT_${name.replace(/ /g, '_').toUpperCase()}`;
}

export function getInput(env: Env, name: string): string {
  return (env[inputName(name)] ?? '').trim();
}

/** A list input: one item per line or comma, as docker/build-push-action reads them. */
export function getList(env: Env, name: string, opts: { commas?: boolean } = {}): string[] {
  const raw = getInput(env, name);
  const lines = raw.split(/\r?\n/);
  const items = opts.commas === false ? lines : lines.flatMap((l) => l.split(','));
  return items.map((s) => s.trim()).filter((s) => s !== '' && !s.startsWith('#'));
}

/** YAML 1.2 core booleans, the only spellings actions/toolkit's getBooleanInput accepts. */
export function getBool(env: Env, name: string, fallback = false): boolean {
  const v = getInput(env, name);
  if (v === '') return fallback;
  if (['true', 'True', 'TRUE'].includes(v)) return true;
  if (['false', 'False', 'FALSE'].includes(v)) return false;
  throw new UsageError(`input ${name}: expected true or false, got ${JSON.stringify(v)}`);
}

/** `K=V` list items; the first `=` splits, so values may contain more. */
export function keyValueList(items: string[], what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of items) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new UsageError(`input ${what}: ${JSON.stringify(item)} is not KEY=VALUE`);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

/** Message data of a workflow command: only `%`, CR and LF are special. */
export function escapeData(s: string): string {
  return s.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

/** Property values also reserve `:` and `,`, which separate properties. */
export function escapeProperty(s: string): string {
  return escapeData(s).replace(/:/g, '%3A').replace(/,/g, '%2C');
}

export function command(name: string, props: Record<string, string | number | undefined>, data: string): string {
  const p = Object.entries(props)
    .filter((e): e is [string, string | number] => e[1] !== undefined)
    .map(([k, v]) => `${k}=${escapeProperty(String(v))}`)
    .join(',');
  return `::${name}${p ? ` ${p}` : ''}::${escapeData(data)}\n`;
}

/**
 * Appends `name<<DELIM … DELIM` records: the heredoc form is safe for any value, multiline JSON
 * included, as long as the delimiter does not occur in it (a random one cannot, by checking).
 */
export function formatOutputs(values: Record<string, string>): string {
  let out = '';
  for (const [k, v] of Object.entries(values)) {
    let delim = `ghadelimiter_${randomUUID()}`;
    while (v.includes(delim)) delim = `ghadelimiter_${randomUUID()}`;
    out += `${k}<<${delim}\n${v}\n${delim}\n`;
  }
  return out;
}

export function writeOutputs(env: Env, values: Record<string, string>): void {
  const file = env.GITHUB_OUTPUT;
  if (file) appendFileSync(file, formatOutputs(values));
  else for (const [k, v] of Object.entries(values)) process.stdout.write(command('set-output', { name: k }, v));
}

export interface StepRow {
  name: string;
  durationMs: number | undefined;
  cached: boolean;
  layerSize: number | undefined;
  failed: boolean;
  /** CPU seconds and peak memory of a RUN. */
  usage?: { cpu_seconds: number; memory_peak_bytes?: number } | undefined;
  /** Why a step that ran missed the cache. */
  missReason?: string | undefined;
}

function cell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\r?\n/g, ' ');
}

export function humanBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

/** The job summary: a heading with the image and a table of every step of the build. */
export function summaryMarkdown(title: string, facts: Array<[string, string]>, steps: StepRow[]): string {
  const lines = [`### ${cell(title)}`, ''];
  for (const [k, v] of facts) lines.push(`- **${cell(k)}**: \`${cell(v)}\``);
  lines.push('', '| Step | Time | Cache | Layer size | CPU | Peak memory | Why it ran |', '| --- | ---: | :---: | ---: | ---: | ---: | --- |');
  for (const s of steps) {
    const time = s.durationMs === undefined ? '' : `${(s.durationMs / 1000).toFixed(2)}s`;
    const cache = s.failed ? 'failed' : s.cached ? 'hit' : 'miss';
    const size = s.layerSize === undefined ? '' : humanBytes(s.layerSize);
    const cpu = s.usage ? `${s.usage.cpu_seconds.toFixed(2)}s` : '';
    const peak = s.usage?.memory_peak_bytes !== undefined ? humanBytes(s.usage.memory_peak_bytes) : '';
    lines.push(`| \`${cell(s.name).replace(/`/g, "'")}\` | ${time} | ${cache} | ${size} | ${cpu} | ${peak} | ${cell(s.missReason ?? '')} |`);
  }
  return `${lines.join('\n')}\n`;
}
