#!/usr/bin/env bash
# Installs what anode needs to build, test and run its examples on Debian 12 (bookworm):
# a C++17 compiler, CMake, LibTorch (Debian's libtorch-dev), GoogleTest's sources, and Python
# tools used by the CIFAR data converter and the benchmark report. Safe to re-run: packages that
# are already installed are skipped. Needs root (or sudo) only when something is missing.
set -euo pipefail

# clang-format-14: the version the lint test judges formatting with (scripts/check_format.sh).
packages=(g++ make cmake libtorch-dev googletest libgtest-dev clang-format-14)
if [[ "${ANODE_SETUP_EXTRAS:-1}" == 1 ]]; then
  # CIFAR-10 converter (PIL, NumPy), benchmark report (matplotlib), Python peers (torch).
  packages+=(python3 python3-pil python3-numpy python3-matplotlib python3-torch)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup: all packages present (${#packages[@]})"
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
