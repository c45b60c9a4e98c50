#!/usr/bin/python3
"""Reproduces the ANODE paper's CIFAR-10 table (Gholami, Keutzer, Biros, IJCAI 2019): AlexNet,
ResNet-4 and ResNet-10, each trained as the discrete network (baseline), as a neural ODE with the
reverse-time adjoint, and with ANODE, over several seeds, with the anode-cifar binary.

    /usr/bin/python3 scripts/paper_table.py                    # --budget cpu: ~2 h on 2 cores
    /usr/bin/python3 scripts/paper_table.py --budget full      # the paper's length, for a GPU
    /usr/bin/python3 scripts/paper_table.py --report-only      # rewrite the document from the logs

The grid is resumable: every run lives in its own folder under --runs (log.csv, checkpoint.pt,
output.txt, status.json). Run the same command again after an interruption (Ctrl-C, a crash, the
end of a session): finished runs are kept, interrupted ones continue from their checkpoint with
anode-cifar --resume (exactly, mid-epoch included), and the rest start. Runs go seed by seed, so
a partial grid already has every cell of the table. Ctrl-C stops the runs cleanly (each saves its
checkpoint); a second Ctrl-C kills them (their last checkpoint on disk is still whole).

Output: docs/paper_table.md (the table in the paper's min / max / avg format beside the paper's
numbers, the protocol, per-run figures), docs/paper_table.png (test accuracy per epoch, one panel
per network) and each run's CSV log under docs/results/paper_table/<budget>/.
"""
import argparse
import datetime
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time

from anode_report.results import read_csv
from anode_report.tables import duration as fmt_time
from anode_report.tables import markdown_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NETWORKS = ["alexnet", "resnet4", "resnet10"]
VARIANTS = ["baseline", "adjoint", "anode"]
TITLES = {"alexnet": "AlexNet", "resnet4": "ResNet-4", "resnet10": "ResNet-10",
          "baseline": "Baseline (discrete network)", "adjoint": "Neural ODE, reverse-time adjoint",
          "anode": "ANODE"}
# The paper's Table 1 (official repository, misc/comparison.png): min / max / avg test accuracy.
PAPER = {
    ("baseline", "alexnet"): (86.84, 87.15, 87.03),
    ("baseline", "resnet4"): (76.47, 77.35, 76.95),
    ("baseline", "resnet10"): (87.79, 88.52, 88.10),
    ("adjoint", "alexnet"): (74.54, 76.78, 75.67),
    ("adjoint", "resnet4"): (44.73, 49.91, 47.37),
    ("adjoint", "resnet10"): (64.70, 70.06, 67.94),
    ("anode", "alexnet"): (87.86, 88.14, 88.02),
    ("anode", "resnet4"): (76.92, 77.45, 77.30),
    ("anode", "resnet10"): (88.48, 88.75, 88.60),
}

# What each budget trains. "cpu" fits about two hours of this project's 2-core CI machine with two
# one-thread runs side by side; "full" is the official train.py's length at full width.
BUDGETS = {
    "cpu": dict(epochs=10, limit=10000, test_limit=2000, batch_size=128, lr=0.1, seeds=3,
                width={"alexnet": 0.25, "resnet4": 0.5, "resnet10": 0.5}, jobs=2, threads=1,
                device="cpu"),
    # The pipeline end to end in about a minute (tests and first tries), not a result.
    "smoke": dict(epochs=2, limit=256, test_limit=256, batch_size=64, lr=0.1, seeds=2,
                  width={"alexnet": 0.125, "resnet4": 0.25, "resnet10": 0.25}, jobs=2, threads=1,
                  device="cpu"),
    "full": dict(epochs=350, limit=0, test_limit=0, batch_size=256, lr=0.1, seeds=3,
                 width={"alexnet": 1.0, "resnet4": 1.0, "resnet10": 1.0}, jobs=1, threads=0,
                 device="cuda"),
}


def variant_args(variant, method, nt):
    """The solver flags of a variant. The baseline is the discrete ResNet: one Euler step of size
    1 per block, trained by backprop; the two ODE variants share the method and N_t."""
    if variant == "baseline":
        return ["--method", "euler", "--nt", "1", "--gradient", "backprop"]
    return ["--method", method, "--nt", str(nt), "--gradient", variant]


class Run:
    def __init__(self, args, network, variant, seed):
        self.network, self.variant, self.seed = network, variant, seed
        self.dir = os.path.join(args.runs, args.budget, f"{args.method}-nt{args.nt}", network,
                                variant, f"seed{seed}")
        b = BUDGETS[args.budget]
        self.cmd = [args.binary, "--data", args.data, "--network", network,
                    "--width", str(b["width"][network]), "--epochs", str(b["epochs"]),
                    "--batch-size", str(b["batch_size"]), "--lr", str(b["lr"]),
                    "--limit", str(b["limit"]), "--test-limit", str(b["test_limit"]),
                    "--seed", str(seed), "--device", args.device or b["device"],
                    "--threads", str(args.threads if args.threads is not None else b["threads"]),
                    "--workers", "1", "--out", self.dir, "--no-progress"]
        self.cmd += variant_args(variant, args.method, args.nt)

    @property
    def name(self):
        return f"{self.network}/{self.variant}/seed{self.seed}"

    def status(self):
        try:
            with open(os.path.join(self.dir, "status.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def write_status(self, **kw):
        s = self.status()
        s.update(kw)
        tmp = os.path.join(self.dir, "status.json.tmp")
        with open(tmp, "w") as f:
            json.dump(s, f, indent=1)
        os.replace(tmp, os.path.join(self.dir, "status.json"))

    def log(self):
        path = os.path.join(self.dir, "log.csv")
        if not os.path.exists(path):
            return []
        return read_csv(path, numbers=False)[1]

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        cmd = list(self.cmd)
        if os.path.exists(os.path.join(self.dir, "checkpoint.pt")):
            cmd.append("--resume")
        self.out = open(os.path.join(self.dir, "output.txt"), "a")
        self.out.write(f"\n$ {' '.join(cmd)}\n")
        self.out.flush()
        self.started = time.time()
        # Own process group: the terminal's Ctrl-C reaches the driver, which forwards it once.
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True)


def run_grid(args, runs):
    todo = [r for r in runs if r.status().get("state") not in ("done", "failed")]
    done_before = len(runs) - len(todo)
    print(f"paper_table: {len(runs)} runs, {done_before} already finished, {len(todo)} to go, "
          f"{args.jobs} at a time; logs under {os.path.join(args.runs, args.budget)}", flush=True)
    active, stopping, finished_s = [], False, []

    def on_sigint(signum, frame):
        nonlocal stopping
        if stopping:  # second Ctrl-C: kill now
            for r in active:
                os.killpg(r.proc.pid, signal.SIGKILL)
            sys.exit(130)
        stopping = True
        print("\npaper_table: stopping; each run saves its checkpoint (Ctrl-C again to kill)",
              flush=True)
        for r in active:
            os.killpg(r.proc.pid, signal.SIGINT)

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigint)
    t_grid = time.time()
    while (todo and not stopping) or active:
        while todo and not stopping and len(active) < args.jobs:
            r = todo.pop(0)
            r.start()
            active.append(r)
            print(f"  start  {r.name}" + (" (resumed)" if "--resume" in r.proc.args else ""),
                  flush=True)
        time.sleep(1)
        for r in list(active):
            rc = r.proc.poll()
            if rc is None:
                continue
            active.remove(r)
            r.out.close()
            spent = time.time() - r.started
            total = r.status().get("seconds", 0) + spent
            rows = r.log()
            if rc == 0:
                r.write_status(state="done", seconds=total)
                finished_s.append(spent)
                acc = 100 * float(rows[-1]["test_acc"]) if rows else float("nan")
                left = len(todo) + len(active)
                eta = (statistics.mean(finished_s) * left / args.jobs) if finished_s else 0
                print(f"  done   {r.name}: test {acc:.2f}% after {len(rows)} epochs, "
                      f"{fmt_time(total)}; {left} left, about {fmt_time(eta)}", flush=True)
            elif rc == 130 or stopping:
                r.write_status(state="interrupted", seconds=total)
                print(f"  paused {r.name} at epoch {len(rows)} (resumes next time)", flush=True)
            else:
                with open(os.path.join(r.dir, "output.txt")) as f:
                    tail = f.read()[-2000:]
                r.write_status(state="failed", rc=rc, seconds=total, tail=tail)
                print(f"  FAILED {r.name} (exit {rc}); see {r.dir}/output.txt:\n{tail}",
                      flush=True)
    print(f"paper_table: grid {'stopped' if stopping else 'finished'} after "
          f"{fmt_time(time.time() - t_grid)}", flush=True)
    return not stopping


def summarize(runs):
    """cells[(variant, network)] -> list of per-run dicts."""
    cells = {}
    for r in runs:
        st, rows = r.status(), r.log()
        if st.get("state") not in ("done", "failed"):
            continue
        accs = [100 * float(x["test_acc"]) for x in rows]  # the log has fractions
        losses = [float(x["train_loss"]) for x in rows]
        cells.setdefault((r.variant, r.network), []).append(dict(
            seed=r.seed, state=st["state"], final=accs[-1] if accs else float("nan"),
            best=max(accs) if accs else float("nan"), accs=accs, epochs=len(rows),
            nonfinite=sum(1 for l in losses if not math.isfinite(l)), seconds=st.get("seconds", 0),
            final_loss=losses[-1] if losses else float("nan"), log=os.path.join(r.dir, "log.csv")))
    return cells


def gradient_gaps(args, runs):
    """The adjoint's gradient error at trained weights (anode-cifar --gradient-gap) for each
    network's seed-0 adjoint and ANODE runs, cached next to each run as gradient_gap.csv."""
    out = []
    for r in runs:
        if r.seed != 0 or r.variant not in ("adjoint", "anode") or r.status().get("state") != "done":
            continue
        cache = os.path.join(r.dir, "gradient_gap.csv")
        if not os.path.exists(cache):
            if not os.access(args.binary, os.X_OK):
                continue
            b = BUDGETS[args.budget]
            cmd = [args.binary, "--data", args.data, "--gradient-gap",
                   os.path.join(r.dir, "checkpoint.pt"), "--gap-batches", "4",
                   "--batch-size", str(b["batch_size"]), "--threads", "2",
                   "--device", args.device or b["device"]]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(f"  gradient gap of {r.name} failed: {res.stdout[-500:]}{res.stderr[-500:]}")
                continue
            lines = [l for l in res.stdout.splitlines() if l.startswith(("batchnorm,", "batch-stats,",
                                                                          "running-stats,"))]
            with open(cache, "w") as f:
                f.write("\n".join(lines) + "\n")
        rows = read_csv(cache, numbers=False)[1]
        for bn in ("batch-stats", "running-stats"):
            sel = [x for x in rows if x["batchnorm"] == bn and x["mode"] == "adjoint"]
            if sel:
                out.append(dict(network=r.network, weights=r.variant, batchnorm=bn,
                                rel_all=statistics.mean(float(x["rel_err_all"]) for x in sel),
                                rel_ode=statistics.mean(float(x["rel_err_ode_blocks"]) for x in sel),
                                cosine=statistics.mean(float(x["cosine"]) for x in sel)))
    return out


def plot(path, cells, budget):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colours = {"baseline": "tab:gray", "adjoint": "tab:red", "anode": "tab:blue"}
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for ax, net in zip(axes, NETWORKS):
        for v in VARIANTS:
            for i, run in enumerate(cells.get((v, net), [])):
                ax.plot(range(1, len(run["accs"]) + 1), run["accs"], color=colours[v], alpha=0.8,
                        lw=1.5, label=TITLES[v] if i == 0 else None)
        ax.set_title(TITLES[net])
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"anode-cifar, paper_table.py --budget {budget}: one line per seed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_report(args, runs, grid_finished):
    cells = summarize(runs)
    b = BUDGETS[args.budget]
    solver = "" if (args.method, args.nt) == ("euler", 2) else f"_{args.method}_nt{args.nt}"
    suffix = ("" if args.budget == "cpu" else f"_{args.budget}") + solver
    doc = args.doc or os.path.join(ROOT, "docs", f"paper_table{suffix}.md")
    png = os.path.splitext(doc)[0] + ".png"
    logs = os.path.join(ROOT, "docs", "results", "paper_table", args.budget + solver)
    os.makedirs(logs, exist_ok=True)
    for (v, net), rs in cells.items():
        for run in rs:
            if os.path.exists(run["log"]):
                shutil.copyfile(run["log"], os.path.join(logs, f"{net}_{v}_seed{run['seed']}.csv"))
    if cells:
        plot(png, cells, args.budget)

    def mma(xs):
        xs = [x for x in xs if math.isfinite(x)]
        if not xs:
            return "–"
        return f"{min(xs):.2f} / {max(xs):.2f} / {statistics.mean(xs):.2f}"

    n_done = sum(len(v) for v in cells.values())
    wall = sum(r["seconds"] for v in cells.values() for r in v)
    L = []
    L.append("# The ANODE paper's table, reproduced with anode-cifar\n")
    L.append(f"Written by `scripts/paper_table.py --budget {args.budget}` on "
             f"{datetime.date.today().isoformat()}; {n_done} of {len(runs)} runs finished"
             + ("" if grid_finished and n_done == len(runs) else
                " (the grid is incomplete: run the same command again to continue it)") + ".\n")
    L.append("CIFAR-10 test accuracy (%) at the last epoch, min / max / avg over seeds "
             "(the paper's format). Paper: Gholami, Keutzer, Biros, IJCAI 2019, Table 1.\n")
    rows = [[f"{TITLES[v]} (this run)"] +
            [f"{mma([r['final'] for r in cells.get((v, n), [])])} ({len(cells.get((v, n), []))} "
             "runs)" for n in NETWORKS] for v in VARIANTS]
    rows += [[f"{TITLES[v]} (paper)"] +
             ["{:.2f} / {:.2f} / {:.2f}".format(*PAPER[(v, n)]) for n in NETWORKS]
             for v in VARIANTS]
    L.append(markdown_table([""] + [TITLES[n] for n in NETWORKS], rows))
    L.append("")
    L.append(f"![test accuracy per epoch]({os.path.basename(png)})\n")
    L.append("## Protocol\n")
    method = f"{args.method.upper() if args.method != 'euler' else 'Euler'}, N_t = {args.nt}"
    L.append("- Networks: docs/paper_networks.md (widths: " + ", ".join(
        f"{TITLES[n]} {b['width'][n]}" for n in NETWORKS) + ").")
    L.append(f"- Baseline: one Euler step of size 1 per block (the residual block itself), "
             f"Gradient::Backprop. Neural ODE: Gradient::Adjoint; ANODE: Gradient::Anode; both "
             f"{method} on [0, 1] (the official code's default).")
    L.append(f"- Data: the first {b['limit'] or 50000} training images (of the shuffled binary "
             f"release that ../shared/datasets/make_cifar10_bin.py writes) with the trainer's "
             f"random crop and flip; test on the first {b['test_limit'] or 10000} test images.")
    L.append(f"- Training: {b['epochs']} epochs, batch {b['batch_size']}, SGD momentum 0.9, "
             f"weight decay 5e-4, learning rate {b['lr']} divided by 10 after 150/350 and "
             f"250/350 of the epochs (the official schedule, scaled); seeds "
             f"{', '.join(str(s) for s in range(args.seeds))}.")
    L.append(f"- Machine: {platform.machine()} {os.cpu_count()} cores, {args.jobs} runs side by "
             f"side, {b['threads'] or 'default'} intra-op thread(s) each; device {args.device or b['device']}. "
             f"Wall time of all runs together: {fmt_time(wall)} (sum of per-run times).")
    L.append(f"- Command: `/usr/bin/python3 scripts/paper_table.py --budget {args.budget}"
             + (f" --method {args.method}" if args.method != "euler" else "")
             + (f" --nt {args.nt}" if args.nt != 2 else "") + "`\n")
    L.append("## Every run\n")
    L.append(markdown_table(
        ["network", "variant", "seed", "final test acc", "best test acc", "last train loss",
         "non-finite epochs", "state", "time"],
        [[TITLES[n], v, r["seed"], f"{r['final']:.2f}", f"{r['best']:.2f}",
          f"{r['final_loss']:.4f}", r["nonfinite"], r["state"], fmt_time(r["seconds"])]
         for n in NETWORKS for v in VARIANTS
         for r in sorted(cells.get((v, n), []), key=lambda r: r["seed"])]))
    L.append("")
    L.append(f"CSV logs: docs/results/paper_table/{args.budget + solver}/<network>_<variant>_seed<N>.csv "
             "(anode-cifar's log.csv: per epoch lr, train loss and accuracy, test loss and "
             "accuracy, seconds, images/s, peak memory).\n")
    gaps = gradient_gaps(args, runs)
    if gaps:
        L.append("## How wrong the adjoint's gradient is at the trained weights\n")
        L.append("`anode-cifar --gradient-gap CHECKPOINT` on seed 0's final weights: the gradient of "
                 "the loss on 4 training batches with every ODE block set to Adjoint, against "
                 "Anode's (the exact gradient of the discrete network; Backprop agrees with it to "
                 "round-off), from the same weights and BatchNorm statistics. BatchNorm with batch "
                 "statistics (training mode, as in training) and with its running statistics "
                 "(an affine map, so the reverse solve sees the same function as the forward).\n")
        L.append(markdown_table(
            ["network", "weights trained by", "BatchNorm", "rel. error, all parameters",
             "rel. error, ODE blocks", "cosine to exact"],
            [[TITLES[g["network"]], g["weights"], g["batchnorm"], f"{g['rel_all']:.3f}",
              f"{g['rel_ode']:.3f}", f"{g['cosine']:.3f}"] for g in gaps]))
        L.append("")
    notes = os.path.join(ROOT, "docs", f"paper_table{suffix}_notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            L.append(f.read())
    with open(doc, "w") as f:
        f.write("\n".join(L))
    print(f"paper_table: wrote {os.path.relpath(doc, ROOT)}, {os.path.relpath(png, ROOT)} and "
          f"{os.path.relpath(logs, ROOT)}/", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=sorted(BUDGETS), default="cpu")
    p.add_argument("--data", default=os.path.join(ROOT, "data", "cifar-10-batches-bin"),
                   help="CIFAR-10 binary folder [data/cifar-10-batches-bin]")
    p.add_argument("--binary", default=os.path.join(ROOT, "build", "examples", "cifar",
                                                     "anode-cifar"))
    p.add_argument("--runs", default=os.path.join(ROOT, "runs", "paper_table"),
                   help="where the runs live [runs/paper_table]")
    p.add_argument("--method", choices=["euler", "rk2", "rk4"], default="euler")
    p.add_argument("--nt", type=int, default=2, help="time steps per ODE block [2]")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 [the budget's]")
    p.add_argument("--jobs", type=int, help="runs side by side [the budget's]")
    p.add_argument("--threads", type=int, help="intra-op threads per run [the budget's]")
    p.add_argument("--device", help="cpu | cuda [the budget's]")
    p.add_argument("--networks", default=",".join(NETWORKS))
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="e.g. adjoint,anode: the baseline does not depend on --method or --nt")
    p.add_argument("--doc", help="the document to write [docs/paper_table.md]")
    p.add_argument("--report-only", action="store_true", help="only rewrite the document")
    args = p.parse_args()
    b = BUDGETS[args.budget]
    args.seeds = args.seeds or b["seeds"]
    args.jobs = args.jobs or b["jobs"]
    if args.nt < 1:
        p.error(f"--nt needs an integer >= 1, got {args.nt}")
    nets = args.networks.split(",")
    for n in nets:
        if n not in NETWORKS:
            p.error(f"--networks: unknown network '{n}'; expected {', '.join(NETWORKS)}")
    variants = args.variants.split(",")
    for v in variants:
        if v not in VARIANTS:
            p.error(f"--variants: unknown variant '{v}'; expected {', '.join(VARIANTS)}")
    runs = [Run(args, n, v, s) for s in range(args.seeds) for n in nets for v in variants]
    finished = True
    if not args.report_only:
        if not os.access(args.binary, os.X_OK):
            p.error(f"--binary {args.binary} is not an executable; build it first: "
                    "cmake --build build --target anode-cifar")
        if not os.path.isdir(args.data):
            p.error(f"--data {args.data} is not a folder; write it with /usr/bin/python3 "
                    "../shared/datasets/make_cifar10_bin.py --out data/cifar-10-batches-bin")
        finished = run_grid(args, runs)
    write_report(args, runs, finished)
    return 0 if finished else 130


if __name__ == "__main__":
    sys.exit(main())
