"""Opt-in fast CPU decoding: ``fast_cpu(handle)`` gives batch-1 matrix-vector products to an OpenMP kernel.

A batch-1 decode step is a chain of matrix-vector products over every weight of the model, so its speed
is how fast weights stream from memory. torch's fp32 CPU path (MKL) runs a matrix-vector product on one
thread and, measured on a 2-core AMD EPYC, streams about 10 GB/s of the 28-47 GB/s the machine reads;
a plain OpenMP kernel (one dot product per output row, rows split over the threads) streams 26 GB/s on
GPT-2's vocabulary projection (``benchmarks/gemv.py``).

``fast_cpu`` returns a new handle over a copy of the model that shares its parameters; in the copy every
``nn.Linear`` (GPT-2's ``Conv1D`` layers are converted to ``Linear`` first, which costs a transposed copy
of those weights) computes single-row fp32 inputs in inference mode with the kernel, and everything
else (prefill, batches, training, other dtypes) exactly as before. The kernel is compiled once per
machine with the C++ compiler torch uses (about 30 s; cached under ``~/.cache/aigc_lab/kernels``), so
this is never on by default; the time is reported as ``handle.compile_s``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from pathlib import Path
from typing import Any

from ..errors import AigcLabError

SOURCE = r"""
#include <torch/extension.h>
#include <omp.h>
#include <optional>

// y = W x (+ b) for W (N, K) row-major fp32: one dot product per row, rows split over the threads.
torch::Tensor gemv(torch::Tensor W, torch::Tensor x, std::optional<torch::Tensor> b) {
  TORCH_CHECK(W.dim() == 2 && W.is_contiguous() && W.scalar_type() == torch::kFloat, "W: contiguous fp32 (N, K)");
  TORCH_CHECK(x.numel() == W.size(1) && x.is_contiguous() && x.scalar_type() == torch::kFloat,
              "x: contiguous fp32 (K)");
  const int64_t N = W.size(0), K = W.size(1);
  auto y = torch::empty({N}, x.options());
  const float* w = W.data_ptr<float>();
  const float* xv = x.data_ptr<float>();
  const float* bv = (b.has_value() && b->defined()) ? b->data_ptr<float>() : nullptr;
  float* yv = y.data_ptr<float>();
  #pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const float* r = w + n * K;
    float acc = 0.f;
    #pragma omp simd reduction(+:acc)
    for (int64_t k = 0; k < K; k++) acc += r[k] * xv[k];
    yv[n] = bv ? acc + bv[n] : acc;
  }
  return y;
}
"""


class KernelBuildError(AigcLabError, RuntimeError):
    """The CPU kernel could not be built here (no C++ compiler?); the model works unchanged without it."""


def _cache_dir() -> Path:
    root = os.environ.get("AIGC_LAB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "aigc_lab")
    return Path(root) / "kernels"


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


@functools.cache
def kernels() -> Any:
    """The compiled kernel module (built on first use, then loaded from the cache)."""
    import torch
    from torch.utils.cpp_extension import load_inline

    key = hashlib.sha1("\n".join((SOURCE, torch.__version__, _cpu_signature())).encode()).hexdigest()[:12]
    build = _cache_dir() / key
    try:
        build.mkdir(parents=True, exist_ok=True)
        return load_inline(f"aigc_lab_gemv_{key}", cpp_sources=SOURCE, functions=["gemv"],
                           extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"],
                           build_directory=str(build), verbose=False)
    except Exception as exc:  # noqa: BLE001 - compilers fail in many ways
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise KernelBuildError(f"could not build the CPU matrix-vector kernel ({type(exc).__name__}: {first[:300]}). "
                               "It needs a C++ compiler (g++) and Python headers; the model runs as before "
                               "without fast_cpu().") from exc


def _fast_forward(module: Any, eager: Any, gemv: Any) -> Any:
    import torch

    weight, bias = module.weight, module.bias
    n_out, n_in = weight.shape

    def forward(x: Any) -> Any:
        if (x.numel() == n_in and x.dtype == torch.float32 and x.device.type == "cpu"
                and not torch.is_grad_enabled() and weight.dtype == torch.float32 and weight.is_contiguous()):
            return gemv(weight, x.reshape(n_in).contiguous(), bias).view(*x.shape[:-1], n_out)
        return eager(x)

    return forward


def fast_cpu(handle: Any, *, warmup_tokens: int = 4) -> Any:
    """A new handle whose single-row fp32 Linear products run on the OpenMP kernel; build time in ``.compile_s``.

    The original handle is untouched. Raises ``KernelBuildError`` where no kernel can be built and
    ``AigcLabError`` for models that are not fp32 on the CPU.
    """
    import torch

    from ..models import ModelHandle
    from ..models.handle import shared_copy
    from ..models.quantize import conv1d_to_linear
    from .compiled import _quiet_bus
    from .engine import generate

    if getattr(handle, "fast_cpu", False):
        return handle
    if handle.device != "cpu" or handle.dtype != "float32" or handle.quant:
        raise AigcLabError(f"fast_cpu() speeds up fp32 models on the CPU; {handle.name!r} is "
                           f"{handle.quant or handle.dtype} on {handle.device}")
    t = time.perf_counter()
    gemv = kernels().gemv
    model = shared_copy(handle.model)  # no second copy of the weights ...
    conv1d_to_linear(model)  # ... except GPT-2's Conv1D weights, stored transposed for the kernel
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.forward = _fast_forward(module, module.forward, gemv)
    new = ModelHandle(model=model, tokenizer=handle.tokenizer, name=handle.name, kind=handle.kind,
                      param_count=handle.params)
    new.fast_cpu = True
    generate(new, "warm up", max_new_tokens=warmup_tokens, ignore_eos=True, event_bus=_quiet_bus()).wait()
    new.compile_s = time.perf_counter() - t
    return new
