"""torchao weight quantization: one config per scheme, and the checks each one needs before ``quantize_`` runs.

torchao's current API is a config object passed to ``quantize_(model, config)`` (the ``int8_weight_only()``
style functions were removed in torchao 0.15). Schemes:

- ``int8-weight``: ``Int8WeightOnlyConfig`` (per-channel int8 weights). CPU and CUDA.
- ``int4-weight``: ``Int4WeightOnlyConfig(group_size, int4_packing_format="tile_packed_to_4d")`` (tinygemm):
  CUDA, bf16 weights, a group size of 32/64/128/256 that divides every Linear's input size (torchao
  silently leaves a layer it does not divide unquantized, so that is refused here instead).
- ``float8``: ``Float8DynamicActivationFloat8WeightConfig(granularity=PerRow())``: CUDA GPUs of compute
  capability 8.9 or more (Ada, Hopper and later), which have float8 matrix units.

Seen with torchao 0.18.0 on torch 2.13.0+cpu: ``int8-weight`` quantizes and runs on the CPU; int4 has no CPU
packing format (``plain`` needs the ``mslk`` CUDA kernels, ``tile_packed_to_4d`` CUDA, ``plain_int32`` has
no CPU path) and float8 dynamic activations assert a CUDA GPU of capability 8.9 or more.
"""

from __future__ import annotations

from typing import Any

from ..errors import QuantizationError

SCHEMES = ("int8-weight", "int4-weight", "float8")
CUDA_ONLY = ("int4-weight", "float8")
INT4_GROUP_SIZES = (32, 64, 128, 256)
FLOAT8_CAPABILITY = (8, 9)
INSTALL = "pip install 'aigc-lab[quant]' (torchao>=0.18)"


def torchao_api() -> Any:
    """``torchao.quantization`` with the names the schemes use; a ``QuantizationError`` that carries the real
    ImportError (torchao missing, or a release without these configs) when it cannot be imported."""
    try:
        from torchao import quantization
        from torchao.quantization import (  # noqa: F401  (the names every scheme needs, checked at once)
            Float8DynamicActivationFloat8WeightConfig,
            Int4WeightOnlyConfig,
            Int8WeightOnlyConfig,
            PerRow,
            quantize_,
        )
    except ImportError as exc:
        raise QuantizationError(f"torchao could not be imported ({type(exc).__name__}: {exc}); the 'int8-weight', "
                                f"'int4-weight' and 'float8' schemes need it: {INSTALL}") from exc
    return quantization


def capability(device: str) -> tuple[int, int] | None:
    """The CUDA compute capability of ``device`` (None on other devices)."""
    if not device.startswith("cuda"):
        return None
    import torch

    return tuple(torch.cuda.get_device_capability(device))


def _input_sizes(model: Any) -> dict[str, int]:
    """Input size of every layer the schemes quantize: ``nn.Linear`` and GPT-2's ``Conv1D`` (weight [in, out])."""
    import torch
    from transformers.pytorch_utils import Conv1D

    sizes = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            sizes[name] = module.in_features
        elif isinstance(module, Conv1D):
            sizes[name] = module.weight.shape[0]
    return sizes


def check(scheme: str, model: Any, *, device: str, dtype: str, group_size: int,
          cuda_capability: tuple[int, int] | None) -> None:
    """Refuse, with what to do instead, a scheme that cannot run on ``model`` as it is (device, dtype, sizes)."""
    if scheme in CUDA_ONLY and not device.startswith("cuda"):
        raise QuantizationError(
            f"{scheme!r} runs on CUDA only (torchao has no CPU kernel for it); this model is on {device}. On CPU use "
            "'int8' (dynamic int8, the fastest here) or 'int8-weight' (torchao), or move the model to a GPU")
    if scheme == "float8" and (cuda_capability or (0, 0)) < FLOAT8_CAPABILITY:
        have = ".".join(map(str, cuda_capability or (0, 0)))
        raise QuantizationError(f"'float8' needs a CUDA GPU of compute capability 8.9 or more (Ada, Hopper); this one "
                                f"is {have}. Use 'int8-weight' or 'int4-weight'")
    if scheme == "int4-weight":
        if dtype != "bfloat16":
            raise QuantizationError(
                f"'int4-weight' (torchao's tinygemm int4 kernel) needs bfloat16 weights; this model is {dtype}. Load "
                "it with al.models.load(name, dtype='bfloat16'), then quantize")
        if group_size not in INT4_GROUP_SIZES:
            raise QuantizationError(f"group_size must be one of {INT4_GROUP_SIZES} for 'int4-weight', not {group_size}")
        odd = [f"{name} ({size})" for name, size in _input_sizes(model).items() if size % group_size]
        if odd:
            raise QuantizationError(
                f"group_size={group_size} does not divide the input size of {len(odd)} layer(s) "
                f"({', '.join(odd[:3])}{', ...' if len(odd) > 3 else ''}), which torchao would leave unquantized; "
                f"choose a group_size from {INT4_GROUP_SIZES} that divides them")


def config(scheme: str, group_size: int = 128) -> Any:
    """The torchao config object for ``scheme`` (constructing one needs no GPU)."""
    ao = torchao_api()
    if scheme == "int8-weight":
        return ao.Int8WeightOnlyConfig()
    if scheme == "int4-weight":
        return ao.Int4WeightOnlyConfig(group_size=group_size, int4_packing_format="tile_packed_to_4d")
    if scheme == "float8":
        return ao.Float8DynamicActivationFloat8WeightConfig(granularity=ao.PerRow())
    raise QuantizationError(f"{scheme!r} is not a torchao scheme; choose one of {SCHEMES}")


def apply(model: Any, scheme: str, group_size: int = 128) -> int:
    """Quantize ``model``'s Linear layers in place with ``scheme``; return how many layers were quantized."""
    import torch

    cfg = config(scheme, group_size)
    torchao_api().quantize_(model, cfg)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    plain = [m for m in linears if type(m.weight) in (torch.Tensor, torch.nn.Parameter)]
    if plain:
        raise QuantizationError(f"{len(plain)} of {len(linears)} Linear layers stayed unquantized under {scheme!r}; "
                                "this is a bug, please report it")
    return len(linears)
