#!/usr/bin/python3
"""Per-operation times of the MLP right-hand side of bench_mlp (2-64-2, tanh, float32), no
autograd, one intra-op thread: what one evaluation costs and which operation dominates it. The
numbers docs/bench_mlp.md quotes for the BLAS and for tanh.

    /usr/bin/python3 benchmarks/python/mlp_ops.py [--batch 256] [--repeats 2000]
    LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/blas /usr/bin/python3 benchmarks/python/mlp_ops.py

(the second under Debian's reference BLAS instead of the one the alternatives system selects).
"""
import argparse
import time

import torch


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2000)
    args = p.parse_args()
    if args.batch < 1 or args.hidden < 1 or args.repeats < 1:
        p.error(f"--batch {args.batch} --hidden {args.hidden} --repeats {args.repeats}: "
                "each must be at least 1")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    fc1, fc2 = torch.nn.Linear(2, args.hidden), torch.nn.Linear(args.hidden, 2)
    x = torch.randn(args.batch, 2)

    def us(fn):
        for _ in range(50):
            fn()
        t = time.perf_counter()
        for _ in range(args.repeats):
            fn()
        return (time.perf_counter() - t) / args.repeats * 1e6

    with torch.no_grad():
        h = fc1(x)
        print(f"batch {args.batch}, hidden {args.hidden}, one thread, mean of {args.repeats} calls")
        b, n = args.batch, args.hidden
        for name, fn in [("one evaluation fc2(tanh(fc1(x)))", lambda: fc2(torch.tanh(fc1(x)))),
                         (f"fc1 ({b}x2 by 2x{n})", lambda: fc1(x)),
                         (f"tanh ({b}x{n})", lambda: torch.tanh(h)),
                         (f"fc2 ({b}x{n} by {n}x2)", lambda: fc2(h))]:
            print(f"  {name:34s} {us(fn):7.1f} us")

if __name__ == "__main__":
    main()
