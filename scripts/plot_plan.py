#!/usr/bin/env python3
"""The memory plan's time-memory curve (benchmarks/bench_plan's CSV): a picture and a Markdown table.

    /usr/bin/python3 scripts/plot_plan.py docs/results/bench_plan.csv --out docs/bench_plan.png \
        [--markdown docs/results/bench_plan.md]

One panel per network: every fixed strategy as a point (peak memory, step time), the plan at each
budget as a line (its measured peak and step time), the budgets as ticks. The table judges each
budget against the targets of scripts/anode_report/targets.py; where the run has paired steps
(bench_plan --pairs), a row per network gives the plan at Backprop's peak timed step by step
against Backprop, beside a replica of Backprop (the noise floor); with --pair-each, each budget's
ratio cell adds the plan timed step by step against its fastest fitting fixed strategy.
"""
import argparse
import sys

from anode_report.results import read_csv
from anode_report.tables import markdown_table
from anode_report.targets import PLAN_AT_BACKPROP_PEAK, PLAN_VS_FASTEST_FITTING


def mib(b):
    return float(b) / (1 << 20)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--out", required=True, help="PNG to write")
    ap.add_argument("--markdown", help="also write the table here")
    args = ap.parse_args()
    meta, rows = read_csv(args.csv)
    if not rows or "strategy" not in rows[0]:
        sys.exit(f"plot_plan: '{args.csv}' is not a bench_plan CSV")
    nets = list(dict.fromkeys(r["net"] for r in rows))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(nets), figsize=(5.2 * len(nets), 4.2), squeeze=False)
    lines = []
    for ax, net in zip(axes[0], nets):
        fixed = [r for r in rows if r["net"] == net and r["strategy"] != "plan"
                 and not r["strategy"].endswith("-paired") and r["status"] == "ok"]
        # bench_plan --pairs: the plan at Backprop's peak timed step by step against Backprop, and
        # a replica of Backprop against it (the noise floor of two identical strategies).
        paired = {r["strategy"]: r for r in rows if r["net"] == net and r["strategy"].endswith("-paired")}
        # bench_plan --pair-each: each budget's plan timed step by step against its fastest fitting.
        vs_fastest = {r["budget_bytes"]: r for r in rows
                      if r["net"] == net and r["strategy"] == "plan-vs-fastest-paired"}
        # "above budget in N steps": the plan's own reading (above its conservative baseline) of
        # some steps; the measured peak is the peak_bytes column.
        plans = [r for r in rows if r["net"] == net and r["strategy"] == "plan"
                 and (r["status"] == "ok" or r["status"].startswith("above budget"))]
        for r in fixed:
            ax.scatter(mib(r["peak_bytes"]), r["step_ms"], s=28, zorder=3)
            ax.annotate(r["strategy"], (mib(r["peak_bytes"]), r["step_ms"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        if plans:
            ax.plot([mib(r["peak_bytes"]) for r in plans], [r["step_ms"] for r in plans], "k.-",
                    lw=1.5, label="MemoryPlan (measured peak)", zorder=4)
            for r in plans:
                ax.axvline(mib(r["budget_bytes"]), color="0.85", lw=0.6, zorder=1)
        ax.set_title(net, fontsize=10)
        ax.set_xlabel("peak of a training step (MiB, CPU meter)")
        ax.set_ylabel("step time (ms)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
        backprop = next((r for r in fixed if r["strategy"] == "backprop"), None)
        for r in plans:
            ratio = r["ratio"] if r["ratio"] else float("nan")
            at_bp = ""
            # The budget of Backprop's measured peak is judged against the target (on the paired
            # steps when the run has them); the budgets above it (bench_plan --above) are compared
            # with Backprop and say by how much above.
            if backprop and r["budget_bytes"] >= backprop["peak_bytes"]:
                q = r["ratio"] if r["ratio"] else r["step_ms"] / backprop["step_ms"]
                if r["budget_bytes"] == backprop["peak_bytes"]:
                    at_bp = f"{q:.3f} ({PLAN_AT_BACKPROP_PEAK.verdict(q)})"
                    if "plan-paired" in paired:
                        at_bp += ", paired below"
                else:
                    at_bp = f"{q:.3f} (budget {r['budget_bytes'] / backprop['peak_bytes']:.2f}x its peak)"
            ratio_cell = f"{ratio:.3f} ({PLAN_VS_FASTEST_FITTING.verdict(ratio)})"
            if r["budget_bytes"] in vs_fastest:
                v = vs_fastest[r["budget_bytes"]]
                ratio_cell += (f"; paired {v['ratio']:.3f} ({PLAN_VS_FASTEST_FITTING.verdict(v['ratio'])}, "
                               f"{int(v['repeats'])} steps)")
            lines.append([net, f"{mib(r['budget_bytes']):.2f}", f"{mib(r['peak_bytes']):.2f}",
                          f"{r['step_ms']:.1f}", r["fastest_fitting"], f"{r['fastest_fitting_ms']:.1f}",
                          ratio_cell, at_bp,
                          r["decisions"], "" if r["status"] == "ok" else r["status"]])
        if "plan-paired" in paired:
            p = paired["plan-paired"]
            q = p["ratio"]
            floor = paired.get("backprop-replica-paired")
            note = (f"{int(p['repeats'])} paired steps; Backprop's replica: {floor['ratio']:.3f}"
                    if floor else f"{int(p['repeats'])} paired steps")
            lines.append([net, f"{mib(p['budget_bytes']):.2f}", f"{mib(p['peak_bytes']):.2f}",
                          f"{p['step_ms']:.1f}", "backprop (paired)", f"{p['fastest_fitting_ms']:.1f}",
                          f"{q:.3f} ({PLAN_VS_FASTEST_FITTING.verdict(q)})",
                          f"{q:.3f} ({PLAN_AT_BACKPROP_PEAK.verdict(q)})", p["decisions"], note])
    machine = meta.get("cpu", meta.get("machine", ""))
    fig.suptitle(f"anode::MemoryPlan against the fixed strategies ({machine}, LibTorch "
                 f"{meta.get('libtorch', meta.get('torch', '?'))})", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"plot_plan: wrote {args.out}")
    if args.markdown:
        header = ["network", "budget MiB", "peak MiB", "step ms", "fastest fitting fixed", "its ms",
                  f"ratio (target {PLAN_VS_FASTEST_FITTING.bound()})",
                  f"vs Backprop at its peak ({PLAN_AT_BACKPROP_PEAK.bound()})", "decisions",
                  "plan's own reading"]
        with open(args.markdown, "w") as f:
            f.write(markdown_table(header, lines) + "\n")
        print(f"plot_plan: wrote {args.markdown}")


if __name__ == "__main__":
    main()
