// Bundles the CLI into one CommonJS file (dist/tsbuild.cjs) started by a small launcher
// (dist/tsbuild.js) that compiles it with a V8 code cache, so `tsbuild` starts from compiled
// JavaScript without re-parsing 600 KB on every run. Native addons load on first use from
// packages/cli/node_modules.
import { build } from 'esbuild';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';

/**
 * The native addons tsbuild imports and what it imports from each: the bundles stub exactly these.
 * The optional zstd-napi is not among them: @tsbuild/layer requires it at run time where it is
 * installed (packages/cli/node_modules for the CLI) and uses Node's own zstd where it is not, as
 * in the Action, which runs on Node 24.
 */
const nativeExports = {
  '@napi-rs/blake-hash': { functions: ['blake3'], classes: ['Blake3Hasher'] },
  '@napi-rs/xattr': { functions: ['getAttributeSync', 'listAttributesSync', 'setAttributeSync'], classes: [] },
};
const nativeFilter = new RegExp(`^(${Object.keys(nativeExports).map((n) => n.replace(/[/.]/g, '\\$&')).join('|')})$`);

/** Replaces imports of the native addons by stubs that `require` them the first time they are used. */
function lazyNative() {
  return {
    name: 'tsbuild-lazy-native',
    setup(b) {
      b.onResolve({ filter: nativeFilter }, (args) =>
        args.namespace === 'tsbuild-lazy' ? { path: args.path, external: true } : { path: args.path, namespace: 'tsbuild-lazy' });
      b.onLoad({ filter: /.*/, namespace: 'tsbuild-lazy' }, (args) => {
        const { functions, classes } = nativeExports[args.path];
        const lines = [`const name = ${JSON.stringify(args.path)}; let mod; const load = () => (mod ??= require(name));`];
        for (const f of functions) lines.push(`export function ${f}(...a) { return load().${f}(...a); }`);
        for (const c of classes) lines.push(`export const ${c} = function ${c}(...a) { return new (load().${c})(...a); };`);
        return { contents: lines.join('\n'), loader: 'js' };
      });
    },
  };
}

/**
 * string-width builds a Unicode emoji regex and an Intl.Segmenter when its module is evaluated
 * (~10 ms of every run, measured); yargs needs it only to wrap help text. Its importers get a
 * shim that requires the real module (which esbuild then initialises lazily) on the first call.
 */
function lazyStringWidth() {
  return {
    name: 'tsbuild-lazy-string-width',
    setup(b) {
      b.onResolve({ filter: /^string-width$/ }, async (args) => {
        if (args.pluginData === 'real') return undefined;
        const real = await b.resolve(args.path, { kind: args.kind, resolveDir: args.resolveDir, pluginData: 'real' });
        return { path: real.path, namespace: 'tsbuild-lazy-string-width' };
      });
      b.onLoad({ filter: /.*/, namespace: 'tsbuild-lazy-string-width' }, (args) => ({
        contents: `let impl; export default function stringWidth(...a) { impl ??= require(${JSON.stringify(args.path)}).default; return impl(...a); }`,
        loader: 'js',
        resolveDir: '/',
      }));
    },
  };
}

/**
 * yargs renders the whole help text after every command just to cache it for failure output,
 * which tsbuild never shows (its fail handler throws): ~50 ms of every run. Drop that cache fill.
 */
function noHelpCache() {
  return {
    name: 'tsbuild-no-help-cache',
    setup(b) {
      b.onLoad({ filter: /[\\/]yargs[\\/]build[\\/]lib[\\/]usage\.js$/ }, async (args) => {
        const { readFile } = await import('node:fs/promises');
        const text = await readFile(args.path, 'utf8');
        const fill = 'cachedHelpMessage = this.help();';
        if (!text.includes(fill)) throw new Error(`yargs changed: ${fill} not found in ${args.path}`);
        return { contents: text.replace(fill, ''), loader: 'js' };
      });
    },
  };
}

/*
 * The launcher: compiles tsbuild.cjs with the code cache next to it, runs it, and on a cache miss
 * (first run, new bundle, new Node) writes the cache at exit, after the run compiled what it used.
 * A cache that cannot be written (read-only install) only costs the compile it would have saved.
 */
const LAUNCHER = `#!/usr/bin/env node
'use strict';
// CommonJS (dist/package.json says so): an ES module launcher would start Node's ESM loader first.
const { readFileSync, writeFileSync, renameSync } = require('node:fs');
const { createRequire } = require('node:module');
const { Script } = require('node:vm');
const file = __dirname + '/tsbuild.cjs';
const cacheFile = file + '.v8-' + process.version;
const source = readFileSync(file, 'utf8');
let cachedData;
try { cachedData = readFileSync(cacheFile); } catch {}
const wrapper = '(function (exports, require, module, __filename, __dirname) {' + source + '\\n})';
const script = new Script(wrapper, { filename: file, cachedData });
if (cachedData === undefined || script.cachedDataRejected) {
  process.once('exit', () => {
    try {
      const tmp = cacheFile + '.' + process.pid;
      writeFileSync(tmp, script.createCachedData());
      renameSync(tmp, cacheFile);
    } catch {}
  });
}
const mod = { exports: {} };
script.runInThisContext()(mod.exports, createRequire(file), mod, file, __dirname);
`;

const version = JSON.parse(readFileSync(new URL('../packages/cli/package.json', import.meta.url), 'utf8')).version;
const outfile = new URL('../packages/cli/dist/tsbuild.cjs', import.meta.url).pathname;
const launcher = new URL('../packages/cli/dist/tsbuild.js', import.meta.url).pathname;

await build({
  entryPoints: [new URL('../packages/cli/src/main.ts', import.meta.url).pathname],
  outfile,
  bundle: true,
  platform: 'node',
  // The CLI supports every Node from 20 on (package.json engines), not only the Action's.
  target: 'node20',
  format: 'cjs',
  sourcemap: 'linked',
  // TSBUILD_BUNDLE_READABLE=1 keeps the code as written, so a --cpu-prof profile names lines.
  minifyWhitespace: !process.env.TSBUILD_BUNDLE_READABLE,
  minifySyntax: !process.env.TSBUILD_BUNDLE_READABLE,
  // Bundled ES modules (yargs) ask import.meta.url for their location: answer with the bundle's.
  banner: { js: "const __tsbuildMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  define: { TSBUILD_VERSION: JSON.stringify(version), 'import.meta.url': '__tsbuildMetaUrl' },
  // Native addons load on first use (a cached rebuild needs neither), from packages/cli/node_modules.
  plugins: [lazyNative(), noHelpCache(), lazyStringWidth()],
  logLevel: 'warning',
});
// vm.Script has no module loader: a dynamic import() in the bundle would fail at run time.
if (/[^\w.]import\(/.test(readFileSync(outfile, 'utf8'))) throw new Error('the CLI bundle must not contain dynamic import()');
writeFileSync(launcher, LAUNCHER);
chmodSync(launcher, 0o755);
writeFileSync(new URL('../packages/cli/dist/package.json', import.meta.url).pathname, JSON.stringify({ type: 'commonjs' }) + '\n');

// The GitHub Action runs a committed bundle (a runner installs nothing before `node` starts it).
// The native addons cannot be bundled: their imports are replaced by shims that load them on first
// use through packages/action/src/native.ts, which knows the exact versions below.
// TSBUILD_ACTION_OUTFILE lets CI rebuild to another path and compare with the committed file.
const actionDir = new URL('../packages/action/', import.meta.url).pathname;
const nativeVersions = Object.fromEntries(
  Object.keys(nativeExports).map((name) => [name, JSON.parse(readFileSync(`${actionDir}node_modules/${name}/package.json`, 'utf8')).version]),
);
await build({
  entryPoints: [`${actionDir}src/main.ts`],
  outfile: process.env.TSBUILD_ACTION_OUTFILE || `${actionDir}dist/index.js`,
  absWorkingDir: new URL('..', import.meta.url).pathname,
  bundle: true,
  platform: 'node',
  // action.yml runs the bundle with `using: node24`.
  target: 'node24',
  format: 'esm',
  legalComments: 'none',
  define: { TSBUILD_NATIVE_VERSIONS: JSON.stringify(nativeVersions), TSBUILD_VERSION: JSON.stringify(version) },
  banner: {
    js: "import { createRequire as __tsbuildCreateRequire } from 'node:module';\nconst require = __tsbuildCreateRequire(import.meta.url);",
  },
  plugins: [
    {
      name: 'tsbuild-native-shims',
      setup(b) {
        b.onResolve({ filter: nativeFilter }, (args) => ({ path: args.path, namespace: 'tsbuild-native' }));
        b.onLoad({ filter: /.*/, namespace: 'tsbuild-native' }, (args) => {
          const { functions, classes } = nativeExports[args.path];
          const m = `loadNative(${JSON.stringify(args.path)})`;
          const lines = [`import { loadNative } from './native.ts';`];
          for (const f of functions) lines.push(`export function ${f}(...a) { return ${m}.${f}(...a); }`);
          for (const c of classes) lines.push(`export const ${c} = function ${c}(...a) { return new (${m}.${c})(...a); };`);
          return { contents: lines.join('\n'), resolveDir: `${actionDir}src`, loader: 'js' };
        });
      },
    },
  ],
  logLevel: 'warning',
});
