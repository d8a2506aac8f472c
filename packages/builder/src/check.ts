/**
 * BuildKit's Dockerfile checks as a build runs them: the Dockerfile and the context's
 * .dockerignore read once, `checkDockerfile` over them, and the parsed stages handed on. `tsbuild
 * build --check` stops there; a build prints the warnings and stops only on errors (`error=true`).
 */
import { readFile, stat } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { UsageError } from '@tsbuild/errors';
import { checkDockerfile } from '@tsbuild/dockerfile';
import type { CheckResult, CheckWarning, Dockerfile } from '@tsbuild/dockerfile';
import { loadIgnore } from './ignore.ts';
import type { IgnoreMatcher } from './ignore.ts';

export interface CheckBuildOptions {
  /** The build context directory. */
  context: string;
  /** Dockerfile path (default CONTEXT/Dockerfile); `-` with `dockerfileText`. */
  file?: string | undefined;
  dockerfileText?: string | undefined;
  /** How the Dockerfile is named in messages (default its path, `<stdin>` for `-`). */
  shownAs?: string | undefined;
  buildArgs?: Record<string, string> | undefined;
  target?: string | undefined;
  platform?: string | undefined;
}

/** A check finding with the file it is in, as builds and the Action report it. */
export interface BuildCheck extends CheckWarning {
  file: string;
}

export interface CheckedDockerfile {
  contextDir: string;
  /** The Dockerfile on disk (CONTEXT/Dockerfile by default). */
  file: string;
  /** How the Dockerfile is named in messages (`<stdin>` for `-f -`). */
  shownFile: string;
  text: string;
  ignore: IgnoreMatcher;
  result: CheckResult;
  checks: BuildCheck[];
}

/** Reads the Dockerfile and .dockerignore of a build and runs the checks over them. */
export async function checkBuild(opts: CheckBuildOptions): Promise<CheckedDockerfile> {
  const contextDir = resolvePath(opts.context);
  await checkContextDir(contextDir, opts.context);
  const file = opts.file && opts.file !== '-' ? opts.file : join(contextDir, 'Dockerfile');
  const shownFile = opts.shownAs ?? (opts.file === '-' ? '<stdin>' : file);
  const text = opts.dockerfileText ?? (await readDockerfile(file));
  const ignore = await loadIgnore(contextDir, file);
  const result = checkDockerfile(text, {
    file: shownFile,
    buildArgs: opts.buildArgs ?? {},
    isIgnored: (p) => ignore.ignores(p),
    ignorePatterns: ignore.patterns,
    ...(opts.target ? { target: opts.target } : {}),
    ...(opts.platform ? { platform: opts.platform } : {}),
  });
  return { contextDir, file, shownFile, text, ignore, result, checks: result.warnings.map((w) => ({ ...w, file: shownFile })) };
}

/** The parsed stages of a checked Dockerfile; its first error when it cannot be built. */
export function buildableDockerfile(c: CheckedDockerfile): Dockerfile {
  const first = c.result.errors[0];
  if (first) throw first;
  if (!c.result.dockerfile) throw new UsageError(`${c.shownFile} could not be parsed`);
  return c.result.dockerfile;
}

/** A missing context is named as such, not as the Dockerfile that cannot be read inside it. */
async function checkContextDir(dir: string, given: string): Promise<void> {
  const shown = JSON.stringify(given) + (dir === given ? '' : ` (${dir})`);
  const hint = 'the build context is a directory: pass one that exists';
  let isDir: boolean;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR') throw e;
    throw new UsageError(`build context ${shown} does not exist`, { hint });
  }
  if (!isDir) throw new UsageError(`build context ${shown} is not a directory`, { hint });
}

async function readDockerfile(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read Dockerfile ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, {
      hint: 'pass the Dockerfile with -f, or put one at the root of the build context',
    });
  }
}
