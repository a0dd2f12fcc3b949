"""``quantize(handle, scheme)``: a new, smaller/faster handle; the original model is never touched.

torch schemes: ``int8`` (dynamic int8 on every Linear, after converting GPT-2's ``Conv1D`` layers to
``Linear`` so none are silently skipped; CPU), ``bf16`` and ``fp16`` (casts). torchao schemes
(``models/torchao_schemes.py``, the ``quant`` extra): ``int8-weight`` (CPU and CUDA), ``int4-weight`` (CUDA,
bf16 weights) and ``float8`` (CUDA, compute capability 8.9+).
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from ..errors import QuantizationError
from . import torchao_schemes
from .handle import ModelHandle

TORCH_SCHEMES = ("int8", "bf16", "fp16")
SCHEMES = TORCH_SCHEMES + torchao_schemes.SCHEMES

__all__ = ["SCHEMES", "TORCH_SCHEMES", "QuantizationError", "conv1d_to_linear", "quantize"]


def conv1d_to_linear(module: Any) -> int:
    """Replace every HF ``Conv1D`` (weight stored [in, out]) in ``module`` by an equivalent ``nn.Linear``.

    Returns how many were replaced. Needed because ``quantize_dynamic`` only knows ``nn.Linear``.
    """
    import torch
    from transformers.pytorch_utils import Conv1D

    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, Conv1D):
            n_in, n_out = child.weight.shape
            linear = torch.nn.Linear(n_in, n_out, bias=True, dtype=child.weight.dtype, device=child.weight.device)
            with torch.no_grad():
                linear.weight.copy_(child.weight.t())
                linear.bias.copy_(child.bias)
            setattr(module, name, linear)
            replaced += 1
        else:
            replaced += conv1d_to_linear(child)
    return replaced


def _count_linear(module: Any) -> int:
    import torch

    return sum(type(m) is torch.nn.Linear for m in module.modules())


def quantize(handle: ModelHandle, scheme: str = "int8", *, group_size: int = 128) -> ModelHandle:
    """Return a quantized copy of ``handle``: ``int8``, ``bf16``, ``fp16``; with torchao ``int8-weight``, and on
    CUDA ``int4-weight`` (bf16 weights; ``group_size`` 32-256) and ``float8``. Every check runs before the copy."""
    import torch

    device = handle.device
    if scheme not in SCHEMES:
        raise QuantizationError(f"unknown quantization scheme {scheme!r}; choose one of {SCHEMES}")
    if handle.quant:
        raise QuantizationError(f"{handle.name!r} is already quantized ({handle.quant}); quantize the original")
    if scheme == "int8" and device != "cpu":
        raise QuantizationError("dynamic int8 runs on the CPU; move the model to CPU or use 'int8-weight' on CUDA")
    if scheme in torchao_schemes.SCHEMES:
        torchao_schemes.check(scheme, handle.model, device=device, dtype=handle.dtype, group_size=group_size,
                              cuda_capability=torchao_schemes.capability(device))
        torchao_schemes.torchao_api()  # a missing or unusable torchao is reported before the copy
    model = copy.deepcopy(handle.model)
    if scheme in ("bf16", "fp16"):
        model.to(torch.bfloat16 if scheme == "bf16" else torch.float16)
    elif scheme == "int8":
        conv1d_to_linear(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates quantize_dynamic
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        left = _count_linear(model)
        if left:
            raise QuantizationError(f"{left} Linear layers stayed unquantized; this is a bug, please report it")
    else:
        conv1d_to_linear(model)
        torchao_schemes.apply(model, scheme, group_size)
    model.eval()
    return ModelHandle(model=model, tokenizer=handle.tokenizer, name=handle.name, kind=handle.kind, quant=scheme,
                       param_count=handle.params)
