"""Fast CPU decoding: batch-1 matrix-vector products on an OpenMP kernel, used by the engine when it is built.

A batch-1 decode step is a chain of matrix-vector products over every weight of the model, so its speed
is how fast weights stream from memory. torch's fp32 CPU path (MKL) runs a matrix-vector product on one
thread and, measured on a 2-core AMD EPYC, streams about 10 GB/s of the 28-47 GB/s the machine reads;
a plain OpenMP kernel (one dot product per output row, rows split over the threads) streams 26 GB/s on
GPT-2's vocabulary projection (``benchmarks/gemv.py``).

The kernels (``cpu_kernels.cpp``) are compiled once per machine with the C++ compiler torch uses (about
30 s; cached under ``~/.cache/aigc_lab/kernels``, keyed by source, flags, torch and CPU). ``make`` builds them; so do
``al.infer.build_kernel()`` and the first ``fast_cpu(handle)``. A generation never builds it
implicitly (that would stall a notebook for half a minute); once it is built:

* ``al.generate`` runs single-prompt CPU decoding of fp32 and dynamic-int8 models on it by default
  (``cpu_kernel=None``: "when built"; ``cpu_kernel=False`` keeps torch's path, ``True`` builds it if
  needed). The run's config records which path ran. The engine decodes through a *twin* of the model:
  a copy of its modules that shares the weights (fp32 parameters and int8 packed weights alike), whose
  ``nn.Linear``, GPT-2 ``Conv1D`` and dynamic int8 ``Linear`` layers compute single-row fp32 inputs in
  inference mode with the kernel (a ``Product`` per layer: ``gemv``, ``gemv_t``, or the int8 product,
  which quantizes the input exactly as torch's ``quantized::linear_dynamic`` does and keeps a row-major
  int8 copy of the weights, a quarter of their fp32 size) and everything else (prefill, batches,
  training, other dtypes) exactly as before; GPT-2's six-op tanh GELU runs as torch's one fused op,
  the same formula. GPT-2 and Llama-family twins decode each token as one kernel call (``fused_step.py``). The
  user's model is never modified.
* ``fast_cpu(handle)`` returns a handle over that twin, for code that wants it explicitly.

Results agree with torch's to float rounding (the sums run in another order); greedy tokens are the
same in the parity tests.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import AigcLabError, GenerationConfigError

log = logging.getLogger("aigc_lab")

SOURCE = (Path(__file__).parent / "cpu_kernels.cpp").read_text()
CFLAGS = ["-O3", "-march=native", "-fopenmp"]


class KernelBuildError(AigcLabError, RuntimeError):
    """The CPU kernel could not be built here (no C++ compiler?); the model works unchanged without it."""


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
    line changed" and rebuild the kernel, 30 s, every time (measured: "loaded in 27.4 s" twice in a row)."""
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


def product_of(module: Any, kernel: Any) -> Any | None:
    """The kernel's ``Product`` for a layer it can compute (fp32 ``Linear`` / GPT-2 ``Conv1D``, dynamic int8
    ``Linear``), sharing the layer's weights; None for anything else. An int8 layer's product keeps its own
    row-major int8 copy of the weights (torch's copy is packed in fbgemm's blocked layout)."""
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
    from transformers.pytorch_utils import Conv1D

    if type(module) in (torch.nn.Linear, Conv1D):
        w = module.weight
        if w.dtype != torch.float32 or not w.is_contiguous() or w.device.type != "cpu":
            return None
        bias = None if module.bias is None else module.bias.detach()
        return kernel.Product(w.detach(), bias, None, type(module) is Conv1D)
    if type(module) is DynamicInt8Linear and module._packed_params.dtype == torch.qint8:
        w = module.weight()
        if w.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            if w.q_zero_point() != 0:
                return None
            scale = torch.full((w.shape[0],), w.q_scale(), dtype=torch.float32)
        elif w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            if w.q_per_channel_axis() != 0 or bool(w.q_per_channel_zero_points().ne(0).any()):
                return None
            scale = w.q_per_channel_scales().float()
        else:
            return None
        return kernel.Product(w.int_repr().contiguous(), module.bias(), scale, False)
    return None


def _patched_forward(eager: Any, product: Any) -> Any:
    import torch

    n_in, n_out = product.n_in, product.n_out
    fp32, grad_enabled = torch.float32, torch.is_grad_enabled

    def forward(x: Any) -> Any:  # runs ~50 times a token: the fewest checks that decide it
        if x.numel() == n_in and x.dtype == fp32 and not grad_enabled() and x.device.type == "cpu":
            return product(x.reshape(n_in)).view(*x.shape[:-1], n_out)
        return eager(x)

    return forward


def kernel_twin(model: Any) -> Any:
    """A copy of ``model`` sharing its weights whose Linear / Conv1D / dynamic int8 layers use the kernel for
    single rows (each keeps its ``Product`` as ``aigc_product``, for whole-step decoders)."""
    from ..models.fused_ops import fuse_activations
    from ..models.handle import shared_copy

    k = kernels()
    twin = shared_copy(model)
    for module in twin.modules():
        product = product_of(module, k)
        if product is not None:
            module.aigc_product = product
            module.forward = _patched_forward(module.forward, product)
    fuse_activations(twin)  # GPT-2's six-op tanh GELU as one op (~20 us less per layer per token)
    twin.aigc_kernel_twin = True
    return twin


def eligible(handle: Any) -> bool:
    """fp32 (unquantized) or dynamic int8, on the CPU, not under ``torch.compile`` (its own path): what the
    kernel speeds up."""
    try:
        return (handle.device == "cpu" and not hasattr(handle.model, "_orig_mod")
                and (handle.quant == "int8" or (handle.dtype == "float32" and not handle.quant)))
    except StopIteration:  # a model without parameters
        return False


def runner(handle: Any, requested: bool | None, batch: int) -> Any:
    """The module a decode of ``batch`` prompts calls: ``handle.model`` or its kernel twin.

    ``requested`` is the ``cpu_kernel`` parameter: None uses the kernel for single fp32 or int8 CPU prompts when it
    is already built (never building it; ``AIGC_LAB_CPU_KERNEL=0`` turns this off), True builds it if needed
    and refuses models it cannot run, False never uses it.
    """
    if requested and not eligible(handle):
        raise GenerationConfigError(f"cpu_kernel=True needs an fp32 or int8 model on the CPU; {handle.name!r} is "
                                    f"{handle.quant or handle.dtype} on {handle.device}")
    if requested is False or batch != 1 or not eligible(handle):
        return handle.model
    if requested is None and (os.environ.get("AIGC_LAB_CPU_KERNEL", "1") == "0" or not built()):
        return handle.model
    try:
        return decode_model(handle.model)
    except Exception:
        if requested:
            raise
        log.debug("aigc_lab: the CPU kernel twin could not be made; decoding on torch's path", exc_info=True)
        return handle.model


_twins: weakref.WeakKeyDictionary[Any, tuple[tuple[int, ...], Any]] = weakref.WeakKeyDictionary()
_twins_lock = threading.Lock()


def decode_model(model: Any) -> Any:
    """The kernel twin of ``model``, made once and made again if its parameters were replaced."""
    if getattr(model, "aigc_kernel_twin", False):
        return model
    signature = tuple(p.data_ptr() for p in model.parameters())
    with _twins_lock:
        cached = _twins.get(model)
        if cached is not None and cached[0] == signature:
            return cached[1]
        twin = kernel_twin(model)
        _twins[model] = (signature, twin)
        return twin


def fast_cpu(handle: Any, *, warmup_tokens: int = 4) -> Any:
    """A new handle whose single-row products run on the OpenMP kernel; build time in ``.compile_s``.

    The original handle is untouched. Raises ``KernelBuildError`` where no kernel can be built and
    ``AigcLabError`` for models that are not fp32 or dynamic int8 on the CPU.
    """
    from ..models import ModelHandle
    from .compiled import _quiet_bus
    from .engine import generate

    if getattr(handle, "fast_cpu", False):
        return handle
    if not eligible(handle):
        raise AigcLabError(f"fast_cpu() speeds up fp32 and int8 models on the CPU; {handle.name!r} is "
                           f"{handle.quant or handle.dtype} on {handle.device}")
    t = time.perf_counter()
    new = ModelHandle(model=decode_model(handle.model), tokenizer=handle.tokenizer, name=handle.name,
                      kind=handle.kind, quant=handle.quant, param_count=handle.params)
    new.fast_cpu = True
    generate(new, "warm up", max_new_tokens=warmup_tokens, ignore_eos=True, cpu_kernel=True,
             event_bus=_quiet_bus()).wait()
    new.compile_s = time.perf_counter() - t
    return new


def build_kernel() -> str:
    """Build (or load) the kernel now, so later generations use it; returns what happened. ``make`` calls it."""
    t0 = time.perf_counter()
    was_built = built()
    kernels()
    return (f"CPU matrix-vector kernel {'loaded' if was_built else 'built'} in {time.perf_counter() - t0:.1f} s "
            f"({_cache_dir()})")
