#!/usr/bin/python3
"""anode against torchdiffeq where most neural-ODE users live: a 2-64-2 tanh MLP right-hand side,
batch 256, one training step (zero_grad, solve on [0, 1], loss, backward, SGD), one intra-op
thread on both sides. Fixed step: RK2 (midpoint), 100 steps. Adaptive: dopri5, rtol 1e-5,
atol 1e-9.

The two sides run in alternating rounds (C++ bench_mlp, then Python mlp_peers.py, then C++
again, ...), so that a change in the machine's load hits both; each round gives a median step
time per implementation, and the report quotes the median over rounds of each ratio to
torchdiffeq measured within the same round.

    ANODE_TORCHDIFFEQ_PATH=/work/peers/torchdiffeq /usr/bin/python3 scripts/bench_mlp.py

Writes docs/results/bench_mlp.csv (every round) and docs/bench_mlp.md (the table, the machine and,
appended, the analysis kept in docs/bench_mlp_notes.md). See benchmarks/python/README.md for
getting torchdiffeq without pip.
"""
import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"


def run_json(cmd, env):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def blas():
    """Which BLAS the dynamic linker gives LibTorch (Debian: the alternatives system)."""
    try:
        out = subprocess.run(["ldd", os.path.join(ROOT, "build", "benchmarks", "bench_mlp")],
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            if "libblas.so" in line:
                return os.path.realpath(line.split("=>")[1].split("(")[0].strip())
    except OSError:
        pass
    return "unknown"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30, help="timed steps per round and side")
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "benchmarks", "bench_mlp"))
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "results"))
    args = p.parse_args()
    if not os.access(args.binary, os.X_OK):
        p.error(f"--binary {args.binary} is not built: cmake --build build --target bench_mlp")
    env = dict(os.environ)
    if not env.get("ANODE_TORCHDIFFEQ_PATH"):
        p.error("ANODE_TORCHDIFFEQ_PATH is not set (see benchmarks/python/README.md)")
    rows = []
    t_start = time.time()
    for r in range(args.rounds):
        for method in ("rk2", "dopri5"):
            modes = "forward,backprop,anode,anode-latest,anode-k4,adjoint"
            cpp = run_json([args.binary, "--methods", method, "--modes", modes, "--repeats",
                            str(args.repeats), "--threads", "1"], env)
            impl = "torchdiffeq-rk2" if method == "rk2" else "torchdiffeq-dopri5"
            peers = run_json([PY, os.path.join(ROOT, "benchmarks", "python", "mlp_peers.py"),
                              "--impl", impl + (",torch-rk2" if method == "rk2" else ""),
                              "--repeats", str(args.repeats), "--threads", "1"], env)
            for row in cpp + peers:
                row.update(round=r, method=method)
                rows.append(row)
        print(f"round {r + 1}/{args.rounds} done ({time.time() - t_start:.0f} s)", flush=True)
    os.makedirs(args.out, exist_ok=True)
    cols = ["round", "method", "impl", "step_ms", "step_ms_q25", "step_ms_q75", "rhs_evals_fwd",
            "rhs_evals_bwd", "accepted_steps", "rejected_steps", "loss", "threads", "status"]
    with open(os.path.join(args.out, "bench_mlp.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)

    lines = ["| method | implementation | step (ms), median of rounds | ratio to torchdiffeq "
             "(median of per-round ratios) | RHS evaluations forward / backward |",
             "|---|---|---|---|---|"]
    for method in ("rk2", "dopri5"):
        ref = "torchdiffeq-rk2" if method == "rk2" else "torchdiffeq-dopri5"
        impls = []
        for row in rows:
            if row["method"] == method and row["impl"] not in impls:
                impls.append(row["impl"])
        for impl in impls:
            mine = [x for x in rows if x["method"] == method and x["impl"] == impl]
            ratios = []
            for x in mine:
                base = [y for y in rows if y["method"] == method and y["impl"] == ref
                        and y["round"] == x["round"]]
                if base and "step_ms" in x and "step_ms" in base[0]:
                    ratios.append(x["step_ms"] / base[0]["step_ms"])
            ms = statistics.median(x["step_ms"] for x in mine if "step_ms" in x)
            ev = f"{mine[-1].get('rhs_evals_fwd', '')} / {mine[-1].get('rhs_evals_bwd', '')}"
            ratio = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"
            lines.append(f"| {method} | {impl} | {ms:.2f} | {ratio} | {ev} |")
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    summary = ("\n".join(lines) + "\n\n"
               f"{args.rounds} rounds × {args.repeats} timed steps per side, one intra-op thread; "
               f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, BLAS "
               f"{blas()}, load average at the end {load:.2f}. torchdiffeq at "
               f"{env['ANODE_TORCHDIFFEQ_PATH']} with Debian's torch 1.13 (the same LibTorch as "
               f"the C++ side). Wall time {time.time() - t_start:.0f} s.\n")
    doc = os.path.join(ROOT, "docs", "bench_mlp.md")
    notes = os.path.join(ROOT, "docs", "bench_mlp_notes.md")
    with open(doc, "w") as f:
        f.write("# The overhead-bound regime: anode against torchdiffeq on a small MLP\n\n"
                "Written by `scripts/bench_mlp.py`. " + __doc__.split("\n\n")[0].replace("\n", " ")
                + "\n\n" + summary + "\n")
        if os.path.exists(notes):
            with open(notes) as n:
                f.write(n.read())
    print(summary)
    print(f"wrote {os.path.relpath(doc, ROOT)} and {os.path.relpath(args.out, ROOT)}/bench_mlp.csv")


if __name__ == "__main__":
    sys.exit(main())
