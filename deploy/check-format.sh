#!/usr/bin/env bash
# Fails when a tracked C++ file differs from what clang-format (.clang-format:
# Google style, 120 columns) makes of it. Run by deploy/run-tests.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.cc' '*.h' 2>/dev/null || find . -name '*.cc' -o -name '*.h' | grep -v '^./build')
if ! clang-format --dry-run --Werror "${files[@]}" 2>/tmp/upp-format.log; then
  grep -m 20 "error:" /tmp/upp-format.log || true
  echo "format: files differ from clang-format; run: git ls-files '*.cc' '*.h' | xargs clang-format -i"
  exit 1
fi
echo "format: ${#files[@]} files as clang-format makes them"
