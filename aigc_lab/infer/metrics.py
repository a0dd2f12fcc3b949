"""Latency figures of a generation from its token timestamps: TTFT, inter-token latency, tokens/s."""

from __future__ import annotations

import resource
import sys
from collections.abc import Sequence

from ..events import RunMetrics


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in 0..100) of ``values``; None when empty."""
    if not values:
        return None
    s = sorted(values)
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MB (CUDA: peak allocated on the device)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def summarize(token_ms: Sequence[float], *, peak_mem_mb: float | None = None) -> RunMetrics:
    """Metrics from per-token times (ms since run start): TTFT, p50/p95 gaps, decode tokens/s."""
    n = len(token_ms)
    if n == 0:
        return RunMetrics(tokens=0, peak_mem_mb=peak_mem_mb)
    gaps = [b - a for a, b in zip(token_ms, token_ms[1:], strict=False)]
    span = token_ms[-1] - token_ms[0]
    tok_s = (n - 1) / (span / 1000.0) if n > 1 and span > 0 else None
    return RunMetrics(ttft_ms=token_ms[0], tokens=n, tok_s=tok_s, itl_p50_ms=percentile(gaps, 50),
                      itl_p95_ms=percentile(gaps, 95), peak_mem_mb=peak_mem_mb)
