import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Where base rootfs tarballs are kept between runs (they are reproducible, so caching is safe). */
export const BASE_CACHE = process.env.TSBUILD_TEST_CACHE ?? '/var/cache/tsbuild-test';

/** The busybox rootfs tarball made by fixtures/bases/busybox.sh (cached). */
export function busyboxTar(): string {
  mkdirSync(BASE_CACHE, { recursive: true });
  const out = join(BASE_CACHE, 'busybox.tar');
  execFileSync('bash', [join(REPO, 'fixtures/bases/busybox.sh'), out], { stdio: 'inherit' });
  return out;
}

/** The debian:bookworm rootfs tarball (debootstrap, about a minute the first time), or undefined if it cannot be made. */
export function debianTar(): string | undefined {
  mkdirSync(BASE_CACHE, { recursive: true });
  const out = join(BASE_CACHE, 'debian-bookworm.tar');
  if (existsSync(out)) return out;
  if (process.env.TSBUILD_TEST_DEBIAN === '0') return undefined;
  try {
    execFileSync('bash', [join(REPO, 'fixtures/bases/debian.sh'), out], { stdio: 'inherit', timeout: 15 * 60_000 });
  } catch {
    return undefined;
  }
  return existsSync(out) ? out : undefined;
}
