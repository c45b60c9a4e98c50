#!/usr/bin/python3
"""The Python side of the side-by-side (benchmarks/bench_peers.cpp is the C++ side): one training
step of L ODE blocks (conv3x3-BN-ReLU-conv3x3-BN-ReLU RHS, 32 channels, batch 8, 32x32, RK2 =
explicit midpoint, N_t steps on [0, 1]) in one Python implementation:

  torch-backprop       plain autograd through a hand-written midpoint loop (PyTorch eager)
  torchdiffeq          torchdiffeq.odeint, method='midpoint' on the same fixed grid
  torchdiffeq-adjoint  torchdiffeq.odeint_adjoint (reverse-time adjoint, same method and grid)
  torchode             torchode's AutoDiffAdjoint, midpoint tableau, fixed step 1/N_t
                       (peer_torchode.py)
  anode-official       the official ANODE code (amirgholami/anode): odesolver_adjoint, 'RK2'

The peers are not vendored. torchdiffeq and torchode come from this interpreter (pip-installed into
.venv/ by `ANODE_LIBTORCH=pypi ANODE_PEERS=1 bash scripts/setup.sh`), or from the source tree an
environment variable names (ANODE_TORCHDIFFEQ_PATH, ANODE_TORCHODE_PATH, ANODE_OFFICIAL_PATH: the
directory holding the package), which wins when set; the official ANODE code only from its tree.
An implementation that cannot be imported is skipped, with a row saying so.

Same weights, data, loss, SGD step, timing rule and (under LD_PRELOAD=libheapcount.so) heap meter
as the C++ side. Writes one CSV (bench_peers.cpp's columns, one row per N_t) and, with --grad-dir,
the first step's gradients ([dL/dx, dL/dtheta...], float64 raw) for scripts/report.py to compare.
On --device cuda the tensor peak is the CUDA caching allocator's, as on the C++ side.

  /usr/bin/python3 benchmarks/python/peers.py --impl torchdiffeq --nt 8 --csv out.csv
  python3 benchmarks/python/peers.py --impl torchdiffeq --nt 2,8,32 --device cuda --csv out.csv

Several N_t in one process share its start-up (and, on CUDA, its context); the heap and RSS
figures are then the process's, so scripts/report.py runs one N_t per process on the CPU.
"""
import argparse
import csv
import importlib
import importlib.metadata
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import peer_torchode  # noqa: E402

IMPLS = ("torch-backprop", "torchdiffeq", "torchdiffeq-adjoint", "torchode", "anode-official")
ENV = {"torchdiffeq": "ANODE_TORCHDIFFEQ_PATH", "torchdiffeq-adjoint": "ANODE_TORCHDIFFEQ_PATH",
       "torchode": "ANODE_TORCHODE_PATH", "anode-official": "ANODE_OFFICIAL_PATH"}
# Peers that may also come from the interpreter's own packages (pip), by module name.
INSTALLED = {"torchdiffeq": "torchdiffeq", "torchdiffeq-adjoint": "torchdiffeq",
             "torchode": "torchode"}
COLUMNS = ["impl", "mode", "method", "L", "nt", "dtype", "threads", "warmup", "repeats", "step_ms",
           "step_ms_q25", "step_ms_q75", "fwd_ms", "bwd_ms", "tensor_peak_bytes",
           "heap_peak_bytes", "max_rss_bytes", "rhs_evals_fwd", "rhs_evals_bwd", "grad_file",
           "status"]


class Skip(Exception):
    pass


def peer_revision(path):
    """The peer tree's revision: a REVISION file written at extraction, or its git HEAD."""
    rev_file = os.path.join(path, "REVISION")
    if os.path.isfile(rev_file):
        with open(rev_file) as f:
            return f.read().strip()
    head = os.path.join(path, ".git", "HEAD")
    if os.path.isfile(head):
        with open(head) as f:
            ref = f.read().strip()
        if ref.startswith("ref: "):
            ref_path = os.path.join(path, ".git", ref[5:])
            if os.path.isfile(ref_path):
                with open(ref_path) as f:
                    return f.read().strip()
        return ref
    return "unknown"


PEER_META = {}


def import_peer(impl):
    """Imports a peer, from the tree its environment variable names or else (torchdiffeq,
    torchode) from this interpreter's packages; raises Skip when neither has it."""
    var = ENV.get(impl)
    if var is None:
        return None
    path = os.environ.get(var, "")
    module = INSTALLED.get(impl)
    if path:
        if not os.path.isdir(path):
            raise Skip(f"skipped: {var}={path} is not a directory")
        sys.path.insert(0, path)
        PEER_META.update(peer_path=path, peer_revision=peer_revision(path))
    elif module is None:
        raise Skip(f"skipped: {var} is not set")
    if module is not None:
        try:
            peer = importlib.import_module(module)
        except ImportError:
            raise Skip(f"skipped: {module} is not installed in {sys.executable} and {var} is "
                       "not set") from None
        PEER_META.setdefault("peer_path", os.path.dirname(os.path.dirname(peer.__file__)))
        PEER_META["peer_version"] = (getattr(peer, "__version__", "") or
                                     importlib.metadata.version(module))
        return peer
    import anode as official  # the official code's package is also called 'anode'
    if not hasattr(official, "odesolver_adjoint"):
        raise Skip(f"skipped: {path} does not hold the official ANODE code (no odesolver_adjoint)")
    return official


def midpoint_loop(func, z, nt):
    """Explicit midpoint, N_t steps on [0, 1], time t0 + n*dt (no accumulation)."""
    dt = 1.0 / nt
    for n in range(nt):
        t = n * dt
        k1 = func(t, z)
        z = z + dt * func(t + 0.5 * dt, z + (0.5 * dt) * k1)
    return z


def make_solver(impl, peer, nt, dtype, device):
    if impl == "torch-backprop":
        return lambda f, z: midpoint_loop(f, z, nt)
    if impl in ("torchdiffeq", "torchdiffeq-adjoint"):
        solve = peer.odeint if impl == "torchdiffeq" else peer.odeint_adjoint
        t = torch.tensor([0.0, 1.0], dtype=dtype, device=device)

        # The same grid as anode: t0 + n * (t1 - t0) / N_t, endpoints exact. (step_size=1/N_t
        # would let ceil() add a step when 1/(1/N_t) rounds above N_t.) The adjoint solves
        # backwards on the same grid, which torchdiffeq hands over negated.
        def grid(func, y0, tt):
            g = tt[0] + (tt[-1] - tt[0]) * torch.arange(nt + 1, dtype=tt.dtype, device=tt.device) / nt
            g[0], g[-1] = tt[0], tt[-1]
            return g

        return lambda f, z: solve(f, z, t, method="midpoint",
                                  options=dict(grid_constructor=grid))[-1]
    if impl == "torchode":
        return peer_torchode.make_solve(peer, "midpoint", nt=nt)
    if impl == "anode-official":
        opts = {"Nt": nt, "method": "RK2"}
        return lambda f, z: peer.odesolver_adjoint(f, z, opts)
    raise ValueError(impl)


class Net(nn.Module):
    def __init__(self, L, channels, solver):
        super().__init__()
        self.funcs = nn.ModuleList([common.ConvRHS(channels) for _ in range(L)])
        self.solver = solver

    def forward(self, x):
        for f in self.funcs:
            x = self.solver(f, x)
        return x

    def evals(self):
        return sum(f.nfe for f in self.funcs)


def parse_nts(text):
    """'8' or '2,8,32': the N_t to run, each >= 1."""
    try:
        nts = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        nts = []
    if not nts or min(nts) < 1:
        raise argparse.ArgumentTypeError(f"--nt expects integers >= 1 separated by commas, got "
                                         f"'{text}'")
    return nts


def run(args, nt):
    """One CSV row: the training step at `nt` steps per block, or why it did not run."""
    row = {c: "" for c in COLUMNS}
    row.update(impl=args.impl, mode=args.impl, method="RK2", L=args.L, nt=nt, dtype=args.dtype,
               threads=torch.get_num_threads(), warmup=args.warmup, repeats=0, status="ok")
    try:
        peer = import_peer(args.impl)
    except Skip as e:
        row["status"] = str(e)
        return row
    try:
        measure(args, nt, peer, row)
    except Exception as e:  # one failed N_t (e.g. out of memory) must not lose the others' rows
        row["status"] = ("error: " + str(e).strip()).splitlines()[0]
    return row


def measure(args, nt, peer, row):
    heap = common.HeapCounter()
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise RuntimeError("--device cuda, but this torch sees no CUDA device")
    net = Net(args.L, args.channels, make_solver(args.impl, peer, nt, dtype, device))
    # The same parameter order as the C++ chain: block l's conv1.weight, bn1.weight, bn1.bias, ...
    common.det_init(net, 1)
    net.to(device, dtype)
    shape = (args.batch, args.channels, args.size, args.size)
    x = common.det_values(shape, 7, 1.0).to(device, dtype).requires_grad_(True)
    target = common.det_values(shape, 11, 1.0).to(device, dtype)
    opt = torch.optim.SGD(net.parameters(), lr=1e-4)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    def step():
        x.grad = None
        sync()
        heap.reset_peak()
        base = heap.current()
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            cuda_base = torch.cuda.memory_allocated(device)
        for f in net.funcs:
            f.nfe = 0
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = common.bench_loss(net(x), target)
        sync()
        t1 = time.perf_counter()
        ev_f = net.evals()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        ev_b = net.evals() - ev_f
        opt.step()
        sync()
        t3 = time.perf_counter()
        peak = heap.peak() - base if heap.available else -1
        # On CUDA the tensors' peak comes from the caching allocator, as in the C++ harness.
        tpeak = torch.cuda.max_memory_allocated(device) - cuda_base if cuda else -1
        return dict(total=t3 - t0, fwd=t1 - t0, bwd=t2 - t1, peak=peak, tpeak=tpeak, ev_f=ev_f,
                    ev_b=ev_b)

    s = step()
    if args.grad_dir:
        grads = [x.grad.detach().reshape(-1)]
        for p in net.parameters():
            grads.append(p.grad.detach().reshape(-1) if p.grad is not None
                         else torch.zeros(p.numel(), dtype=dtype, device=device))
        path = os.path.join(args.grad_dir, f"{args.impl}_{args.impl}_nt{nt}_{args.dtype}.f64")
        torch.cat(grads).to("cpu", torch.float64).numpy().tofile(path)
        row["grad_file"] = path
    peaks = []
    if not args.no_time:
        warm = s["total"]
        for _ in range(1, args.warmup):
            warm = step()["total"]
        reps = common.repeats_for(warm, args.repeats, args.max_repeats, args.budget)
        samples = [step() for _ in range(reps)]
        tot = [1e3 * r["total"] for r in samples]
        row.update(repeats=len(samples), step_ms=statistics.median(tot),
                   step_ms_q25=common.quantile(tot, 0.25), step_ms_q75=common.quantile(tot, 0.75),
                   fwd_ms=statistics.median(1e3 * r["fwd"] for r in samples),
                   bwd_ms=statistics.median(1e3 * r["bwd"] for r in samples))
        peaks = [r["peak"] for r in samples]
        tpeaks = [r["tpeak"] for r in samples]
        s = samples[-1]
    else:
        peaks, tpeaks = [s["peak"]], [s["tpeak"]]
    rss = common.max_rss_bytes()  # before the profiled step: the profiler's memory is not ours
    if args.profile:
        with torch.autograd.profiler.profile() as prof:
            step()
        prof.export_chrome_trace(args.profile.replace("%n", str(nt)))
    row.update(tensor_peak_bytes=max(tpeaks), heap_peak_bytes=max(peaks), max_rss_bytes=rss,
               rhs_evals_fwd=s["ev_f"], rhs_evals_bwd=s["ev_b"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", choices=IMPLS, required=True)
    ap.add_argument("--nt", type=parse_nts, default=[8],
                    help="steps per block: one, or a comma-separated list (one row each)")
    ap.add_argument("--L", type=int, default=4)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=1, help="timed steps at least")
    ap.add_argument("--max-repeats", type=int, default=3)
    ap.add_argument("--budget", type=float, default=8.0, help="seconds per point for the repeats")
    ap.add_argument("--no-time", action="store_true", help="only the first step, for its gradient")
    ap.add_argument("--grad-dir", default="")
    ap.add_argument("--profile", default="", help="after timing, profile one more step into this "
                    "chrome-trace JSON ('%%n' = N_t)")
    ap.add_argument("--csv", default="-")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rows = []
    for nt in args.nt:
        rows.append(run(args, nt))
        r = rows[-1]
        print(f"{r['impl']} N_t={r['nt']} {r['dtype']} on {args.device}: {r['step_ms'] or '-'} ms, "
              f"tensor peak {r['tensor_peak_bytes']}, heap peak {r['heap_peak_bytes']} "
              f"({r['status']})", file=sys.stderr, flush=True)
    out = sys.stdout if args.csv == "-" else open(args.csv, "w", newline="")
    for k, v in list(common.machine_info().items()) + list(PEER_META.items()):
        out.write(f"# {k}={v}\n")
    out.write(f"# heap_meter={'LD_PRELOAD heapcount' if common.HeapCounter().available else 'absent'}\n")
    w = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    out.flush()


if __name__ == "__main__":
    main()
