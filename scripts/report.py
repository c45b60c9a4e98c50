#!/usr/bin/python3
"""Regenerates the benchmark report: builds the benchmark programs, runs them and the Python peers,
and writes docs/benchmarks.md with PNG plots in docs/.

    /usr/bin/python3 scripts/report.py            # small grids: this 2-core CPU, under 15 minutes
    /usr/bin/python3 scripts/report.py --full     # the large grids (a GPU machine, or hours)
    /usr/bin/python3 scripts/report.py --smoke    # tiny everything: checks the pipeline in ~1 min
    /usr/bin/python3 scripts/report.py --libtorch pypi   # PyPI's LibTorch and torch (2.15)

--libtorch debian (the default): the C++ side on Debian's LibTorch 1.13, the Python peers on
/usr/bin/python3 (Debian's python3-torch, the same LibTorch). --libtorch pypi: the C++ side on
the LibTorch inside PyPI's torch wheel and the peers on that wheel's torch, both from the virtual
environment of `ANODE_LIBTORCH=pypi ANODE_PEERS=1 bash scripts/setup.sh` (--venv, else
ANODE_VENV, else the repository's .venv/), so that C++ and Python run the same LibTorch build.
torchdiffeq and torchode come from the peers' interpreter (pip) or from ANODE_TORCHDIFFEQ_PATH /
ANODE_TORCHODE_PATH; the official ANODE code from ANODE_OFFICIAL_PATH (optional). Absent ones are
skipped and the report says so. The report itself runs on Debian's python3 (matplotlib, NumPy).

Besides the peers network (section 5), the MLP trajectory case (section 7): a 2-64-2 tanh MLP,
batch 256, RK2 (100 steps) and dopri5, C++ bench_mlp and benchmarks/python/mlp_peers.py in
alternating rounds. Section 8 compares with an earlier run on another LibTorch (--baseline-md,
--baseline-mlp: by default the LibTorch 1.13 figures kept in docs/results/), on the
configurations both ran.

Raw CSVs and gradients go to out/report/ (out/report-pypi/ with --libtorch pypi; ignored by
git); --reuse re-renders the report from them without running anything.
"""
import argparse
import csv
import datetime
import glob
import json
import math
import os
import statistics
import subprocess
import sys
import time

import bench_mlp  # the MLP case's per-round ratio tables, shared with scripts/bench_mlp.py
from anode_report import baseline, machine, results
from anode_report.results import concat_csvs, merged_metadata, read_csv
from anode_report.tables import MIB, fmt, markdown_table, mib, sci
from anode_report.targets import (ANODE_MEMORY_MODEL, ANODE_VS_BACKPROP, BINOMIAL_K4_VS_BACKPROP,
                                  CPP_VS_OFFICIAL_ANODE)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"  # the peers' interpreter with --libtorch debian
SETUP_PYPI = "ANODE_LIBTORCH=pypi ANODE_PEERS=1 bash scripts/setup.sh"
BENCHES = ["bench_scaling", "bench_gradients", "bench_reverse", "bench_peers", "bench_mlp"]
TRADEOFF_K = [1, 2, 4, 8, 16, 64]
TRADEOFF_MODES = (["backprop", "adjoint"] + [f"anode-k{k}" for k in TRADEOFF_K] +
                  [f"anode-k{k}f" for k in TRADEOFF_K if k < 64])


# ----------------------------------------------------------------------------- running things

def log(msg):
    print(f"[report {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, env=None, timeout=None):
    log(" ".join(cmd))
    t = time.time()
    res = subprocess.run(cmd, env=env, timeout=timeout, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        sys.stderr.write(res.stdout[-4000:] + res.stderr[-4000:])
        raise SystemExit(f"command failed ({res.returncode}): {' '.join(cmd)}")
    log(f"  done in {time.time() - t:.1f} s")
    return res


def torch_dir(python):
    """The torch package directory of `python` (its share/cmake holds TorchConfig.cmake), "" when
    that interpreter cannot import torch."""
    res = subprocess.run([python, "-c", "import os, torch; print(os.path.dirname(torch.__file__))"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return res.stdout.strip() if res.returncode == 0 else ""


def wheel_env(env):
    """`env` with what the CMake package of a CUDA torch wheel needs, as .ci/run's wheel job sets
    it (values already set win): nvcc, which its find_package(CUDAToolkit) looks for, and one
    architecture instead of the dozen it lists by default (nothing of anode is a .cu file, so the
    value only shapes nvcc's flags; 9.0 is the lent GPU's)."""
    env = dict(env)
    env.setdefault("CUDACXX", "/usr/local/cuda/bin/nvcc")
    env.setdefault("TORCH_CUDA_ARCH_LIST", "9.0")
    return env


def configure_command(build_dir, libtorch, torch_pkg=""):
    """The first CMake configure of the benchmarks' build (tests and examples off). With the
    wheel's LibTorch: <torch> on the prefix path before <torch>/share/cmake (TorchConfig.cmake),
    so that find_library finds the wheel's libtorch.so before Debian's; data parallelism off (the
    wheel bundles its own Gloo, which Debian's libgloo-dev headers need not match)."""
    cmd = ["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
           "-DANODE_BUILD_TESTS=OFF", "-DANODE_BUILD_EXAMPLES=OFF", "-DANODE_INSTALL=OFF"]
    if libtorch == "pypi":
        cmd += [f"-DCMAKE_PREFIX_PATH={torch_pkg};{torch_pkg}/share/cmake",
                "-DANODE_DISTRIBUTED=OFF"]
    return cmd


def build_mismatch(build_dir, libtorch, torch_pkg):
    """Why the build in `build_dir` does not fit --libtorch `libtorch` ("" when it does, or when
    nothing is configured there yet): a build of the other LibTorch, or of another torch wheel
    than the peers' (the C++ and Python sides would then not run the same LibTorch)."""
    cache = machine.cmake_cache(build_dir)
    if not cache:
        return ""
    wheel = machine.wheel_torch_dir(cache)
    where = cache.get("Torch_DIR", "?")
    if libtorch == "debian" and wheel:
        return (f"--build-dir {build_dir} is configured against a torch wheel's LibTorch "
                f"({where}), not Debian's: pass --libtorch pypi, or another --build-dir")
    if libtorch == "pypi":
        if not wheel:
            return (f"--build-dir {build_dir} is configured against the LibTorch at {where}, not "
                    "a torch wheel's: name another --build-dir (build-report-pypi/ is the "
                    "default for --libtorch pypi)")
        built = machine.torch_package_version(wheel)
        peers = machine.torch_package_version(torch_pkg)
        if built != peers:
            return (f"--build-dir {build_dir} is configured against torch {built} ({wheel}), the "
                    f"peers' interpreter has torch {peers} ({torch_pkg}): the two sides would "
                    "not run the same LibTorch; name another --build-dir or --venv")
    return ""


def build(build_dir, jobs, libtorch="debian", python=PY):
    """Configures (benchmarks only) and builds the benchmark programs and the heap counter."""
    env = wheel_env(os.environ) if libtorch == "pypi" else None
    if not os.path.isfile(os.path.join(build_dir, "CMakeCache.txt")):
        torch_pkg = torch_dir(python) if libtorch == "pypi" else ""
        if libtorch == "pypi" and not os.access(env["CUDACXX"], os.X_OK):
            raise SystemExit(f"--libtorch pypi: no nvcc at CUDACXX={env['CUDACXX']}: the CUDA "
                             "wheel's CMake package needs the CUDA compiler (set CUDACXX)")
        run(configure_command(build_dir, libtorch, torch_pkg), env=env)
    else:
        run(["cmake", "-S", ROOT, "-B", build_dir], env=env)  # picks up new bench_*.cpp files
    targets = subprocess.run(["cmake", "--build", build_dir, "--target", "help"],
                             stdout=subprocess.PIPE, text=True).stdout
    wanted = BENCHES + (["heapcount"] if "heapcount" in targets else [])
    run(["cmake", "--build", build_dir, f"-j{jobs}", "--target"] + wanted)
    lib = glob.glob(os.path.join(build_dir, "**", "libheapcount.so"), recursive=True)
    if lib:
        return lib[0]
    # benchmarks/CMakeLists.txt does not add benchmarks/heapcount yet: build it directly.
    out = os.path.join(build_dir, "heapcount", "libheapcount.so")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    run(["cc", "-std=c11", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-o", out,
         os.path.join(ROOT, "benchmarks", "heapcount", "heapcount.c")])
    return out


def bench_path(build_dir, name):
    hits = glob.glob(os.path.join(build_dir, "**", name), recursive=True)
    hits = [h for h in hits if os.path.isfile(h) and os.access(h, os.X_OK)]
    if not hits:
        raise SystemExit(f"{name} not found under {build_dir}: build it first")
    return hits[0]



# ----------------------------------------------------------------------------- the runs

def run_benches(a, build_dir, heap_lib, data):
    env = dict(os.environ, LD_PRELOAD=heap_lib)
    thr = str(a.threads)
    grid = ["--full"] if a.full else []
    smoke = a.smoke
    scaling = [bench_path(build_dir, "bench_scaling"), "--threads", thr, "--device", a.device,
               "--csv", os.path.join(data, "scaling.csv")] + grid
    if smoke:
        scaling += ["--conv-L", "1,2", "--conv-nt", "2,4", "--mlp-nt", "10,50", "--channels", "8",
                    "--size", "8", "--methods", "rk2,rk4", "--repeats", "1", "--max-repeats", "2"]
    elif not a.full:  # the conv configuration the targets are set on: L in 1,2,4, N_t in 2..16
        scaling += ["--channels", "32", "--batch", "8", "--size", "32", "--max-repeats", "20"]
    run(scaling, env=env)

    # The binomial trade-off curve: one network, N_t = 64, k over 1..64, beside
    # Backprop and the Adjoint; both ways of holding the checkpoints.
    trade = [bench_path(build_dir, "bench_scaling"), "--threads", thr, "--device", a.device,
             "--csv", os.path.join(data, "tradeoff.csv"), "--rhs", "conv", "--methods", "rk2",
             "--modes", ",".join(TRADEOFF_MODES), "--repeats", "1", "--max-repeats", "3",
             "--budget", "10"]
    if smoke:
        trade += ["--conv-L", "2", "--conv-nt", "16", "--channels", "8", "--size", "8",
                  "--max-repeats", "1"]
    else:
        trade += ["--conv-L", "4", "--conv-nt", "64", "--channels", "32", "--batch", "8",
                  "--size", "32"]
    run(trade, env=env)

    grads = [bench_path(build_dir, "bench_gradients"), "--threads", thr, "--csv",
             os.path.join(data, "gradients.csv")] + grid
    if smoke:
        grads += ["--nt", "1,4,16", "--methods", "rk2", "--fine-nt", "128"]
    run(grads)

    rev = [bench_path(build_dir, "bench_reverse"), "--threads", thr, "--csv",
           os.path.join(data, "reverse.csv")] + grid
    if smoke:
        rev += ["--nt", "2,8,32", "--methods", "rk2", "--scale", "1,16"]
    run(rev)


def run_peers(a, build_dir, heap_lib, data):
    """One process per (implementation, N_t), all under the heap counter."""
    gdir = os.path.join(data, "grads")
    os.makedirs(gdir, exist_ok=True)
    for old in glob.glob(os.path.join(gdir, "*.f64")):
        os.remove(old)
    env = dict(os.environ, LD_PRELOAD=heap_lib)
    cpp = bench_path(build_dir, "bench_peers")
    nts = [2, 4] if a.smoke else [2, 8, 32]
    net = ["--L", "2", "--channels", "8", "--size", "8"] if a.smoke else []
    # Quick grid: up to 10 timed steps where the 8-second budget allows (the short N_t = 2 steps
    # are the noisiest); the full grid times more.
    quick_reps = [] if (a.full or a.smoke) else ["--max-repeats", "10"]
    timing = (["--full"] if a.full else []) + ["--threads", str(a.threads), "--device",
                                               a.device] + quick_reps
    py_timing = ["--threads", str(a.threads), "--device", a.device] + (
        ["--repeats", "5", "--max-repeats", "20", "--budget", "60"] if a.full else quick_reps)
    parts = []
    cpp_modes = ["backprop", "anode", "anode-k4", "anode-k4f", "adjoint"]
    py_impls = ["torchdiffeq", "torchdiffeq-adjoint", "torchode", "anode-official"]
    if a.full or a.smoke or a.python_backprop:
        py_impls = ["torch-backprop"] + py_impls
    for old in glob.glob(os.path.join(data, "profile_*.json")):
        os.remove(old)
    prof_nt = nts[len(nts) // 2]  # where the time goes: one profiled step at the middle N_t
    for nt in nts:
        for mode in cpp_modes:
            out = os.path.join(data, f"peers_cpp_{mode}_{nt}.csv")
            prof = (["--profile", os.path.join(data, f"profile_anode-cpp_{mode}_nt{nt}.json")]
                    if nt == prof_nt and mode in ("backprop", "anode") else [])
            run([cpp, "--nt", str(nt), "--modes", mode, "--grad-dir", gdir, "--csv", out]
                + timing + net + prof, env=env)
            parts.append(out)
        for impl in py_impls:
            out = os.path.join(data, f"peers_py_{impl}_{nt}.csv")
            prof = (["--profile", os.path.join(data, f"profile_{impl}_nt{nt}.json")]
                    if nt == prof_nt and impl == "anode-official" else [])
            run([a.python, os.path.join(ROOT, "benchmarks", "python", "peers.py"), "--impl", impl,
                 "--nt", str(nt), "--grad-dir", gdir, "--csv", out] + py_timing + net + prof,
                env=env)
            parts.append(out)
    concat_csvs(parts, os.path.join(data, "peers.csv"))
    # The exact reference: float64 Backprop, not timed, on every core. Float64 convolutions take
    # LibTorch's slow path on CPU, so the quick grid computes it for the smaller N_t only (the
    # larger ones fall back to float32 Backprop, which the report says).
    ref_nts = nts if (a.full or a.smoke or a.device != "cpu") else [n for n in nts if n <= 8]
    cores = str(os.cpu_count() or 1)
    ref = os.path.join(data, "peers_ref.csv")
    run([cpp, "--nt", ",".join(map(str, ref_nts)), "--modes", "backprop", "--dtype", "float64",
         "--no-time", "--threads", cores, "--device", a.device, "--grad-dir", gdir, "--csv", ref]
        + net)
    # The same network in Python, float64, at the smallest N_t: the two languages must agree to
    # round-off, or the comparison is not of the same network. (Float64 convolutions are slow on
    # CPU: the quick grid relies on the float32 comparison of torchdiffeq with the C++ Backprop
    # that the report also prints.)
    if a.full or a.smoke or a.device != "cpu":
        run([a.python, os.path.join(ROOT, "benchmarks", "python", "peers.py"), "--impl",
             "torch-backprop", "--nt", str(nts[0]), "--dtype", "float64", "--no-time", "--threads",
             cores, "--device", a.device, "--grad-dir", gdir, "--csv",
             os.path.join(data, "peers_ref_py.csv")] + net)


MLP_CPP_MODES = "backprop,anode,anode-latest,anode-k4,adjoint"
MLP_PY = {"rk2": "torchdiffeq-rk2,torchode-rk2,torch-rk2",
          "dopri5": "torchdiffeq-dopri5,torchode-dopri5"}
MLP_REF = {"rk2": "torchdiffeq-rk2", "dopri5": "torchdiffeq-dopri5"}
MLP_BATCH = 256
MLP_COLUMNS = ["round", "method", "impl", "batch", "steps", "rtol", "atol", "step_ms",
               "step_ms_q25", "step_ms_q75", "repeats", "rhs_evals_fwd", "rhs_evals_bwd",
               "accepted_steps", "rejected_steps", "loss", "threads", "torch", "peer_version",
               "status"]


def json_lines(text):
    """The JSON objects a program printed one per line (bench_mlp, mlp_peers.py)."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def run_mlp(a, build_dir, data):
    """The MLP trajectory case: C++ bench_mlp and Python mlp_peers.py, RK2 and dopri5, batch 256,
    in alternating rounds (a change of the machine's load then hits both sides alike)."""
    rounds, reps = (1, 3) if a.smoke else (5, 30) if a.full else (3, 20)
    cpp = bench_path(build_dir, "bench_mlp")
    peers_py = os.path.join(ROOT, "benchmarks", "python", "mlp_peers.py")
    common = ["--repeats", str(reps), "--threads", str(a.threads), "--batch", str(MLP_BATCH)]
    rows = []
    for r in range(rounds):
        for method in ("rk2", "dopri5"):
            out = json_lines(run([cpp, "--methods", method, "--modes", MLP_CPP_MODES] +
                                 common).stdout)
            out += json_lines(run([a.python, peers_py, "--impl", MLP_PY[method]] +
                                  common).stdout)
            for row in out:
                row.update(round=r, method=method)
                rows.append(row)
    with open(os.path.join(data, "mlp.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=MLP_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


# ----------------------------------------------------------------------------- analysis helpers

def lstsq(xs, ys):
    """Least squares y ~ X c for rows xs (lists); returns (coefficients, max relative residual)."""
    import numpy as np
    X = np.array(xs, dtype=float)
    y = np.array(ys, dtype=float)
    c, *_ = np.linalg.lstsq(X, y, rcond=None)
    pred = X @ c
    resid = float(np.max(np.abs(pred - y) / np.maximum(np.abs(y), 1.0)))
    return c, resid


def ok(rows):
    return [r for r in rows if r.get("status") == "ok"]


def load_grad(path):
    import numpy as np
    return np.fromfile(path, dtype=np.float64) if path and os.path.isfile(path) else None


def rel(a, b):
    import numpy as np
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def nt_of(grad_file):
    """N_t from a gradient file's name, "<impl>_<mode>_nt<N>_<dtype>.f64"."""
    return int(grad_file.split("_nt")[1].split("_")[0])


def profile_self_times(path):
    """{op name: self time in ms} from a chrome trace (LibTorch's legacy profiler or
    torch.autograd.profiler): each event's duration minus its directly nested events'."""
    with open(path) as f:
        ev = json.load(f)
    if isinstance(ev, dict):
        ev = ev.get("traceEvents", [])
    ev = [e for e in ev if e.get("ph") == "X" and "dur" in e]
    out = {}
    by_thread = {}
    for e in ev:
        by_thread.setdefault((str(e.get("pid")), str(e.get("tid"))), []).append(e)
    for events in by_thread.values():
        events.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack = []  # [end, name, self]

        def close(item):
            out[item[1]] = out.get(item[1], 0.0) + item[2] / 1e3
        for e in events:
            ts, dur = float(e["ts"]), float(e["dur"])
            while stack and ts >= stack[-1][0] - 1e-9:
                close(stack.pop())
            if stack:
                stack[-1][2] -= dur
            stack.append([ts + dur, e["name"], dur])
        while stack:
            close(stack.pop())
    return out


def step_time_ratios(rows, num, den):
    """(row, step time ratio) for each `num` row of the scaling grid against the `den` row of the
    same RHS, method, L and N_t."""
    out = []
    for r in rows:
        if r["mode"] != num:
            continue
        d = [q for q in rows if q["mode"] == den and q["rhs"] == r["rhs"] and
             q["method"] == r["method"] and q["L"] == r["L"] and q["nt"] == r["nt"]]
        if d and d[0]["step_ms"]:
            out.append((r, r["step_ms"] / d[0]["step_ms"]))
    return out


def geometric_mean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


class Findings:
    """What the sections contribute to the head of the report, in the order they find it: the
    targets table, the headline accuracy figures and, for each missed target, why."""

    def __init__(self):
        self.targets, self.headline, self.misses = [], [], []

    def ratio(self, what, ratio, target):
        """A targets row: what, the ratio, the target's bound, met or **missed**."""
        self.targets.append([what, f"{ratio:.2f}", target.bound(), target.verdict(ratio)])


# ----------------------------------------------------------------------------- plots

COLORS = {"backprop": "tab:blue", "anode": "tab:green", "anode-k2": "tab:olive",
          "anode-k4": "tab:olive", "adjoint": "tab:red", "torch-backprop": "tab:cyan",
          "torchdiffeq": "tab:purple", "torchdiffeq-adjoint": "tab:pink",
          "torchode": "tab:orange", "anode-official": "tab:brown"}


def pyplot():
    """matplotlib.pyplot on the file-only backend (no display on a build machine)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plain(ax):
    """Log axes with plain tick labels (2, 4, 10, 1000 instead of 2×10^0)."""
    import matplotlib.ticker
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "log":
            axis.set_major_formatter(matplotlib.ticker.FuncFormatter(
                lambda v, _: f"{v:g}" if 1e-3 <= v <= 1e5 else f"{v:.0e}"))
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def plain_x(ax):
    """Plain major tick labels on a log x axis, the minor ones left as matplotlib makes them."""
    import matplotlib.ticker
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))


def save(fig, docs, name):
    fig.tight_layout()
    fig.savefig(os.path.join(docs, name), dpi=110)
    pyplot().close(fig)


# ----------------------------------------------------------------------------- 1. scaling

def plot_scaling_memory(conv, modes, main_method, docs):
    """bench_memory.png: the conv peaks against N_t and L with the fitted memory models; returns
    the fits, (mode, O(L·N_t) coefficients, residual, O(L)+O(N_t) coefficients, residual)."""
    import numpy as np
    plt = pyplot()
    Ls = sorted({r["L"] for r in conv})
    nts = sorted({r["nt"] for r in conv})
    fits = []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    Lfix = Ls[len(Ls) // 2] if Ls else 1
    ntfix = nts[len(nts) // 2] if nts else 1
    for mode in modes:
        pts = [r for r in conv if r["mode"] == mode]
        if not pts:
            continue
        # The two models: a + b*L*N_t (Backprop's O(L N_t)) and a + b*L + c*N_t (O(L)+O(N_t)).
        c1, r1 = lstsq([[1, p["L"] * p["nt"]] for p in pts], [p["peak_bytes"] for p in pts])
        c2, r2 = lstsq([[1, p["L"], p["nt"]] for p in pts], [p["peak_bytes"] for p in pts])
        fits.append((mode, c1, r1, c2, r2))
        model = (lambda L, n, c=c1: c[0] + c[1] * L * n) if mode == "backprop" else \
                (lambda L, n, c=c2: c[0] + c[1] * L + c[2] * n)
        # Left: against N_t at L = Lfix; right: against L at N_t = ntfix.
        for ax, fixed, value, vary, fit in [
                (axes[0], "L", Lfix, "nt", lambda v, m=model: m(Lfix, v)),
                (axes[1], "nt", ntfix, "L", lambda v, m=model: m(v, ntfix))]:
            s = sorted((p for p in pts if p[fixed] == value), key=lambda p: p[vary])
            if s:
                x = [p[vary] for p in s]
                ax.plot(x, [p["peak_bytes"] / MIB for p in s], "o", color=COLORS.get(mode),
                        label=mode)
                xx = np.linspace(min(x), max(x), 50)
                ax.plot(xx, [fit(v) / MIB for v in xx], "--", color=COLORS.get(mode), lw=1)
    axes[0].set(xlabel="N_t (steps per block)", ylabel="peak tensor memory of a step [MiB]",
                title=f"conv RHS, {main_method}, L = {Lfix}")
    axes[1].set(xlabel="L (ODE blocks)", ylabel="peak tensor memory of a step [MiB]",
                title=f"conv RHS, {main_method}, N_t = {ntfix}")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Memory: dots measured, dashed lines the fitted O(L·N_t) (Backprop) and "
                 "O(L)+O(N_t) (others) models", fontsize=9)
    save(fig, docs, "bench_memory.png")
    return fits


def plot_scaling_time(srows_ok, modes, main_method, docs):
    """bench_time.png: step time against N_t, conv and MLP right-hand sides."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, rhs in zip(axes, ["conv", "mlp"]):
        pts = [r for r in srows_ok if r["rhs"] == rhs and r["method"] == main_method]
        if not pts:
            continue
        Lp = min(r["L"] for r in pts) if rhs == "mlp" else sorted({r["L"] for r in pts})[
            len({r["L"] for r in pts}) // 2]
        for mode in modes:
            s = sorted((p for p in pts if p["mode"] == mode and p["L"] == Lp),
                       key=lambda p: p["nt"])
            if s:
                ax.plot([p["nt"] for p in s], [p["step_ms"] for p in s], "o-",
                        color=COLORS.get(mode), label=mode)
        ax.set(xscale="log", yscale="log", xlabel="N_t", ylabel="step time [ms] (median)",
               title=f"{rhs} RHS, {main_method}, L = {Lp}")
        plain(ax)
        ax.set_xticks(sorted({p["nt"] for p in pts}))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    save(fig, docs, "bench_time.png")


def memory_model_lines(conv, found):
    """Anode's peak against its model: L stored block inputs plus one block's trajectory, the
    latter measured as Backprop's peak with L = 1 at the same method and N_t."""
    mem_model = []
    for r in conv:
        if r["mode"] != "anode":
            continue
        one = [q for q in conv if q["mode"] == "backprop" and q["L"] == 1 and q["nt"] == r["nt"]]
        if one and one[0]["peak_bytes"] > 0:
            model = r["L"] * r["state_bytes"] + one[0]["peak_bytes"]
            mem_model.append((r, r["peak_bytes"] / model))
    if not mem_model:
        return []
    worst = max(mem_model, key=lambda t: t[1])
    target = ANODE_MEMORY_MODEL
    found.ratio("Anode peak / (L inputs + one block's trajectory), worst on the grid", worst[1],
                target)
    if target.missed(worst[1]):
        found.misses.append(f"Anode's memory model ratio reaches {worst[1]:.2f} at L = "
                            f"{worst[0]['L']}, N_t = {worst[0]['nt']}: peak "
                            f"{mib(worst[0]['peak_bytes'])} MiB.")
    return ["Anode's peak against the model *L block inputs + one block's trajectory* "
            "(the trajectory measured as Backprop's peak with L = 1, same N_t): ratio "
            f"{min(q for _, q in mem_model):.2f} to {worst[1]:.2f} over {len(mem_model)} "
            f"points (worst at L = {worst[0]['L']}, N_t = {worst[0]['nt']}).\n"]


def anode_time_lines(srows_ok, main_method, found):
    """The Anode / Backprop step-time ratio over the scaling grid: a table by RHS, the target on
    the conv grid and, when it is missed, the worst point taken apart."""
    anode_ratios = step_time_ratios(srows_ok, "anode", "backprop")
    if not anode_ratios:
        return []
    rows = []
    for rhs in ["conv", "mlp"]:
        rs = [q for r, q in anode_ratios if r["rhs"] == rhs]
        if rs:
            rows.append([rhs, len(rs), f"{min(rs):.2f}", f"{geometric_mean(rs):.2f}",
                         f"{max(rs):.2f}"])
    rk = [q for r, q in anode_ratios if r["rhs"] == "conv" and r["method"] == main_method]
    target = ANODE_VS_BACKPROP
    if rk:
        g = geometric_mean(rk)
        found.targets.append([f"Anode / Backprop step time, conv grid ({main_method}, {len(rk)} "
                              "points): geometric mean (max)", f"{g:.2f} ({max(rk):.2f})",
                              target.bound(), "met" if target.met(max(rk)) else
                              f"**missed** at {sum(target.missed(q) for q in rk)} point(s)"])
        if target.missed(max(rk)):
            worst = max((t for t in anode_ratios if t[0]["rhs"] == "conv" and
                         t[0]["method"] == main_method), key=lambda t: t[1])
            w = worst[0]
            b = [q for q in srows_ok if q["mode"] == "backprop" and q["rhs"] == "conv" and
                 q["method"] == main_method and q["L"] == w["L"] and q["nt"] == w["nt"]][0]
            found.misses.append(
                f"Anode / Backprop reaches {worst[1]:.2f} at L = {w['L']}, N_t = {w['nt']}: "
                f"Anode {fmt(w['step_ms'], 1)} ms (quartiles {fmt(w['step_ms_q25'], 1)}–"
                f"{fmt(w['step_ms_q75'], 1)}, n = {w['repeats']}), Backprop "
                f"{fmt(b['step_ms'], 1)} ms ({fmt(b['step_ms_q25'], 1)}–"
                f"{fmt(b['step_ms_q75'], 1)}, n = {b['repeats']}). The RHS evaluations are "
                f"exactly 2× Backprop's forward ({w['rhs_evals_fwd']}+{w['rhs_evals_bwd']}), "
                "so the extra work is the theory's one forward; the extra time is not: "
                f"Anode's backward takes {fmt(w['bwd_ms'] - b['bwd_ms'], 0)} ms more than "
                f"Backprop's, against a forward of {fmt(w['fwd_ms'], 0)} ms (the recomputed "
                "forward runs with autograd on, recording the graph that Backprop recorded "
                "in its own forward, whose forward is "
                f"{fmt(b['fwd_ms'] - w['fwd_ms'], 0)} ms slower than Anode's for that). "
                f"Over the grid the geometric mean is {g:.2f}; this point's quartiles do not "
                "overlap, so it is not timer noise within the run, but it moves between "
                "runs on this shared 2-core VM.")
    return ["Anode / Backprop step-time ratio over the grid (every method, L, N_t):\n",
            markdown_table(["RHS", "points", "min", "geometric mean", "max"], rows) + "\n"]


def scaling_section(srows, smeta, docs, found):
    """Section 1 and its plots; returns (text, the memory fits for the targets)."""
    srows_ok = ok(srows)
    main_method = srows_ok[0]["method"] if srows_ok else "RK2"
    modes = list(dict.fromkeys(r["mode"] for r in srows_ok))
    conv = [r for r in srows_ok if r["rhs"] == "conv" and r["method"] == main_method]
    fits = plot_scaling_memory(conv, modes, main_method, docs) if conv else []
    plot_scaling_time(srows_ok, modes, main_method, docs)
    sec = ["## 1. Memory and time of one training step vs L and N_t\n",
           f"`bench_scaling` ({smeta.get('grid', '?')} grid). Conv RHS: {smeta.get('conv', '?')}; "
           f"MLP RHS: {smeta.get('mlp', '?')}. One step = zero_grad, forward, loss "
           "0.5·mean((z−target)²), backward, SGD update. Peak = the highest tensor bytes live "
           "during the step above those live before it (anode::memory's counting CPU allocator); "
           "time = median of the timed steps after one warm-up step "
           "(n per point in the CSV).\n",
           "![memory](bench_memory.png)\n", "![time](bench_time.png)\n"]
    if fits:
        rows = []
        for mode, c1, r1, c2, r2 in fits:
            rows.append([mode, f"{c1[1] / MIB:.3f}", f"{r1 * 100:.1f}%", f"{c2[1] / MIB:.3f}",
                         f"{c2[2] / MIB:.3f}", f"{r2 * 100:.1f}%"])
        sec.append("Least-squares fits of the conv peaks (method " + main_method + "): the "
                   "O(L·N_t) model a + b·L·N_t and the O(L)+O(N_t) model a + c·L + d·N_t, with "
                   "the largest relative residual of each. Backprop follows the first; Anode "
                   "the second (d is one block's trajectory per step, c the stored block input); "
                   "with k checkpoints memory stops growing once N_t > k (d ≈ 0 over such a "
                   "grid), and the Adjoint is flat in both.\n")
        sec.append(markdown_table(["mode", "b [MiB per L·N_t]", "max resid.", "c [MiB per block]",
                                   "d [MiB per step]", "max resid."], rows) + "\n")
    if conv:
        Lmax, ntmax = max(r["L"] for r in conv), max(r["nt"] for r in conv)
        rows = []
        for mode in modes:
            p = [r for r in conv if r["mode"] == mode and r["L"] == Lmax and r["nt"] == ntmax]
            if p:
                p = p[0]
                rows.append([mode, fmt(p["step_ms"], 1), fmt(p["fwd_ms"], 1), fmt(p["bwd_ms"], 1),
                             mib(p["peak_bytes"]), mib(p["heap_peak_bytes"]), p["rhs_evals_fwd"],
                             p["rhs_evals_bwd"]])
        sec.append(f"At the largest conv point (L = {Lmax}, N_t = {ntmax}, {main_method}):\n")
        sec.append(markdown_table(["mode", "step ms", "fwd ms", "bwd ms", "peak tensors MiB",
                                   "peak heap MiB", "RHS evals fwd", "RHS evals bwd"], rows) + "\n")
    sec += memory_model_lines(conv, found)
    sec += anode_time_lines(srows_ok, main_method, found)
    errs = [r for r in srows if r.get("status") != "ok"]
    if errs:
        sec.append(f"{len(errs)} grid points failed: " + "; ".join(
            f"{r['rhs']}/{r['method']}/{r['mode']}/L={r['L']}/N_t={r['nt']}: {r['status']}"
            for r in errs[:5]) + "\n")
    return "\n".join(sec), fits


def memory_fit_targets(fits, found):
    """How well Backprop's and Anode's peaks follow their memory models (section 1's fits)."""
    fb = [f for f in fits if f[0] == "backprop"]
    fa = [f for f in fits if f[0] == "anode"]
    if fb:
        found.targets.append(["Backprop memory follows a + b·L·N_t (max residual)",
                              f"{fb[0][2] * 100:.1f}%", "O(L·N_t)", ""])
    if fa:
        found.targets.append(["Anode memory follows a + c·L + d·N_t (max residual)",
                              f"{fa[0][4] * 100:.1f}%", "O(L)+O(N_t)", ""])


# ----------------------------------------------------------------------------- 2 and 4. gradients

def shown_method(rows):
    """The method a section shows: RK2 where the grid has it, else the first row's."""
    if any(r["method"] == "RK2" for r in rows):
        return "RK2"
    return rows[0]["method"] if rows else ""


def plot_gradient_errors(grows, rhss, gm, docs):
    """bench_gradients.png: each mode's error against the exact gradient, one panel per RHS."""
    import numpy as np
    plt = pyplot()
    fig, axes = plt.subplots(1, max(1, len(rhss)), figsize=(3.4 * max(1, len(rhss)), 3.6),
                             sharey=True)
    axes = np.atleast_1d(axes)
    for ax, rhs in zip(axes, rhss):
        for mode, dtype, style in [("anode", "float64", "o-"), ("anode", "float32", "s--"),
                                   ("backprop", "float32", "x:"), ("adjoint", "float64", "o-"),
                                   ("adjoint", "float32", "s--"), ("anode-k2", "float32", "^:")]:
            s = sorted((r for r in grows if r["rhs"] == rhs and r["method"] == gm and
                        r["mode"] == mode and r["dtype"] == dtype), key=lambda r: r["nt"])
            if s:
                ax.plot([r["nt"] for r in s], [max(r["rel_err"], 1e-17) for r in s], style,
                        color=COLORS.get(mode), label=f"{mode} {dtype}", ms=4)
        ax.set(xscale="log", yscale="log", xlabel="N_t", title=f"{rhs} ({gm})")
        plain_x(ax)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("rel. error vs exact (float64 Backprop)")
    axes[-1].legend(fontsize=7)
    fig.suptitle("Gradient error against the exact gradient of the discrete solve "
                 "(1e-17 stands for 0)", fontsize=9)
    save(fig, docs, "bench_gradients.png")


def plot_otd_dto(grows, rhss, gm, docs):
    """bench_otd_dto.png: the Adjoint's gradient against the exact one as the step shrinks."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for rhs in rhss:
        s = sorted((r for r in grows if r["rhs"] == rhs and r["method"] == gm and
                    r["mode"] == "adjoint" and r["dtype"] == "float64"), key=lambda r: r["nt"])
        if not s:
            continue
        dt = [1.0 / r["nt"] for r in s]
        line, = axes[0].plot(dt, [r["rel_err"] for r in s], "o-", label=f"{rhs}: Adjoint vs exact")
        e = sorted((r for r in grows if r["rhs"] == rhs and r["method"] == gm and
                    r["mode"] == "backprop" and r["dtype"] == "float64"), key=lambda r: r["nt"])
        axes[0].plot([1.0 / r["nt"] for r in e], [r["rel_err_fine"] for r in e], ":",
                     color=line.get_color(), label=f"{rhs}: exact vs continuous")
        axes[1].plot(dt, [max(1 - r["cos"], 1e-17) for r in s], "o-", color=line.get_color(),
                     label=rhs)
    axes[0].set(xscale="log", yscale="log", xlabel="step size dt = 1/N_t",
                ylabel="relative difference", title=f"OTD (Adjoint) vs DTO (exact), {gm}, float64")
    axes[1].set(xscale="log", yscale="log", xlabel="step size dt = 1/N_t",
                ylabel="1 − cosine(Adjoint, exact)", title="direction")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    save(fig, docs, "bench_otd_dto.png")


def gradient_accuracy_section(grows, gmeta, rhss, gm, found):
    """Section 2: the error table, the worst errors and the headline accuracy figures."""
    sec = ["## 2. Gradient accuracy vs N_t\n",
           f"`bench_gradients`: one block, {gmeta.get('conv', '?')} (relu, leaky, tanh: "
           "act(conv3x3(z)+b); conv_bn: relu(BN(conv3x3(z)))) and "
           f"{gmeta.get('mlp', '?')}. Error = ‖g − g_exact‖/‖g_exact‖ over [dL/dx, dL/dθ], "
           "g_exact = float64 Backprop with the same method and N_t (the exact gradient of the "
           "discrete solve). Weights and data are made in float32 and cast, so both dtypes see "
           "the same numbers.\n", "![gradients](bench_gradients.png)\n"]
    show_nts = sorted({r["nt"] for r in grows})
    if not show_nts:
        return "\n".join(sec)
    pick = [n for n in show_nts if n in (2, 8, 32, 64, 128)] or show_nts
    rows = []
    for rhs in rhss:
        for mode, dtype in [("anode", "float64"), ("anode", "float32"), ("anode-k2", "float64"),
                            ("backprop", "float32"), ("adjoint", "float64")]:
            vals = []
            for n in pick:
                r = [q for q in grows if q["rhs"] == rhs and q["method"] == gm and
                     q["mode"] == mode and q["dtype"] == dtype and q["nt"] == n]
                vals.append(sci(r[0]["rel_err"]) if r else "n/a")
            if any(v != "n/a" for v in vals):
                rows.append([rhs, f"{mode} {dtype}"] + vals)
    sec.append(f"Relative error vs exact, {gm}:\n")
    sec.append(markdown_table(["RHS", "mode"] + [f"N_t={n}" for n in pick], rows) + "\n")
    worst64 = max((r["rel_err"] for r in grows if r["mode"].startswith("anode") and
                   r["dtype"] == "float64"), default=float("nan"))
    worst32 = max((r["rel_err"] for r in grows if r["mode"].startswith("anode") and
                   r["dtype"] == "float32"), default=float("nan"))
    b32 = max((r["rel_err"] for r in grows if r["mode"] == "backprop" and
               r["dtype"] == "float32"), default=float("nan"))
    adj = [r["rel_err"] for r in grows if r["mode"] == "adjoint" and r["dtype"] == "float64"]
    sec.append(f"Over every RHS, method and N_t: Anode's worst error is {sci(worst64)} in "
               f"float64 and {sci(worst32)} in float32 (float32 Backprop's own round-off: "
               f"{sci(b32)}); the Adjoint's ranges from {sci(min(adj) if adj else None)} to "
               f"{sci(max(adj) if adj else None)} in float64, where round-off is not the "
               "cause.\n")
    found.headline.append(["Anode gradient error (float64 / float32, worst over the grid)",
                           f"{sci(worst64)} / {sci(worst32)}", "round-off (float32 Backprop: "
                           f"{sci(b32)})", ""])
    if adj:
        found.headline.append(["Adjoint gradient error (float64, range over the grid)",
                               f"{sci(min(adj))} … {sci(max(adj))}", "", ""])
    return "\n".join(sec)


def otd_dto_section(grows, gmeta, rhss, gm):
    """Section 4: the Adjoint against the exact gradient at the smallest and largest N_t."""
    show_nts = sorted({r["nt"] for r in grows})
    sec = ["## 4. OTD vs DTO: the Adjoint's gradient as the step size shrinks\n",
           "Cosine and relative difference between the Adjoint gradient (optimize-then-"
           "discretize) and the exact gradient of the discrete solve (discretize-then-optimize), "
           "float64. The dotted lines show how far the exact discrete gradient itself is from "
           f"the continuous one ({gmeta.get('fine_reference', '?')}): both converge to it, but "
           "at any finite step the Adjoint's is not the gradient of the network actually "
           "evaluated.\n", "![otd vs dto](bench_otd_dto.png)\n"]
    rows = []
    for rhs in rhss:
        for n in (show_nts[:1] + show_nts[-1:] if show_nts else []):
            r = [q for q in grows if q["rhs"] == rhs and q["method"] == gm and
                 q["mode"] == "adjoint" and q["dtype"] == "float64" and q["nt"] == n]
            if r:
                rows.append([rhs, n, sci(r[0]["rel_err"]), sci(1.0 - r[0]["cos"]),
                             sci(r[0]["rel_err_fine"])])
    if rows:
        sec.append(markdown_table(["RHS", "N_t", "Adjoint vs exact: rel. diff", "1 − cosine",
                                   "Adjoint vs continuous"], rows) + "\n")
    return "\n".join(sec)


# ----------------------------------------------------------------------------- 3. reverse time

def plot_reverse(rrows, racts, scales, rm, docs):
    """bench_reverse.png: the reconstruction error of z0 by weight scale, one panel per RHS."""
    import numpy as np
    plt = pyplot()
    fig, axes = plt.subplots(1, max(1, len(racts)), figsize=(3.8 * max(1, len(racts)), 3.8),
                             sharey=True)
    axes = np.atleast_1d(axes)
    cmap = plt.get_cmap("viridis")
    for ax, act in zip(axes, racts):
        for i, sc in enumerate(scales):
            s = sorted((r for r in rrows if r["rhs"] == act and r["method"] == rm and
                        r["scale"] == sc and r["dtype"] == "float32"), key=lambda r: r["nt"])
            if s:
                ax.plot([r["nt"] for r in s], [min(max(r["rel_err"], 1e-9), 1e9) for r in s],
                        "o-", color=cmap(i / max(1, len(scales) - 1)), label=f"scale {sc:g}", ms=3)
        ax.axhline(1.0, color="k", lw=0.6, ls=":")
        ax.set(xscale="log", yscale="log", xlabel="N_t", title=f"{act} conv ({rm}, float32)")
        plain_x(ax)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("‖z0 − z0_reconstructed‖ / ‖z0‖")
    axes[-1].legend(fontsize=7)
    save(fig, docs, "bench_reverse.png")


def reverse_section(rmeta, rrows, docs, found):
    """Section 3 and its plot: solving backwards in time does not give z0 back."""
    rrows = [r for r in rrows if r.get("status") == "ok"]
    rm = shown_method(rrows)
    racts = list(dict.fromkeys(r["rhs"] for r in rrows))
    scales = sorted({r["scale"] for r in rrows})
    plot_reverse(rrows, racts, scales, rm, docs)
    sec = ["## 3. Reverse-time reconstruction error\n",
           f"`bench_reverse`: {rmeta.get('conv', '?')}, weights scaled by `scale` (std "
           "scale/√fan_in). Solve forward N_t steps to z(1), then backwards from z(1) with the "
           "same method and step, as the reverse-time adjoint must; error ‖z0 − z0_rec‖/‖z0‖. "
           "Anode never solves backwards: it recomputes from the stored z0, exactly.\n",
           "![reverse](bench_reverse.png)\n"]
    rows = []
    rnts = sorted({r["nt"] for r in rrows})
    pick = [n for n in rnts if n in (2, 8, 32, 128)] or rnts
    for act in racts:
        for sc in scales:
            vals = []
            for n in pick:
                r = [q for q in rrows if q["rhs"] == act and q["method"] == rm and q["scale"] == sc
                     and q["dtype"] == "float32" and q["nt"] == n]
                vals.append(sci(r[0]["rel_err"]) if r else "n/a")
            g = [q for q in rrows if q["rhs"] == act and q["scale"] == sc and q["method"] == rm]
            rows.append([act, f"{sc:g}"] + vals + [fmt(g[-1]["growth"]) if g else "n/a"])
    if rows:
        sec.append(f"{rm}, float32 (the float64 rows in the CSV are the same to 2 digits where "
                   "the error is above round-off: the error is the reverse solve's, not the "
                   "arithmetic's):\n")
        sec.append(markdown_table(["RHS", "scale"] + [f"N_t={n}" for n in pick] +
                                  ["‖z(1)‖/‖z0‖"], rows) + "\n")
        worst = max((r["rel_err"] for r in rrows if r["rhs"] in ("relu", "leaky")),
                    default=float("nan"))
        found.headline.append(["Reverse-time reconstruction error, ReLU/leaky conv (worst on the "
                               "grid)", sci(worst), "Anode: 0 (never reconstructs)", ""])
    return "\n".join(sec)


# ----------------------------------------------------------------------------- 5. peers

class Peers:
    """The peers grid (peers.csv and the gradient files): one row per (implementation, N_t) in
    `by`, keyed "anode-cpp/<mode>" for the C++ modes and by the implementation for the Python
    peers, each with its gradient error against the reference of its N_t."""

    def __init__(self, data, device):
        self.meta, rows = read_csv(os.path.join(data, "peers.csv"))
        gdir = os.path.join(data, "grads")
        self.refs = {}
        for f in glob.glob(os.path.join(gdir, "anode-cpp_backprop_nt*_float64.f64")):
            self.refs[nt_of(f)] = ("float64 Backprop (C++)", load_grad(f))
        for f in glob.glob(os.path.join(gdir, "anode-cpp_backprop_nt*_float32.f64")):
            self.refs.setdefault(nt_of(f), ("float32 Backprop (C++)", load_grad(f)))
        self.identity = []
        for f in glob.glob(os.path.join(gdir, "torch-backprop_torch-backprop_nt*_float64.f64")):
            nt = nt_of(f)
            c = os.path.join(gdir, f"anode-cpp_backprop_nt{nt}_float64.f64")
            if os.path.isfile(c):
                self.identity.append(f"Python float64 autograd vs C++ float64 Backprop at N_t = "
                                     f"{nt}: {sci(rel(load_grad(f), load_grad(c)))}")
        for f in sorted(glob.glob(os.path.join(gdir, "torchdiffeq_torchdiffeq_nt*_float32.f64")),
                        key=nt_of):
            nt = nt_of(f)
            c = os.path.join(gdir, f"anode-cpp_backprop_nt{nt}_float32.f64")
            if os.path.isfile(c):
                self.identity.append(f"torchdiffeq.odeint vs C++ Backprop, float32, N_t = {nt}: "
                                     f"{sci(rel(load_grad(f), load_grad(c)))}")
        cuda = device != "cpu"
        self.mem_key = "tensor_peak_bytes" if cuda else "heap_peak_bytes"
        self.mem_name = "peak CUDA tensors" if cuda else "peak heap"
        self.skipped = sorted({f"{r['impl']}: {r['status']}" for r in rows
                               if str(r.get("status", "")).startswith("skipped")})
        self.rows_ok = ok(rows)
        self.nts = sorted({r["nt"] for r in self.rows_ok})
        self.impls = list(dict.fromkeys(self.key(r) for r in self.rows_ok))
        self.by = {}
        for r in self.rows_ok:
            g = load_grad(r.get("grad_file", ""))
            ref = self.refs.get(r["nt"])
            err = rel(g, ref[1]) if (g is not None and ref is not None and
                                     ref[1] is not None) else None
            is_ref = (ref is not None and ref[0].startswith("float32") and
                      self.key(r) == "anode-cpp/backprop")
            self.by[(self.key(r), r["nt"])] = dict(r, grad_err=err, is_ref=is_ref)

    @staticmethod
    def key(r):
        return f"{r['impl']}/{r['mode']}" if r["impl"] == "anode-cpp" else r["impl"]

    def get(self, key, nt):
        return self.by.get((key, nt))

    def measured(self, impl):
        return any(k == impl for (k, _n) in self.by)


def plot_peers(peers, docs):
    """bench_peers.png: step time and peak memory of every implementation, by N_t."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    w = 0.8 / max(1, len(peers.impls))
    for i, k in enumerate(peers.impls):
        xs = [j + i * w for j in range(len(peers.nts))]
        base = k.split("/")[-1]
        axes[0].bar(xs, [peers.by.get((k, n), {}).get("step_ms", 0) or 0 for n in peers.nts], w,
                    label=k, color=COLORS.get(base, None))
        axes[1].bar(xs, [max(peers.by.get((k, n), {}).get(peers.mem_key, 0) or 0, 0) / MIB
                         for n in peers.nts], w, label=k, color=COLORS.get(base, None),
                    hatch="//" if not k.startswith("anode-cpp") else None)
    for ax, yl in zip(axes, ["step time [ms] (median)", f"{peers.mem_name} of a step [MiB]"]):
        ax.set_xticks([j + 0.4 - w / 2 for j in range(len(peers.nts))])
        ax.set_xticklabels([f"N_t = {n}" for n in peers.nts])
        ax.set_ylabel(yl)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_yscale("log")
    plain(axes[0])
    axes[1].legend(fontsize=7)
    fig.suptitle(peers.meta.get("network", ""), fontsize=9)
    save(fig, docs, "bench_peers.png")


def profile_times(data):
    """(the profile files, {label: {op: self ms}}) of the profiled steps (profile_<label>.json);
    a file that cannot be read is logged and left out."""
    profs = sorted(glob.glob(os.path.join(data, "profile_*.json")))
    times = {}
    for pth in profs:
        label = os.path.basename(pth)[len("profile_"):-len(".json")]
        try:
            times[label] = profile_self_times(pth)
        except (OSError, ValueError) as e:
            log(f"cannot read {pth}: {e}")
    return profs, times


def profile_table(times):
    """Where the time goes: the ops that take the most self time in any profiled step."""
    labels = list(times)
    top = {}
    for lab in labels:
        for op, ms in sorted(times[lab].items(), key=lambda kv: -kv[1])[:8]:
            top[op] = max(top.get(op, 0.0), ms)
    ops = sorted(top, key=lambda op: -top[op])[:12]
    rows = [[op] + [fmt(times[lab].get(op, 0.0), 1) for lab in labels] for op in ops]
    rows.append(["**all ops (profiled step)**"] +
                [fmt(sum(times[lab].values()), 1) for lab in labels])
    return markdown_table(["op"] + labels, rows)


def peers_section(peers, profs, times):
    """Section 5: the peers table, the same-network check, the profile."""
    table = []
    for nt in peers.nts:
        for k in peers.impls:
            r = peers.get(k, nt)
            if r:
                table.append([k, nt, fmt(r["step_ms"], 0), fmt(r["fwd_ms"], 0), fmt(r["bwd_ms"], 0),
                              r["repeats"], mib(r["heap_peak_bytes"]), mib(r["tensor_peak_bytes"]),
                              mib(r["max_rss_bytes"]), f"{r['rhs_evals_fwd']}+{r['rhs_evals_bwd']}",
                              "(reference)" if r["is_ref"] else
                              sci(r["grad_err"]) if r["grad_err"] is not None else "n/a"])
    sec = ["## 5. Side by side with the Python peers\n",
           f"Network: {peers.meta.get('network', '?')}, RK2 (explicit midpoint; torchdiffeq "
           "'midpoint' on the same fixed grid, torchode the midpoint tableau at dt = 1/N_t, the "
           "official code's 'RK2'), loss "
           "0.5·mean((z−target)²), SGD step; the same deterministic weights and data in both "
           "languages (benchmarks/harness/models.hpp = benchmarks/python/common.py). Every "
           "(implementation, N_t) runs in its own process, under the same LD_PRELOAD heap "
           "counter (benchmarks/heapcount): **peak heap** is the highest number of bytes in "
           "malloc'd blocks during a step above those live when it began, in either language "
           "(tensors, autograd graph, everything; CPython's small-object arenas are mmap'd and "
           "not counted, which is negligible next to tensors). Peak tensors: anode::memory's "
           "allocator meter (C++ only). Max RSS: the process's whole peak resident set "
           "(interpreter and libraries included: context only). Gradient error: the first "
           "step's [dL/dx, dL/dθ] vs the reference named below.\n"]
    if peers.identity:
        sec.append("Same network check (relative difference of the first step's gradients; 0 "
                   "means bit-identical): " + "; ".join(peers.identity) + ".\n")
    sec.append("Reference per N_t: " + ", ".join(f"N_t={n}: {peers.refs[n][0]}"
                                                 for n in sorted(peers.refs)) + ".\n")
    if peers.skipped:
        sec.append("Skipped: " + "; ".join(peers.skipped) + ".\n")
    if table:
        sec.append("![peers](bench_peers.png)\n")
        sec.append(markdown_table(["implementation", "N_t", "step ms", "fwd ms", "bwd ms", "n",
                                   "peak heap MiB", "peak tensors MiB", "max RSS MiB",
                                   "RHS evals fwd+bwd", "grad. error"], table) + "\n")
    if profs:
        sec.append("Where the time goes: one extra step under the LibTorch profiler (self time "
                   "per op in ms, the profiler's own overhead included; C++ and Python use the "
                   "same kernels, so the rows line up):\n")
        sec.append(profile_table(times) + "\n")
    return "\n".join(sec)


def profile_note(times):
    """The profiled convolution_backward and total times of anode's and the official ANODE's
    step, for the miss of the official-ANODE target ("" without both profiles)."""
    if len(times) < 2:
        return ""
    cpp_lab = [lab for lab in times if lab.startswith("anode-cpp_anode_")]
    off_lab = [lab for lab in times if lab.startswith("anode-official")]
    if not (cpp_lab and off_lab):
        return ""
    cb = times[cpp_lab[0]].get("aten::convolution_backward", 0.0)
    ob = times[off_lab[0]].get("aten::convolution_backward", 0.0)
    tot_c, tot_o = sum(times[cpp_lab[0]].values()), sum(times[off_lab[0]].values())
    return (f"in the profiled step convolution_backward takes {fmt(ob, 0)} ms there "
            f"against {fmt(cb, 0)} ms here, and all ops {fmt(tot_o, 0)} against "
            f"{fmt(tot_c, 0)} ms (ratio {tot_c / tot_o:.2f} under the profiler)")


def explain_anode_time(peers, nt):
    """Where Anode's extra step time over Backprop's goes at `nt` (forward and backward)."""
    b, an = peers.get("anode-cpp/backprop", nt), peers.get("anode-cpp/anode", nt)
    if not b or not an:
        return ""
    extra = an["step_ms"] - b["step_ms"]
    return (f"Backprop: fwd {fmt(b['fwd_ms'], 0)} + bwd {fmt(b['bwd_ms'], 0)} ms; Anode: fwd "
            f"(no graph) {fmt(an['fwd_ms'], 0)} + bwd (recompute with graph, then backprop) "
            f"{fmt(an['bwd_ms'], 0)} ms; the extra {fmt(extra, 0)} ms is "
            f"{fmt(100 * extra / b['fwd_ms'] if b['fwd_ms'] else float('nan'), 0)}% of "
            "Backprop's forward (theory: one extra forward, ratio 4/3 when backward ≈ 2× "
            "forward)")


def step_ratio_targets(peers, found, num, den, what, target, explain):
    """A target row per N_t for `num`'s step time over `den`'s (peers keys), and, where the
    target is not met, explain(nt, ratio, num row, den row) among the misses."""
    for nt in peers.nts:
        a, b = peers.get(num, nt), peers.get(den, nt)
        if a and b:
            r = a["step_ms"] / b["step_ms"]
            found.ratio(what.format(nt=nt), r, target)
            if not target.met(r):
                found.misses.append(explain(nt, r, a, b))


def peers_targets(peers, times, found):
    """The targets measured on the peers network, in the order of the report's table."""
    step_ratio_targets(
        peers, found, "anode-cpp/anode", "anode-cpp/backprop",
        "Anode / Backprop step time (peers network, N_t={nt})", ANODE_VS_BACKPROP,
        lambda nt, r, _an, _b: f"Anode/Backprop at N_t={nt} is {r:.2f}: "
                               f"{explain_anode_time(peers, nt)}.")
    step_ratio_targets(
        peers, found, "anode-cpp/anode", "anode-official",
        "anode C++ / official Python ANODE step time (N_t={nt})", CPP_VS_OFFICIAL_ANODE,
        lambda nt, r, an, off: (
            f"anode C++ vs official ANODE at N_t={nt}: {r:.2f} (C++ fwd "
            f"{fmt(an['fwd_ms'], 0)} / bwd {fmt(an['bwd_ms'], 0)} ms; Python fwd "
            f"{fmt(off['fwd_ms'], 0)} / bwd {fmt(off['bwd_ms'], 0)} ms). Both run the "
            "same LibTorch kernels (same build, same threads), and with this conv RHS "
            "the kernels are nearly all of the step, so the interpreter overhead C++ "
            "removes is small; the gap comes from the backward pass, where the official "
            "code calls autograd.grad twice (for z0, then again for θ, retain_graph): "
            + (profile_note(times) or "see the profile table in section 5") + "."))
    mem_key, mem_name = peers.mem_key, peers.mem_name
    tda = peers.get("torchdiffeq-adjoint", 32)
    b32 = peers.get("anode-cpp/backprop", 32)
    for kmode, kname in [("anode-k4", "k=4 (checkpoints rebuilt in backward, the default)"),
                         ("anode-k4f", "k=4 (keep_forward_checkpoints)")]:
        k4 = peers.get(f"anode-cpp/{kmode}", 32)
        if k4 and tda and k4[mem_key] > 0 and tda[mem_key] > 0:
            met = k4[mem_key] < tda[mem_key]
            found.targets.append([f"Anode {kname}, N_t=32: {mem_name} below torchdiffeq's adjoint",
                                  f"{mib(k4[mem_key])} vs {mib(tda[mem_key])} MiB",
                                  "below", "met" if met else "**missed**"])
            if not met:
                found.misses.append(f"Anode {kname} at N_t=32 peaks at {mib(k4[mem_key])} MiB "
                                    f"against torchdiffeq's adjoint {mib(tda[mem_key])} MiB.")
        if k4 and b32:
            r = k4["step_ms"] / b32["step_ms"]
            found.ratio(f"Anode {kname} / Backprop step time, N_t=32", r,
                        BINOMIAL_K4_VS_BACKPROP)
            if BINOMIAL_K4_VS_BACKPROP.missed(r):
                why = (" Rebuilding the k checkpoints costs one more forward sweep per block "
                       "(about N_t steps without a graph); keep_forward_checkpoints(true) saves "
                       "it for O(L·k) instead of O(L)+O(k) stored states."
                       if kmode == "anode-k4" else "")
                found.misses.append(f"Anode {kname} at N_t=32 costs {r:.2f}× Backprop: RHS "
                                    f"evaluations {k4['rhs_evals_fwd']}+{k4['rhs_evals_bwd']} vs "
                                    f"{b32['rhs_evals_fwd']}+{b32['rhs_evals_bwd']}.{why}")
    for impl, what in [("anode-official", "anode C++ / official Python ANODE step time"),
                       ("torchdiffeq-adjoint", "Anode k=4 vs torchdiffeq's adjoint memory")]:
        if not peers.measured(impl):
            why = [s_ for s_ in peers.skipped if s_.startswith(impl)] or ["not run"]
            found.targets.append([what, "not measured", "", why[0]])


# ----------------------------------------------------------------------------- 6. trade-off

def plot_tradeoff(by_mode, mkey, base_ms, L, nt, docs):
    """bench_tradeoff.png: step time against peak memory for every number of checkpoints."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for suffix, style, label in [("", "o-", "Anode, k checkpoints rebuilt in backward "
                                  "(default)"),
                                 ("f", "s--", "Anode, keep_forward_checkpoints")]:
        pts = [(k, by_mode.get(f"anode-k{k}{suffix}")) for k in TRADEOFF_K]
        pts = [(k, r) for k, r in pts if r]
        if suffix == "f":  # k >= N_t is the whole-block scheme either way
            whole = by_mode.get(f"anode-k{TRADEOFF_K[-1]}")
            if whole and TRADEOFF_K[-1] >= nt:
                pts.append((TRADEOFF_K[-1], whole))
        if not pts:
            continue
        ax.plot([r[mkey] / MIB for _k, r in pts], [r["step_ms"] / base_ms for _k, r in pts],
                style, color="tab:green" if suffix == "" else "tab:olive", label=label)
        for k, r in pts:
            ax.annotate(f"k={k}", (r[mkey] / MIB, r["step_ms"] / base_ms),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
    for mode, marker in [("backprop", "X"), ("adjoint", "D")]:
        r = by_mode.get(mode)
        if r:
            ax.plot([r[mkey] / MIB], [r["step_ms"] / base_ms], marker, markersize=9,
                    color=COLORS.get(mode), label=mode.capitalize() +
                    (" (inexact gradient)" if mode == "adjoint" else ""))
    ax.set(xscale="log", xlabel=("peak heap" if mkey == "heap_peak_bytes" else
                                 "peak tensors") + " [MiB]",
           ylabel="step time / Backprop's",
           title=f"Binomial checkpointing trade-off: L = {L}, N_t = {nt}, RK2")
    plain(ax)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save(fig, docs, "bench_tradeoff.png")


def tradeoff_section(data, docs):
    """Section 6 (None without tradeoff.csv): binomial checkpointing, memory against time."""
    tpath = os.path.join(data, "tradeoff.csv")
    if not os.path.isfile(tpath):
        return None
    tmeta, trows = read_csv(tpath)
    trows = [r for r in ok(trows) if r["rhs"] == "conv"]
    if not trows:
        return None
    L, nt = trows[0]["L"], trows[0]["nt"]
    mkey = "heap_peak_bytes" if all(r["heap_peak_bytes"] > 0 for r in trows) else "peak_bytes"
    by_mode = {r["mode"]: r for r in trows}
    back = by_mode.get("backprop")
    base_ms = back["step_ms"] if back else float("nan")
    plot_tradeoff(by_mode, mkey, base_ms, L, nt, docs)
    rows = []
    for mode in TRADEOFF_MODES:
        r = by_mode.get(mode)
        if not r:
            continue
        rows.append([mode, r["checkpoints"] if mode.startswith("anode") else "",
                     fmt(r["step_ms"], 0), fmt(r["step_ms"] / base_ms, 2),
                     mib(r[mkey]), r["rhs_evals_fwd"], r["rhs_evals_bwd"]])
    sec = ["## 6. Binomial checkpointing: memory against time\n",
           f"`bench_scaling` on {tmeta.get('conv', '?')}, L = {L} blocks, N_t = {nt} RK2 "
           "steps, one training step per point. `anode-kK`: K checkpoints per block, "
           "rebuilt by the block's backward from its input (the default: "
           "O(L) + O(K) stored states); `anode-kKf`: the same checkpoints stored by the "
           "forward pass (`keep_forward_checkpoints(true)`: O(L·K) states, one forward "
           "sweep per block less). K ≥ N_t is the paper's whole-block recompute. Every "
           "Anode point gives the exact gradient; the Adjoint's is not.\n",
           "![trade-off](bench_tradeoff.png)\n",
           markdown_table(["mode", "k", "step ms", "× Backprop", "peak MiB", "RHS evals fwd",
                           "RHS evals bwd"], rows) + "\n"]
    return "\n".join(sec)


# ----------------------------------------------------------------------------- 7. the MLP case

def read_mlp(path):
    """(rows, skipped) of the MLP case's mlp.csv: the rows as scripts/bench_mlp.py holds them (a
    row that did not run has no step_ms), and "implementation: why" of each peer that was
    skipped."""
    rows = bench_mlp.read_csv(path)
    skipped = sorted({f"{r['impl']}: {r['status']}" for r in rows
                      if str(r.get("status", "")).startswith("skipped")})
    return [r for r in rows if r.get("status") == "ok"], skipped


def mlp_ref(group):
    """The reference of a group of MLP rows: torchdiffeq with the same method."""
    return MLP_REF.get(group.get("method"), MLP_REF["rk2"])


def mlp_section(rows, skipped):
    """Section 7 (None without a row that ran): the MLP trajectory case, every implementation's
    step time and its ratio to torchdiffeq in the same round."""
    if not rows:
        return None
    nrounds = len({r["round"] for r in rows})
    evals = {r["rhs_evals_fwd"] for r in rows if r["impl"] == "torchode-rk2"}
    sec = ["## 7. The MLP trajectory case: anode, torchdiffeq and torchode\n",
           f"One training step of a 2-64-2 tanh MLP right-hand side, batch {MLP_BATCH}, on [0, 1] "
           "(zero_grad, solve, loss 0.5·mean((z(1) − target)²), backward, SGD), the same "
           "weights and data in both languages: C++ `bench_mlp` (anode's modes; "
           "`anode-latest` is keep_latest_graph) against `benchmarks/python/mlp_peers.py` "
           "(torchdiffeq's odeint, torchode's AutoDiffAdjoint, a hand-written midpoint loop), "
           f"{nrounds} alternating round(s) of {rows[0].get('repeats', '?')} timed steps per "
           f"side, {rows[0].get('threads', '?')} intra-op thread(s). RK2: explicit midpoint, "
           "100 fixed steps; dopri5: rtol 1e-5, atol 1e-9, each solver's own step-size control "
           "(so the step counts differ). Ratios are to torchdiffeq with the same method in the "
           "same round: the median over rounds, and their range.\n"]
    if evals - {200}:
        sec.append("torchode's fixed step advances t += dt and clamps the last step to t = 1; "
                   "dt = 1/100 is not a binary fraction, so its steps need not sum to 1 where "
                   "the 100th ends: its RK2 takes "
                   f"{' or '.join(str(e) for e in sorted(evals))} forward evaluations, not 200.\n")
    if skipped:
        sec.append("Skipped: " + "; ".join(skipped) + ".\n")
    sec.append(markdown_table(["method"] + bench_mlp.RATIO_COLUMNS,
                              bench_mlp.ratio_rows(rows, ["method"], mlp_ref, unpaired=True))
               + "\n")
    return "\n".join(sec)


# ----------------------------------------------------------------------------- 8. what changed

def peers_changes(rep, current):
    """Table rows: each (implementation, N_t) of the baseline report's peers table that this run
    measured too (`current`: Peers.by), its step time and peak heap then and now."""
    rows = []
    for (key, nt), then in rep.peers.items():
        now = current.get((key, nt))
        then_ms = results.parse_number(then.get("step ms", ""))
        if not now or not isinstance(then_ms, (int, float)) or not then_ms:
            continue
        rows.append([key, nt, then["step ms"], fmt(now["step_ms"], 0),
                     fmt(now["step_ms"] / then_ms, 2), then.get("peak heap MiB", "n/a"),
                     mib(now["heap_peak_bytes"])])
    return rows


def comparable_mlp_rows(rows, batch, threads):
    """The rows of an earlier MLP run (scripts/bench_mlp.py's bench_mlp.csv or a report's
    mlp.csv) measured at this batch and thread count; of bench_mlp.py's two BLAS, OpenBLAS (the
    one scripts/setup.sh installs)."""
    return [r for r in rows if r.get("status") == "ok" and "step_ms" in r and
            r.get("batch", batch) == batch and r.get("threads", threads) == threads and
            r.get("blas", "openblas") == "openblas"]


def mlp_changes(then_rows, now_rows):
    """Table rows: per method and implementation of this run, the median step time then and now
    and the median ratio to torchdiffeq (same round) then and now."""
    med = statistics.median
    out = []
    for method in MLP_REF:
        then_m = [r for r in then_rows if r["method"] == method]
        now_m = [r for r in now_rows if r["method"] == method and "step_ms" in r]
        for impl in dict.fromkeys(r["impl"] for r in now_m):
            then = [r["step_ms"] for r in then_m if r["impl"] == impl]
            now = [r["step_ms"] for r in now_m if r["impl"] == impl]
            rt = bench_mlp.round_ratios(then_m, impl, MLP_REF[method])
            rn = bench_mlp.round_ratios(now_m, impl, MLP_REF[method])
            out.append([method, impl, fmt(med(then)) if then else "not run", fmt(med(now)),
                        fmt(med(now) / med(then)) if then else "n/a",
                        fmt(med(rt)) if rt else "n/a", fmt(med(rn)) if rn else "n/a"])
    return out


def shown_path(path):
    """`path` relative to the repository when it lies inside it, else as given."""
    r = os.path.relpath(path, ROOT)
    return path if r.startswith("..") else r


def changes_section(rep, base_md, here, current, then_mlp, base_mlp, now_mlp):
    """Section 8 (None without a baseline): what changed from the baseline run `rep` (read from
    `base_md`) on the configurations both ran. `here`: this run's grid, network, threads, device,
    LibTorch and torch; `current`: its peers rows (Peers.by); `then_mlp` / `now_mlp`: the
    baseline's (from `base_mlp`) and this run's MLP rows."""
    mlp_rows = mlp_changes(then_mlp, now_mlp) if then_mlp and now_mlp else []
    if rep is None and not mlp_rows:
        return None
    sec = ["## 8. What changed from the baseline run\n"]
    if rep is not None:
        sec.append(f"The baseline: `{shown_path(base_md)}`, an earlier run of this report on "
                   f"LibTorch {rep.libtorch} (Python / torch "
                   f"{rep.versions.get('Python / torch', '?')}); this run: LibTorch "
                   f"{here['libtorch']} (torch {here['torch']}). BLAS: "
                   f"{rep.versions.get('BLAS', '?')} there, {here['blas']} here. Its figures are "
                   "quoted as that run printed them; its machine load is in that file.\n")
        then_cpu, now_cpu = rep.versions.get("CPU", "?"), here.get("cpu", "?")
        if then_cpu != now_cpu:
            # A development VM is not always the same hardware: the time ratios then mix the
            # LibTorch change with the machine's.
            sec.append(f"**Another machine**: the baseline ran on {then_cpu}, this run on "
                       f"{now_cpu}, so the step-time ratios below measure the machine as well as "
                       "the LibTorch; within each run the ratios between implementations (C++ "
                       "against the Python peers, one LibTorch and torch) are the comparison "
                       "that holds.\n")
        why = baseline.peers_mismatch(rep, here["grid"], here["network"], here["threads"],
                                      here["device"])
        rows = [] if why else peers_changes(rep, current)
        if why:
            sec.append(f"Peers network (section 5): not compared, the configurations differ "
                       f"({why}).\n")
        elif rows:
            sec.append(f"Peers network (section 5), {here['network']}, grid {here['grid']}:\n")
            sec.append(markdown_table(
                ["implementation", "N_t", f"step ms, {rep.libtorch}", "step ms, now",
                 "now / then", f"peak heap MiB, {rep.libtorch}", "peak heap MiB, now"], rows)
                + "\n")
        else:
            sec.append("Peers network (section 5): no implementation and N_t measured by both "
                       "runs.\n")
    if mlp_rows:
        rounds = [len({r["round"] for r in rows}) for rows in (then_mlp, now_mlp)]
        sec.append(f"MLP trajectory case (section 7), against `{shown_path(base_mlp)}` (its "
                   f"rounds at batch {MLP_BATCH} and {here['threads']} thread(s), OpenBLAS where "
                   "it measured several BLAS; the LibTorch of that run is the one its own report "
                   f"names). \"then\" is the median over its {rounds[0]} round(s), \"now\" over "
                   f"this run's {rounds[1]}:\n")
        sec.append(markdown_table(["method", "implementation", "step ms, then", "step ms, now",
                                   "now / then", "÷ torchdiffeq, then", "÷ torchdiffeq, now"],
                                  mlp_rows) + "\n")
    return "\n".join(sec)


# ----------------------------------------------------------------------------- all sections

def plots_and_sections(a, data, docs):
    """Every plot and section of the report, in section order, with what they found."""
    found = Findings()
    sections = {}
    smeta, srows = read_csv(os.path.join(data, "scaling.csv"))
    sections[1], fits = scaling_section(srows, smeta, docs, found)

    gmeta, grows = read_csv(os.path.join(data, "gradients.csv"))
    grows = ok(grows)
    rhss = list(dict.fromkeys(r["rhs"] for r in grows))
    gm = shown_method(grows)
    plot_gradient_errors(grows, rhss, gm, docs)
    plot_otd_dto(grows, rhss, gm, docs)
    sections[2] = gradient_accuracy_section(grows, gmeta, rhss, gm, found)
    sections[4] = otd_dto_section(grows, gmeta, rhss, gm)

    rmeta, rrows = read_csv(os.path.join(data, "reverse.csv"))
    sections[3] = reverse_section(rmeta, rrows, docs, found)

    peers = Peers(data, a.device)
    if peers.rows_ok:
        plot_peers(peers, docs)
    profs, times = profile_times(data)
    sections[5] = peers_section(peers, profs, times)
    peers_targets(peers, times, found)
    memory_fit_targets(fits, found)

    tradeoff = tradeoff_section(data, docs)
    if tradeoff is not None:
        sections[6] = tradeoff

    mpath = os.path.join(data, "mlp.csv")
    mrows, mskipped = read_mlp(mpath) if os.path.isfile(mpath) else ([], [])
    mlp = mlp_section(mrows, mskipped)
    if mlp is not None:
        sections[7] = mlp

    rep = baseline.read_report(a.baseline_md) if a.baseline_md else None
    then_mlp = (comparable_mlp_rows(bench_mlp.read_csv(a.baseline_mlp), MLP_BATCH, a.threads)
                if a.baseline_mlp else [])
    info = versions(data)
    here = dict(grid=grid_name(a), network=peers.meta.get("network", "?"), threads=a.threads,
                device=a.device, libtorch=info.get("libtorch", "?"),
                torch=info.get("python torch", "?"), blas=info.get("blas", "?"),
                cpu=info.get("cpu", "?"))
    changes = changes_section(rep, a.baseline_md, here, peers.by, then_mlp, a.baseline_mlp, mrows)
    if changes is not None:
        sections[8] = changes
    return ([sections[k] for k in sorted(sections)], found.headline, found.targets, found.misses,
            smeta)


# ----------------------------------------------------------------------------- the report

def versions(data):
    """The machine and software of the run, from the benchmarks' CSV metadata, and each Python
    peer's version and revision."""
    info = merged_metadata(p for p in (os.path.join(data, "scaling.csv"),
                                       os.path.join(data, "peers.csv")) if os.path.isfile(p))
    for p in glob.glob(os.path.join(data, "peers_py_*.csv")):
        meta, rows = read_csv(p)
        impl = rows[0]["impl"] if rows else "?"
        if "peer_revision" in meta:
            info[f"{impl}"] = (f"{meta.get('peer_version', '')} rev "
                               f"{meta['peer_revision'][:12]}").strip()
        elif "peer_version" in meta:  # installed with pip: the package's own version
            info[f"{impl}"] = f"{meta['peer_version']} (pip)"
        info.setdefault("python", meta.get("python", "?"))
        info.setdefault("python torch", meta.get("torch", "?"))
    # A run without the peers network (--skip-peers) still names the MLP case's peers.
    mpath = os.path.join(data, "mlp.csv")
    for r in (bench_mlp.read_csv(mpath) if os.path.isfile(mpath) else []):
        if r.get("status") == "ok" and "torch" in r:
            info.setdefault("python torch", str(r["torch"]))
            if "peer_version" in r:
                info.setdefault(r["impl"].split("-")[0], str(r["peer_version"]))
    return info


def grid_name(a):
    return "full" if a.full else "smoke" if a.smoke else "quick"


def command_line(a):
    """The command that reproduces the run, as the report prints it."""
    return ("/usr/bin/python3 scripts/report.py" + (" --full" if a.full else "") +
            (f" --libtorch {a.libtorch}" if a.libtorch != "debian" else "") +
            (" --smoke" if a.smoke else "") +
            (f" --threads {a.threads}" if a.threads != 1 else "") +
            (f" --device {a.device}" if a.device != "cpu" else ""))


def write_report(a, data, docs, started, elapsed, load_before, load_after):
    sections, headline, targets, misses, smeta = plots_and_sections(a, data, docs)
    info = versions(data)
    thr = info.get("torch_threads", str(a.threads))
    noisy = max(load_before, load_after) > (float(thr) if thr.isdigit() else 1) + 0.5
    lines = ["# Benchmarks\n",
             "<!-- Generated by scripts/report.py: edit that, not this file. -->\n",
             "Every number and plot here comes from one run of\n",
             "```\n" + command_line(a) + "\n```\n",
             f"(grid: {grid_name(a)}; {elapsed / 60:.1f} minutes including the build; raw CSVs "
             f"in {shown_path(data)}/).\n"]
    if a.smoke:
        lines.append("> **Smoke run**: tiny problems that only check the pipeline. None of these "
                     "figures is a measurement of the benchmark configurations.\n")
    if noisy:
        lines.append(f"> **Noisy machine**: the 1-minute load average was {load_before:.2f} "
                     f"before and {load_after:.2f} after the run, above the {thr} thread(s) "
                     "used: other processes shared the cores, so timings (not memory or "
                     "accuracy) are unreliable. Regenerate on a quiet machine.\n")
    mach = [["date (UTC)", started], ["CPU", info.get("cpu", "?")],
            ["hardware threads / threads used", f"{info.get('hardware_threads', '?')} / {thr}"],
            ["load average (1 min) before / after", f"{load_before:.2f} / {load_after:.2f}"],
            ["LibTorch (C++)", info.get("libtorch", "?")], ["BLAS", info.get("blas", "?")],
            ["compiler / build", f"{info.get('compiler', '?')} / {info.get('build', '?')}"],
            ["C++ flags of the build (CMake cache)",
             machine.build_flags(machine.cmake_cache(a.build_dir))],
            ["CUDA", info.get("cuda", "?")],
            ["Python / torch", f"{info.get('python', '?')} / {info.get('python torch', '?')}"],
            ["torchdiffeq", info.get("torchdiffeq", info.get("torchdiffeq-adjoint", "not run"))],
            ["torchode", info.get("torchode", "not run")],
            ["official ANODE", info.get("anode-official", "not run")],
            ["anode", machine.anode_version(ROOT)]]
    lines.append("## Machine and versions\n")
    lines.append(markdown_table(["", ""], mach) + "\n")
    lines.append("## Targets and headline figures\n")
    if targets:
        lines.append(markdown_table(["what", "measured", "target", ""], targets) + "\n")
    if headline:
        lines.append(markdown_table(["accuracy", "value", "context", ""], headline) + "\n")
    if misses:
        lines.append("### Missed targets: why\n")
        if noisy:
            lines.append("The run was noisy (see above): a timing target missed by a few percent "
                         "may be noise; the profiled ratios below are steadier.\n")
        lines += [f"- {m}" for m in misses]
        lines.append("")
    lines += sections
    lines.append("## How it is measured\n")
    lines.append(
        "- Timing: `benchmarks/harness/stats.hpp` (C++) and benchmarks/python/common.py: one "
        "untimed warm-up step, then n timed steps (n from the warm-up's duration and a time "
        "budget, at least 1 in the quick grid, 5 in --full); the median is reported, the "
        "quartiles are in the CSVs. Threads: `torch::set_num_threads` / `torch.set_num_threads` "
        "with the same value on both sides.\n"
        "- Memory: C++ tensor bytes from anode::memory's counting CPU allocator (exact storage "
        "bytes); both languages' heap from benchmarks/heapcount (LD_PRELOAD; malloc, calloc, "
        "realloc, posix_memalign, aligned_alloc, memalign, valloc counted with their usable "
        "size). Peaks are above what was live when the step began, max over the timed steps.\n"
        "- Gradients: float64 [dL/dx, dL/dθ] written by each process, compared here.\n"
        "- Peers are not vendored: torchdiffeq and torchode are the peers' interpreter's pip "
        "packages or the trees ANODE_TORCHDIFFEQ_PATH / ANODE_TORCHODE_PATH name, the official "
        "ANODE code the tree of ANODE_OFFICIAL_PATH (see benchmarks/python/README.md).\n")
    with open(os.path.join(docs, "benchmarks.md"), "w") as f:
        f.write("\n".join(lines))
    log(f"wrote {os.path.join(docs, 'benchmarks.md')}")


def peer_notes(python):
    """A line per Python peer that the peers' interpreter will skip: neither importable there nor
    named by its environment variable."""
    found = subprocess.run(
        [python, "-c", "import importlib.util as u\n"
         "for m in ('torchdiffeq', 'torchode'): print(m, u.find_spec(m) is not None)"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout.split()
    have = dict(zip(found[::2], found[1::2]))
    notes = []
    for module in ("torchdiffeq", "torchode"):
        var = f"ANODE_{module.upper()}_PATH"
        if have.get(module) != "True" and not os.environ.get(var):
            notes.append(f"{module} is not installed in {python} and {var} is not set: skipped "
                         "(see benchmarks/python/README.md)")
    if not os.environ.get("ANODE_OFFICIAL_PATH"):
        notes.append("ANODE_OFFICIAL_PATH is not set: the official ANODE code is skipped (see "
                     "benchmarks/python/README.md)")
    return notes


def parse_args(argv=None):
    """The options, with the defaults that depend on --libtorch filled in and the inputs
    checked: a bad one ends the run here, naming the option, before anything is built."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the large grids (GPU machine)")
    ap.add_argument("--smoke", action="store_true", help="tiny problems: checks the pipeline")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads for timed runs")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (scaling and peers)")
    ap.add_argument("--libtorch", default="debian",
                    help="debian: Debian's LibTorch and /usr/bin/python3 [default]; pypi: the "
                         "torch wheel's LibTorch for the C++ side and that wheel's torch for the "
                         "peers, both from --venv")
    ap.add_argument("--venv", default=None,
                    help="with --libtorch pypi: the virtual environment of `" + SETUP_PYPI +
                         "` [ANODE_VENV, else .venv/ of the repository]")
    ap.add_argument("--build-dir", default="",
                    help="[build-report/; build-report-pypi/ with --libtorch pypi]")
    ap.add_argument("--jobs", type=int, default=1, help="parallel compile jobs")
    ap.add_argument("--data-dir", default="",
                    help="[out/report/; out/report-pypi/ with --libtorch pypi]")
    ap.add_argument("--docs-dir", default=os.path.join(ROOT, "docs"))
    ap.add_argument("--no-build", action="store_true", help="use the programs already built")
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--skip-benches", action="store_true")
    ap.add_argument("--skip-mlp", action="store_true", help="leave out the MLP case (section 7)")
    ap.add_argument("--python-backprop", action="store_true",
                    help="also time plain PyTorch autograd (always on with --full)")
    ap.add_argument("--baseline-md",
                    default=os.path.join(ROOT, "docs", "results", "benchmarks_libtorch1.13.md"),
                    help="an earlier report of this script, for section 8 [the LibTorch 1.13 "
                         "one kept in docs/results/]; empty: none")
    ap.add_argument("--baseline-mlp",
                    default=os.path.join(ROOT, "docs", "results", "bench_mlp.csv"),
                    help="an earlier scripts/bench_mlp.py CSV (or a report's mlp.csv), for "
                         "section 8 [docs/results/bench_mlp.csv]; empty: none")
    ap.add_argument("--reuse", action="store_true", help="only re-render from --data-dir")
    a = ap.parse_args(argv)
    if a.full and a.smoke:
        ap.error("--full and --smoke exclude each other")
    if a.libtorch not in ("debian", "pypi"):
        ap.error(f"--libtorch {a.libtorch}: expected debian or pypi")
    if a.venv is not None and a.libtorch != "pypi":
        ap.error(f"--venv {a.venv}: only read with --libtorch pypi (with --libtorch "
                 f"{a.libtorch} the peers run on {PY})")
    for opt, path in (("--baseline-md", a.baseline_md), ("--baseline-mlp", a.baseline_mlp)):
        if path and not os.path.isfile(path):
            ap.error(f"{opt} {path}: no such file (an empty value compares with nothing)")
    suffix = "-pypi" if a.libtorch == "pypi" else ""
    a.build_dir = a.build_dir or os.path.join(ROOT, "build-report" + suffix)
    a.data_dir = a.data_dir or os.path.join(ROOT, "out", "report" + suffix)
    a.venv = a.venv or os.environ.get("ANODE_VENV") or os.path.join(ROOT, ".venv")
    a.python = PY
    if a.reuse:
        return a  # nothing runs: the data's LibTorch is the one its run.json names
    torch_pkg = ""
    if a.libtorch == "pypi":
        a.python = os.path.join(a.venv, "bin", "python")
        if not os.access(a.python, os.X_OK):
            ap.error(f"--libtorch pypi: no Python at {a.python} (--venv {a.venv}); make that "
                     f"virtual environment with `{SETUP_PYPI}`")
        torch_pkg = torch_dir(a.python)
        if not torch_pkg:
            ap.error(f"--libtorch pypi: {a.python} cannot import torch (--venv {a.venv}); "
                     f"install it with `{SETUP_PYPI}`")
    why = build_mismatch(a.build_dir, a.libtorch, torch_pkg)
    if why:
        ap.error(why)
    return a


def main():
    a = parse_args()
    t0 = time.time()
    started = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M")
    load_before = machine.load_average()
    os.makedirs(a.data_dir, exist_ok=True)
    os.makedirs(a.docs_dir, exist_ok=True)
    if not a.reuse:
        log(f"--libtorch {a.libtorch}: the peers run on {a.python}, the C++ side is built in "
            f"{a.build_dir}")
        for note in peer_notes(a.python):
            log(note)
        heap_lib = None
        if a.no_build:
            hits = glob.glob(os.path.join(a.build_dir, "**", "libheapcount.so"), recursive=True)
            heap_lib = hits[0] if hits else None
            if heap_lib is None:
                raise SystemExit("--no-build: no libheapcount.so under " + a.build_dir)
        else:
            heap_lib = build(a.build_dir, a.jobs, a.libtorch, a.python)
        if not a.skip_benches:
            run_benches(a, a.build_dir, heap_lib, a.data_dir)
        if not a.skip_peers:
            run_peers(a, a.build_dir, heap_lib, a.data_dir)
        if not a.skip_mlp:
            run_mlp(a, a.build_dir, a.data_dir)
    run_file = os.path.join(a.data_dir, "run.json")
    if a.reuse and os.path.isfile(run_file):
        with open(run_file) as f:
            r = json.load(f)  # the conditions of the run that produced the data
        started, elapsed, load_before, load_after = (r["started"], r["elapsed_s"],
                                                     r["load_before"], r["load_after"])
        a.full, a.smoke, a.threads = r["full"], r["smoke"], r["threads"]
        a.device = r.get("device", "cpu")
        a.libtorch = r.get("libtorch", "debian")  # written before --libtorch: Debian's
        a.build_dir = r.get("build_dir", a.build_dir)
    else:
        elapsed, load_after = time.time() - t0, machine.load_average()
        with open(run_file, "w") as f:
            json.dump(dict(started=started, elapsed_s=elapsed, load_before=load_before,
                           load_after=load_after, full=a.full, smoke=a.smoke, threads=a.threads,
                           device=a.device, libtorch=a.libtorch, build_dir=a.build_dir),
                      f, indent=1)
    write_report(a, a.data_dir, a.docs_dir, started, elapsed, load_before, load_after)
    log(f"total {(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
