"""The machine and software that a report's figures were measured on.

The benchmark programs describe their machine in their CSV metadata (benchmarks/harness/machine.hpp
in C++, benchmarks/python/common.py:machine_info in Python); what a report script adds itself
(the load around a run, the processor, the anode version, the BLAS a program loads) comes from
here.
"""
import math
import os
import platform
import subprocess


def load_average():
    """The 1-minute load average, NaN where the system has none: a report flags timings taken
    while other processes shared the cores."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return math.nan


def processor():
    """The processor as the platform names it, else the architecture ("x86_64")."""
    return platform.processor() or platform.machine()


def anode_version(root):
    """ANODE_VERSION from include/anode/version.hpp under `root`, "?" when it cannot be read."""
    try:
        with open(os.path.join(root, "include", "anode", "version.hpp")) as f:
            for line in f:
                if "ANODE_VERSION " in line and '"' in line:
                    return line.split('"')[1]
    except OSError:
        pass
    return "?"


def loaded_library(binary, soname, env=None):
    """The file the dynamic linker maps for `soname` (e.g. "libblas.so") into `binary` under
    `env`, from ldd; "unknown" when ldd is absent or does not list it."""
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, env=env).stdout
    except OSError:
        return "unknown"
    for line in out.splitlines():
        if soname in line and "=>" in line:
            return os.path.realpath(line.split("=>")[1].split("(")[0].strip())
    return "unknown"
