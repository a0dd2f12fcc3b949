"""``quantize(handle, scheme)``: a new, smaller/faster handle; the original model is never touched.

CPU schemes: ``int8`` (dynamic int8 on every Linear, after converting GPT-2's ``Conv1D`` layers to
``Linear`` so none are silently skipped), ``bf16`` and ``fp16`` (casts). CUDA schemes (torchao):
``int8-weight`` and ``int4-weight`` weight-only quantization.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

from ..errors import AigcLabError
from .handle import ModelHandle

CPU_SCHEMES = ("int8", "bf16", "fp16")
CUDA_SCHEMES = ("int8-weight", "int4-weight")


class QuantizationError(AigcLabError, ValueError):
    """The scheme is unknown or cannot run on this model's device."""


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


def quantize(handle: ModelHandle, scheme: str = "int8") -> ModelHandle:
    """Return a quantized copy of ``handle`` (``int8``, ``bf16``, ``fp16``; on CUDA ``int8-weight``/``int4-weight``)."""
    import torch

    device = handle.device
    if scheme in CUDA_SCHEMES and not device.startswith("cuda"):
        raise QuantizationError(f"{scheme!r} is a CUDA scheme (torchao weight-only); this model is on {device}. "
                                f"On CPU use one of {CPU_SCHEMES}.")
    if scheme not in CPU_SCHEMES + CUDA_SCHEMES:
        raise QuantizationError(f"unknown quantization scheme {scheme!r}; choose one of {CPU_SCHEMES + CUDA_SCHEMES}")
    if handle.quant:
        raise QuantizationError(f"{handle.name!r} is already quantized ({handle.quant}); quantize the original")
    model = copy.deepcopy(handle.model)
    if scheme in ("bf16", "fp16"):
        model.to(torch.bfloat16 if scheme == "bf16" else torch.float16)
    elif scheme == "int8":
        if device != "cpu":
            raise QuantizationError("dynamic int8 runs on the CPU; move the model to CPU or use 'int8-weight' on CUDA")
        conv1d_to_linear(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates quantize_dynamic
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        left = _count_linear(model)
        if left:
            raise QuantizationError(f"{left} Linear layers stayed unquantized; this is a bug, please report it")
    else:  # pragma: no cover - needs CUDA and torchao
        try:
            from torchao.quantization import int4_weight_only, int8_weight_only
            from torchao.quantization import quantize_ as ao_quantize
        except ImportError as exc:
            raise QuantizationError(f"{scheme!r} needs torchao: pip install torchao") from exc
        conv1d_to_linear(model)
        ao_quantize(model, int8_weight_only() if scheme == "int8-weight" else int4_weight_only())
    model.eval()
    return ModelHandle(model=model, tokenizer=handle.tokenizer, name=handle.name, kind=handle.kind, quant=scheme,
                       param_count=handle.params)
