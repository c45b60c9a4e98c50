#!/usr/bin/env bash
# Installs what anode needs to build, test and run its examples on Debian 12 (bookworm):
# a C++17 compiler, CMake, LibTorch (Debian's libtorch-dev), GoogleTest's sources, CLI11, Gloo's
# headers, and the Python tools used by the CIFAR data converter and the benchmark report. Safe to
# re-run: packages that are already installed are skipped. Needs root (or sudo) only when something is missing.
set -euo pipefail

# libcli11-dev: the command-line parser of the examples and benchmark programs (header-only).
# libgloo-dev: Gloo's headers, which c10d's ProcessGroupGloo.hpp includes (data parallelism,
# anode/distributed.hpp; without them it is configured off).
packages=(g++ make cmake libtorch-dev googletest libgtest-dev libcli11-dev libgloo-dev)
# clang-format-14: the version the lint test judges formatting with (scripts/check_format.sh).
# Optional: distributions without it (Debian 13) skip the lint, with a message.
optional=(clang-format-14)
if [[ "${ANODE_SETUP_EXTRAS:-1}" == 1 ]]; then
  # CIFAR-10 converter (PIL, NumPy), benchmark report (matplotlib), Python peers (torch).
  packages+=(python3 python3-pil python3-numpy python3-matplotlib python3-torch)
  # OpenBLAS (OpenMP build, so that torch::set_num_threads governs its threads too): Debian's
  # LibTorch calls whichever libblas.so.3 the alternatives system selects, and without this that
  # is the reference BLAS, 3 to 6 times slower on the small GEMMs of an MLP right-hand side
  # (docs/bench_mlp.md measures both). Installing it makes it the system's libblas.so.3.
  packages+=(libopenblas0-openmp)
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
missing_optional=()
for p in "${optional[@]}"; do installed "$p" || missing_optional+=("$p"); done
if [[ ${#missing[@]} -eq 0 && ${#missing_optional[@]} -eq 0 ]]; then
  echo "setup: all packages present (${#packages[@]} + ${#optional[@]} optional)"
  exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if ! command -v sudo >/dev/null; then
    [[ ${#missing[@]} -eq 0 ]] && { echo "setup: optional ${missing_optional[*]} not installed (no root)"; exit 0; }
    echo "setup: need root or sudo to install: ${missing[*]}" >&2
    exit 1
  fi
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
for p in "${missing_optional[@]}"; do
  if apt-cache show "$p" >/dev/null 2>&1; then
    missing+=("$p")
  else
    echo "setup: optional package $p is not in this distribution; the lint test will be skipped"
  fi
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "setup: installing ${missing[*]}"
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
