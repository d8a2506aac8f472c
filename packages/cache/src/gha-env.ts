import { UsageError } from '@tsbuild/errors';
import { redactUrl, safeUrl } from './gha-error.ts';

/*
 * What the runner tells a step about GitHub's cache service, and what it means when something is
 * missing: not an action step, only the retired v1 service, or GitHub Enterprise Server.
 */

export const RUNNER_STEP_HINT =
  'the runner gives ACTIONS_RUNTIME_TOKEN and ACTIONS_RESULTS_URL only to JavaScript (and container) action steps, ' +
  'not to `run:` steps: run tsbuild through its action, or expose them to the step first ' +
  '(for example with crazy-max/ghaction-github-runtime)';

/** Reads a boolean the way the runner and BuildKit write it ("True", "true", "1"). */
function envFlag(value: string | undefined): boolean | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  return /^(?:1|t|true|y|yes|on)$/i.test(value.trim());
}

function isGhes(serverUrl: string | undefined): string | undefined {
  if (serverUrl === undefined || serverUrl.trim() === '') return undefined;
  const host = safeUrl(serverUrl.trim())?.hostname.toLowerCase();
  if (host === undefined) return undefined;
  if (host === 'github.com' || host.endsWith('.ghe.com') || host.endsWith('.localhost')) return undefined;
  return host;
}

export type GhaEnv = { ok: true; resultsUrl: string; token: string } | { ok: false; missing: boolean; error: UsageError };

export function readGhaEnv(env: NodeJS.ProcessEnv): GhaEnv {
  const token = env.ACTIONS_RUNTIME_TOKEN?.trim() ?? '';
  const resultsUrl = env.ACTIONS_RESULTS_URL?.trim() ?? '';
  const cacheUrl = env.ACTIONS_CACHE_URL?.trim() ?? '';
  const v2 = envFlag(env.ACTIONS_CACHE_SERVICE_V2);

  // GitHub Enterprise Server has no v2 cache service; @actions/cache itself falls back to v1 there.
  const ghes = isGhes(env.GITHUB_SERVER_URL);
  if (ghes !== undefined && v2 !== true) {
    return {
      ok: false,
      missing: false,
      error: new UsageError(`the gha cache needs GitHub's v2 cache service, and GitHub Enterprise Server (${ghes}) offers only the v1 service`, {
        hint: 'use --cache-to/--cache-from type=registry or type=local on GitHub Enterprise Server',
      }),
    };
  }
  // The v1 service (ACTIONS_CACHE_URL, artifactcache.actions.githubusercontent.com) is gone from
  // github.com: every repository was moved to v2 in February 2025 and the legacy endpoints were
  // shut down on April 15, 2025 (the maintainers' notices, e.g. google/wireit#1297); @actions/cache
  // 6.0.1 (June 2026) still speaks v2 and nothing newer. The runner marks v2 with
  // ACTIONS_CACHE_SERVICE_V2 (actions/runner#3548) and still exports ACTIONS_CACHE_URL beside the
  // v2 variables, so only ACTIONS_CACHE_URL on its own means an old or GHES-style setup.
  if (v2 === false || (v2 === undefined && resultsUrl === '' && cacheUrl !== '')) {
    return {
      ok: false,
      missing: false,
      error: new UsageError(
        (v2 === false
          ? `ACTIONS_CACHE_SERVICE_V2=${env.ACTIONS_CACHE_SERVICE_V2 ?? ''} puts this job on the v1 cache service`
          : 'the gha cache found only the v1 cache service (ACTIONS_CACHE_URL, without ACTIONS_RESULTS_URL)') +
          '; GitHub retired the v1 service on github.com in 2025, and tsbuild speaks only v2 (ACTIONS_RESULTS_URL)',
        { hint: 'run on a current GitHub-hosted or self-hosted runner, which sets ACTIONS_CACHE_SERVICE_V2 and ACTIONS_RESULTS_URL for action steps' },
      ),
    };
  }
  const missing = [resultsUrl === '' ? 'ACTIONS_RESULTS_URL' : '', token === '' ? 'ACTIONS_RUNTIME_TOKEN' : ''].filter((s) => s !== '');
  if (missing.length > 0) {
    return {
      ok: false,
      missing: true,
      error: new UsageError(`the gha cache needs ${missing.join(' and ')}, which ${missing.length === 1 ? 'is' : 'are'} not set`, { hint: RUNNER_STEP_HINT }),
    };
  }
  const parsed = safeUrl(resultsUrl);
  if (parsed === undefined || (parsed.protocol !== 'https:' && parsed.protocol !== 'http:')) {
    return { ok: false, missing: false, error: new UsageError(`ACTIONS_RESULTS_URL is not an http(s) URL: ${redactUrl(resultsUrl)}`) };
  }
  return { ok: true, resultsUrl, token };
}
