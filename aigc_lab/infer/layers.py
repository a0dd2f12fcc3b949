"""Layer backends: how a generation's matrix products run (device, dtype, int8, kernel or torch), chosen in one
place, before and independently of the step strategy (``infer/backends.py``).

* ``kernel``: the engine's C++ kernel (``kernel_layers.py``) for fp32 and dynamic-int8 models on the CPU, one
  prompt at a time. With ``cpu_kernel=None`` (the default) it is used only once it is built (``make`` builds it;
  a generation never stalls half a minute to compile) and not with ``AIGC_LAB_CPU_KERNEL=0``.
* ``kernel-upcast``: a bf16/fp16 model on the CPU, where torch's 16-bit products are slow: an fp32 copy of its
  weights made once per model (twice the 16-bit size in memory), on the kernel.
* ``torch``: the model as it is; always applies.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import GenerationConfigError
from .stepper import DecodeRequest


@dataclass(frozen=True)
class Layers:
    """The chosen layer backend and the module the stepper calls."""

    name: str
    model: Any
    note: str = ""  # what it costs, when it is not free (the upcast copy's size)


@dataclass(frozen=True)
class LayerBackend:
    name: str
    summary: str
    refusal: Callable[[Any, DecodeRequest], str | None]  # why it cannot run this request, None when it can
    build: Callable[[Any], Layers]


def _where(handle: Any) -> str:
    return f"{handle.name!r} is {handle.quant or handle.dtype} on {handle.device}"


def kernel_refusal(handle: Any) -> str | None:
    """Why the kernel layers cannot run ``handle`` whatever the request (None: an fp32 or int8 CPU model)."""
    try:
        if handle.device != "cpu":
            return f"{_where(handle)}, not the CPU"
        if hasattr(handle.model, "_orig_mod"):
            return "the model is torch.compile'd (its own path)"
        if handle.quant == "int8" or (handle.dtype == "float32" and not handle.quant):
            return None
    except StopIteration:  # a model without parameters
        return "the model has no parameters"
    return f"{_where(handle)}: the kernel runs fp32 and int8 weights"


def _sixteen_bit(handle: Any) -> bool:
    try:
        return handle.dtype in ("bfloat16", "float16") and handle.quant in (None, "bf16", "fp16")
    except StopIteration:
        return False


def _request_refusal(request: DecodeRequest) -> str | None:
    from .kernel_build import built

    if request.cpu_kernel is False:
        return "cpu_kernel=False"
    if request.batch != 1:
        return f"a batch of {request.batch} prompts (the kernel speeds up one row at a time)"
    if request.cpu_kernel is None:
        if os.environ.get("AIGC_LAB_CPU_KERNEL", "1") == "0":
            return "AIGC_LAB_CPU_KERNEL=0"
        if not built():
            return "the CPU kernel is not built (make builds it; or cpu_kernel=True)"
    return None


def _kernel_refusal(handle: Any, request: DecodeRequest) -> str | None:
    return kernel_refusal(handle) or _request_refusal(request)


def _upcast_refusal(handle: Any, request: DecodeRequest) -> str | None:
    try:
        if handle.device != "cpu" or not _sixteen_bit(handle):
            return f"{_where(handle)}: it converts bf16/fp16 CPU models"
    except StopIteration:
        return "the model has no parameters"
    return _request_refusal(request)


def _kernel(handle: Any) -> Layers:
    from .kernel_layers import twin_of

    return Layers("kernel", twin_of(handle.model))


def _upcast(handle: Any) -> Layers:
    from .kernel_layers import upcast_twin_of

    twin = upcast_twin_of(handle.model)
    extra_mb = sum(p.numel() for p in twin.parameters()) * 4 / 2**20
    return Layers("kernel-upcast", twin, f"{handle.dtype} weights converted once to fp32 (+{extra_mb:.0f} MB)")


LAYER_BACKENDS: tuple[LayerBackend, ...] = (
    LayerBackend("kernel", "fp32 / int8 products on the engine's C++ kernel", _kernel_refusal, _kernel),
    LayerBackend("kernel-upcast", "a bf16/fp16 model's fp32 copy (made once) on the C++ kernel", _upcast_refusal,
                 _upcast),
    LayerBackend("torch", "the model's own layers", lambda handle, request: None,
                 lambda handle: Layers("torch", handle.model)),
)


def choose_layers(handle: Any, request: DecodeRequest) -> tuple[Layers, list[tuple[str, str]]]:
    """The first layer backend that applies (built), and ``(name, reason)`` for each one before it that did not.

    ``cpu_kernel=True`` asks for a kernel backend: where none applies it raises ``GenerationConfigError``; a twin
    that cannot be made falls back to torch's layers unless the kernel was asked for."""
    skipped: list[tuple[str, str]] = []
    for backend in LAYER_BACKENDS:
        if request.cpu_kernel and not backend.name.startswith("kernel"):
            reasons = "; ".join(f"{name}: {why}" for name, why in skipped)
            raise GenerationConfigError(f"cpu_kernel=True needs an fp32, int8 or 16-bit model on the CPU ({reasons})")
        reason = backend.refusal(handle, request)
        if reason is None:
            try:
                layers = backend.build(handle)
            except Exception as exc:  # noqa: BLE001 - the twin is an optimisation: torch's layers still run it
                if request.cpu_kernel:
                    raise
                reason = f"could not be made ({type(exc).__name__}: {exc})"
            else:
                later = LAYER_BACKENDS[LAYER_BACKENDS.index(backend) + 1:]
                return layers, skipped + [(b.name, b.refusal(handle, request) or f"applies, but {backend.name} ranks "
                                           "first") for b in later]
        skipped.append((backend.name, reason))
    raise AssertionError("the torch backend always applies")  # pragma: no cover
