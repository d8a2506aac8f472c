/**
 * The native addons tsbuild imports (`@napi-rs/blake-hash` for context hashing, `@napi-rs/xattr`
 * for the extended attributes of layers; scripts/build.mjs lists them; zstd comes from Node 24's
 * zlib here) cannot be bundled into one JavaScript file, and an action's checkout has no
 * node_modules. The bundle therefore reaches them through this loader, on first use only: from
 * `TSBUILD_NATIVE_DIR`, from a node_modules above the bundle (a checkout that ran `pnpm install`),
 * or from a per-version cache directory that `npm install` fills once with the exact versions the
 * bundle was built against.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TsbuildError } from '@tsbuild/errors';

/** Exact versions, filled in by the bundler from the installed packages. */
declare const TSBUILD_NATIVE_VERSIONS: Record<string, string> | undefined;

const loaded = new Map<string, unknown>();

function versions(): Record<string, string> {
  return typeof TSBUILD_NATIVE_VERSIONS === 'undefined' ? {} : TSBUILD_NATIVE_VERSIONS;
}

/** Where `npm install` puts the addons: the runner's tool cache survives between jobs on self-hosted runners. */
export function nativeCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.TSBUILD_NATIVE_CACHE || env.RUNNER_TOOL_CACHE || env.RUNNER_TEMP || tmpdir();
  const key = Object.entries(versions()).map(([n, v]) => `${n.replace(/[@/]/g, '_')}-${v}`).join('+') || 'unversioned';
  return join(base, 'tsbuild-native', `${process.platform}-${process.arch}-node${process.versions.modules}`, key);
}

function tryRequire(from: string, name: string): unknown {
  try {
    return createRequire(from)(name);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') return undefined;
    throw e;
  }
}

export function loadNative<T>(name: string): T {
  const hit = loaded.get(name);
  if (hit !== undefined) return hit as T;
  const env = process.env;
  let mod: unknown;
  if (env.TSBUILD_NATIVE_DIR) mod = tryRequire(join(env.TSBUILD_NATIVE_DIR, 'noop.js'), name);
  mod ??= tryRequire(import.meta.url, name);
  if (mod === undefined) {
    const dir = nativeCacheDir(env);
    const anchor = join(dir, 'noop.js');
    mod = tryRequire(anchor, name);
    if (mod === undefined) {
      const version = versions()[name];
      if (version === undefined) throw new TsbuildError('NATIVE_MODULE', `${name} is not installed and this build of tsbuild does not pin its version`);
      mkdirSync(dir, { recursive: true });
      const spec = `${name}@${version}`;
      process.stderr.write(`tsbuild: installing ${spec} into ${dir}\n`);
      // An addon without a prebuilt binary falls back to node-gyp; a distribution's Node keeps its headers in /usr.
      const npmEnv = { ...env };
      if (npmEnv.npm_config_nodedir === undefined && existsSync('/usr/include/node/node.h')) npmEnv.npm_config_nodedir = '/usr';
      try {
        execFileSync('npm', ['install', '--no-save', '--no-audit', '--no-fund', '--no-package-lock', '--prefix', dir, spec], {
          stdio: ['ignore', 'ignore', 'inherit'],
          env: npmEnv,
        });
      } catch (e) {
        throw new TsbuildError('NATIVE_MODULE', `cannot install ${spec}: ${(e as Error).message}`, {
          hint: `install it yourself and point TSBUILD_NATIVE_DIR at the directory holding node_modules/${name}`,
          cause: e,
        });
      }
      mod = tryRequire(anchor, name);
      if (mod === undefined) throw new TsbuildError('NATIVE_MODULE', `${spec} was installed into ${dir} but cannot be loaded`);
    }
  }
  loaded.set(name, mod);
  return mod as T;
}
