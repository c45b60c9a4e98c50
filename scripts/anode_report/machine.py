"""The machine and software that a report's figures were measured on.

The benchmark programs describe their machine in their CSV metadata (benchmarks/harness/machine.hpp
in C++, benchmarks/python/common.py:machine_info in Python); what a report script adds itself
(the load around a run, the processor, the anode version, the BLAS a program loads) comes from
here, and so does what a build's CMake cache says (its flags, the LibTorch it was configured
against).
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


def cmake_cache(build_dir):
    """{name: value} of the CMakeCache.txt in `build_dir` ("CMAKE_BUILD_TYPE:STRING=Release" ->
    {"CMAKE_BUILD_TYPE": "Release"}); {} when the folder holds no configured build."""
    out = {}
    try:
        with open(os.path.join(build_dir, "CMakeCache.txt")) as f:
            for line in f:
                if line.startswith(("#", "//")) or "=" not in line:
                    continue
                key, _, value = line.rstrip("\n").partition("=")
                out[key.split(":")[0]] = value
    except OSError:
        pass
    return out


def build_flags(cache):
    """The build type and its C++ flags as a build's CMake cache holds them ("Release: `-O3
    -DNDEBUG`"), "?" without a cache: the compiler's own description (the benchmarks' metadata)
    does not say which optimisation the figures were measured at."""
    if not cache:
        return "?"
    bt = cache.get("CMAKE_BUILD_TYPE", "") or "?"
    return f"{bt}: `{cache.get('CMAKE_CXX_FLAGS_' + bt.upper(), '?')}`"


def wheel_torch_dir(cache):
    """The torch package directory of a build configured against a torch wheel's LibTorch (its
    Torch_DIR is <torch>/share/cmake/Torch, inside a site-packages), "" for any other LibTorch."""
    torch_cmake = cache.get("Torch_DIR", "")
    tail = os.path.join("share", "cmake", "Torch")
    if "site-packages" not in torch_cmake or not torch_cmake.rstrip("/").endswith(tail):
        return ""
    return torch_cmake.rstrip("/")[:-len(tail)].rstrip("/")


def torch_package_version(torch_dir):
    """__version__ of the torch package in `torch_dir` from its version.py, without importing it
    (the report itself runs on another Python); "?" when it cannot be read."""
    try:
        with open(os.path.join(torch_dir, "version.py")) as f:
            for line in f:
                if line.startswith("__version__") and "=" in line:
                    return line.split("=", 1)[1].strip().strip("'\"")
    except OSError:
        pass
    return "?"
