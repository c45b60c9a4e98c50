#!/usr/bin/env python3
"""Writes the results of scripts/gpu_check.sh: summary.txt, peers.csv and cifar.csv in the results
folder, from what the stages left in the work folder so far (the tests' results are read from
the JSON and JUnit files under <work>/tests/, not from their console logs). Idempotent, and called
after every stage, so that a run stopped at its time limit still leaves a summary of what it did.

    python3 scripts/gpu_summary.py --work build-gpu/gpu-check --results gpu-results

Standard library only (it runs under whichever python3 holds PyTorch), and it never fails: a part
it cannot read becomes a line in the summary saying why.
"""
import argparse
import array
import csv
import glob
import math
import os
import re
import sys
import traceback

from anode_report import testlogs
from anode_report.results import read_csv
from anode_report.tables import MIB, fmt, text_table
from anode_report.targets import ANODE_VS_BACKPROP, BINOMIAL_K4_VS_BACKPROP, CPP_VS_TORCHDIFFEQ


def read_rows(path):
    """(metadata, rows) of a results CSV, the cells as the file has them: peers.csv and cifar.csv
    copy them through unchanged."""
    return read_csv(path, numbers=False)


def target_row(what, ratio, target):
    """A row of the summary's targets table: what, the ratio, the bound, met or MISSED."""
    return [what, f"{ratio:.2f}", target.bound(ascii_only=True), target.verdict(ratio, "MISSED")]


def num(v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


# ----------------------------------------------------------------------------- peers

PEER_FILES = re.compile(r"^(cpp|py)_(small|large)(?:_(.+))?\.csv$")


def peers_rows(work):
    """Every peers row: (config, source, metadata, row)."""
    out = []
    for path in sorted(glob.glob(os.path.join(work, "peers", "*.csv"))):
        m = PEER_FILES.match(os.path.basename(path))
        if not m:
            continue
        meta, rows = read_rows(path)
        for r in rows:
            out.append((m.group(2), m.group(1), meta, r))
    return out


def write_peers_csv(rows, path):
    if not rows:
        return
    columns = ["config", "network"] + list(rows[0][3].keys())
    for _c, _s, _m, r in rows:
        for k in r:
            if k not in columns:
                columns.append(k)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        for config, source, meta, r in rows:
            w.writerow(dict(r, config=config, network=meta.get("network", "")))


def load_f64(path):
    try:
        import numpy
        return numpy.fromfile(path, dtype=numpy.float64)
    except ImportError:
        a = array.array("d")
        with open(path, "rb") as f:
            a.frombytes(f.read())
        return a


def rel_diff(a, b):
    """||a - b|| / ||b||."""
    if len(a) != len(b):
        return None
    if hasattr(a, "dtype"):  # numpy
        import numpy
        den = float(numpy.linalg.norm(b))
        return float(numpy.linalg.norm(a - b)) / den if den > 0 else None
    num_, den = 0.0, 0.0
    for x, y in zip(a, b):
        num_ += (x - y) * (x - y)
        den += y * y
    return math.sqrt(num_) / math.sqrt(den) if den > 0 else None


def peers_section(work, rows, config):
    lines, targets = [], []
    rows = [(s, m, r) for c, s, m, r in rows if c == config]
    if not rows:
        return lines, targets
    by = {}
    meta_net = ""
    for source, meta, r in rows:
        key = r["mode"] if source == "cpp" else r["impl"]
        by[(key, int(r["nt"]))] = r
        meta_net = meta_net or meta.get("network", "")
    nts = sorted({nt for (_k, nt) in by})
    cpp_meta = next((m for s, m, _r in rows if s == "cpp"), {})
    py_meta = next((m for s, m, _r in rows if s == "py" and m.get("peer_version")),
                   next((m for s, m, _r in rows if s == "py"), {}))
    lines.append(f"== peers network ({config}): {meta_net or 'see peers.csv'} ==")
    errors = [f"  {k} N_t={nt}: {r['status']}" for (k, nt), r in sorted(by.items())
              if r.get("status") != "ok"]
    cols = [("backprop", "Backprop"), ("anode", "Anode"), ("anode-k4", "Anode k4"),
            ("adjoint", "Adjoint"), ("torchdiffeq", "torchdiffeq"),
            ("torchdiffeq-adjoint", "td adjoint"), ("torch-backprop", "torch autograd")]
    cols = [(k, label) for k, label in cols if any(kk == k for (kk, _n) in by)]

    def ok(k, nt):
        r = by.get((k, nt))
        return r if r is not None and r.get("status") == "ok" else None

    def ms(k, nt):
        r = ok(k, nt)
        return num(r["step_ms"]) if r else None

    trows = []
    for nt in nts:
        base = ms("backprop", nt)
        cells = [str(nt)]
        for k, _label in cols:
            v = ms(k, nt)
            ratio = f" ({v / base:.2f}x)" if v is not None and base and k != "backprop" else ""
            cells.append(fmt(v, 2) + ratio)
        trows.append(cells)
    lines.append("step time, median ms (x Backprop's):")
    lines += ["  " + s for s in text_table(["N_t"] + [label for _k, label in cols], trows)]
    mrows = []
    for nt in nts:
        cells = [str(nt)]
        for k, _label in cols:
            r = ok(k, nt)
            v = num(r["tensor_peak_bytes"]) if r else None
            cells.append(fmt(v / MIB, 1) if v is not None and v >= 0 else "n/a")
        mrows.append(cells)
    lines.append("peak tensor memory of a step, MiB (CUDA: the caching allocator's; CPU: anode's "
                 "meter, none in Python):")
    lines += ["  " + s for s in text_table(["N_t"] + [label for _k, label in cols], mrows)]
    if errors:
        lines.append("rows that did not run:")
        lines += errors
    # Targets.
    for nt in nts:
        b, a, td = ms("backprop", nt), ms("anode", nt), ms("torchdiffeq", nt)
        if b and a:
            r = a / b
            targets.append(target_row(f"Anode / Backprop step time, peers {config}, N_t={nt}",
                                      r, ANODE_VS_BACKPROP))
        if b and td:
            r = b / td
            targets.append(target_row(f"anode Backprop / torchdiffeq odeint, peers {config}, "
                                      f"N_t={nt}", r, CPP_VS_TORCHDIFFEQ))
    b32, k32 = ms("backprop", 32), ms("anode-k4", 32)
    if b32 and k32:
        r = k32 / b32
        targets.append(target_row(f"Anode k4 / Backprop step time, peers {config}, N_t=32 "
                                  "(binomial checkpointing)", r, BINOMIAL_K4_VS_BACKPROP))
    # Gradients of the first step (float32), where both sides wrote them.
    gdir = os.path.join(work, "grads", config)
    pairs = [("anode-cpp_anode", "anode-cpp_backprop", "Anode vs Backprop (C++)"),
             ("anode-cpp_anode-k4", "anode-cpp_backprop", "Anode k4 vs Backprop (C++)"),
             ("anode-cpp_backprop", "torchdiffeq_torchdiffeq", "C++ Backprop vs torchdiffeq"),
             ("anode-cpp_backprop", "torch-backprop_torch-backprop",
              "C++ Backprop vs PyTorch autograd"),
             ("anode-cpp_adjoint", "anode-cpp_backprop", "Adjoint vs Backprop (C++)")]
    grows = []
    for nt in nts:
        for a_name, b_name, label in pairs:
            pa = os.path.join(gdir, f"{a_name}_nt{nt}_float32.f64")
            pb = os.path.join(gdir, f"{b_name}_nt{nt}_float32.f64")
            if os.path.isfile(pa) and os.path.isfile(pb):
                d = rel_diff(load_f64(pa), load_f64(pb))
                grows.append([str(nt), label, "n/a" if d is None else f"{d:.2e}"])
    if grows:
        lines.append("first-step gradients [dL/dx, dL/dtheta], float32, relative difference "
                     "(TF32 convolutions allowed, as PyTorch's default):")
        lines += ["  " + s for s in text_table(["N_t", "pair", "||a-b||/||b||"], grows)]
    if cpp_meta:
        lines.append(f"C++: LibTorch {cpp_meta.get('libtorch', '?')}, CUDA "
                     f"{cpp_meta.get('cuda', '?')}, {cpp_meta.get('build', '?')}")
    if py_meta:
        lines.append(f"Python: torch {py_meta.get('torch', '?')}, torchdiffeq "
                     f"{py_meta.get('peer_version', 'not run')}")
    lines.append("")
    return lines, targets


# ----------------------------------------------------------------------------- CIFAR

def cifar_runs(work):
    runs = []
    for path in sorted(glob.glob(os.path.join(work, "cifar", "*", "log.csv"))):
        name = os.path.basename(os.path.dirname(path))
        parts = name.split("_")
        _meta, rows = read_rows(path)
        runs.append((name, parts, rows))
    return runs


def write_cifar_csv(runs, path):
    if not runs:
        return
    columns = ["run", "gradient", "method", "nt"]
    for _n, _p, rows in runs:
        for r in rows:
            columns += [k for k in r if k not in columns]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        for name, parts, rows in runs:
            extra = dict(run=name, gradient=parts[0] if parts else "",
                         method=parts[1] if len(parts) > 1 else "",
                         nt=parts[2].lstrip("nt") if len(parts) > 2 else "")
            for r in rows:
                w.writerow(dict(r, **extra))


def cifar_section(work, runs):
    lines, targets = [], []
    if not runs:
        return lines, targets
    note = ""
    note_path = os.path.join(work, "cifar", "setup.txt")
    if os.path.isfile(note_path):
        with open(note_path) as f:
            note = f.read().strip()
    lines.append("== CIFAR-10 ResNet18-ODE training (anode-cifar, synthetic data) ==")
    if note:
        lines.append(note)
    rows, last = [], {}
    for name, parts, rs in runs:
        if not rs:
            rows.append([name, "-", "no epoch finished", "", ""])
            continue
        r = rs[-1]  # the last epoch: warm (cuDNN's initialisation is in the first)
        ips, peak = num(r.get("images_per_s")), num(r.get("peak_mem_mib"))
        last[name] = (parts, ips, peak)
        rows.append([name, r.get("epoch", "?"), fmt(ips, 0), fmt(peak, 0),
                     r.get("train_loss", "")])
    lines += ["  " + s for s in text_table(["run", "epoch", "train img/s", "peak MiB",
                                            "train loss"], rows)]
    for name, (parts, ips, peak) in sorted(last.items()):
        if not parts or parts[0] != "anode":
            continue
        twin = "_".join(["backprop"] + parts[1:])
        if twin in last and ips and last[twin][1]:
            r = last[twin][1] / ips  # step time ratio = inverse throughput ratio
            targets.append(target_row("Anode / Backprop step time, CIFAR ResNet18-ODE "
                                      f"{'_'.join(parts[1:])}", r, ANODE_VS_BACKPROP))
            if peak and last[twin][2]:
                lines.append(f"  {'_'.join(parts[1:])}: Anode peak {peak:.0f} MiB vs Backprop "
                             f"{last[twin][2]:.0f} MiB ({peak / last[twin][2]:.2f}x)")
    lines.append("")
    return lines, targets


# ----------------------------------------------------------------------------- tests
# scripts/gpu_check.sh has the test programs write their results as JSON (GoogleTest) and JUnit
# (CTest) under <work>/tests/; the console logs stay in the results folder for people to read.

# The figures the CUDA tests print (gradient errors, bytes of memory): not results, so not in the
# JSON, but worth a line in the summary.
PRINTED_FIGURES = re.compile(r"max rel\.|anode \d+ B|Backprop: L|k 4: N_t|Adjoint vs")
GTEST_PROGRAMS = [("test_cuda", "test_cuda.json"),
                  ("test_usage's Cuda tests", "test_usage_cuda.json")]


def gtest_section(work, results):
    lines = []
    log = os.path.join(results, "test_cuda.log")
    found = [(label, os.path.join(work, "tests", name)) for label, name in GTEST_PROGRAMS]
    if not os.path.isfile(log) and not any(os.path.isfile(p) for _l, p in found):
        return lines
    lines.append("== CUDA tests (test_cuda, and test_usage's Cuda tests) ==")
    cases, read = [], 0
    for label, path in found:
        if not os.path.isfile(path):
            lines.append(f"  {label}: no JSON result ({os.path.basename(path)}): not run, or "
                         "it crashed or was stopped before its end - see test_cuda.log")
            continue
        run = testlogs.read_gtest_json(path)
        cases += [(label, c) for c in run.cases]
        read += 1
        lines.append(f"  {label}: ran {len(run.cases)} tests in {fmt(run.seconds, 1)} s")
    if read:
        failed = [(label, c) for label, c in cases if c.outcome == testlogs.FAILED]
        lines.append(f"  passed {sum(c.outcome == testlogs.PASSED for _l, c in cases)}, "
                     f"skipped {sum(c.outcome == testlogs.SKIPPED for _l, c in cases)}, "
                     f"failed {len(failed)}")
        lines += [f"  FAILED {label}: {c.name}: {c.message}" for label, c in failed]
    if os.path.isfile(log):
        with open(log, errors="replace") as f:
            printed = [ln for ln in f.read().splitlines() if PRINTED_FIGURES.search(ln)]
        if printed:
            lines.append("  printed by the tests:")
            lines += ["    " + ln.strip() for ln in printed[:60]]
    lines.append("")
    return lines


def ctest_section(work, results):
    lines = []
    junit = os.path.join(work, "tests", "ctest.xml")
    listed = os.path.join(work, "tests", "ctest_list.json")
    if not os.path.isfile(os.path.join(results, "ctest.log")) and not os.path.isfile(junit):
        return lines
    lines.append("== CTest (the whole suite) ==")
    wanted = testlogs.read_ctest_list(listed) if os.path.isfile(listed) else None
    if not os.path.isfile(junit):
        lines.append("  no JUnit result (ctest.xml): the suite did not finish (time limit?) - "
                     "see ctest.log")
        lines.append("")
        return lines
    run = testlogs.read_ctest_junit(junit)
    of = f" of {len(wanted)}" if wanted is not None else ""
    lines.append(f"  ran {len(run.cases)}{of}: passed {run.count(testlogs.PASSED)}, "
                 f"failed {run.count(testlogs.FAILED)}, skipped {run.count(testlogs.SKIPPED)}, "
                 f"not run {run.count(testlogs.NOT_RUN)}")
    for c in run.with_outcome(testlogs.FAILED, testlogs.NOT_RUN)[:80]:
        why = f" ({c.message})" if c.message else ""
        lines.append(f"  {c.outcome}: {c.name}{why}, {fmt(c.seconds, 1)} s")
    if wanted is not None:
        ran = {c.name for c in run.cases}
        never = [n for n in wanted if n not in ran]
        if never:
            lines.append(f"  not started before the stage's time ran out: {', '.join(never[:80])}")
    if run.seconds is not None:
        lines.append(f"  total {fmt(run.seconds, 0)} s")
    lines.append("")
    return lines


# ----------------------------------------------------------------------------- the summary

def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="the stages' work folder")
    ap.add_argument("--results", required=True, help="where summary.txt, peers.csv, cifar.csv go")
    a = ap.parse_args()
    out = []

    def part(fn, *args):
        try:
            return fn(*args)
        except Exception:  # the summary must always be written
            out.append(f"(summary: {fn.__name__} failed: "
                       f"{traceback.format_exc().strip().splitlines()[-1]})")
            return None

    header = os.path.join(a.work, "header.txt")
    if os.path.isfile(header):
        with open(header) as f:
            out.append(f.read().rstrip())
    out.append("")
    stages = os.path.join(a.work, "stages.tsv")
    if os.path.isfile(stages):
        with open(stages) as f:
            srows = [ln.rstrip("\n").split("\t") for ln in f if ln.strip()]
        out.append("== stages ==")
        out += ["  " + s for s in text_table(["stage", "status", "seconds", "note"], srows)]
        out.append("")
    targets = []
    for fn in (gtest_section, ctest_section):
        got = part(fn, a.work, a.results)
        if got:
            out += got
    rows = part(peers_rows, a.work) or []
    part(write_peers_csv, rows, os.path.join(a.results, "peers.csv"))
    for config in ("small", "large"):
        got = part(peers_section, a.work, rows, config)
        if got:
            out += got[0]
            targets += got[1]
    runs = part(cifar_runs, a.work) or []
    part(write_cifar_csv, runs, os.path.join(a.results, "cifar.csv"))
    got = part(cifar_section, a.work, runs)
    if got:
        out += got[0]
        targets += got[1]
    out.append("== targets ==")
    if any("DRY RUN" in line for line in out[:5]):
        out.append("  (DRY RUN on the CPU with tiny sizes: these figures check the pipeline, they "
                   "measure nothing)")
    if targets:
        out += ["  " + s for s in text_table(["what", "measured", "target", ""], targets)]
    else:
        out.append("  nothing measured yet")
    out.append("")
    with open(os.path.join(a.results, "summary.txt"), "w") as f:
        f.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
