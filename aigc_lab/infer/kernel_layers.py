"""The ``kernel`` layer backend: a twin of a model whose linear layers run single rows on the engine's C++ kernel.

The twin is a copy of the model's modules that shares its weights (``models.handle.shared_copy``: fp32
parameters and int8 packed weights alike), in which every fp32 ``nn.Linear``, GPT-2 ``Conv1D`` and dynamic int8
``Linear`` is replaced by a ``KernelLinear`` holding the original layer and the kernel's ``Product`` for it. A
``KernelLinear`` computes a single fp32 row in inference mode with the product (``gemv``, ``gemv_t`` or the int8
product, which quantizes the input exactly as torch's ``quantized::linear_dynamic`` does and keeps a row-major
int8 copy of the weights, a quarter of their fp32 size) and everything else (prefill, batches, training) with
the original layer. GPT-2's six-op tanh GELU runs as torch's one fused op. The user's model is never modified.

A 16-bit model (bf16/fp16 checkpoints on the CPU, where torch's 16-bit products are slow) gets an fp32 copy of
its weights first, made once per model (``upcast_twin_of``): twice the 16-bit size in memory, reported by
``al.infer.explain`` and in the run's config.

Results agree with torch's to float rounding (the sums run in another order); greedy tokens are the same in
the parity tests.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from typing import Any

from ..errors import AigcLabError
from .kernel_build import kernels


def product_of(module: Any, kernel: Any) -> Any | None:
    """The kernel's ``Product`` for a layer it can compute (fp32 ``Linear`` / GPT-2 ``Conv1D``, dynamic int8
    ``Linear``), sharing the layer's weights; None for anything else. An int8 layer's product keeps its own
    row-major int8 copy of the weights (torch's copy is packed in fbgemm's blocked layout)."""
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
    from transformers.pytorch_utils import Conv1D

    if type(module) in (torch.nn.Linear, Conv1D):
        w = module.weight
        if w.dtype != torch.float32 or not w.is_contiguous() or w.device.type != "cpu":
            return None
        bias = None if module.bias is None else module.bias.detach()
        return kernel.Product(w.detach(), bias, None, type(module) is Conv1D)
    if type(module) is DynamicInt8Linear:
        w = module.weight()
        if not w.is_quantized or w.dtype != torch.qint8:  # the float16 dynamic variant
            return None
        if w.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            if w.q_zero_point() != 0:
                return None
            scale = torch.full((w.shape[0],), w.q_scale(), dtype=torch.float32)
        elif w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            if w.q_per_channel_axis() != 0 or bool(w.q_per_channel_zero_points().ne(0).any()):
                return None
            scale = w.q_per_channel_scales().float()
        else:
            return None
        return kernel.Product(w.int_repr().contiguous(), module.bias(), scale, False)
    return None


@functools.cache
def _kernel_linear_class() -> type:
    import torch

    fp32, grad_enabled = torch.float32, torch.is_grad_enabled

    class KernelLinear(torch.nn.Module):
        """A linear layer whose single fp32 rows (a batch-1 decode step, in inference) run on ``product``; any
        other input goes through ``layer``, the original module."""

        def __init__(self, layer: Any, product: Any) -> None:
            super().__init__()
            self.layer = layer
            self.product = product
            self.n_in, self.n_out = product.n_in, product.n_out

        def __getattr__(self, name: str) -> Any:
            """The original layer's attributes (``weight``, ``bias``, ``in_features``...), which model code reads."""
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(super().__getattr__("layer"), name)

        def forward(self, x: Any) -> Any:  # runs ~50 times a token: the fewest checks that decide it
            n_in = self.n_in
            if x.numel() == n_in and x.dtype == fp32 and not grad_enabled() and x.device.type == "cpu":
                return self.product(x.reshape(n_in)).view(*x.shape[:-1], self.n_out)
            return self.layer(x)

    return KernelLinear


def kernel_product(module: Any) -> Any | None:
    """The ``Product`` a twin's layer runs on, or None if ``module`` is not a kernel layer."""
    return module.product if isinstance(module, _kernel_linear_class()) else None


def kernel_twin(model: Any) -> Any:
    """A copy of ``model`` sharing its weights whose Linear / Conv1D / dynamic int8 layers are ``KernelLinear``."""
    from ..models.fused_ops import fuse_activations
    from ..models.handle import shared_copy
    from ..models.module_swap import replace_modules

    k = kernels()
    cls = _kernel_linear_class()
    twin = shared_copy(model)

    def swap(module: Any) -> Any | None:
        product = product_of(module, k)
        return None if product is None else cls(module, product)

    replace_modules(twin, swap)
    fuse_activations(twin)  # GPT-2's six-op tanh GELU as one op (one kernel per layer per token, not six)
    _is_twin.add(twin)
    return twin


_is_twin: weakref.WeakSet[Any] = weakref.WeakSet()
_twins: weakref.WeakKeyDictionary[Any, dict[str, tuple[tuple[int, ...], Any]]] = weakref.WeakKeyDictionary()
_twins_lock = threading.Lock()


def is_twin(model: Any) -> bool:
    """Whether ``model`` is a kernel twin made here."""
    return model in _is_twin


def _cached(model: Any, kind: str, make: Any) -> Any:
    """The twin of ``model`` of this ``kind``, made once and made again if its parameters were replaced."""
    signature = tuple(p.data_ptr() for p in model.parameters())
    with _twins_lock:
        per_model = _twins.setdefault(model, {})
        cached = per_model.get(kind)
        if cached is not None and cached[0] == signature:
            return cached[1]
        twin = make(model)
        per_model[kind] = (signature, twin)
        return twin


def twin_of(model: Any) -> Any:
    """The kernel twin of an fp32 or int8 ``model`` (itself if it is one)."""
    return model if is_twin(model) else _cached(model, "kernel", kernel_twin)


def _upcast(model: Any) -> Any:
    from ..models.handle import shared_copy

    twin = shared_copy(model)
    twin.float()  # new fp32 tensors on the copy's own Parameter objects: the 16-bit original is untouched
    return kernel_twin(twin)


def upcast_twin_of(model: Any) -> Any:
    """The kernel twin of a bf16/fp16 ``model`` over an fp32 copy of its weights, made once per model."""
    return _cached(model, "upcast", _upcast)


def fast_cpu(handle: Any, *, warmup_tokens: int = 4) -> Any:
    """A new handle over the kernel twin, for code that wants it explicitly; build time in ``.compile_s``.

    The original handle is untouched. Raises ``KernelBuildError`` where no kernel can be built and
    ``AigcLabError`` for models that are not fp32 or dynamic int8 on the CPU."""
    from ..models import ModelHandle
    from .compiled import _quiet_bus
    from .engine import generate
    from .layers import kernel_refusal

    if getattr(handle, "fast_cpu", False):
        return handle
    reason = kernel_refusal(handle)
    if reason is not None:
        raise AigcLabError(f"fast_cpu() speeds up fp32 and int8 models on the CPU; {reason}")
    t = time.perf_counter()
    new = ModelHandle(model=twin_of(handle.model), tokenizer=handle.tokenizer, name=handle.name,
                      kind=handle.kind, quant=handle.quant, param_count=handle.params)
    new.fast_cpu = True
    generate(new, "warm up", max_new_tokens=warmup_tokens, ignore_eos=True, cpu_kernel=True,
             event_bus=_quiet_bus()).wait()
    new.compile_s = time.perf_counter() - t
    return new
