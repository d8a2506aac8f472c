#!/usr/bin/env bash
# Builds the example image, runs it and prints its history — installing what is missing first.
# For a fresh Debian 12 / Ubuntu machine, as root. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
export npm_config_nodedir=${npm_config_nodedir:-/usr}

if [ "$(id -u)" != 0 ]; then echo "quickstart: run as root (overlay mounts and runc need it)" >&2; exit 1; fi
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then echo "quickstart: Node.js 20 or newer is required (24 recommended)" >&2; exit 1; fi

# All tsbuild needs from the system: an OCI runtime, and busybox for the example's base image.
# Extended attributes, BLAKE3 and (on Node 22.15+) zstd come with Node or as prebuilt addons;
# on older Nodes zstd needs the zstd-napi addon, which pnpm builds only where a compiler is found.
missing=()
for p in runc busybox-static; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "quickstart: installing ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
want_pnpm=$(node -p 'require("./package.json").packageManager.split("@")[1]')
[ "$(pnpm --version 2>/dev/null || true)" = "$want_pnpm" ] || npm install -g "pnpm@$want_pnpm" >/dev/null
# Both are quick when nothing changed, and keep a checkout that was updated since the last run
# from running with old dependencies or an old bundle.
if command -v c++ >/dev/null 2>&1 && command -v make >/dev/null 2>&1; then
  pnpm install --frozen-lockfile
else
  # The only build script is zstd-napi's compile (esbuild's only checks its binary): without a
  # compiler it can only fail, loudly, so it is skipped.
  echo "quickstart: no C++ compiler, so the optional zstd-napi addon is not built; zstd comes from Node's zlib on Node 22.15+ (on older Nodes a zstd layer gives a clear error, gzip works)"
  pnpm install --frozen-lockfile --ignore-scripts
fi
pnpm build

tsbuild() { node packages/cli/dist/tsbuild.js "$@"; }
base=$(mktemp -d)/busybox.tar
bash fixtures/bases/busybox.sh "$base"
tsbuild import "$base" -t busybox:latest >/dev/null
echo "== tsbuild build -t example fixtures/example"
tsbuild build --progress plain -t example fixtures/example
echo "== tsbuild run example"
tsbuild run example
echo "== tsbuild history example"
tsbuild history example
