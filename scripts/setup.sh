#!/usr/bin/env bash
# Installs what anode needs to build, test and run its examples on Debian 12 (bookworm):
# a C++17 compiler, CMake, LibTorch (Debian's libtorch-dev), GoogleTest's sources, CLI11, Gloo's
# headers, and the Python tools used by the CIFAR data converter and the benchmark report. Safe to re-run: packages that
# are already installed are skipped. Needs root (or sudo) only when something is missing.
#
# A second LibTorch, PyPI's (docs/install.md): ANODE_LIBTORCH=pypi also installs the torch wheel of
# scripts/requirements-pypi.txt (2.15.0, with CUDA) into a virtual environment of the project,
# .venv/ (ignored by git), from Debian's python3 (not the system's site-packages). ANODE_PEERS=1
# adds the Python peers of the benchmarks (scripts/requirements-peers.txt) to the same .venv/.
# The wheels (about 2.8 GB, torch and the nvidia-* CUDA libraries) are kept in .cache/wheels/
# (ignored), so a second install downloads nothing; ANODE_VENV and ANODE_WHEELHOUSE move them.
#   ANODE_LIBTORCH=pypi bash scripts/setup.sh
#   ANODE_LIBTORCH=pypi ANODE_PEERS=1 bash scripts/setup.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
libtorch="${ANODE_LIBTORCH:-debian}"
case "$libtorch" in
  debian | pypi) ;;
  *) echo "setup: ANODE_LIBTORCH must be debian or pypi, not '$libtorch'" >&2; exit 2 ;;
esac

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
# The virtual environment of PyPI's LibTorch is made from Debian's python3 with its venv module.
[[ "$libtorch" == pypi ]] && packages+=(python3 python3-venv)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
missing_optional=()
for p in "${optional[@]}"; do installed "$p" || missing_optional+=("$p"); done
apt_install() {
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null; then
      [[ ${#missing[@]} -eq 0 ]] && { echo "setup: optional ${missing_optional[*]} not installed (no root)"; return 0; }
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
}
if [[ ${#missing[@]} -eq 0 && ${#missing_optional[@]} -eq 0 ]]; then
  echo "setup: all packages present (${#packages[@]} + ${#optional[@]} optional)"
else
  apt_install
fi
[[ "$libtorch" == pypi ]] || exit 0

# ---- PyPI's LibTorch (and the peers) in .venv/
venv="${ANODE_VENV:-$root/.venv}"
wheels="${ANODE_WHEELHOUSE:-$root/.cache/wheels}"
reqs=("$root/scripts/requirements-pypi.txt")
[[ "${ANODE_PEERS:-0}" == 1 ]] && reqs+=("$root/scripts/requirements-peers.txt")
# Every pin (name==version) of the requirement files installed in the venv?
satisfied() {
  [[ -x "$venv/bin/python" ]] || return 1
  "$venv/bin/python" - "${reqs[@]}" <<'PY'
import importlib.metadata as md, sys
for path in sys.argv[1:]:
    for line in open(path):
        line = line.split("#")[0].strip()
        if not line:
            continue
        name, _, want = line.partition("==")
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            sys.exit(1)
        if have != want:
            sys.exit(1)
PY
}
pins() { grep -h -v '^ *#' "${reqs[@]}" | grep -v '^ *$' | tr '\n' ' '; }
if satisfied; then
  echo "setup: $venv has $(pins)"
  exit 0
fi
[[ -x "$venv/bin/python" ]] || /usr/bin/python3 -m venv "$venv"
mkdir -p "$wheels"
reqargs=()
for r in "${reqs[@]}"; do reqargs+=(-r "$r"); done
# The cache is a wheel directory, not pip's HTTP cache (--cache-dir stayed empty when tried on
# this machine's registry): pip download skips the files that it already holds.
t0=$(date +%s)
echo "setup: downloading $(pins)into $wheels"
"$venv/bin/python" -m pip download -q --disable-pip-version-check -d "$wheels" "${reqargs[@]}"
t1=$(date +%s)
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-index --find-links "$wheels" "${reqargs[@]}"
t2=$(date +%s)
echo "setup: $venv has $(pins)(download $((t1 - t0)) s, $(du -sh "$wheels" | cut -f1) in $wheels; install $((t2 - t1)) s)"
