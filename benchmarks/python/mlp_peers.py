#!/usr/bin/python3
"""The Python side of the overhead-bound benchmark (benchmarks/bench_mlp.cpp is the C++ side):
one training step of a 2-64-2 tanh MLP right-hand side, batch 256, on [0, 1]:
zero_grad, forward solve, loss 0.5·mean((z(1) − target)²), backward, SGD update.

  torchdiffeq-rk2      torchdiffeq.odeint, method='midpoint', 100 equal steps (anode's grid)
  torchdiffeq-dopri5   torchdiffeq.odeint, method='dopri5', rtol 1e-5, atol 1e-9
  torchode-rk2         torchode, the midpoint tableau, fixed step 1/100 (peer_torchode.py)
  torchode-dopri5      torchode's Dopri5 and IntegralController, rtol 1e-5, atol 1e-9
  torch-rk2            a hand-written midpoint loop, plain autograd (what Backprop does)

Weights and data are anode::bench's deterministic ones (common.py), so both languages train the
very same network. Prints one JSON object per implementation: the median step time over
--repeats timed steps after --warmup, and the function evaluations of one step's forward and
backward. torchdiffeq and torchode come from ANODE_TORCHDIFFEQ_PATH / ANODE_TORCHODE_PATH when
set, else from this interpreter's packages (pip, see README.md here); without them their rows say
"skipped".

    /usr/bin/python3 benchmarks/python/mlp_peers.py --impl torchdiffeq-rk2,torch-rk2 --threads 1
"""
import argparse
import importlib
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import peer_torchode  # noqa: E402

IMPLS = ("torchdiffeq-rk2", "torchdiffeq-dopri5", "torchode-rk2", "torchode-dopri5", "torch-rk2")


class Mlp(nn.Module):
    """anode::bench::MlpRHS: dim -> hidden -> dim with tanh, counting evaluations."""

    def __init__(self, dim=2, hidden=64):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.nfe = 0

    def forward(self, t, z):
        self.nfe += 1
        return self.fc2(torch.tanh(self.fc1(z)))


def solver(impl, args):
    if impl == "torch-rk2":
        def loop(f, z):
            dt = 1.0 / args.steps
            for n in range(args.steps):
                t = n * dt
                z = z + dt * f(t + 0.5 * dt, z + (0.5 * dt) * f(t, z))
            return z
        return loop
    module = impl.split("-")[0]
    path = os.environ.get(f"ANODE_{module.upper()}_PATH", "")
    if path and os.path.isdir(path):
        sys.path.insert(0, path)
    try:
        peer = importlib.import_module(module)
    except ImportError:
        return None
    if module == "torchode":
        if impl == "torchode-rk2":
            return peer_torchode.make_solve(peer, "midpoint", nt=args.steps)
        return peer_torchode.make_solve(peer, "dopri5", rtol=args.rtol, atol=args.atol)
    torchdiffeq = peer
    t = torch.tensor([0.0, 1.0])
    if impl == "torchdiffeq-rk2":
        nt = args.steps

        def grid(func, y0, tt):  # anode's grid t0 + n (t1 - t0) / N_t, endpoints exact
            g = tt[0] + (tt[-1] - tt[0]) * torch.arange(nt + 1, dtype=tt.dtype) / nt
            g[0], g[-1] = tt[0], tt[-1]
            return g
        return lambda f, z: torchdiffeq.odeint(f, z, t, method="midpoint",
                                               options=dict(grid_constructor=grid))[-1]
    return lambda f, z: torchdiffeq.odeint(f, z, t, method="dopri5", rtol=args.rtol,
                                           atol=args.atol)[-1]


def measure(impl, args):
    row = dict(impl=impl, threads=torch.get_num_threads(), batch=args.batch, steps=args.steps,
               rtol=args.rtol, atol=args.atol, status="ok", torch=torch.__version__,
               python=sys.version.split()[0])
    solve = solver(impl, args)
    if solve is None:
        peer = impl.split("-")[0]
        row["status"] = (f"skipped: {peer} is not installed in {sys.executable} and "
                         f"ANODE_{peer.upper()}_PATH is not set")
        return row
    module = sys.modules.get(impl.split("-")[0])
    if module is not None and impl != "torch-rk2":
        row["peer_version"] = getattr(module, "__version__", "unknown")
    torch.manual_seed(0)
    f = Mlp(2, args.hidden)
    common.det_init(f, 1)
    z0 = common.det_values((args.batch, 2), 7, 1.0)
    target = common.det_values((args.batch, 2), 11, 1.0)
    opt = torch.optim.SGD(f.parameters(), lr=args.lr)

    def step():
        opt.zero_grad()
        f.nfe = 0
        loss = common.bench_loss(solve(f, z0), target)
        fwd = f.nfe
        loss.backward()
        opt.step()
        return fwd, f.nfe - fwd, loss.item()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fwd, bwd, loss = step()
        times.append((time.perf_counter() - t0) * 1e3)
    q = statistics.quantiles(times, n=4)
    row.update(step_ms=statistics.median(times), step_ms_q25=q[0], step_ms_q75=q[2],
               rhs_evals_fwd=fwd, rhs_evals_bwd=bwd, loss=loss, repeats=args.repeats)
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--impl", default=",".join(IMPLS))
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--steps", type=int, default=100, help="fixed steps on [0, 1] [100]")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-9)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    impls = args.impl.split(",")
    for i in impls:
        if i not in IMPLS:
            p.error(f"--impl: unknown '{i}'; expected {', '.join(IMPLS)}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    for impl in impls:
        print(json.dumps(measure(impl, args)), flush=True)


if __name__ == "__main__":
    main()
