"""Why fp32 decode on this CPU sits at a third of its memory roofline: matrix-vector product speed.

A batch-1 decode step is a chain of matrix-vector products (GEMVs) over every weight of the model, so
its speed is bounded by how fast the BLAS streams weights. This script measures, on weights far bigger
than the last-level cache (a set of >= 256 MB cycled through), in GB/s of weights read:

* ``torch_linear``: ``F.linear(x, W)``, W (out, in): what Llama-style layers and the vocabulary
  projection do;
* ``torch_x_at_w``: ``x @ W`` with W (in, out) contiguous: what GPT-2's Conv1D does;
* ``omp_rows`` / ``omp_cols``: a plain C++ kernel (one dot product per row, rows split over OpenMP
  threads; or columns split, rows streamed), built here with ``torch.utils.cpp_extension`` and
  ``-O3 -march=native -fopenmp``: an estimate of what a hand-written kernel would give the engine;
* ``read_bandwidth``: summing a 512 MB tensor (the roofline's bandwidth in ``benchmarks/decode.py``).

Prints one JSON object (medians of ``--reps`` timings per shape). Needs a C++ compiler for the kernel
rows (reported as null without one). Usage: python benchmarks/gemv.py [--reps 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch

SHAPES = {"gpt2_small_vocab": (50257, 768), "gpt2_small_qkv": (2304, 768), "gpt2_small_mlp": (3072, 768)}

KERNELS = r"""
#include <torch/extension.h>
#include <omp.h>
// y = W x for W (N, K) row-major: one dot product per row, rows split over the threads
torch::Tensor gemv_rows(torch::Tensor W, torch::Tensor x) {
  auto N = W.size(0), K = W.size(1);
  auto y = torch::empty({N}, W.options());
  const float* w = W.data_ptr<float>(); const float* xv = x.data_ptr<float>(); float* yv = y.data_ptr<float>();
  #pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; n++) {
    const float* r = w + n * K; float acc = 0.f;
    #pragma omp simd reduction(+:acc)
    for (int64_t k = 0; k < K; k++) acc += r[k] * xv[k];
    yv[n] = acc;
  }
  return y;
}
// y = x W for W (K, N) row-major: columns split over the threads, rows streamed
torch::Tensor gemv_cols(torch::Tensor W, torch::Tensor x) {
  auto K = W.size(0), N = W.size(1);
  auto y = torch::zeros({N}, W.options());
  const float* w = W.data_ptr<float>(); const float* xv = x.data_ptr<float>(); float* yv = y.data_ptr<float>();
  #pragma omp parallel
  {
    int t = omp_get_thread_num(), T = omp_get_num_threads();
    int64_t lo = N * t / T, hi = N * (t + 1) / T;
    for (int64_t k = 0; k < K; k++) {
      const float* r = w + k * N; float xk = xv[k];
      #pragma omp simd
      for (int64_t n = lo; n < hi; n++) yv[n] += xk * r[n];
    }
  }
  return y;
}
"""


def build_kernels():
    """The OpenMP kernels, or None (with the reason) when no compiler can build them."""
    from torch.utils.cpp_extension import load_inline

    try:
        t = time.perf_counter()
        ext = load_inline("aigc_gemv_bench", cpp_sources=KERNELS, functions=["gemv_rows", "gemv_cols"],
                          extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"],
                          build_directory=tempfile.mkdtemp(prefix="aigc-gemv-"), verbose=False)
        return ext, time.perf_counter() - t, None
    except Exception as exc:  # noqa: BLE001 - reported in the JSON
        return None, None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def median_s(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure_shape(n: int, k: int, ext, reps: int) -> dict:
    """GB/s of each GEMV variant on (n, k) weights, cycling through more than any cache holds."""
    count = max(2, (256 * 2**20) // (n * k * 4))
    rows = [torch.randn(n, k) for _ in range(count)]
    cols = [w.t().contiguous() for w in rows]
    x = torch.randn(k)
    turn = [0]

    def pick(ws: list) -> torch.Tensor:
        turn[0] += 1
        return ws[turn[0] % count]

    def gbs(fn) -> float:
        return round(n * k * 4 / median_s(fn, reps) / 1e9, 1)

    row = {"torch_linear": gbs(lambda: torch.nn.functional.linear(x[None], pick(rows))),
           "torch_x_at_w": gbs(lambda: x[None] @ pick(cols))}
    if ext is not None:
        assert torch.allclose(ext.gemv_rows(rows[0], x), rows[0] @ x, atol=1e-3)
        assert torch.allclose(ext.gemv_cols(cols[0], x), x @ cols[0], atol=1e-3)
        row["omp_rows"] = gbs(lambda: ext.gemv_rows(pick(rows), x))
        row["omp_cols"] = gbs(lambda: ext.gemv_cols(pick(cols), x))
        row["omp_rows_vs_torch_linear"] = round(row["omp_rows"] / row["torch_linear"], 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    ext, build_s, build_error = build_kernels()
    out: dict = {"threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                 "kernel_build_s": None if build_s is None else round(build_s, 1), "kernel_error": build_error,
                 "shapes": {}}
    for name, (n, k) in SHAPES.items():
        out["shapes"][name] = measure_shape(n, k, ext, args.reps)
    big = torch.ones(128 * 2**20)
    out["read_bandwidth_gb_s"] = round(big.numel() * 4 / median_s(big.sum, args.reps) / 1e9, 1)
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
