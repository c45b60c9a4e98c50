#!/usr/bin/env bash
# The test command: installs dependencies, configures, builds the tests and the examples and runs
# the whole test suite with CTest. The benchmark programs (which no test runs) are left out here;
# .ci/run builds them in its LibTorch 2.15 job, and `cmake --build build` after configuring without
# -DANODE_BUILD_BENCHMARKS=OFF builds them too.
#   bash scripts/test.sh            # build dir: build/
#   BUILD_DIR=out bash scripts/test.sh
#   ANODE_TEST_OPT=-O3 bash scripts/test.sh   # optimisation level of the build (default -O1)
#
# The build is at -O1, not Release's -O3: measured on the 2-core development machine, -O1 compiles
# the project in a third less CPU time (284 s against 427 s) and the test programs run as fast
# (9.0 s against 8.8 s of CPU for all of them: their time is spent in LibTorch's kernels, which are
# compiled already). -O0 would save another 9% of compile time but loses the warnings that need
# the optimiser (-Wmaybe-uninitialized) and tests code unlike what users run.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${BUILD_DIR:-build}"
jobs="${JOBS:-$(nproc)}"
opt="${ANODE_TEST_OPT:--O1}"

ANODE_SETUP_EXTRAS=0 bash scripts/setup.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=$opt -DNDEBUG" \
      -DANODE_BUILD_BENCHMARKS=OFF
cmake --build "$build" -j "$jobs"
cd "$build"
# headers.self_contained (each header compiled alone) is .ci/run's: minutes of compiling.
ctest --output-on-failure -j "$jobs" --timeout 900 -LE headers
