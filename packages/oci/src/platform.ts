/**
 * Platforms as the image spec and Docker write them: `os/arch[/variant]`, architectures in Go's
 * names (amd64, arm64, …). The one parser, formatter and host platform of every package.
 */
import { UsageError } from '@tsbuild/errors';
import type { Platform } from './types.ts';

/** Node's `process.arch` → the GOARCH name images use. */
const GO_ARCH: Record<string, string> = { x64: 'amd64', ia32: '386', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };

/** Spellings people type for an architecture, normalised as Docker does. */
const ARCH_ALIASES: Record<string, string> = { x86_64: 'amd64', 'x86-64': 'amd64', aarch64: 'arm64' };

/** The platform this process runs on (Linux is the only OS tsbuild runs containers on). */
export function hostPlatform(): Platform {
  return { os: 'linux', architecture: GO_ARCH[process.arch] ?? process.arch };
}

/**
 * Parses `os/arch[/variant]` (case-insensitive, `x86_64` → `amd64`). `where` prefixes the error,
 * e.g. `--platform` or `Dockerfile:3: FROM --platform`.
 */
export function parsePlatform(spec: string, where = 'platform'): Platform {
  const parts = spec.toLowerCase().split('/');
  const [os, arch0, variant] = parts;
  const architecture = arch0 !== undefined ? (ARCH_ALIASES[arch0] ?? arch0) : undefined;
  if (parts.length < 2 || parts.length > 3 || !os || !architecture || variant === '') {
    throw new UsageError(`${where}: invalid platform ${JSON.stringify(spec)}: expected os/arch[/variant], e.g. linux/amd64`);
  }
  return variant ? { os, architecture, variant } : { os, architecture };
}

export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/** Whether an index entry's platform serves `want` (arm64 images often leave out the v8 they imply). */
export function platformMatches(have: Platform | undefined, want: Platform): boolean {
  if (have === undefined || have.os !== want.os || have.architecture !== want.architecture) return false;
  if (want.variant === undefined) return true;
  return (have.variant ?? (have.architecture === 'arm64' ? 'v8' : undefined)) === want.variant;
}
