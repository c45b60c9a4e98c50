#!/usr/bin/env bash
# The test command: installs dependencies, configures, builds everything (library, tests,
# examples, benchmarks) and runs the whole test suite with CTest.
#   bash scripts/test.sh            # build dir: build/
#   BUILD_DIR=out bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
jobs="${JOBS:-$(nproc)}"

ANODE_SETUP_EXTRAS=0 bash scripts/setup.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$jobs"
cd "$build"
ctest --output-on-failure -j "$jobs" --timeout 900
