import { UsageError } from '@tsbuild/errors';

export interface PlatformSpec {
  os: string;
  architecture: string;
  variant: string;
}

/** The one platform tsbuild builds for today: the host's, linux/amd64. */
export const HOST_PLATFORM: PlatformSpec = { os: 'linux', architecture: 'amd64', variant: '' };

export function formatPlatform(p: PlatformSpec): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** Parses `--platform` / `FROM --platform`; only the host platform can run RUN steps. */
export function parsePlatform(spec: string | undefined, where = '--platform'): PlatformSpec {
  if (spec === undefined || spec === '') return HOST_PLATFORM;
  const parts = spec.toLowerCase().split('/');
  const [os, arch0, variant = ''] = parts;
  const arch = arch0 === 'x86_64' || arch0 === 'x86-64' ? 'amd64' : arch0;
  if (parts.length < 2 || parts.length > 3 || !os || !arch) {
    throw new UsageError(`${where}: invalid platform ${JSON.stringify(spec)}: expected os/arch[/variant], e.g. linux/amd64`);
  }
  const p = { os, architecture: arch, variant };
  if (formatPlatform(p) !== formatPlatform(HOST_PLATFORM)) {
    throw new UsageError(`${where}: platform ${formatPlatform(p)} is not supported: tsbuild builds linux/amd64 only`, {
      hint: 'cross-platform builds need emulation, which tsbuild does not provide yet',
    });
  }
  return p;
}

/** ARGs every build defines (usable after `ARG NAME` in a stage, or in FROM lines). */
export function platformArgs(target: PlatformSpec, build: PlatformSpec = HOST_PLATFORM): Record<string, string> {
  return {
    TARGETPLATFORM: formatPlatform(target),
    TARGETOS: target.os,
    TARGETARCH: target.architecture,
    TARGETVARIANT: target.variant,
    BUILDPLATFORM: formatPlatform(build),
    BUILDOS: build.os,
    BUILDARCH: build.architecture,
    BUILDVARIANT: build.variant,
  };
}

/** Build args usable in RUN without an ARG line, never written to history (Docker's list). */
export const PROXY_ARGS = new Set([
  'HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'FTP_PROXY', 'ftp_proxy',
  'NO_PROXY', 'no_proxy', 'ALL_PROXY', 'all_proxy',
]);
