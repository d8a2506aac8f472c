/** Where the benchmarks find the CLI, the base images and the tools they compare against. */
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { log, run } from './proc.ts';

/** bench/ */
export const BENCH = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const REPO = resolve(BENCH, '..');
export const RESULTS = resolve(BENCH, 'RESULTS.md');
export const CLI = resolve(REPO, 'packages/cli/dist/tsbuild.js');
export const BUSYBOX_TAR = process.env.TSBUILD_BENCH_BUSYBOX ?? '/var/cache/tsbuild-test/busybox.tar';
export const DEBIAN_TAR = process.env.TSBUILD_BENCH_DEBIAN ?? '/var/cache/tsbuild-test/debian-bookworm.tar';
/** Another docker client may come first on PATH, without BuildKit support. */
export const DOCKER = '/usr/bin/docker';

export type Base = 'busybox' | 'debian';

export const baseTar = (b: Base): string => (b === 'busybox' ? BUSYBOX_TAR : DEBIAN_TAR);

/** Builds the CLI bundle when it is missing and makes the base image tarballs the benchmarks start from. */
export function ensureInputs(bases: readonly Base[] = ['busybox', 'debian']): void {
  if (!existsSync(CLI)) run('pnpm', ['build'], { cwd: REPO });
  for (const b of bases) {
    const f = baseTar(b);
    if (!existsSync(f)) {
      log(`making ${f}`);
      run('bash', [resolve(REPO, 'fixtures/bases', b === 'busybox' ? 'busybox.sh' : 'debian.sh'), f], { stdio: 'inherit' });
    }
  }
}

/**
 * A private copy of the CLI bundle, so that a `pnpm build` elsewhere in the checkout during a
 * long run cannot change the program under test halfway. Its native addons still resolve from
 * packages/cli/node_modules through a symlink. Returns the copy's entry point.
 */
export function snapshotCli(dir: string): string {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  // Everything the bundle is made of (its package.json says which module system it is), but
  // not the source map or V8 code caches, which the copy makes for itself.
  for (const f of readdirSync(dirname(CLI))) {
    if (!f.endsWith('.map') && !f.includes('.v8-')) copyFileSync(resolve(dirname(CLI), f), resolve(dir, f));
  }
  symlinkSync(resolve(REPO, 'packages/cli/node_modules'), resolve(dir, 'node_modules'));
  return resolve(dir, 'tsbuild.js');
}
