#!/usr/bin/env bash
# Fails (listing the files) when any C++ file in the repository differs from clang-format's output
# under the repository's .clang-format. Run `clang-format -i <files>` to fix.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "check_format: clang-format not installed" >&2; exit 1; }
mapfile -t files < <(git ls-files '*.hpp' '*.cpp' '*.h' '*.c' 2>/dev/null || true)
[[ ${#files[@]} -gt 0 ]] || { echo "check_format: no files (not a git checkout?)"; exit 0; }
bad=()
for f in "${files[@]}"; do
  clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [[ ${#bad[@]} -gt 0 ]]; then
  echo "check_format: ${#bad[@]} file(s) not clang-formatted:"; printf '  %s\n' "${bad[@]}"; exit 1
fi
echo "check_format: ${#files[@]} files clean"
