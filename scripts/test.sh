#!/usr/bin/env bash
# Runs every test file in the repository with Node's test runner (Node 20 does not expand globs).
# Usage: scripts/test.sh [FILTER]  — FILTER is a substring of the test file paths to run.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(find packages test -name '*.test.ts' -not -path '*/node_modules/*' | sort | grep -- "${1:-}")
if [ "${#files[@]}" -eq 0 ]; then echo "no test files found" >&2; exit 1; fi
echo "running ${#files[@]} test files"
exec node --import tsx --test --test-concurrency="${TEST_CONCURRENCY:-2}" "${files[@]}"
