"""Building the engine's CPU kernels (``cpu_kernels.cpp``): compiled once per machine, then loaded from a cache.

A batch-1 decode step is a chain of matrix-vector products over every weight of the model, so its speed is
how fast weights stream from memory; the kernels (one dot product per output row, rows split over OpenMP
threads; int8 products; a whole GPT-2 or Llama-family step in one call) are what the ``kernel`` layers and
the fused steppers run (``infer/kernel_layers.py``, ``infer/fused_step.py``; figures in benchmarks/RESULTS.md).

They are compiled with the C++ compiler torch uses (about 30 s; cached under ``~/.cache/aigc_lab/kernels``,
keyed by source, flags, torch and CPU). ``make`` builds them, and so does ``al.infer.build_kernel()``. A
generation never builds them implicitly (that would stall a notebook for half a minute) unless asked with
``cpu_kernel=True``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import KernelBuildError

SOURCE = (Path(__file__).parent / "cpu_kernels.cpp").read_text()
CFLAGS = ["-O3", "-march=native", "-fopenmp"]


def _cache_dir() -> Path:
    root = os.environ.get("AIGC_LAB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "aigc_lab")
    return Path(root) / "kernels"


@functools.cache
def _cpu_signature() -> str:
    """What the binary depends on: it is built with -march=native, so the CPU's flags are part of its key."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _module_name() -> str:
    """One build per source, torch installation and CPU. The installation's path is part of it because the
    build compiles against that torch's headers: another environment would find a binary it cannot reuse,
    rebuild it for 30 s on first use (``built()`` would have said yes), and invalidate the first's."""
    import torch

    parts = (SOURCE, *CFLAGS, torch.__version__, os.path.dirname(os.path.realpath(torch.__file__)), _cpu_signature())
    return f"aigc_lab_gemv_{hashlib.sha1(chr(10).join(parts).encode()).hexdigest()[:12]}"


@contextlib.contextmanager
def _our_ninja_first() -> Iterator[None]:
    """Build with the ``ninja`` installed with this package, whatever PATH says. torch runs the ``ninja`` it
    finds on PATH, and ninja 1.11 (Debian's) and 1.12+ (pip's) hash a build's command line differently: a
    process started with the venv on PATH (``make``, an activated venv) and one without would each see "command
    line changed" and rebuild the kernel, 30 s, every time (figures in benchmarks/RESULTS.md)."""
    try:
        import ninja

        first = ninja.BIN_DIR
    except (ImportError, AttributeError):
        first = os.path.dirname(sys.executable)
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = first + os.pathsep + old
    try:
        yield
    finally:
        os.environ["PATH"] = old


@functools.cache
def kernels() -> Any:
    """The compiled kernel module (built on first use, then loaded from the cache)."""
    from torch.utils.cpp_extension import load_inline

    name = _module_name()
    build = _cache_dir() / name.removeprefix("aigc_lab_gemv_")
    try:
        build.mkdir(parents=True, exist_ok=True)
        with _our_ninja_first():
            return load_inline(name, cpp_sources=SOURCE, extra_cflags=CFLAGS, extra_ldflags=["-fopenmp"],
                               build_directory=str(build), verbose=False)
    except Exception as exc:  # noqa: BLE001 - compilers fail in many ways
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise KernelBuildError(f"could not build the CPU matrix-vector kernel ({type(exc).__name__}: {first[:300]}). "
                               "It needs a C++ compiler (g++) and Python headers; generation runs on torch's "
                               "path without it.") from exc


def built() -> bool:
    """Whether the kernel for this source, torch and CPU is already compiled (nothing is built here)."""
    name = _module_name()
    if kernels.cache_info().currsize and kernels().__name__ == name:  # loaded: no need to look on disk
        return True
    return any((_cache_dir() / name.removeprefix("aigc_lab_gemv_")).glob(f"{name}*.so"))


def build_kernel() -> str:
    """Build (or load) the kernel now, so later generations use it; returns what happened. ``make`` calls it."""
    t0 = time.perf_counter()
    was_built = built()
    kernels()
    return (f"CPU matrix-vector kernel {'loaded' if was_built else 'built'} in {time.perf_counter() - t0:.1f} s "
            f"({_cache_dir()})")
