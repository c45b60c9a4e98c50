"""What the Python peers share with the C++ benchmarks (benchmarks/harness/models.hpp): the same
deterministic values and initialisation, the same right-hand side, the same loss and the same
meters, so both languages train the very same network and are measured alike.

Runs on Debian's python3-torch (1.13); no other dependency.
"""
import ctypes
import math
import os
import platform
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

GOLDEN = 0.7548776662466927


def det_values(shape, seed, amp, dtype=torch.float32):
    """amp * sin(GOLDEN * j + 1.2345 * (seed + 1)), j = 0, 1, ... row-major, in float64, then cast
    (the formula of anode::bench::det_values, with the same LibTorch kernels)."""
    n = 1
    for s in shape:
        n *= s
    j = torch.arange(n, dtype=torch.float64)
    v = torch.sin(j * GOLDEN + 1.2345 * float(seed + 1)) * amp
    return v.reshape(shape).to(dtype)


@torch.no_grad()
def det_init(module, seed, weight_scale=1.0):
    """anode::bench::det_init: parameter i (in parameters() order) gets seed `seed + i`; weight
    matrices and kernels std weight_scale/sqrt(fan_in), 1-D weights 1 + 0.1 v, biases 0.1 v."""
    for i, (name, p) in enumerate(module.named_parameters()):
        if p.dim() > 1:
            fan_in = float(p.numel() // p.shape[0])
            v = det_values(tuple(p.shape), seed + i, weight_scale * math.sqrt(2.0 / fan_in),
                           torch.float64)
        elif name.endswith("weight"):
            v = 1.0 + det_values(tuple(p.shape), seed + i, 0.1, torch.float64)
        else:
            v = det_values(tuple(p.shape), seed + i, 0.1, torch.float64)
        p.copy_(v.to(p.dtype))


class ConvRHS(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN-ReLU (the official ANODE code's BasicBlock2, and
    anode::bench::ConvRHS with convs=2): f(t, z), counting its evaluations."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.nfe = 0

    def forward(self, t, x):
        self.nfe += 1
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)))


def bench_loss(y, target):
    return 0.5 * (y - target).pow(2).mean()


class HeapCounter:
    """The LD_PRELOAD heap counter (benchmarks/heapcount), when this process runs under it."""

    def __init__(self):
        self.lib = None
        try:
            lib = ctypes.CDLL(None)
            lib.heapcount_current_bytes.restype = ctypes.c_int64
            lib.heapcount_peak_bytes.restype = ctypes.c_int64
            lib.heapcount_reset_peak.restype = None
            self.lib = lib
        except (AttributeError, OSError):
            self.lib = None

    @property
    def available(self):
        return self.lib is not None

    def current(self):
        return self.lib.heapcount_current_bytes() if self.lib else -1

    def peak(self):
        return self.lib.heapcount_peak_bytes() if self.lib else -1

    def reset_peak(self):
        if self.lib:
            self.lib.heapcount_reset_peak()


def max_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def repeats_for(warmup_s, min_repeats, max_repeats, budget_s):
    """anode::bench::repeats_for."""
    n = int(budget_s / warmup_s) if warmup_s > 0 else max_repeats
    return max(min_repeats, min(max_repeats, n))


def quantile(samples, q):
    """Linear interpolation between order statistics (anode::bench::quantile, numpy's default)."""
    s = sorted(samples)
    pos = q * (len(s) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (pos - lo) * (s[hi] - s[lo])


def machine_info():
    info = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": str(torch.get_num_threads()),
        "load_avg_1min": str(os.getloadavg()[0]),
    }
    return info
