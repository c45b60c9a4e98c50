#!/usr/bin/env python3
"""Plot one or more anode-cifar log.csv files: test and training accuracy against training time.

    /usr/bin/python3 scripts/plot_cifar_log.py LOG.csv [LOG2.csv ...] --out curve.png [--title T]

Each log is a run's `log.csv` (columns epoch, lr, train_loss, train_acc, test_loss, test_acc,
seconds, images_per_s, peak_mem_mib; `seconds` is that epoch's training and evaluation time).
The x axis is the cumulative time, so runs of different speeds are compared at equal cost; the
best test accuracy and the total time are written into the legend.
"""
import argparse
import os
import sys

from anode_report.results import read_csv


def read_log(path):
    rows = read_csv(path, numbers=False)[1]
    if not rows:
        sys.exit(f"plot_cifar_log: '{path}' has no epochs")
    for key in ("epoch", "test_acc", "train_acc", "seconds"):
        if key not in rows[0]:
            sys.exit(f"plot_cifar_log: '{path}' has no '{key}' column; is it an anode-cifar log.csv?")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logs", nargs="+")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--title", default="anode-cifar")
    ap.add_argument("--labels", default="", help="semicolon-separated legend labels (default: file names)")
    args = ap.parse_args()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = args.labels.split(";") if args.labels else [os.path.basename(p) for p in args.logs]
    if len(labels) != len(args.logs):
        sys.exit("plot_cifar_log: --labels needs one label per log")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for path, label in zip(args.logs, labels):
        rows = read_log(path)
        t, minutes = 0.0, []
        for r in rows:
            t += float(r["seconds"])
            minutes.append(t / 60.0)
        test = [100 * float(r["test_acc"]) for r in rows]
        train = [100 * float(r["train_acc"]) for r in rows]
        best = max(test)
        line, = ax.plot(minutes, test, marker="o", ms=2.5,
                        label=f"{label}: test (best {best:.2f} %, {minutes[-1]:.1f} min, "
                              f"{len(rows)} epochs)")
        ax.plot(minutes, train, ls="--", color=line.get_color(), alpha=0.6,
                label=f"{label}: training (augmented, running)")
    ax.set_xlabel("training + evaluation time (min)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(40, 100)
    ax.grid(alpha=0.3)
    ax.set_title(args.title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(args.out, dpi=130)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
