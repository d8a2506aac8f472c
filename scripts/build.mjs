// Bundles the CLI into one ESM file so `tsbuild` starts from compiled JavaScript with a single
// module load. Native addons stay external and are resolved from packages/cli/node_modules.
import { build } from 'esbuild';
import { chmodSync, readFileSync } from 'node:fs';

const version = JSON.parse(readFileSync(new URL('../packages/cli/package.json', import.meta.url), 'utf8')).version;
const outfile = new URL('../packages/cli/dist/tsbuild.js', import.meta.url).pathname;

await build({
  entryPoints: [new URL('../packages/cli/src/main.ts', import.meta.url).pathname],
  outfile,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  sourcemap: 'linked',
  external: ['@napi-rs/blake-hash', 'zstd-napi'],
  define: { TSBUILD_VERSION: JSON.stringify(version) },
  banner: {
    js: "#!/usr/bin/env node\nimport { createRequire as __tsbuildCreateRequire } from 'node:module';\nconst require = __tsbuildCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
chmodSync(outfile, 0o755);
