#!/usr/bin/env bash
# Runs every test file in the repository with Node's test runner (Node 20 does not expand globs).
# Usage: scripts/test.sh [FILTER...]  — each FILTER is a substring (grep pattern) of the test file
# paths to run; a file matching any of them runs. The tests run on the `node` found on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
patterns=()
for f in "${@:-}"; do patterns+=(-e "$f"); done
mapfile -t files < <(find packages test -name '*.test.ts' -not -path '*/node_modules/*' | sort | grep "${patterns[@]}")
if [ "${#files[@]}" -eq 0 ]; then echo "no test files found" >&2; exit 1; fi
echo "running ${#files[@]} test files on Node $(node --version) ($(command -v node))"
exec node --import tsx --test --test-concurrency="${TEST_CONCURRENCY:-2}" "${files[@]}"
