import { UsageError } from '@tsbuild/errors';
import { formatPlatform, hostPlatform, parsePlatform } from '@tsbuild/oci';
import type { Platform } from '@tsbuild/oci';

/**
 * The platform a build targets, from `--platform` or `FROM --platform`: RUN steps run natively,
 * so only the host's platform can be built (no emulation yet).
 */
export function targetPlatform(spec: string | undefined, where = '--platform'): Platform {
  const host = hostPlatform();
  if (spec === undefined || spec === '') return host;
  // `--platform a,b` asks for a multi-platform image; a list of one platform is that platform.
  const parsed = spec.split(',').map((s) => s.trim()).filter((s) => s !== '').map((s) => parsePlatform(s, where));
  const names = [...new Set(parsed.map(formatPlatform))];
  if (names.length > 1) {
    throw new UsageError(`${where}: tsbuild builds one platform per run, not ${names.join(', ')}`, {
      hint: 'run one build per platform (a matrix job in CI); multi-platform images are not supported yet',
    });
  }
  const p = parsed[0] ?? parsePlatform(spec, where);
  if (formatPlatform(p) !== formatPlatform(host)) {
    throw new UsageError(`${where}: platform ${formatPlatform(p)} is not supported: tsbuild builds ${formatPlatform(host)} only`, {
      hint: 'cross-platform builds need emulation, which tsbuild does not provide yet',
    });
  }
  return p;
}

/** ARGs every build defines (usable after `ARG NAME` in a stage, or in FROM lines). */
export function platformArgs(target: Platform, build: Platform = hostPlatform()): Record<string, string> {
  return {
    TARGETPLATFORM: formatPlatform(target),
    TARGETOS: target.os,
    TARGETARCH: target.architecture,
    TARGETVARIANT: target.variant ?? '',
    BUILDPLATFORM: formatPlatform(build),
    BUILDOS: build.os,
    BUILDARCH: build.architecture,
    BUILDVARIANT: build.variant ?? '',
  };
}

/** Build args usable in RUN without an ARG line, never written to history (Docker's list). */
export const PROXY_ARGS = new Set([
  'HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'FTP_PROXY', 'ftp_proxy',
  'NO_PROXY', 'no_proxy', 'ALL_PROXY', 'all_proxy',
]);
