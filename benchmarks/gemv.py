"""Why fp32 decode on this CPU sits at a third of its memory roofline: matrix-vector product speed.

A batch-1 decode step is a chain of matrix-vector products (GEMVs) over every weight of the model, so
its speed is bounded by how fast the BLAS streams weights. This script measures, on weights far bigger
than the last-level cache (a set of >= 256 MB cycled through), in GB/s of weights read:

* ``torch_linear``: ``F.linear(x, W)``, W (out, in): what Llama-style layers and the vocabulary
  projection do;
* ``torch_x_at_w``: ``x @ W`` with W (in, out) contiguous: what GPT-2's Conv1D does;
* ``aigc_kernel``: the engine's own C++ kernel (``aigc_lab/infer/kernel_build.py``, what ``al.infer.fast_cpu``
  runs: one dot product per row, rows split over OpenMP threads; built on first use, then cached);
* ``read_bandwidth``: summing a 512 MB tensor (the roofline's bandwidth in ``benchmarks/decode.py``).

Prints one JSON object (medians of ``--reps`` timings per shape). Needs a C++ compiler for the kernel
row (reported as null, with the reason, without one). Usage: python benchmarks/gemv.py [--reps 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

SHAPES = {"gpt2_small_vocab": (50257, 768), "gpt2_small_qkv": (2304, 768), "gpt2_small_mlp": (3072, 768)}

def build_kernel():
    """The engine's kernel (``al.infer.fast_cpu``), or None with the reason when it cannot be built here."""
    from aigc_lab.infer import kernel_build

    try:
        t = time.perf_counter()
        return kernel_build.kernels().gemv, time.perf_counter() - t, None
    except kernel_build.KernelBuildError as exc:
        return None, None, str(exc)


def median_s(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure_shape(n: int, k: int, gemv, reps: int) -> dict:
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
    if gemv is not None:
        assert torch.allclose(gemv(rows[0], x, None), rows[0] @ x, atol=1e-3)
        row["aigc_kernel"] = gbs(lambda: gemv(pick(rows), x, None))
        row["aigc_kernel_vs_torch_linear"] = round(row["aigc_kernel"] / row["torch_linear"], 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    gemv, build_s, build_error = build_kernel()
    out: dict = {"threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                 "kernel_load_s": None if build_s is None else round(build_s, 1), "kernel_error": build_error,
                 "shapes": {}}
    for name, (n, k) in SHAPES.items():
        out["shapes"][name] = measure_shape(n, k, gemv, args.reps)
    big = torch.ones(128 * 2**20)
    out["read_bandwidth_gb_s"] = round(big.numel() * 4 / median_s(big.sum, args.reps) / 1e9, 1)
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
