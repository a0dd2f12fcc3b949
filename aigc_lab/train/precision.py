"""Mixed precision for training: which autocast a run uses, chosen in one place; weights always train in fp32.

A 16-bit model (bf16 or fp16 weights) is never stepped in 16 bits: AdamW's small updates vanish below a
16-bit weight's resolution. The run's trainable parameters are fp32 master copies (``master_weights``) and
the forward runs under bf16 autocast, which keeps fp32's exponent range and so needs no loss scaling. fp16
autocast would need a gradient scaler; ``precision="fp16"`` is refused with what to use instead, and an fp16
model trains under bf16 autocast where the device has bf16 (every CPU torch runs on; CUDA from Ampere on),
else in plain fp32. After training the model goes back to the dtype it came in (``restore_dtype``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import TrainConfigError

HALF = ("bfloat16", "float16")


@dataclass(frozen=True)
class Precision:
    """What a run does: ``autocast`` (a torch dtype name or None) over fp32 trainable weights."""

    autocast: str | None  # "bfloat16" or None (fp32 compute)
    weights: str  # the dtype the model came in, restored after training

    def context(self, device_type: str) -> Any:
        """A fresh autocast context for one forward (None: plain fp32)."""
        if self.autocast is None:
            return None
        import torch

        return torch.autocast(device_type=device_type, dtype=getattr(torch, self.autocast))


def _bf16_ok(device: Any) -> bool:
    import torch

    return device.type != "cuda" or bool(torch.cuda.is_bf16_supported())


def choose(precision: str, *, weights: str, device: Any) -> Precision:
    """The run's precision from ``TrainConfig.precision`` (``auto``, ``bf16``, ``fp16``, ``fp32``), the model's
    weight dtype and the ``torch.device`` it trains on.

    ``auto``: bf16 autocast on CUDA GPUs that have bf16, and for 16-bit models wherever bf16 runs; else fp32.
    """
    if precision == "fp16":
        raise TrainConfigError(
            "precision='fp16' is not supported: fp16 autocast needs loss scaling, which aigc-lab does not do; use "
            "precision='bf16' (fp32's range, no scaling; CPUs and CUDA GPUs from Ampere on) or 'fp32'. An fp16 "
            "model trains fine with either: its weights get fp32 master copies")
    if precision == "bf16":
        if not _bf16_ok(device):
            raise TrainConfigError("precision='bf16' but this GPU has no bf16 support; use precision='fp32'")
        return Precision(autocast="bfloat16", weights=weights)
    if precision == "auto" and _bf16_ok(device) and (device.type == "cuda" or weights in HALF):
        return Precision(autocast="bfloat16", weights=weights)
    return Precision(autocast=None, weights=weights)


def weights_dtype(model: Any) -> str:
    """The dtype of ``model``'s floating-point parameters (the first one's: models have one)."""
    for p in model.parameters():
        if p.is_floating_point():
            return str(p.dtype).removeprefix("torch.")
    return "float32"


def master_weights(model: Any) -> int:
    """Make every trainable 16-bit parameter of ``model`` an fp32 master copy, in place; return how many."""
    import torch

    changed = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16):
            p.data = p.data.float()
            changed += 1
    return changed


def restore_dtype(model: Any, precision: Precision) -> Any:
    """Cast ``model``'s fp32 master weights back to the dtype the model came in (no-op for fp32 models)."""
    import torch

    if precision.weights in HALF:
        dtype = getattr(torch, precision.weights)
        for p in model.parameters():
            if p.dtype == torch.float32:
                p.data = p.data.to(dtype)
    return model
