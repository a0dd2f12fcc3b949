"""Fast CPU decoding: batch-1 matrix-vector products on an OpenMP kernel, used by the engine when it is built.

A batch-1 decode step is a chain of matrix-vector products over every weight of the model, so its speed
is how fast weights stream from memory. torch's fp32 CPU path (MKL) runs a matrix-vector product on one
thread and, measured on a 2-core AMD EPYC, streams about 10 GB/s of the 28-47 GB/s the machine reads;
a plain OpenMP kernel (one dot product per output row, rows split over the threads) streams 26 GB/s on
GPT-2's vocabulary projection (``benchmarks/gemv.py``).

The kernel is compiled once per machine with the C++ compiler torch uses (about 30 s; cached under
``~/.cache/aigc_lab/kernels``, keyed by source, torch version and CPU). ``make`` builds it; so do
``al.infer.build_kernel()`` and the first ``fast_cpu(handle)``. A generation never builds it
implicitly (that would stall a notebook for half a minute); once it is built:

* ``al.generate`` runs single-prompt fp32 CPU decoding on it by default (``cpu_kernel=None``: "when
  built"; ``cpu_kernel=False`` keeps torch's path, ``True`` builds it if needed). The run's config
  records which path ran. The engine decodes through a *twin* of the model: a copy of its modules
  that shares the parameters (no second copy of the weights), whose ``nn.Linear`` and GPT-2 ``Conv1D``
  layers compute single-row fp32 inputs in inference mode with the kernel (``gemv`` / ``gemv_t``) and
  everything else (prefill, batches, training, other dtypes) exactly as before; GPT-2's six-op tanh
  GELU runs as torch's one fused op, the same formula. The user's model is never modified.
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

SOURCE = r"""
#include <torch/extension.h>
#include <immintrin.h>
#include <omp.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <new>
#include <optional>
#include <thread>
#include <vector>

// Threads. On the process's main thread the kernels use OpenMP, the same runtime (torch's libgomp) and
// the same worker pool as torch's own operators, so no two pools spin against each other. On any other
// thread (a background generation) OpenMP is slow: libgomp keeps one pool per calling thread, and once
// two threads own pools it stops letting idle workers spin, so each of the ~50 products of a decode
// step pays a sleep/wake-up (measured: background decoding of the tiny shape at 0.55x). There the
// kernels use their own helper threads instead, which spin briefly between products (~0.2 ms: hot
// within a decode step) and then sleep.
namespace {
using Clock = std::chrono::steady_clock;

struct Pool {
  std::mutex call_mu;  // one parallel product at a time, whichever thread calls
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<uint64_t> epoch{0};
  std::atomic<int> pending{0};
  void (*fn)(void*, int, int) = nullptr;
  void* ctx = nullptr;
  int parts = 1;
  int helpers = 0;  // started helper threads

  void helper(int index, uint64_t seen) {
    for (;;) {
      uint64_t e = epoch.load(std::memory_order_acquire);
      if (e == seen) {
        const auto until = Clock::now() + std::chrono::microseconds(200);
        int spins = 0;
        while ((e = epoch.load(std::memory_order_acquire)) == seen) {
          _mm_pause();
          if (++spins % 64 == 0 && Clock::now() > until) {
            std::unique_lock<std::mutex> lk(mu);
            cv.wait(lk, [&] { return epoch.load(std::memory_order_acquire) != seen; });
          }
        }
      }
      seen = e;
      fn(ctx, index, parts);
      pending.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  // Run fn(ctx, i, parts) for i in [0, parts): part 0 here, the others on helpers.
  void run(void (*f)(void*, int, int), void* c, int n) {
    std::lock_guard<std::mutex> g(call_mu);
    while (helpers < n - 1) {
      const int index = ++helpers;
      std::thread([this, index, e = epoch.load()] { helper(index, e); }).detach();
    }
    fn = f;
    ctx = c;
    parts = n;
    pending.store(n - 1, std::memory_order_release);
    {
      std::lock_guard<std::mutex> lk(mu);  // no lost wake-up for a helper about to sleep
      epoch.fetch_add(1, std::memory_order_acq_rel);
    }
    cv.notify_all();
    f(c, 0, n);
    while (pending.load(std::memory_order_acquire) > 0) _mm_pause();
  }
};

Pool* pool = new Pool();  // never destroyed: helpers may outlive static destructors at exit

void reset_in_child() { pool = new Pool(); }  // a forked child has none of the parent's helpers
const int registered = pthread_atfork(nullptr, nullptr, reset_in_child);

int parts_for(int64_t floats) {
  static const int threads = std::max(1, std::min<int>(at::get_num_threads(), 16));
  return floats < (1 << 16) ? 1 : threads;  // under 256 KB of weights one thread is faster
}

bool on_main_thread() { return static_cast<pid_t>(syscall(SYS_gettid)) == getpid(); }

template <class F>
void parallel(int n, F& body) {
  if (n <= 1) {
    body(0, 1);
  } else if (on_main_thread()) {
    #pragma omp parallel num_threads(n)
    body(omp_get_thread_num(), omp_get_num_threads());
  } else {
    pool->run([](void* c, int i, int k) { (*static_cast<F*>(c))(i, k); }, &body, n);
  }
}

void check(const torch::Tensor& W, const torch::Tensor& x, int64_t k, const char* what) {
  TORCH_CHECK(W.dim() == 2 && W.is_contiguous() && W.scalar_type() == torch::kFloat, what);
  TORCH_CHECK(x.numel() == k && x.is_contiguous() && x.scalar_type() == torch::kFloat, "x: contiguous fp32 (K)");
}
}  // namespace

// y = W x (+ b) for W (N, K) row-major fp32 (nn.Linear): one dot product per row, rows split over the threads.
torch::Tensor gemv(torch::Tensor W, torch::Tensor x, std::optional<torch::Tensor> b) {
  TORCH_CHECK(W.dim() == 2, "W: contiguous fp32 (N, K)");
  check(W, x, W.size(1), "W: contiguous fp32 (N, K)");
  const int64_t N = W.size(0), K = W.size(1);
  auto y = torch::empty({N}, x.options());
  const float* w = W.data_ptr<float>();
  const float* xv = x.data_ptr<float>();
  const float* bv = (b.has_value() && b->defined()) ? b->data_ptr<float>() : nullptr;
  float* yv = y.data_ptr<float>();
  auto body = [w, xv, bv, yv, N, K](int i, int parts) {
    for (int64_t n = N * i / parts, end = N * (i + 1) / parts; n < end; n++) {
      const float* __restrict r = w + n * K;
      const float* __restrict v = xv;
      float acc = 0.f;
      #pragma omp simd reduction(+:acc)
      for (int64_t k = 0; k < K; k++) acc += r[k] * v[k];
      yv[n] = bv ? acc + bv[n] : acc;
    }
  };
  parallel(parts_for(N * K), body);
  return y;
}

// y = x W (+ b) for W (K, N) row-major fp32 (GPT-2's Conv1D), with no transposed copy: each thread streams
// a contiguous band of rows into its own partial sum (in cache), then the partial sums are added.
torch::Tensor gemv_t(torch::Tensor W, torch::Tensor x, std::optional<torch::Tensor> b) {
  TORCH_CHECK(W.dim() == 2, "W: contiguous fp32 (K, N)");
  check(W, x, W.size(0), "W: contiguous fp32 (K, N)");
  const int64_t K = W.size(0), N = W.size(1);
  const int T = static_cast<int>(std::min<int64_t>(parts_for(N * K), K));
  auto partial = torch::empty({T, N}, x.options());
  auto y = torch::empty({N}, x.options());
  const float* w = W.data_ptr<float>();
  const float* xv = x.data_ptr<float>();
  const float* bv = (b.has_value() && b->defined()) ? b->data_ptr<float>() : nullptr;
  float* pv = partial.data_ptr<float>();
  float* yv = y.data_ptr<float>();
  auto body = [w, xv, pv, N, K](int t, int parts) {
    const int64_t k0 = K * t / parts, k1 = K * (t + 1) / parts;
    float* out = pv + t * N;
    for (int64_t j = 0; j < N; j++) out[j] = 0.f;
    // ROWS rows per pass: one load and store of the partial sum per ROWS weight loads, and ROWS streams in
    // flight. Measured on GPT-2-small's layer shapes (benchmarks/gemv.py's machine): 4 rows 28 GB/s, 8 rows
    // 35, 12 rows 37 where the machine reads 50 GB/s (21 -> 24 GB/s where it reads 28); 16 is no better.
    constexpr int ROWS = 12;
    int64_t k = k0;
    for (; k + ROWS <= k1; k += ROWS) {
      float a[ROWS];
      for (int q = 0; q < ROWS; q++) a[q] = xv[k + q];
      const float* r0 = w + k * N;
      #pragma omp simd
      for (int64_t j = 0; j < N; j++) {
        float acc = out[j];
        #pragma GCC unroll 12
        for (int q = 0; q < ROWS; q++) acc += a[q] * r0[q * N + j];
        out[j] = acc;
      }
    }
    for (; k < k1; k++) {
      const float a = xv[k];
      const float* r = w + k * N;
      #pragma omp simd
      for (int64_t j = 0; j < N; j++) out[j] += a * r[j];
    }
  };
  parallel(T, body);
  for (int64_t j = 0; j < N; j++) {
    float acc = bv ? bv[j] : 0.f;
    for (int t = 0; t < T; t++) acc += pv[t * N + j];
    yv[j] = acc;
  }
  return y;
}
"""


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

    parts = (SOURCE, torch.__version__, os.path.dirname(os.path.realpath(torch.__file__)), _cpu_signature())
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
            return load_inline(name, cpp_sources=SOURCE, functions=["gemv", "gemv_t"],
                               extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"],
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


def _patched_forward(module: Any, eager: Any, kernel: Any, transposed: bool) -> Any:
    import torch

    weight, bias = module.weight, module.bias
    n_in = weight.shape[0] if transposed else weight.shape[1]
    n_out = weight.shape[1] if transposed else weight.shape[0]
    if weight.dtype != torch.float32 or not weight.is_contiguous() or weight.device.type != "cpu":
        return eager  # fixed for the twin's life: a changed weight makes decode_model build a new twin
    fp32, grad_enabled = torch.float32, torch.is_grad_enabled

    def forward(x: Any) -> Any:  # runs ~50 times a token: the fewest checks that decide it
        if x.numel() == n_in and x.dtype == fp32 and not grad_enabled() and x.device.type == "cpu":
            return kernel(weight, x.reshape(n_in).contiguous(), bias).view(*x.shape[:-1], n_out)
        return eager(x)

    return forward


def kernel_twin(model: Any) -> Any:
    """A copy of ``model`` sharing its parameters whose Linear / Conv1D layers use the kernel for single rows."""
    import torch
    from transformers.pytorch_utils import Conv1D

    from ..models.fused_ops import fuse_activations
    from ..models.handle import shared_copy

    k = kernels()
    twin = shared_copy(model)
    for module in twin.modules():
        if type(module) is torch.nn.Linear:
            module.forward = _patched_forward(module, module.forward, k.gemv, transposed=False)
        elif type(module) is Conv1D:
            module.forward = _patched_forward(module, module.forward, k.gemv_t, transposed=True)
    fuse_activations(twin)  # GPT-2's six-op tanh GELU as one op (~20 us less per layer per token)
    twin.aigc_kernel_twin = True
    return twin


def eligible(handle: Any) -> bool:
    """fp32, unquantized, on the CPU, not under ``torch.compile`` (its own path): what the kernel speeds up."""
    try:
        return (handle.device == "cpu" and handle.dtype == "float32" and not handle.quant
                and not hasattr(handle.model, "_orig_mod"))
    except StopIteration:  # a model without parameters
        return False


def runner(handle: Any, requested: bool | None, batch: int) -> Any:
    """The module a decode of ``batch`` prompts calls: ``handle.model`` or its kernel twin.

    ``requested`` is the ``cpu_kernel`` parameter: None uses the kernel for single fp32 CPU prompts when it
    is already built (never building it; ``AIGC_LAB_CPU_KERNEL=0`` turns this off), True builds it if needed
    and refuses models it cannot run, False never uses it.
    """
    if requested and not eligible(handle):
        raise GenerationConfigError(f"cpu_kernel=True needs an fp32 model on the CPU; {handle.name!r} is "
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
    """A new handle whose single-row fp32 Linear products run on the OpenMP kernel; build time in ``.compile_s``.

    The original handle is untouched. Raises ``KernelBuildError`` where no kernel can be built and
    ``AigcLabError`` for models that are not fp32 on the CPU.
    """
    from ..models import ModelHandle
    from .compiled import _quiet_bus
    from .engine import generate

    if getattr(handle, "fast_cpu", False):
        return handle
    if not eligible(handle):
        raise AigcLabError(f"fast_cpu() speeds up fp32 models on the CPU; {handle.name!r} is "
                           f"{handle.quant or handle.dtype} on {handle.device}")
    t = time.perf_counter()
    new = ModelHandle(model=decode_model(handle.model), tokenizer=handle.tokenizer, name=handle.name,
                      kind=handle.kind, param_count=handle.params)
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
