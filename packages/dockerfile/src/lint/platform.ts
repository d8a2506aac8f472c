/*
 * Just enough of containerd's platform specifiers for the FROM --platform rules: whether a value
 * parses, and its OS and architecture after normalisation (`x86_64` → `amd64`, `macos` → `darwin`).
 */

export interface PlatformParts {
  os: string;
  architecture: string;
  variant: string;
}

const OS_RE = /^([A-Za-z0-9_-]+)(?:\(([A-Za-z0-9_.-]*)((?:\+[A-Za-z0-9_.-]+)*)\))?$/;
const COMPONENT_RE = /^[A-Za-z0-9_.-]+$/;
const KNOWN_OS = new Set(['aix', 'android', 'darwin', 'dragonfly', 'freebsd', 'hurd', 'illumos', 'ios', 'js', 'linux', 'nacl',
  'netbsd', 'openbsd', 'plan9', 'solaris', 'windows', 'zos']);
const KNOWN_ARCH = new Set(['386', 'amd64', 'amd64p32', 'arm', 'armbe', 'arm64', 'arm64be', 'ppc64', 'ppc64le', 'loong64', 'mips',
  'mipsle', 'mips64', 'mips64le', 'mips64p32', 'mips64p32le', 'ppc', 'riscv', 'riscv64', 's390', 's390x', 'sparc', 'sparc64', 'wasm']);

/** What a bare OS or architecture defaults to: the platform tsbuild builds on. */
const DEFAULT_OS = 'linux';
const DEFAULT_ARCH = 'amd64';

function normalizeOS(os: string): string {
  const lower = os.toLowerCase();
  return lower === 'macos' ? 'darwin' : lower;
}

function normalizeArch(arch: string, variant: string): [string, string] {
  const a = arch.toLowerCase();
  const v = variant.toLowerCase();
  switch (a) {
    case 'i386':
      return ['386', ''];
    case 'x86_64':
    case 'x86-64':
    case 'amd64':
      return ['amd64', v === 'v1' ? '' : v];
    case 'aarch64':
    case 'arm64':
      if (v === '8' || v === 'v8' || v === 'v8.0') return ['arm64', ''];
      if (v === '9' || v === '9.0' || v === 'v9.0') return ['arm64', 'v9'];
      return ['arm64', v];
    case 'armhf':
      return ['arm', 'v7'];
    case 'armel':
      return ['arm', 'v6'];
    case 'arm':
      if (v === '' || v === '7') return ['arm', 'v7'];
      if (v === '5' || v === '6' || v === '8') return ['arm', `v${v}`];
      return ['arm', v];
    default:
      return [a, v];
  }
}

/** Parses `os[/arch[/variant]]` (or a bare architecture); undefined when containerd would refuse it. */
export function parsePlatformSpec(spec: string): PlatformParts | undefined {
  if (spec.includes('*')) return undefined;
  const parts = spec.split('/');
  if (parts.length > 3) return undefined;
  const m = OS_RE.exec(parts[0] ?? '');
  if (!m) return undefined;
  for (const part of parts.slice(1)) if (!COMPONENT_RE.test(part)) return undefined;
  const os = normalizeOS(m[1] ?? '');
  if (parts.length === 1) {
    if (KNOWN_OS.has(os)) return { os, architecture: DEFAULT_ARCH, variant: '' };
    const [architecture, variant] = normalizeArch(parts[0] ?? '', '');
    if (!KNOWN_ARCH.has(architecture)) return undefined;
    return { os: DEFAULT_OS, architecture, variant: architecture === 'arm' && variant === 'v7' ? '' : variant };
  }
  if (parts.length === 2) {
    const [architecture, variant] = normalizeArch(parts[1] ?? '', '');
    return { os, architecture, variant: architecture === 'arm' && variant === 'v7' ? '' : variant };
  }
  const [architecture, variant] = normalizeArch(parts[1] ?? '', parts[2] ?? '');
  return { os, architecture, variant: architecture === 'arm64' && variant === '' ? 'v8' : variant };
}

function format(p: PlatformParts): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/**
 * The ARGs every build predefines (BuildKit's list), for the build and target platforms and the
 * target stage; build args of the same name override them.
 */
export function predefinedArgs(target: PlatformParts, build: PlatformParts, targetStage: string): Map<string, string> {
  return new Map([
    ['BUILDPLATFORM', format(build)],
    ['BUILDOS', build.os],
    ['BUILDOSVERSION', ''],
    ['BUILDARCH', build.architecture],
    ['BUILDVARIANT', build.variant],
    ['TARGETPLATFORM', format(target)],
    ['TARGETOS', target.os],
    ['TARGETOSVERSION', ''],
    ['TARGETARCH', target.architecture],
    ['TARGETVARIANT', target.variant],
    ['TARGETSTAGE', targetStage],
  ]);
}

export const DEFAULT_PLATFORM: PlatformParts = { os: DEFAULT_OS, architecture: DEFAULT_ARCH, variant: '' };
