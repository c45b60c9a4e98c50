"""The project's performance targets, each threshold stated once.

docs/benchmarks.md (scripts/report.py), the GPU check's summary (scripts/gpu_summary.py) and
docs/bench_mlp.png (scripts/bench_mlp.py) judge their measurements against these; a threshold
changed here changes every report that quotes it.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """A ratio that must not exceed `limit`."""

    limit: float
    what: str  # the ratio, in words

    def met(self, ratio):
        return ratio <= self.limit

    def missed(self, ratio):
        """Above the limit. Not the negation of met(): a NaN ratio (nothing to compare) is
        neither, and no report explains a miss that was not measured."""
        return ratio > self.limit

    def bound(self, ascii_only=False):
        """"≤ 1.35" (Markdown) or "<= 1.35" (plain-text summaries)."""
        return f"{'<=' if ascii_only else '≤'} {self.limit}"

    def verdict(self, ratio, missed="**missed**"):
        return "met" if self.met(ratio) else missed


# Anode recomputes each block's forward once in the backward pass: one extra forward sweep, 4/3
# of Backprop's step when the backward costs twice the forward; the target allows some overhead.
ANODE_VS_BACKPROP = Target(1.35, "Anode's step time over Backprop's, same network and N_t")

# Anode's memory: the L stored block inputs plus one block's trajectory, measured as Backprop's
# peak with L = 1 at the same method and N_t.
ANODE_MEMORY_MODEL = Target(1.2, "Anode's peak memory over (L block inputs + one block's "
                                 "trajectory)")

# Binomial checkpointing with k = 4 at N_t = 32: rebuilding the checkpoints costs one more forward
# sweep per block, so a looser bound than ANODE_VS_BACKPROP.
BINOMIAL_K4_VS_BACKPROP = Target(1.8, "Anode with 4 checkpoints over Backprop, N_t = 32")

# The same kernels as the official Python ANODE, without the interpreter and the second
# autograd.grad call of its backward.
CPP_VS_OFFICIAL_ANODE = Target(0.75, "anode's Anode step time over the official Python ANODE's")

# On the GPU, anode's Backprop must cost what torchdiffeq's odeint costs on the same network.
CPP_VS_TORCHDIFFEQ = Target(1.05, "anode's Backprop step time over torchdiffeq's odeint")

# Where per-operation overhead dominates (the 2-64-2 tanh MLP of scripts/bench_mlp.py).
MLP_VS_TORCHDIFFEQ = Target(0.7, "anode's step time over torchdiffeq's on the small MLP")

# The memory plan (docs/memory_plan.md): at every budget, its step time over that of the fastest
# fixed strategy whose measured peak fits the budget; and at a budget of Backprop's peak, its step
# time over Backprop's.
PLAN_VS_FASTEST_FITTING = Target(1.03, "the plan's step time over the fastest fixed strategy "
                                       "that fits its budget")
PLAN_AT_BACKPROP_PEAK = Target(1.05, "the plan's step time over Backprop's, at a budget of "
                                     "Backprop's peak")
