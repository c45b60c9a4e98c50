#!/usr/bin/env bash
# Prints the parameter and buffer counts of the official ANODE CIFAR models (models/resnet.py and
# models/sqnxt.py of github.com/amirgholami/anode), the numbers tests/examples/cifar/test_cifar_training.cpp
# checks ours against. Needs a checkout of that repository and Python with torch (Debian:
# python3-torch); nothing is copied into this repository.
#   bash scripts/cifar_param_counts.sh /path/to/amirgholami-anode
set -euo pipefail
repo="${1:?usage: cifar_param_counts.sh PATH_TO_OFFICIAL_ANODE_CHECKOUT}"
[[ -f "$repo/models/resnet.py" && -f "$repo/models/sqnxt.py" ]] ||
  { echo "cifar_param_counts: $repo has no models/resnet.py and models/sqnxt.py" >&2; exit 1; }
python="${PYTHON:-/usr/bin/python3}"
cd "$repo"
"$python" - <<'PY'
import contextlib, io
import torch, torch.nn as nn
from models.resnet import ResNet, BasicBlock
from models.sqnxt import SqueezeNext

class ODEBlock(nn.Module):  # parameter-free wrapper, as in the official train.py
    def __init__(self, f):
        super().__init__()
        self.odefunc = f
    def forward(self, x):
        return x + self.odefunc(0, x)

def count(m):
    return sum(p.numel() for p in m.parameters()), sum(b.numel() for b in m.buffers())

cases = [
    ("resnet width 1, 10 classes (ResNet18)", lambda: ResNet(BasicBlock, [2, 2, 2, 2], 10, ODEBlock)),
    ("resnet width 1, 100 classes", lambda: ResNet(BasicBlock, [2, 2, 2, 2], 100, ODEBlock)),
    ("sqnxt width 1, [6,6,8,1], 10 classes", lambda: SqueezeNext(1.0, [6, 6, 8, 1], 10, ODEBlock)),
    ("sqnxt width 1, [6,6,8,1], 100 classes", lambda: SqueezeNext(1.0, [6, 6, 8, 1], 100, ODEBlock)),
    ("sqnxt width 0.5, [6,6,8,1], 10 classes", lambda: SqueezeNext(0.5, [6, 6, 8, 1], 10, ODEBlock)),
    ("sqnxt width 1, [2,2,2,2], 10 classes (SqNxt_23_1x)", lambda: SqueezeNext(1.0, [2, 2, 2, 2], 10, ODEBlock)),
    ("sqnxt width 0.5, [2,2,2,2], 10 classes", lambda: SqueezeNext(0.5, [2, 2, 2, 2], 10, ODEBlock)),
]
print(f"torch {torch.__version__}")
for name, build in cases:
    with contextlib.redirect_stdout(io.StringIO()):  # the official models print while building
        m = build()
    params, buffers = count(m)
    shape = tuple(m(torch.zeros(2, 3, 32, 32)).shape)
    print(f"{name:52s} parameters {params:9d}  buffers {buffers:6d}  output {shape}")
PY
