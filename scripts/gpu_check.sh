#!/usr/bin/env bash
# The GPU check (CUDA, where users train): on a machine with an NVIDIA GPU and a
# CUDA build of PyTorch, one command builds anode against the LibTorch inside the PyTorch wheel,
# runs the CUDA tests and the benchmarks on the GPU, then the whole CTest suite, and writes the
# results to one folder. It is made to finish within 10 minutes (one call on a lent GPU machine):
# every stage runs under `timeout` inside a total budget of ANODE_GPU_BUDGET_S seconds (default
# 540); a stage that fails or runs out of time is recorded, and the next one runs.
#
#   bash scripts/gpu_check.sh                # results in $OUT, or gpu-results/ if OUT is unset
#
# Stages, in this order (the measurements nobody can make without a GPU come first; the rest of
# the build and the CPU-heavy suite last, so that a slow build cannot cost the GPU figures):
#   configure    CMake, Ninja, Release, -DCMAKE_PREFIX_PATH=<torch.utils.cmake_prefix_path>
#   build-first  test_cuda, test_library, bench_peers, bench_plan, anode-cifar (all cores)
#   test-cuda    tests/test_cuda and test_library's Cuda tests on the GPU      -> test_cuda.log
#                (results as GoogleTest JSON: gpu-check/tests/test_cuda.json, test_usage_cuda.json;
#                test_cuda's memory-plan tests print each plan)
#   plan         bench_plan --device cuda: the memory plan's time-memory curve against the fixed
#                strategies on the peers network (N_t 8) and ResNet18-ODE at width 0.25, on the
#                counting CUDA meter (gpu-check/plan/bench_plan.csv, its table in the log)
#   peers        bench_peers --device cuda: the peers network (4 conv ODE blocks, 32 channels,
#                batch 8, 32x32, RK2) at N_t 2/8/32 for backprop, anode, anode-k4, adjoint:
#                step time and CUDA peak memory
#   torchdiffeq  benchmarks/python/peers.py --device cuda: torchdiffeq's odeint and
#                odeint_adjoint, and plain PyTorch autograd, on the same network
#   cifar        anode-cifar: ResNet18-ODE training on synthetic CIFAR-10 (random pixels), Anode
#                and Backprop, 2 short epochs each (the second, warm epoch's throughput counts)
#   build-all    everything else (the other tests, the examples and benchmarks)
#   ctest        the whole CTest suite, -j$(nproc), with the time left           -> ctest.log
#                (results as JUnit: gpu-check/tests/ctest.xml; the tests it was to run:
#                ctest_list.json; it stops itself 30 s before the stage's time is up, so that
#                the JUnit file is written and the tests never started are named)
#   peers-large  (only when named in ANODE_GPU_STAGES) the peers network at batch 128, 64 channels
# After every stage scripts/gpu_summary.py rewrites summary.txt, peers.csv and cifar.csv and the
# work folder is packed again, so a run stopped at its time limit still leaves its results.
# Duration on one H200 with 16 cores (2026-11-26): 348 s, the build 160 s of it.
#
# Results, at most 8 files (what comes back from a lent GPU machine):
#   summary.txt  progress.log  build.log  test_cuda.log  ctest.log  peers.csv  cifar.csv
#   details.tar.gz (raw CSVs, first-step gradients, every stage's log)
#
# Environment:
#   OUT                     results folder (default: gpu-results/ in the repository)
#   PYTHON                  the Python with PyTorch (default: python3)
#   BUILD_DIR               build folder (default: build-gpu)
#   JOBS                    parallel build jobs and CTest's -j (default: nproc)
#   ANODE_GPU_BUDGET_S      seconds for all stages together (default 540)
#   ANODE_GPU_STAGES        comma-separated stages to run (default: all but peers-large)
#   ANODE_GPU_DEVICE        cuda (default), or cpu: a dry run of the whole pipeline on a machine
#                           without a GPU, with tiny sizes (the CUDA tests then skip)
#   ANODE_GPU_CTEST_ARGS    extra ctest arguments (dry-run default: -R "Cuda|python")
#   ANODE_TORCH_PREFIX      CMake prefix of LibTorch (default: from PYTHON's torch, if it has one)
#   ANODE_CXX_STANDARD      C++ standard to build with (default: CMake's and anode's, C++17; 20
#                           when LibTorch's headers demand it, as PyTorch's newest do)
#   ANODE_GTEST_SOURCE_DIR  GoogleTest sources (default: /usr/src/googletest, else
#                           .gpu-deps/googletest in the repository); none: no tests are built
#   ANODE_TORCHDIFFEQ_PATH  directory holding the torchdiffeq package (default: PYTHON's own)
set -euo pipefail

self="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
repo="$(cd "$(dirname "$self")/.." && pwd)"
cd "$repo"

# ----------------------------------------------------------------------------- settings
# (no side effects here: stages re-enter this script with --stage and recompute them)
py="${PYTHON:-python3}"
device="${ANODE_GPU_DEVICE:-cuda}"
budget="${ANODE_GPU_BUDGET_S:-540}"
jobs="${JOBS:-$(nproc)}"
build="${BUILD_DIR:-build-gpu}"
[[ "$build" = /* ]] || build="$repo/$build"
results="${OUT:-$repo/gpu-results}"
work="$build/gpu-check"       # raw CSVs, gradients and logs: packed into details.tar.gz
data="$build/gpu-check-data"  # synthetic CIFAR-10 (not packed)
default_stages="configure,build-first,test-cuda,plan,peers,torchdiffeq,cifar,build-all,ctest"
stages=",${ANODE_GPU_STAGES:-$default_stages},"
dry=0
[[ "$device" == cpu ]] && dry=1
ctest_args="${ANODE_GPU_CTEST_ARGS:-}"
if [[ $dry == 1 && -z "$ctest_args" ]]; then ctest_args='-R Cuda|python'; fi

if [[ $dry == 1 ]]; then
  nts=2,4
  small_net=(--L 2 --channels 8 --size 8)
  large_net=(--L 2 --channels 16 --batch 16 --size 8)
  timing=(--warmup 1 --repeats 2 --max-repeats 3 --budget 1)
  cifar_opts=(--width 0.125 --batch-size 32 --limit 128 --test-limit 64 --threads 2 --workers 1)
  n_train=160
  n_test=64
  cifar_runs="anode:euler:2 backprop:euler:2"
  plan_opts=(--nets peers8 --size 8 --budgets 3 --repeats 1 --rounds 1)
else
  nts=2,8,32
  small_net=()
  large_net=(--batch 128 --channels 64)
  timing=(--warmup 3 --repeats 10 --max-repeats 50 --budget 3)
  cifar_opts=(--width 1 --batch-size 256 --limit 5120 --test-limit 512 --threads 4 --workers 4)
  n_train=5120
  n_test=512
  cifar_runs="anode:euler:2 backprop:euler:2 anode:rk2:8 backprop:rk2:8"
  plan_opts=(--nets peers8,resnet18 --budgets 6 --above 1.05 --repeats 3 --rounds 2 --pairs 40)
fi

# ----------------------------------------------------------------------------- helpers
now() { date +%s; }

log() {
  local at=""
  [[ -n "${GPU_CHECK_T0:-}" ]] && at=" +$(($(now) - GPU_CHECK_T0))s"
  printf '[gpu_check %s%s] %s\n' "$(date +%H:%M:%S)" "$at" "$*" |
    tee -a "$results/progress.log" >&2
}

want() { [[ "$stages" == *",$1,"* ]]; }

# Seconds a stage may take: its own cap, within what is left of the budget (20 s are kept for the
# summary and the archive at the end).
time_for() {
  local cap=$1 left=$((${GPU_CHECK_DEADLINE:-$(($(now) + budget))} - $(now) - 20))
  ((left < cap)) && cap=$left
  ((cap < 0)) && cap=0
  echo "$cap"
}

exe() {  # the path of a built program, or nothing
  find "$build" -name "$1" -type f -perm -u+x -print -quit 2>/dev/null
}

# ----------------------------------------------------------------------------- stage bodies
# Each runs in its own process (bash gpu_check.sh --stage NAME ...) under `timeout`.

stage_cuda_tests() {
  local tc tu rc=0
  tc="$(exe test_cuda)"
  tu="$(exe test_library)"
  [[ -n "$tc" ]] || {
    echo "test_cuda was not built (see build.log)"
    return 1
  }
  mkdir -p "$work/tests"
  "$tc" --gtest_color=no "--gtest_output=json:$work/tests/test_cuda.json" || rc=$?
  if [[ -n "$tu" ]]; then
    "$tu" --gtest_color=no --gtest_filter='*Cuda*' \
      "--gtest_output=json:$work/tests/test_usage_cuda.json" || rc=$?
  fi
  return "$rc"
}

stage_plan() {
  local bp
  bp="$(exe bench_plan)"
  [[ -n "$bp" ]] || {
    echo "bench_plan was not built (see build.log)"
    return 1
  }
  mkdir -p "$work/plan"
  "$bp" --device "$device" --threads 1 --print-plans "${plan_opts[@]}" \
    --csv "$work/plan/bench_plan.csv"
}

# The first step's gradients are kept for the small network only, for the summary to compare (the
# large network's are tens of megabytes each).
stage_peers_cpp() {  # config network-flags...
  local config=$1 bp gflags=()
  shift
  bp="$(exe bench_peers)"
  [[ -n "$bp" ]] || {
    echo "bench_peers was not built (see build.log)"
    return 1
  }
  if [[ $config == small ]]; then
    mkdir -p "$work/grads/$config"
    gflags=(--grad-dir "$work/grads/$config")
  fi
  "$bp" --device "$device" --nt "$nts" --modes backprop,anode,anode-k4,adjoint --threads 1 \
    "${timing[@]}" "${gflags[@]}" --csv "$work/peers/cpp_$config.csv" "$@"
}

stage_peers_py() {  # config network-flags...
  local config=$1 rc=0 impl gflags=()
  shift
  if [[ $config == small ]]; then
    mkdir -p "$work/grads/$config"
    gflags=(--grad-dir "$work/grads/$config")
  fi
  for impl in torchdiffeq torchdiffeq-adjoint torch-backprop; do
    "$py" "$repo/benchmarks/python/peers.py" --impl "$impl" --device "$device" --nt "$nts" \
      --threads 1 "${timing[@]}" "${gflags[@]}" --csv "$work/peers/py_${config}_$impl.csv" \
      "$@" || rc=$?
  done
  return "$rc"
}

stage_peers_large() {
  local rc=0
  stage_peers_cpp large "${large_net[@]}" || rc=$?
  stage_peers_py large "${large_net[@]}" || rc=$?
  return "$rc"
}

make_cifar() {  # synthetic CIFAR-10 in the official binary layout (random pixels: timing only)
  "$py" - "$data/cifar-10-batches-bin" "$n_train" "$n_test" <<'EOF'
import os, random, sys
out, n_train, n_test = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(out, exist_ok=True)
rng = random.Random(0)
def write(name, n, start):
    with open(os.path.join(out, name), "wb") as f:
        for i in range(n):
            f.write(bytes([(start + i) % 10]) + rng.randbytes(3072))
per = n_train // 5
for k in range(5):
    write(f"data_batch_{k + 1}.bin", per if k < 4 else n_train - 4 * per, k * per)
write("test_batch.bin", n_test, 0)
print(f"wrote {n_train} + {n_test} synthetic CIFAR-10 records to {out}")
EOF
}

stage_cifar() {
  local bin rc=0 spec g m n name
  bin="$(exe anode-cifar)"
  [[ -n "$bin" ]] || {
    echo "anode-cifar was not built (see build.log)"
    return 1
  }
  make_cifar
  echo "ResNet18-ODE, $n_train synthetic images, 2 epochs; options: ${cifar_opts[*]}" \
    >"$work/cifar/setup.txt"
  for spec in $cifar_runs; do
    IFS=: read -r g m n <<<"$spec"
    name="${g}_${m}_nt${n}"
    rm -rf "${work:?}/cifar/$name"
    echo "--- $name"
    # Each run is boxed too, so that one slow run leaves time for the next.
    timeout --kill-after=10 "$(time_for 100)" "$bin" --data "$data/cifar-10-batches-bin" \
      --network resnet --gradient "$g" --method "$m" --nt "$n" --epochs 2 --seed 0 \
      --device "$device" --no-progress --out "$work/cifar/$name" "${cifar_opts[@]}" || rc=$?
    rm -f "$work/cifar/$name"/checkpoint.pt*
  done
  return "$rc"
}

stage_ctest() {
  cd "$build"
  mkdir -p "$work/tests"
  # What the run is to run (JSON), for the summary to name the tests a stopped run never started.
  # shellcheck disable=SC2086  # ctest_args is a list of words by design
  ctest --show-only=json-v1 $ctest_args >"$work/tests/ctest_list.json" || true
  # CTest writes its JUnit file only when it ends: it stops itself (--stop-time, a time of day)
  # 30 s before `timeout` would kill it.
  local stop=()
  if [[ -n "${GPU_CHECK_STAGE_END:-}" ]] && ((GPU_CHECK_STAGE_END - 30 > $(now))); then
    stop=(--stop-time "$(date -d "@$((GPU_CHECK_STAGE_END - 30))" +%H:%M:%S)")
  fi
  # Many test processes at once: keep each one's intra-op threads few.
  # shellcheck disable=SC2086
  OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}" ctest --output-on-failure -j "$jobs" --timeout 300 \
    --output-junit "$work/tests/ctest.xml" "${stop[@]}" $ctest_args
}

if [[ "${1:-}" == --stage ]]; then
  shift
  "$@"
  exit $?
fi

# ----------------------------------------------------------------------------- the run
GPU_CHECK_T0=$(now)
GPU_CHECK_DEADLINE=$((GPU_CHECK_T0 + budget))
export GPU_CHECK_T0 GPU_CHECK_DEADLINE
failures=0

mkdir -p "$results" "$work/peers" "$work/logs" "$work/cifar" "$data"
for f in summary.txt progress.log build.log test_cuda.log ctest.log peers.csv cifar.csv \
  details.tar.gz; do
  rm -f "${results:?}/$f"
done
rm -rf "$work"/peers/*.csv "$work"/grads "$work"/logs/*.log "$work/stages.tsv" "$work/header.txt" \
  "$work/tests"

record() {  # stage status seconds note
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$work/stages.tsv"
}

# Rewrites the summary and the archive from what the stages left so far.
publish() {
  "$py" "$repo/scripts/gpu_summary.py" --work "$work" --results "$results" \
    >>"$work/logs/summary.log" 2>&1 || log "gpu_summary.py failed (see details.tar.gz)"
  # Not the gradients (megabytes of float64 noise, compared in the summary) nor checkpoints. The
  # archive is made beside the results and moved in, so that $OUT never holds a ninth file.
  if tar -czf "$build/details.tar.gz.tmp" --exclude=./grads --exclude='*.pt*' -C "$work" . \
    2>/dev/null; then
    mv -f "$build/details.tar.gz.tmp" "$results/details.tar.gz"
  fi
  # A file over 16 MiB would not come back from a lent machine: keep the end of a huge log.
  local f
  for f in "$results"/*.log; do
    if [[ -f "$f" && $(stat -c %s "$f") -gt $((12 << 20)) ]]; then
      tail -c $((12 << 20)) "$f" >"$f.tmp" && mv -f "$f.tmp" "$f"
    fi
  done
}

# run_stage NAME CAP LOGFILE NOTE COMMAND...: runs COMMAND (a program, or a stage_* function of
# this script) under `timeout`, appending its output to LOGFILE, and records the outcome.
run_stage() {
  local name=$1 cap=$2 logfile=$3 note=$4
  shift 4
  local secs
  secs=$(time_for "$cap")
  if ((secs < 10)); then
    log "$name: skipped, no time left"
    record "$name" skipped 0 "budget spent"
    failures=$((failures + 1))
    publish
    return 1
  fi
  log "$name: start (at most ${secs} s) -> ${logfile#"$repo"/}"
  echo "=== $name: $* ($(date -u +%FT%TZ), at most ${secs} s)" >>"$logfile"
  local cmd=("$@")
  if declare -F "$1" >/dev/null; then cmd=(bash "$self" --stage "$@"); fi
  local start rc=0 status=ok
  start=$(now)
  GPU_CHECK_STAGE_END=$((start + secs)) timeout --kill-after=15 "$secs" "${cmd[@]}" \
    >>"$logfile" 2>&1 || rc=$?
  if ((rc == 124 || rc == 137)); then
    status="timed out"
  elif ((rc != 0)); then
    status="failed (exit $rc)"
  fi
  [[ $status == ok ]] || failures=$((failures + 1))
  log "$name: $status after $(($(now) - start)) s"
  record "$name" "$status" "$(($(now) - start))" "$note"
  publish
  [[ $status == ok ]]
}

# The Python peers read torchdiffeq from the tree ANODE_TORCHDIFFEQ_PATH names: by default the
# one installed in PYTHON.
if [[ -z "${ANODE_TORCHDIFFEQ_PATH:-}" ]]; then
  td_path="$("$py" -c 'import os, torchdiffeq
print(os.path.dirname(os.path.dirname(os.path.abspath(torchdiffeq.__file__))))' 2>/dev/null ||
    true)"
  if [[ -n "$td_path" ]]; then export ANODE_TORCHDIFFEQ_PATH="$td_path"; fi
fi

# The machine and the software.
{
  echo "anode GPU check (scripts/gpu_check.sh), $(date -u +%FT%TZ)"
  if [[ $dry == 1 ]]; then
    echo "mode: DRY RUN on the CPU (ANODE_GPU_DEVICE=cpu): tiny sizes, nothing here is a measurement"
  else
    echo "mode: device $device"
  fi
  echo "repository: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "($(git -C "$repo" status --porcelain 2>/dev/null | wc -l | tr -d ' ') changed files)"
  echo "host: $(uname -srm), $(nproc) cores; budget ${budget} s, $jobs jobs"
  if command -v nvidia-smi >/dev/null; then
    echo "gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
      2>/dev/null | head -n 1)"
  else
    echo "gpu: no nvidia-smi"
  fi
  echo "nvcc: $(nvcc --version 2>/dev/null | grep -i release || echo none)"
  echo "python: $("$py" -c 'import sys, torch; print(sys.executable, "torch", torch.__version__,
    "cuda", torch.version.cuda, "available", torch.cuda.is_available())' 2>&1 | tail -n 1)"
  echo "torchdiffeq: $(PYTHONPATH="${ANODE_TORCHDIFFEQ_PATH:-}" "$py" -c 'import torchdiffeq
print(torchdiffeq.__version__, "in", torchdiffeq.__file__)' 2>&1 | tail -n 1)"
  echo "cmake: $(cmake --version | head -n 1); ninja: $(ninja --version 2>/dev/null || echo none)"
} >"$work/header.txt" 2>&1 || true
cat "$work/header.txt" >&2
log "results -> $results; build -> $build"
publish

# ----------------------------------------------------------------------------- configure, build
torch_prefix="${ANODE_TORCH_PREFIX:-$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)' \
  2>/dev/null || true)}"
cmake_args=(-S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release)
if [[ ! -f "$build/CMakeCache.txt" ]] && command -v ninja >/dev/null; then
  cmake_args+=(-G Ninja)  # (an existing build folder keeps its generator)
fi
if [[ -n "$torch_prefix" && -d "$torch_prefix/Torch" ]]; then
  cmake_args+=("-DCMAKE_PREFIX_PATH=$torch_prefix")
else
  log "no LibTorch CMake package under '$torch_prefix': using the one CMake finds by itself"
fi
# PyTorch's newest headers refuse C++17 ("C++20 or later compatible compiler is required"); anode
# asks for C++17 at least, so build in C++20 when the LibTorch found says so.
cxx_std="${ANODE_CXX_STANDARD:-}"
if [[ -z "$cxx_std" && -n "$torch_prefix" ]] &&
  grep -qs 'C++20 or later' "$torch_prefix/../../include/ATen/ATen.h" \
    "$torch_prefix/../../include/c10/util/C++17.h"; then
  cxx_std=20
fi
if [[ -n "$cxx_std" ]]; then
  cmake_args+=("-DCMAKE_CXX_STANDARD=$cxx_std")
  echo "C++ standard: $cxx_std (ANODE_CXX_STANDARD, or LibTorch's headers require it)" \
    >>"$work/header.txt"
fi
if [[ $dry == 0 ]]; then
  if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
    export PATH="/usr/local/cuda/bin:$PATH"
  fi
  if command -v nvcc >/dev/null; then cmake_args+=("-DCMAKE_CUDA_COMPILER=$(command -v nvcc)"); fi
fi
cmake_args+=("-DANODE_PYTHON3=$(command -v "$py" || echo "$py")")
gtest_dir=""
for d in "${ANODE_GTEST_SOURCE_DIR:-}" /usr/src/googletest "$repo/.gpu-deps/googletest"; do
  if [[ -n "$d" && -f "$d/CMakeLists.txt" ]]; then
    gtest_dir="$d"
    break
  fi
done
have_tests=1
if [[ -n "$gtest_dir" ]]; then
  cmake_args+=("-DANODE_GTEST_SOURCE_DIR=$gtest_dir")
else
  have_tests=0
  cmake_args+=(-DANODE_BUILD_TESTS=OFF)
  log "no GoogleTest sources (ANODE_GTEST_SOURCE_DIR, /usr/src/googletest, .gpu-deps/googletest):" \
    "no tests are built (docs/gpu.md says how to bring them)"
fi

configured=0
if want configure; then
  if run_stage configure 240 "$results/build.log" "gtest: ${gtest_dir:-none}" \
    cmake "${cmake_args[@]}"; then
    configured=1
  fi
elif [[ -f "$build/CMakeCache.txt" ]]; then
  configured=1
fi
keep_going=(-- -k)
if [[ $configured == 1 ]]; then
  if grep -q '^CMAKE_MAKE_PROGRAM:.*ninja' "$build/CMakeCache.txt"; then keep_going=(-- -k 0); fi
  if grep -rqs --include=build.ninja --include=flags.make -e '-DANODE_WITH_CUDA' "$build"; then
    echo "anode built with CUDA (ANODE_WITH_CUDA): yes" >>"$work/header.txt"
  else
    echo "anode built with CUDA (ANODE_WITH_CUDA): NO (LibTorch without CUDA?)" >>"$work/header.txt"
  fi
fi

build_targets() {  # stage cap [targets...]
  local name=$1 cap=$2
  shift 2
  local args=(cmake --build "$build" -j "$jobs")
  if (($# > 0)); then args+=(--target "$@"); fi
  run_stage "$name" "$cap" "$results/build.log" "" "${args[@]}" "${keep_going[@]}"
}

if [[ $configured == 1 ]] && want build-first; then
  first=(bench_peers bench_plan anode-cifar)
  if [[ $have_tests == 1 ]]; then first=(test_cuda test_library "${first[@]}"); fi
  build_targets build-first 360 "${first[@]}" || true
fi

# ----------------------------------------------------------------------------- GPU stages
if want test-cuda; then
  run_stage test-cuda 150 "$results/test_cuda.log" "" stage_cuda_tests || true
fi

if want plan; then
  run_stage plan 150 "$work/logs/plan.log" "" stage_plan || true
fi
if want peers; then
  run_stage peers 120 "$work/logs/peers.log" "" stage_peers_cpp small "${small_net[@]}" || true
fi
if want torchdiffeq; then
  run_stage torchdiffeq 180 "$work/logs/torchdiffeq.log" \
    "ANODE_TORCHDIFFEQ_PATH=${ANODE_TORCHDIFFEQ_PATH:-unset}" \
    stage_peers_py small "${small_net[@]}" || true
fi
if want cifar; then
  run_stage cifar 200 "$work/logs/cifar.log" "" stage_cifar || true
fi

# ----------------------------------------------------------------------------- the rest
if [[ $configured == 1 ]] && want build-all; then
  build_targets build-all 300 || true
fi
if want ctest; then
  if [[ $have_tests == 1 && -f "$build/CTestTestfile.cmake" ]]; then
    run_stage ctest 600 "$results/ctest.log" "${ctest_args:-whole suite}" stage_ctest || true
  else
    log "ctest: no tests configured"
    record ctest "not run" 0 "no tests configured"
    failures=$((failures + 1))
  fi
fi
if want peers-large; then
  run_stage peers-large 150 "$work/logs/peers-large.log" "" stage_peers_large || true
fi

log "done in $(($(now) - GPU_CHECK_T0)) s, $failures stage(s) not ok; see $results/summary.txt"
publish
[[ $failures == 0 ]]
