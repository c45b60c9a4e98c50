#!/usr/bin/env python3
"""Parameter and buffer counts of the ANODE paper's three CIFAR networks, built independently in
PyTorch from the layer tables in docs/paper_networks.md. tests/examples/cifar/test_cifar_training.cpp compares
the C++ models (examples/cifar/paper_nets.hpp) with these numbers.

    /usr/bin/python3 scripts/paper_param_counts.py          # needs python3-torch
"""
import torch.nn as nn


def scaled(c, w):
    return max(1, int(c * w))


def cbr(i, o, k, s=1):
    return [nn.Conv2d(i, o, k, s, k // 2, bias=False), nn.BatchNorm2d(o), nn.ReLU()]


def rhs(c):  # the official BasicBlock2: conv-BN-ReLU-conv-BN-ReLU, no shortcut
    return nn.Sequential(*cbr(c, c, 3), *cbr(c, c, 3))


def alexnet(w, classes):
    c = [scaled(x, w) for x in (64, 192, 384, 256, 256)]
    k = (5, 5, 3, 3, 3)
    layers, i = [], 3
    for n in range(5):
        layers += cbr(i, c[n], k[n])
        if n in (0, 1, 4):
            layers.append(nn.MaxPool2d(3, 2, 1))
        if n < 4:
            layers.append(rhs(c[n]))
        i = c[n]
    f1, f2 = scaled(384, w), scaled(192, w)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(i * 16, f1), nn.ReLU(),
                         nn.Linear(f1, f2), nn.ReLU(), nn.Linear(f2, classes))


def small_resnet(blocks, w, classes):
    i = scaled(16, w)
    layers = cbr(3, i, 3)
    for s, planes in enumerate((16, 32, 64)):
        o = scaled(planes, w)
        if s > 0:
            layers += cbr(i, o, 3, 2)
        layers += [rhs(o) for _ in range(blocks[s])]
        i = o
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(i, classes))


def counts(m):
    return (sum(p.numel() for p in m.parameters()), sum(b.numel() for b in m.buffers()))


if __name__ == "__main__":
    for name, make in (("alexnet", alexnet),
                       ("resnet4", lambda w, c: small_resnet((2, 1, 1), w, c)),
                       ("resnet10", lambda w, c: small_resnet((4, 3, 3), w, c))):
        for w in (1.0, 0.5, 0.25):
            for classes in (10, 100):
                p, b = counts(make(w, classes))
                print(f"{name:8s} width {w:<4} classes {classes:3d}: {p:9d} parameters, {b:6d} buffers")
