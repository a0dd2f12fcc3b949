"""Learning-rate schedules: linear warmup, then linear or cosine decay (or constant), as a LambdaLR."""

from __future__ import annotations

import math
from typing import Any


def lr_factor(step: int, total: int, warmup: int, kind: str = "linear", min_ratio: float = 0.0) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based) of ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    decay = 1.0 - progress if kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * decay


def make_scheduler(optimizer: Any, total: int, warmup: int, kind: str, min_ratio: float = 0.0) -> Any:
    """A ``LambdaLR`` following ``lr_factor`` (its state dict saves and restores with the checkpoint)."""
    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, kind, min_ratio))
