#!/usr/bin/python3
"""anode against torchdiffeq where most neural-ODE users live: a 2-64-2 tanh MLP right-hand side,
batch 256, one training step (zero_grad, solve on [0, 1], loss, backward, SGD), one intra-op
thread on both sides. Fixed step: RK2 (midpoint), 100 steps. Adaptive: dopri5, rtol 1e-5,
atol 1e-9.

The two sides run in alternating rounds (C++ bench_mlp, then Python mlp_peers.py, then C++
again, ...), so that a change in the machine's load hits both; each round gives a median step
time per implementation, and the report quotes the median over rounds of each ratio to
torchdiffeq measured within the same round.

Both sides load the same BLAS, and the run measures under each one installed (--blas): OpenBLAS,
which scripts/setup.sh installs, and Debian's default reference BLAS, which LibTorch gets when
nothing else is there. A second table varies the batch (--batches, RK2): the smaller the batch,
the more of a step is per-operation overhead rather than arithmetic.

    ANODE_TORCHDIFFEQ_PATH=/work/peers/torchdiffeq /usr/bin/python3 scripts/bench_mlp.py

Writes docs/results/bench_mlp.csv (every round), docs/bench_mlp.md (the tables, the machine and,
appended, the analysis kept in docs/bench_mlp_notes.md) and docs/bench_mlp.png (RK2 by batch size;
--plot-only CSV redraws it without measuring). See benchmarks/python/README.md for
getting torchdiffeq without pip.
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time

from anode_report import machine
from anode_report.results import read_csv as read_results_csv
from anode_report.tables import markdown_table
from anode_report.targets import MLP_VS_TORCHDIFFEQ

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"


def run_json(cmd, env):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


# The BLAS libraries Debian offers LibTorch through the alternatives system (libblas.so.3). Both
# sides of the comparison load the one named, through LD_LIBRARY_PATH, so one run measures both.
BLAS_DIRS = {
    "openblas": "/usr/lib/x86_64-linux-gnu/openblas-openmp",
    "reference": "/usr/lib/x86_64-linux-gnu/blas",
}
BLAS_NAMES = {"openblas": "OpenBLAS 0.3 (libopenblas0-openmp)",
              "reference": "the reference BLAS (libblas3, Debian's default)"}


def blas_env(env, name):
    """`env` with LD_LIBRARY_PATH pointing the dynamic linker at BLAS `name`; None if absent."""
    d = BLAS_DIRS[name]
    if not os.path.exists(os.path.join(d, "libblas.so.3")):
        return None
    e = dict(env)
    e["LD_LIBRARY_PATH"] = d + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    return e


def loaded_blas(binary, env):
    """Which libblas.so.3 the dynamic linker gives `binary` under `env`."""
    return machine.loaded_library(binary, "libblas.so", env)


def round_ratios(sel, impl, ref):
    """`impl`'s step time over `ref`'s in the same round, for each round of the rows `sel` (one
    setting: the same BLAS, batch and method)."""
    ratios = []
    for x in sel:
        if x["impl"] != impl or "step_ms" not in x:
            continue
        base = [y for y in sel if y["impl"] == ref and y["round"] == x["round"] and "step_ms" in y]
        if base:
            ratios.append(x["step_ms"] / base[0]["step_ms"])
    return ratios


def ratio_rows(rows, keys, ref_of, unpaired=False):
    """Table rows: per (key..., impl) the median step time over rounds, the median (and range)
    of the per-round ratios to the reference implementation of the same round, and the RHS
    evaluations forward / backward. An implementation with no round that the reference also ran
    is left out, or with `unpaired` kept with "n/a" for its ratio (scripts/report.py, where a
    peer may have been skipped)."""
    out = []
    groups = []
    for row in rows:
        g = tuple(row[k] for k in keys)
        if g not in groups:
            groups.append(g)
    for g in groups:
        sel = [x for x in rows if tuple(x[k] for k in keys) == g]
        ref = ref_of(dict(zip(keys, g)))
        impls = []
        for x in sel:
            if x["impl"] not in impls:
                impls.append(x["impl"])
        for impl in impls:
            mine = [x for x in sel if x["impl"] == impl and "step_ms" in x]
            ratios = round_ratios(sel, impl, ref)
            if not mine or not (ratios or unpaired):
                continue
            ms = statistics.median(x["step_ms"] for x in mine)
            ev = f"{mine[-1].get('rhs_evals_fwd', '')} / {mine[-1].get('rhs_evals_bwd', '')}"
            ratio = (f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"
                     if ratios else "n/a")
            out.append(list(g) + [impl, f"{ms:.2f}", ratio, ev])
    return out


RATIO_COLUMNS = ["implementation", "step (ms), median of rounds",
                 "ratio to torchdiffeq (median of per-round ratios)",
                 "RHS evaluations forward / backward"]


def plot(rows, path):
    """docs/bench_mlp.png: RK2 step time relative to torchdiffeq against the batch size, one panel
    per BLAS, with the target (MLP_VS_TORCHDIFFEQ, 0.7) drawn in. Skipped with a message without
    matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (bash scripts/setup.sh installs it)")
        return
    names = [b for b in BLAS_DIRS if any(x["blas"] == b for x in rows)]
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 3.8), sharey=True,
                             squeeze=False)
    styles = {"anode-anode": ("Anode", "C0", "o"),
              "anode-anode-latest": ("Anode, keep_latest_graph", "C2", "s"),
              "anode-backprop": ("Backprop", "C1", "^"),
              "torch-rk2": ("hand-written Python loop", "0.5", "x")}
    for ax, name in zip(axes[0], names):
        sel = [x for x in rows if x["blas"] == name and x["method"] == "rk2"]
        batches = sorted({x["batch"] for x in sel})
        for impl, (label, color, marker) in styles.items():
            med, lo, hi, bs = [], [], [], []
            for b in batches:
                ratios = round_ratios([x for x in sel if x["batch"] == b], impl, "torchdiffeq-rk2")
                if ratios:
                    bs.append(b)
                    med.append(statistics.median(ratios))
                    lo.append(min(ratios))
                    hi.append(max(ratios))
            if bs:
                ax.plot(bs, med, marker=marker, color=color, label=label)
                ax.fill_between(bs, lo, hi, color=color, alpha=0.15, linewidth=0)
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.axhline(MLP_VS_TORCHDIFFEQ.limit, color="r", linestyle="--", linewidth=0.8,
                   label=f"the target, {MLP_VS_TORCHDIFFEQ.limit}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches)
        ax.set_xticklabels([str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_title(BLAS_NAMES[name].split(" (")[0], fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("step time / torchdiffeq's (RK2, 100 steps)")
    axes[0][-1].legend(fontsize=8, loc="upper left")
    fig.suptitle("2-64-2 tanh MLP, one training step, one thread: median and range of 5 rounds",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {os.path.relpath(path, ROOT)}")


def read_csv(path):
    """The rows a previous run wrote to bench_mlp.csv, numbers as numbers and without the empty
    cells, as a run holds them (a row that did not run has no "step_ms")."""
    return [{k: v for k, v in row.items() if v != ""} for row in read_results_csv(path)[1]]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30, help="timed steps per round and side")
    p.add_argument("--blas", default="openblas,reference",
                   help="BLAS libraries to measure under, both sides each: openblas, reference "
                        "[openblas,reference]; one not installed is skipped with a message")
    p.add_argument("--batches", default="16,64",
                   help="extra batch sizes for the RK2 regime table (batch 256 is the main "
                        "table's) [16,64]; empty: none")
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "benchmarks", "bench_mlp"))
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "results"))
    p.add_argument("--doc", default=os.path.join(ROOT, "docs", "bench_mlp.md"),
                   help="the report to write [docs/bench_mlp.md]")
    p.add_argument("--plot-only", metavar="CSV",
                   help="measure nothing: draw docs/bench_mlp.png from a bench_mlp.csv written "
                        "before")
    args = p.parse_args()
    if args.rounds < 1 or args.repeats < 1:
        p.error(f"--rounds {args.rounds} --repeats {args.repeats}: both must be at least 1")
    png = os.path.join(os.path.dirname(args.doc), "bench_mlp.png")
    if args.plot_only:
        if not os.path.exists(args.plot_only):
            p.error(f"--plot-only {args.plot_only}: no such file")
        plot(read_csv(args.plot_only), png)
        return 0
    if not os.access(args.binary, os.X_OK):
        p.error(f"--binary {args.binary} is not built: cmake --build build --target bench_mlp")
    env = dict(os.environ)
    if not env.get("ANODE_TORCHDIFFEQ_PATH"):
        p.error("ANODE_TORCHDIFFEQ_PATH is not set (see benchmarks/python/README.md)")
    envs = {}
    for name in [b for b in args.blas.split(",") if b]:
        if name not in BLAS_DIRS:
            p.error(f"--blas {name}: unknown; expected openblas or reference")
        e = blas_env(env, name)
        if e is None:
            print(f"--blas {name}: {BLAS_DIRS[name]}/libblas.so.3 is not installed; skipped"
                  + (" (bash scripts/setup.sh installs it)" if name == "openblas" else ""))
            continue
        envs[name] = e
    if not envs:
        p.error("--blas: none of the BLAS libraries named is installed")
    try:
        batches = [int(b) for b in args.batches.split(",") if b]
    except ValueError:
        p.error(f"--batches {args.batches}: expected comma-separated integers, e.g. 16,64")
    if any(b < 1 for b in batches):
        p.error(f"--batches {args.batches}: every batch size must be at least 1")
    rows = []
    t_start = time.time()
    peers_py = os.path.join(ROOT, "benchmarks", "python", "mlp_peers.py")
    for r in range(args.rounds):
        for name, e in envs.items():
            runs = [("rk2", 256), ("dopri5", 256)] + [("rk2", b) for b in batches]
            for method, batch in runs:
                main_table = batch == 256
                modes = ("forward,backprop,anode,anode-latest,anode-k4,adjoint" if main_table
                         else "forward,backprop,anode,anode-latest")
                cpp = run_json([args.binary, "--methods", method, "--modes", modes, "--repeats",
                                str(args.repeats), "--threads", "1", "--batch", str(batch)], e)
                impl = "torchdiffeq-rk2" if method == "rk2" else "torchdiffeq-dopri5"
                peers = run_json([PY, peers_py, "--impl",
                                  impl + (",torch-rk2" if method == "rk2" else ""), "--repeats",
                                  str(args.repeats), "--threads", "1", "--batch", str(batch)], e)
                for row in cpp + peers:
                    row.update(round=r, method=method, blas=name, batch=batch)
                    rows.append(row)
        print(f"round {r + 1}/{args.rounds} done ({time.time() - t_start:.0f} s)", flush=True)
    os.makedirs(args.out, exist_ok=True)
    cols = ["round", "blas", "batch", "method", "impl", "step_ms", "step_ms_q25", "step_ms_q75",
            "rhs_evals_fwd", "rhs_evals_bwd", "accepted_steps", "rejected_steps", "loss",
            "threads", "status"]
    with open(os.path.join(args.out, "bench_mlp.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    def ref_of(g):
        return "torchdiffeq-dopri5" if g.get("method") == "dopri5" else "torchdiffeq-rk2"

    parts = []
    for name in envs:
        main_rows = [x for x in rows if x["blas"] == name and x["batch"] == 256]
        parts.append(f"### Batch 256, {BLAS_NAMES[name]}\n\n"
                     + markdown_table(["method"] + RATIO_COLUMNS,
                                      ratio_rows(main_rows, ["method"], ref_of)) + "\n")
    if batches:
        for name in envs:
            reg = [x for x in rows if x["blas"] == name and x["method"] == "rk2"
                   and x["impl"] in ("anode-forward", "anode-backprop", "anode-anode",
                                     "anode-anode-latest", "torchdiffeq-rk2", "torch-rk2")]
            reg.sort(key=lambda x: x["batch"])
            parts.append(f"### RK2 by batch size, {BLAS_NAMES[name]}\n\n"
                         + markdown_table(["batch"] + RATIO_COLUMNS,
                                          ratio_rows(reg, ["batch"], ref_of)) + "\n")
    load = machine.load_average()
    loaded = ", ".join(f"{n}: {loaded_blas(args.binary, e)}" for n, e in envs.items())
    summary = ("\n".join(parts) + "\n"
               f"{args.rounds} rounds × {args.repeats} timed steps per side and setting, one "
               f"intra-op thread; {machine.processor()}, "
               f"{os.cpu_count()} cores; BLAS loaded ({loaded}); load average at the end "
               f"{load:.2f}. torchdiffeq at {env['ANODE_TORCHDIFFEQ_PATH']} with Debian's torch "
               f"1.13 (the same LibTorch, and the same BLAS, as the C++ side). Wall time "
               f"{time.time() - t_start:.0f} s.\n")
    notes = os.path.join(ROOT, "docs", "bench_mlp_notes.md")
    with open(args.doc, "w") as f:
        f.write("# The overhead-bound regime: anode against torchdiffeq on a small MLP\n\n"
                "Written by `scripts/bench_mlp.py`. " + __doc__.split("\n\n")[0].replace("\n", " ")
                + "\n\n" + summary + "\n")
        if os.path.exists(notes):
            with open(notes) as n:
                f.write(n.read())
    print(summary)
    plot(rows, png)
    print(f"wrote {os.path.relpath(args.doc, ROOT)} and "
          f"{os.path.relpath(args.out, ROOT)}/bench_mlp.csv")


if __name__ == "__main__":
    sys.exit(main())
