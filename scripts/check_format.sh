#!/usr/bin/env bash
# Checks that every tracked C/C++ file is formatted as clang-format 14 (Debian 12's) formats it under
# the repository's .clang-format. Another clang-format version formats differently, so the check
# judges with version 14 only:
#   exit 0   all files clean
#   exit 1   some files differ (listed); fix with `clang-format-14 -i <files>`
#   exit 77  skipped: clang-format 14 is not installed, or this is not a git checkout
# (77 is the test's SKIP_RETURN_CODE in tests/CMakeLists.txt.) CLANG_FORMAT=/path/to/binary picks
# the binary; it must still be version 14.
set -euo pipefail
cd "$(dirname "$0")/.."
readonly required=14
readonly skip=77

version_of() {  # major version of a clang-format binary, or nothing
  "$1" --version 2>/dev/null | sed -n 's/.*clang-format version \([0-9][0-9]*\)\..*/\1/p' | head -n 1
}

candidates=()
if [[ -n "${CLANG_FORMAT:-}" ]]; then
  candidates=("$CLANG_FORMAT")
else
  for name in "clang-format-$required" clang-format; do
    path=$(command -v "$name" 2>/dev/null) && candidates+=("$path")
  done
fi
clang_format=""
seen=""
for c in "${candidates[@]}"; do
  v=$(version_of "$c" || true)
  seen+=" $c (${v:-unknown version})"
  if [[ "$v" == "$required" ]]; then
    clang_format="$c"
    break
  fi
done
if [[ -z "$clang_format" ]]; then
  echo "check_format: SKIPPED: clang-format $required not found (looked for clang-format-$required" \
    "and clang-format on PATH${CLANG_FORMAT:+ and CLANG_FORMAT}; found:${seen:- none}). The" \
    "format is judged by version $required only; on Debian 12: apt-get install clang-format-$required"
  exit "$skip"
fi

if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  echo "check_format: SKIPPED: not a git checkout (the files checked are git's tracked files)"
  exit "$skip"
fi
mapfile -t files < <(git ls-files -- '*.hpp' '*.cpp' '*.h' '*.c')
if [[ ${#files[@]} -eq 0 ]]; then
  echo "check_format: no tracked C/C++ files found" >&2
  exit 1
fi

bad=()
for f in "${files[@]}"; do
  [[ -f "$f" ]] || continue  # deleted in the work tree, not yet committed
  "$clang_format" --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [[ ${#bad[@]} -gt 0 ]]; then
  echo "check_format: ${#bad[@]} file(s) not formatted as $clang_format formats them:"
  printf '  %s\n' "${bad[@]}"
  echo "fix: $clang_format -i ${bad[*]}"
  exit 1
fi
echo "check_format: ${#files[@]} files clean ($clang_format, version $required)"
